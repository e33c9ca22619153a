"""Listwise DPO: align a policy with rankings of several answers (Plackett-Luce DPO).

Data is ``{prompt, responses, ranks}`` rows as ``prefalign data convert --to listwise`` writes them
(rank 1 = best, equal ranks = ties); a pair file works too (a ranking of two, where the loss is
DPO's). Rankings may have different lengths. The loss is
:func:`prefalign.losses.preference.listwise_dpo_loss`; ``sft_coef`` adds the best answer's
length-normalised NLL (:func:`~prefalign.losses.preference.with_sft_loss`).

A micro-batch of R rankings is one forward over all their answers (``train.micro_batch_size``
counts rankings, so a forward holds up to R * K sequences). Reads top to bottom like ``dpo``: load
the policy (LoRA optional) and reference, tokenise, score every answer under the reference once,
the optimizer loop, save. At step 0 the policy equals the reference, so an untied ranking of K
answers costs ``log K!``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from prefalign.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from prefalign.feedback.convert import ListwiseRow
from prefalign.feedback.formats import load_listwise_rows
from prefalign.losses.preference import listwise_dpo_loss, with_sft_loss
from prefalign.recipes.common import (
    build_optimizer,
    clip_and_step,
    completion_logps,
    load_splits,
    loss_scale,
    make_accelerator,
    mean_metrics,
    micro_batches,
    pad_sequences,
    save_final,
    step_plan,
    tokenize_prompt_completion,
)
from prefalign.recipes.scoring import load_policy_and_reference, reference_logps
from prefalign.run import Run, RunResult, console
from prefalign.utils import seed_everything


@dataclasses.dataclass
class ListwiseConfig:
    """Configuration of ``prefalign listwise``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    beta: float = 0.1
    """Strength of the implicit KL penalty to the reference (DPO's beta)."""
    sft_coef: float = 0.0
    """Weight of the best answer's length-normalised NLL added to the loss (RPO); 0 disables it."""
    reference_model: str = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score every answer under the reference once before training (saves a forward per step)."""
    output_dir: str = "runs/listwise"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


@dataclasses.dataclass
class TokenizedRanking:
    """Prompt ids, each answer's ids (best first, truncated) and their ranks."""

    prompt_ids: list[int]
    answers: list[list[int]]
    ranks: list[int]

    def items(self) -> list[tuple[list[int], list[int]]]:
        return [(self.prompt_ids, answer) for answer in self.answers]


def tokenize_ranking(tokenizer: Any, row: ListwiseRow, data: DataConfig) -> TokenizedRanking:
    encoded = [tokenize_prompt_completion(tokenizer, row.prompt, r, data) for r in row.responses]
    return TokenizedRanking(encoded[0][0], [c for _, c in encoded], list(row.ranks))


def load_listwise_splits(
    data: DataConfig, seed: int, report_dir: Any = None
) -> tuple[list[ListwiseRow], list[ListwiseRow]]:
    """Training and held-out rankings as the config asks (:func:`load_splits`)."""
    what = "a file of {prompt, responses, ranks} rows or of pairs"
    return load_splits(load_listwise_rows, data, seed, report_dir, what=what)


def ranking_batch(
    rows: list[TokenizedRanking], pad_id: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One padded batch of every answer of ``rows`` (row by row), their (R, K) ranks and mask."""
    items = [item for row in rows for item in row.items()]
    batch = pad_sequences([p for p, _ in items], [c for _, c in items], pad_id)
    width = max(len(row.answers) for row in rows)
    ranks = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ranks[i, : len(row.ranks)] = torch.tensor(row.ranks)
        mask[i, : len(row.ranks)] = True
    return batch, ranks, mask


def to_table(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-answer values (N,), row by row, into an (R, K) table laid out as ``mask``."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def ranking_loss(
    loss_fn: Callable[..., Any],
    cfg: ListwiseConfig,
    logps: torch.Tensor,
    counts: torch.Tensor,
    ref: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The listwise loss of one :func:`ranking_batch`.

    ``logps``, ``counts`` and ``ref`` are (N,) per answer: the policy's summed log-probs, token
    counts (for the SFT term) and the reference's log-probs.
    """
    policy_table = to_table(logps, mask)
    out = loss_fn(policy_table, to_table(ref.to(logps.dtype), mask), beta=cfg.beta, ranks=ranks, mask=mask)
    if cfg.sft_coef:
        best_counts = to_table(counts.clamp(min=1).to(logps.dtype), mask)[:, 0]
        out = with_sft_loss(out, -policy_table[:, 0] / best_counts, sft_coef=cfg.sft_coef)
    return out


def evaluate(
    policy: torch.nn.Module,
    rows: list[TokenizedRanking],
    ref: list[torch.Tensor],
    pad_id: int,
    cfg: ListwiseConfig,
    loss_fn: Callable[..., Any],
) -> dict[str, float]:
    """Mean loss and reward metrics of the current policy on held-out rankings."""
    policy.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start : start + cfg.train.micro_batch_size]
            batch, ranks, mask = ranking_batch(chunk, pad_id)
            logps, counts = completion_logps(policy, batch)
            chunk_ref = torch.cat(ref[start : start + len(chunk)])
            losses, metrics = ranking_loss(loss_fn, cfg, logps, counts, chunk_ref, ranks, mask)
            parts.append((len(chunk), {"loss": losses.mean(), **metrics}))
    policy.train()
    return {f"eval/{k}": v for k, v in mean_metrics(parts).items()}


def reference_ranking_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[TokenizedRanking],
    pad_id: int,
    batch: int,
) -> list[torch.Tensor]:
    """Per ranking, the (K_r,) reference log-probs of its answers."""
    flat = reference_logps(policy, reference, [item for row in rows for item in row.items()], pad_id, batch)
    return list(flat.split([len(row.answers) for row in rows])) if rows else []


def train(cfg: ListwiseConfig, *, loss_fn: Callable[..., Any] = listwise_dpo_loss) -> RunResult:
    """Run listwise DPO as configured; ``loss_fn`` replaces :func:`listwise_dpo_loss` (same inputs)."""
    if cfg.sft_coef < 0:
        raise ConfigError(f"sft_coef must be >= 0, got {cfg.sft_coef}")
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    policy, reference, tokenizer = load_policy_and_reference(cfg.model, cfg.reference_model)
    pad_id = tokenizer.pad_token_id
    train_lists, eval_lists = load_listwise_splits(cfg.data, cfg.train.seed, run.output_dir)
    train_rows = [tokenize_ranking(tokenizer, r, cfg.data) for r in train_lists]
    eval_rows = [tokenize_ranking(tokenizer, r, cfg.data) for r in eval_lists]
    plan = step_plan(len(train_rows), cfg.train)
    optimizer, scheduler = build_optimizer(policy, cfg.train, len(plan))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    policy.train()

    batch_size = max(1, cfg.train.micro_batch_size)
    train_ref = None
    if cfg.precompute_reference:
        answers = sum(len(r.answers) for r in train_rows + eval_rows)
        console.print(
            f"scoring {answers} answers of {len(train_rows) + len(eval_rows)} rankings under the reference"
        )
        train_ref = reference_ranking_logps(policy, reference, train_rows, pad_id, batch_size)
    eval_ref = reference_ranking_logps(policy, reference, eval_rows, pad_id, batch_size)
    if cfg.precompute_reference:
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    start = run.restore(policy, optimizer, scheduler)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "listwise"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        parts = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            rows = [train_rows[i] for i in micro]
            batch, ranks, mask = ranking_batch(rows, pad_id)
            logps, counts = completion_logps(policy, batch)
            if train_ref is not None:
                ref = torch.cat([train_ref[i] for i in micro])
            else:
                ref = torch.cat(reference_ranking_logps(policy, reference, rows, pad_id, len(rows)))
            losses, metrics = ranking_loss(loss_fn, cfg, logps, counts, ref, ranks, mask)
            accelerator.backward(losses.sum() * scale)
            parts.append((len(micro), {"loss": losses.detach().mean(), **metrics}))
        grad_norm = clip_and_step(policy, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {**mean_metrics(parts), "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]}
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_rows:
            last.update(evaluate(policy, eval_rows, eval_ref, pad_id, cfg, loss_fn))
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} acc {last.get('rewards/accuracy', 0):.2f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(policy), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(policy)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics = evaluate(policy, eval_rows, eval_ref, pad_id, cfg, loss_fn) if eval_rows else {}
    return save_final(run, unwrapped, tokenizer, steps=len(plan), last=last, eval_metrics=eval_metrics)
