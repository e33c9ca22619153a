"""Kahneman-Tversky Optimization (KTO) from unpaired completions, each labelled desirable or not.

Data is TRL's unpaired format ``{prompt, completion, label}``; a pair file works too (each pair is
one desirable and one undesirable row), so the same data can train every method. The loss is
:func:`prefalign.losses.preference.kto_loss`.

KTO's reference point ``z_ref`` estimates ``KL(pi || ref)`` from *mismatched* pairs: within each
optimizer step the completions are shifted by one, so prompt ``x_k`` is paired with completion
``y_{k-1}`` (TRL's construction). The estimate covers the whole step (every micro-batch and process
computes it over the same mismatched pairs, without gradients), so the gradient does not depend on
how the step is split. Because the step plan is fixed by the seed, the mismatched pairs are too, and
their reference log-probs are computed before training with everything else.

Reads top to bottom: load the policy (LoRA optional) and reference, tokenise, score under the
reference, the optimizer loop, save. At step 0 the policy equals the reference, so every
example's loss is half its weight (0.5 with the default weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from prefalign.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from prefalign.feedback.formats import UnpairedRow, load_unpaired_rows, split_rows
from prefalign.losses.preference import kto_loss
from prefalign.recipes.common import (
    build_optimizer,
    clip_and_step,
    completion_logps,
    load_splits,
    loss_scale,
    make_accelerator,
    micro_batches,
    pad_sequences,
    save_final,
    step_plan,
    tokenize_prompt_completion,
)
from prefalign.recipes.scoring import TokenIds, load_policy_and_reference, reference_logps, score_logps
from prefalign.run import Run, RunResult, console
from prefalign.utils import seed_everything


@dataclasses.dataclass
class KTOConfig:
    """Configuration of ``prefalign kto``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    beta: float = 0.1
    """Scale of the log-ratio in KTO's value function (the strength of the pull to the reference)."""
    desirable_weight: float = 1.0
    """lambda_D, the loss weight of desirable examples."""
    undesirable_weight: float = 1.0
    """lambda_U, the loss weight of undesirable examples; the paper keeps
    lambda_D * n_desirable / (lambda_U * n_undesirable) within [1, 4/3]."""
    reference_model: str = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score every example and mismatched pair under the reference once, before training."""
    output_dir: str = "runs/kto"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


# ---- data ----------------------------------------------------------------------------------------
def load_unpaired_splits(
    data: DataConfig, seed: int, report_dir: Any = None
) -> tuple[list[UnpairedRow], list[UnpairedRow]]:
    """Training and held-out rows as the config asks (:func:`load_splits`).

    The split keeps rows from one source line together, so both halves of a pair land on the same
    side and nothing held out was seen in training.
    """
    what = "a file of {prompt, completion, label} rows or of pairs"
    return load_splits(load_unpaired_rows, data, seed, report_dir, what=what, split=split_by_source)


def split_by_source(
    rows: list[UnpairedRow], *, eval_fraction: float, seed: int
) -> tuple[list[UnpairedRow], list[UnpairedRow]]:
    """:func:`split_rows` over groups of rows from the same source line."""
    groups: dict[str, list[UnpairedRow]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(row.source or f"#{index}", []).append(row)
    train, held_out = split_rows(list(groups.values()), eval_fraction=eval_fraction, seed=seed)
    return [r for g in train for r in g], [r for g in held_out for r in g]


def mismatched_pairs(encoded: list[TokenIds], indices: list[int], max_length: int) -> list[TokenIds]:
    """KTO's KL pairs for a batch: prompt ``k`` with the completion of ``k - 1`` (cyclically).

    The completion is cut to fit ``max_length`` after the other prompt.
    """
    pairs = []
    for k, i in enumerate(indices):
        prompt = encoded[i][0]
        completion = encoded[indices[k - 1]][1]
        pairs.append((prompt, completion[: max(1, max_length - len(prompt))]))
    return pairs


# ---- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    policy: torch.nn.Module,
    encoded: list[TokenIds],
    labels: torch.Tensor,
    ref: torch.Tensor,
    ref_kl: torch.Tensor,
    pad_id: int,
    cfg: KTOConfig,
    loss_fn: Callable[..., Any],
) -> dict[str, float]:
    """Mean loss and metrics on held-out rows; the KL pairs are the held-out set shifted by one."""
    policy.eval()
    batch = max(1, cfg.train.micro_batch_size)
    logps = score_logps(policy, encoded, pad_id, batch)
    kl_items = mismatched_pairs(encoded, list(range(len(encoded))), cfg.data.max_length)
    policy_kl = score_logps(policy, kl_items, pad_id, batch)
    losses, metrics = loss_fn(logps, ref, labels, policy_kl, ref_kl, **_loss_kwargs(cfg))
    policy.train()
    return {f"eval/{k}": float(v) for k, v in {"loss": losses.mean(), **metrics}.items()}


def _loss_kwargs(cfg: KTOConfig) -> dict[str, float]:
    return {
        "beta": cfg.beta,
        "desirable_weight": cfg.desirable_weight,
        "undesirable_weight": cfg.undesirable_weight,
    }


def train(cfg: KTOConfig, *, loss_fn: Callable[..., Any] = kto_loss) -> RunResult:
    """Run KTO as configured; ``loss_fn`` replaces :func:`kto_loss` with any function of its shape."""
    if cfg.train.batch_size < 2:
        raise ConfigError(
            "train.batch_size must be >= 2 for KTO: its KL estimate pairs each prompt with another example's completion"
        )
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    policy, reference, tokenizer = load_policy_and_reference(cfg.model, cfg.reference_model)
    pad_id = tokenizer.pad_token_id
    train_rows, eval_rows = load_unpaired_splits(cfg.data, cfg.train.seed, run.output_dir)
    encoded = [tokenize_prompt_completion(tokenizer, r.prompt, r.completion, cfg.data) for r in train_rows]
    eval_encoded = [
        tokenize_prompt_completion(tokenizer, r.prompt, r.completion, cfg.data) for r in eval_rows
    ]
    labels = torch.tensor([r.label for r in train_rows], dtype=torch.bool)
    eval_labels = torch.tensor([r.label for r in eval_rows], dtype=torch.bool)
    desirable = int(labels.sum())
    console.print(f"kto: {desirable} desirable and {len(labels) - desirable} undesirable training examples")
    plan = step_plan(len(encoded), cfg.train)
    optimizer, scheduler = build_optimizer(policy, cfg.train, len(plan))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    policy.train()

    batch = max(1, cfg.train.micro_batch_size)
    kl_items = [mismatched_pairs(encoded, indices, cfg.data.max_length) for indices in plan]
    eval_kl_items = mismatched_pairs(eval_encoded, list(range(len(eval_encoded))), cfg.data.max_length)
    train_ref = train_ref_kl = None
    if cfg.precompute_reference:
        console.print(
            f"scoring {len(encoded) + len(eval_encoded)} examples and their KL pairs under the reference"
        )
        train_ref = reference_logps(policy, reference, encoded, pad_id, batch)
        train_ref_kl = [reference_logps(policy, reference, items, pad_id, batch) for items in kl_items]
    eval_ref = reference_logps(policy, reference, eval_encoded, pad_id, batch)
    eval_ref_kl = reference_logps(policy, reference, eval_kl_items, pad_id, batch)
    if cfg.precompute_reference:
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    start = run.restore(policy, optimizer, scheduler)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "kto"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        # The reference point: the whole step's mismatched pairs, no gradient (kto_reference_point).
        policy_kl = score_logps(policy, kl_items[step], pad_id, batch)
        if train_ref_kl is not None:
            ref_kl = train_ref_kl[step]
        else:
            ref_kl = reference_logps(policy, reference, kl_items[step], pad_id, batch)
        seen: list[tuple[torch.Tensor, ...]] = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            items = [encoded[i] for i in micro]
            logps, _ = completion_logps(
                policy, pad_sequences([p for p, _ in items], [c for _, c in items], pad_id)
            )
            if train_ref is not None:
                ref = train_ref[micro]
            else:
                ref = reference_logps(policy, reference, items, pad_id, len(items))
            losses, _ = loss_fn(logps, ref, labels[micro], policy_kl, ref_kl, **_loss_kwargs(cfg))
            accelerator.backward(losses.sum() * scale)
            seen.append((logps.detach(), ref, labels[micro], losses.detach()))
        grad_norm = clip_and_step(policy, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        # Metrics of the whole step at once (a micro-batch may hold only one kind of example).
        step_logps, step_ref, step_labels, step_losses = (torch.cat(parts) for parts in zip(*seen))
        _, metrics = loss_fn(step_logps, step_ref, step_labels, policy_kl, ref_kl, **_loss_kwargs(cfg))
        last = {
            "loss": float(step_losses.mean()),
            **{k: float(v) for k, v in metrics.items()},
            "grad_norm": grad_norm,
            "learning_rate": scheduler.get_last_lr()[0],
        }
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_encoded:
            last.update(
                evaluate(policy, eval_encoded, eval_labels, eval_ref, eval_ref_kl, pad_id, cfg, loss_fn)
            )
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} kl {last['kl']:.3f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(policy), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(policy)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics: dict[str, Any] = {}
    if eval_encoded:
        eval_metrics = evaluate(
            policy, eval_encoded, eval_labels, eval_ref, eval_ref_kl, pad_id, cfg, loss_fn
        )
    return save_final(run, unwrapped, tokenizer, steps=len(plan), last=last, eval_metrics=eval_metrics)
