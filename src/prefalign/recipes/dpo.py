"""Direct Preference Optimization (and IPO, cDPO) from prompt/chosen/rejected pairs.

Reads top to bottom: load the policy (LoRA optional), tokenise the pairs, compute the reference
log-probabilities once, then the optimizer loop, then save. With LoRA the reference is the same
model with its adapters disabled, so no second copy is held in memory. Without LoRA a frozen copy
of the starting weights is loaded.

Because the reference never changes, its log-probabilities are computed in one pass before
training (``precompute_reference=True``) instead of at every step; at step 0 the policy equals the
reference, so the first logged loss of the sigmoid loss is ln 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from prefalign.config import DataConfig, ModelConfig, TrainConfig
from prefalign.losses.preference import PREFERENCE_LOSSES
from prefalign.models import is_peft_model, load_causal_lm, merge_and_save, reference_logits_context
from prefalign.ops import sequence_logps, shift_for_causal_lm
from prefalign.recipes.common import (
    TokenizedPair,
    build_optimizer,
    clip_and_step,
    collate_pairs,
    disable_dropout,
    load_pair_splits,
    lora_settings,
    loss_scale,
    make_accelerator,
    mean_metrics,
    micro_batches,
    step_plan,
    tokenize_pair,
)
from prefalign.run import Run, RunResult, console
from prefalign.utils import seed_everything


@dataclasses.dataclass
class DPOConfig:
    """Configuration of ``prefalign dpo``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: str = "sigmoid"
    """Preference loss: one of prefalign.losses.preference.PREFERENCE_LOSSES ('sigmoid', 'ipo', ...)."""
    beta: float = 0.1
    """Strength of the implicit KL penalty to the reference (DPO's beta)."""
    label_smoothing: float = 0.0
    """Assumed label-flip probability for conservative DPO (cDPO); 0 is plain DPO (sigmoid only)."""
    reference_model: str = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score all pairs under the reference once before training (saves a forward per step)."""
    output_dir: str = "runs/dpo"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


def pair_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of a ``collate_pairs`` batch: (chosen (B,), rejected (B,)).

    Only the positions from the earliest completion token on go through the LM head
    (``logits_to_keep``): the prompt's logits are never used, and on a small model with a large
    vocabulary the head and its log-softmax are a large share of the step.
    """
    input_ids, loss_mask = batch["input_ids"], batch["loss_mask"]
    length = input_ids.shape[1]
    has_completion = loss_mask.any(dim=1)
    first = int(loss_mask.float().argmax(dim=1)[has_completion].min()) if has_completion.any() else 1
    # Logits at position t score token t + 1, so the first scored completion token needs t = first - 1.
    keep = length - max(first - 1, 0)
    logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    offset = length - logits.shape[1]  # 0 when the model ignores logits_to_keep
    logits, labels, mask = shift_for_causal_lm(logits, input_ids[:, offset:], loss_mask[:, offset:])
    logps, _ = sequence_logps(logits.float(), labels, mask)
    half = logps.shape[0] // 2
    return logps[:half], logps[half:]


@torch.no_grad()
def reference_pair_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[TokenizedPair],
    pad_id: int,
    batch_size: int,
) -> torch.Tensor:
    """(N, 2) reference log-probs of every pair's chosen and rejected answer."""
    model = reference if reference is not None else policy
    context = reference_logits_context(policy) if reference is None else nullcontext()
    out = []
    with context:
        for start in range(0, len(rows), batch_size):
            batch = collate_pairs(rows[start : start + batch_size], pad_id)
            chosen, rejected = pair_logps(model, batch)
            out.append(torch.stack([chosen, rejected], dim=1))
    return torch.cat(out) if out else torch.zeros(0, 2)


def evaluate(
    policy: torch.nn.Module,
    rows: list[TokenizedPair],
    ref_logps: torch.Tensor,
    pad_id: int,
    cfg: DPOConfig,
    loss_fn: Callable[..., Any],
) -> dict[str, float]:
    """Mean loss and reward metrics of the current policy on held-out pairs."""
    policy.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start : start + cfg.train.micro_batch_size]
            chosen, rejected = pair_logps(policy, collate_pairs(chunk, pad_id))
            ref = ref_logps[start : start + len(chunk)]
            losses, metrics = loss_fn(chosen, rejected, ref[:, 0], ref[:, 1], **_loss_kwargs(cfg))
            parts.append((len(chunk), {"loss": losses.mean(), **metrics}))
    policy.train()
    return {f"eval/{k}": v for k, v in mean_metrics(parts).items()}


def _loss_kwargs(cfg: DPOConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"beta": cfg.beta}
    if cfg.label_smoothing:
        kwargs["label_smoothing"] = cfg.label_smoothing
    return kwargs


def train(cfg: DPOConfig, *, loss_fn: Callable[..., Any] | None = None) -> RunResult:
    """Run DPO as configured; ``loss_fn`` overrides ``cfg.loss`` with any function of the same shape."""
    if loss_fn is None:
        if cfg.loss not in PREFERENCE_LOSSES:
            raise ValueError(f"loss: unknown {cfg.loss!r}; choose from {sorted(PREFERENCE_LOSSES)}")
        loss_fn = PREFERENCE_LOSSES[cfg.loss]
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    policy, tokenizer = load_causal_lm(cfg.model.name, lora=lora_settings(cfg.model))
    disable_dropout(policy)
    reference = None
    if not is_peft_model(policy):
        reference, _ = load_causal_lm(cfg.reference_model or cfg.model.name)
        reference.requires_grad_(False).eval()
        disable_dropout(reference)
    pad_id = tokenizer.pad_token_id
    train_pairs, eval_pairs = load_pair_splits(cfg.data, cfg.train.seed, run.output_dir)
    train_rows = [tokenize_pair(tokenizer, p, cfg.data) for p in train_pairs]
    eval_rows = [tokenize_pair(tokenizer, p, cfg.data) for p in eval_pairs]
    plan = step_plan(len(train_rows), cfg.train)
    optimizer, scheduler = build_optimizer(policy, cfg.train, len(plan))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    policy.train()

    ref_batch = max(1, cfg.train.micro_batch_size)
    train_ref = eval_ref = None
    if cfg.precompute_reference:
        console.print(f"scoring {len(train_rows) + len(eval_rows)} pairs under the reference model")
        train_ref = reference_pair_logps(policy, reference, train_rows, pad_id, ref_batch)
        eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, ref_batch)
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    start = run.restore(policy, optimizer, scheduler)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "dpo"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        parts = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            rows = [train_rows[i] for i in micro]
            batch = collate_pairs(rows, pad_id)
            chosen, rejected = pair_logps(policy, batch)
            if train_ref is not None:
                ref = train_ref[micro]
            else:
                ref = reference_pair_logps(policy, reference, rows, pad_id, len(rows))
            losses, metrics = loss_fn(chosen, rejected, ref[:, 0], ref[:, 1], **_loss_kwargs(cfg))
            accelerator.backward(losses.sum() * scale)
            parts.append((len(micro), {"loss": losses.detach().mean(), **metrics}))
        grad_norm = clip_and_step(policy, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {**mean_metrics(parts), "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]}
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_rows:
            if eval_ref is None:
                eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, ref_batch)
            last.update(evaluate(policy, eval_rows, eval_ref, pad_id, cfg, loss_fn))
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} acc {last.get('rewards/accuracy', 0):.2f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(policy), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(policy)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics: dict[str, Any] = {}
    if eval_rows:
        if eval_ref is None:
            eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, ref_batch)
        eval_metrics = evaluate(policy, eval_rows, eval_ref, pad_id, cfg, loss_fn)
        run.write_json("eval.json", eval_metrics)
    final_dir = run.output_dir / "final"
    merge_and_save(unwrapped, tokenizer, final_dir)
    return RunResult(run.output_dir, final_dir, len(plan), last, eval_metrics)
