"""Direct Preference Optimization and its pairwise relatives from prompt/chosen/rejected pairs.

``loss=`` picks one entry of :data:`prefalign.losses.PAIRWISE_LOSSES`: DPO (``sigmoid``), cDPO,
IPO, robust DPO, hinge, and the reference-free SimPO and ORPO; ``sft_coef`` adds the chosen
answer's length-normalised NLL to any of them (RPO). Unpaired data trains with ``prefalign kto``
and rankings of more than two answers with ``prefalign listwise``.

With LoRA the reference is the policy with its adapters disabled (no second copy in memory);
without LoRA a frozen copy of the starting weights is loaded. Because the reference never
changes, its log-probs are computed in one pass before training (``precompute_reference``); at
step 0 the policy equals the reference, so the first logged loss of the sigmoid loss is ln 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

import torch

from prefalign.config import (
    Above,
    AtLeast,
    DataConfig,
    InRange,
    ModelConfig,
    ModelName,
    OneOf,
    OutputDir,
    TrainConfig,
)
from prefalign.losses.preference import PAIRWISE_LOSSES
from prefalign.models.scoring import completion_logps, reference_completion_logps
from prefalign.recipes.common import (
    EncodedPair,
    check_pairwise_options,
    encode_pair,
    load_pair_splits,
    load_policy_and_reference,
    pair_batch,
    pair_items,
    pair_loss,
    saver,
    weighted_means,
)
from prefalign.train import RunResult, TrainLoop, console, step_plan


@dataclasses.dataclass
class DPOConfig:
    """Configuration of ``prefalign dpo``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: Annotated[
        str, OneOf(*PAIRWISE_LOSSES, hints={"kto": "use prefalign kto", "listwise": "use prefalign listwise"})
    ] = "sigmoid"
    """Pairwise loss, a key of prefalign.losses.PAIRWISE_LOSSES: 'sigmoid' (DPO), 'cdpo', 'ipo', 'robust', 'hinge',
    'simpo' or 'orpo' (the last two need no reference model)."""
    beta: Annotated[float, Above(0)] = 0.1
    """Strength of the implicit KL penalty to the reference (DPO's beta); SimPO's reward scale;
    ORPO's weight lambda of the odds-ratio term."""
    label_smoothing: Annotated[float, InRange(0, 0.5, hi_open=True)] = 0.0
    """Assumed label-flip probability (sigmoid/cdpo: cDPO, robust, simpo); 0 is no smoothing."""
    gamma: Annotated[float, AtLeast(0)] = 0.5
    """SimPO's target reward margin gamma (loss=simpo only)."""
    sft_coef: Annotated[float, AtLeast(0)] = 0.0
    """Weight of the chosen answer's length-normalised NLL added to the loss (RPO; TRL's
    loss_type=[..., 'sft'] weight); 0 disables it."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score all pairs under the reference once before training (saves a forward per step)."""
    output_dir: Annotated[str, OutputDir()] = "runs/dpo"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        check_pairwise_options(self)


def reference_pair_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[EncodedPair],
    pad_id: int,
    batch_size: int,
) -> torch.Tensor:
    """(N, 2) reference log-probs of every pair's chosen and rejected answer (on the CPU)."""
    if not rows:
        return torch.zeros(0, 2)
    logps = reference_completion_logps(policy, reference, pair_items(rows), pad_id, batch_size=batch_size)
    return torch.stack(logps.chunk(2), dim=1)


def evaluate(
    loop: TrainLoop,
    policy: torch.nn.Module,
    rows: list[EncodedPair],
    ref: torch.Tensor | None,
    pad_id: int,
    cfg: DPOConfig,
    loss_fn: Callable[..., Any] | None,
) -> dict[str, float]:
    """Mean loss and reward metrics of the current policy on held-out pairs."""
    loss = PAIRWISE_LOSSES[cfg.loss]
    parts = []
    policy.eval()
    with torch.no_grad():
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start : start + cfg.train.micro_batch_size]
            out = completion_logps(policy, loop.to_device(pair_batch(chunk, pad_id)))
            chunk_ref = ref[start : start + len(chunk)].to(loop.device) if ref is not None else None
            losses, metrics = pair_loss(loss, cfg, out.sums, out.counts, chunk_ref, loss_fn)
            parts.append((len(chunk), {"loss": losses.mean(), **metrics}))
    policy.train()
    return weighted_means(parts, "eval/")


def train(cfg: DPOConfig, *, loss_fn: Callable[..., Any] | None = None) -> RunResult:
    """Run DPO as configured; ``loss_fn`` replaces the function of ``cfg.loss`` (same inputs)."""
    loss = PAIRWISE_LOSSES[cfg.loss]
    loop = TrainLoop.open(cfg, "dpo")
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=loss.reference
    )
    pad_id = tokenizer.pad_token_id
    train_pairs, eval_pairs = load_pair_splits(cfg.data, cfg.train.seed, loop.run.output_dir)
    train_rows = [encode_pair(tokenizer, p, cfg.data) for p in train_pairs]
    eval_rows = [encode_pair(tokenizer, p, cfg.data) for p in eval_pairs]
    plan = step_plan(len(train_rows), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    reference = loop.frozen(reference) if reference is not None else None

    batch = max(1, cfg.train.micro_batch_size)
    train_ref = eval_ref = None
    if loss.reference and cfg.precompute_reference:
        console.print(f"scoring {len(train_rows) + len(eval_rows)} pairs under the reference model")
        train_ref = reference_pair_logps(policy, reference, train_rows, pad_id, batch)
        eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, batch)
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    loop.restore()

    def reference_of(
        rows: list[EncodedPair], cached: torch.Tensor | None, indices: list[int]
    ) -> torch.Tensor | None:
        """(B, 2) reference log-probs of ``rows``: from the cache, or scored now (no precompute)."""
        if not loss.reference:
            return None
        if cached is not None:
            return cached[indices]
        return reference_pair_logps(policy, reference, rows, pad_id, batch)

    def held_out() -> dict[str, float]:
        if not eval_rows:
            return {}
        ref = reference_of(eval_rows, eval_ref, list(range(len(eval_rows))))
        return evaluate(loop, model, eval_rows, ref, pad_id, cfg, loss_fn)

    for step in loop.steps(len(plan)):
        for micro in loop.micro_batches(plan[step]):
            rows = [train_rows[i] for i in micro.indices]
            out = completion_logps(model, loop.to_device(pair_batch(rows, pad_id)))
            ref = reference_of(rows, train_ref, micro.indices)
            ref = ref.to(loop.device) if ref is not None else None
            losses, metrics = pair_loss(loss, cfg, out.sums, out.counts, ref, loss_fn)
            loop.backward(losses, micro, metrics)
        loop.optimizer_step(step, evaluate=held_out)

    eval_metrics = held_out()
    return loop.finish(saver(loop.unwrap(), tokenizer), eval_metrics=eval_metrics)
