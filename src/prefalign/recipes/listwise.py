"""Listwise DPO: align a policy with rankings of several answers (Plackett-Luce DPO).

Data is ``{prompt, responses, ranks}`` rows as ``prefalign data convert --to listwise`` writes them
(rank 1 = best, equal ranks = ties); a pair file works too (a ranking of two, where the loss is
DPO's). Rankings may have different lengths. The loss is
:func:`prefalign.losses.preference.listwise_dpo_loss`; ``sft_coef`` adds the best answer's
length-normalised NLL (:func:`~prefalign.losses.preference.with_sft_loss`).

A micro-batch of R rankings is one right-padded forward over all their answers
(``train.micro_batch_size`` counts rankings, so a forward holds up to R * K sequences). Reads top
to bottom like ``dpo``: load the policy (LoRA optional) and reference, encode, score every answer
under the reference once, the optimizer loop, save. At step 0 the policy equals the reference, so
an untied ranking of K answers costs ``log K!``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch

from prefalign.config import Above, AtLeast, DataConfig, ModelConfig, ModelName, OutputDir, TrainConfig
from prefalign.feedback.formats import ListwiseRow, load_listwise_rows
from prefalign.losses.preference import listwise_dpo_loss, with_sft_loss
from prefalign.models.scoring import completion_logps, reference_completion_logps
from prefalign.recipes.common import encode, load_policy_and_reference, load_splits, saver, weighted_means
from prefalign.tokens import right_pad
from prefalign.train import RunResult, TrainLoop, console, step_plan


@dataclasses.dataclass
class ListwiseConfig:
    """Configuration of ``prefalign listwise``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    beta: Annotated[float, Above(0)] = 0.1
    """Strength of the implicit KL penalty to the reference (DPO's beta)."""
    sft_coef: Annotated[float, AtLeast(0)] = 0.0
    """Weight of the best answer's length-normalised NLL added to the loss (RPO); 0 disables it."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score every answer under the reference once before training (saves a forward per step)."""
    output_dir: Annotated[str, OutputDir()] = "runs/listwise"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


@dataclasses.dataclass
class EncodedRanking:
    """Prompt ids, each answer's ids (best first, truncated) and their ranks."""

    prompt_ids: list[int]
    answers: list[list[int]]
    ranks: list[int]

    def items(self) -> list[tuple[list[int], list[int]]]:
        return [(self.prompt_ids, answer) for answer in self.answers]

    @property
    def ordered_pairs(self) -> int:
        """Answer pairs with a strict order (ties excluded): the ranking's share of accuracy."""
        return sum(a < b for a in self.ranks for b in self.ranks)


def encode_ranking(tokenizer: Any, row: ListwiseRow, data: DataConfig) -> EncodedRanking:
    encoded = [encode(tokenizer, row.prompt, r, data) for r in row.responses]
    return EncodedRanking(encoded[0][0], [c for _, c in encoded], list(row.ranks))


def load_listwise_splits(
    data: DataConfig, seed: int, report_dir: Any = None
) -> tuple[list[ListwiseRow], list[ListwiseRow]]:
    """Training and held-out rankings as the config asks (:func:`load_splits`)."""
    return load_splits(load_listwise_rows, data, seed, report_dir)


def ranking_batch(
    rows: Sequence[EncodedRanking], pad_id: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One right-padded batch of every answer of ``rows`` (row by row), their (R, K) ranks and mask."""
    items = [item for row in rows for item in row.items()]
    batch = right_pad([p for p, _ in items], [c for _, c in items], pad_id)
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
    """The listwise loss of one :func:`ranking_batch` (all tensors on one device).

    ``logps``, ``counts`` and ``ref`` are (N,) per answer: the policy's summed log-probs, token
    counts (for the SFT term) and the reference's log-probs.
    """
    policy_table = to_table(logps, mask)
    out = loss_fn(policy_table, to_table(ref.to(logps.dtype), mask), beta=cfg.beta, ranks=ranks, mask=mask)
    if cfg.sft_coef:
        best_counts = to_table(counts.clamp(min=1).to(logps.dtype), mask)[:, 0]
        out = with_sft_loss(out, -policy_table[:, 0] / best_counts, sft_coef=cfg.sft_coef)
    return out


def pair_weighted_accuracy(
    metrics: dict[str, torch.Tensor], rows: Sequence[EncodedRanking], count: int, examples: int, pairs: int
) -> dict[str, torch.Tensor | float]:
    """``metrics`` of ``count`` of ``rows`` with ``rewards/accuracy`` rescaled for a step-wide mean.

    Accuracy is a fraction of ordered answer pairs, not of rankings, while the loop (and
    :func:`weighted_means`) logs example-weighted means over the ``examples`` rankings of a step.
    Recording ``accuracy * ordered_pairs(rows) * examples / (pairs * count)`` logs the fraction of
    the step's ``pairs`` ordered pairs that are right, the same for every split.
    """
    if "rewards/accuracy" not in metrics:
        return dict(metrics)
    right = metrics["rewards/accuracy"] * sum(row.ordered_pairs for row in rows)
    scale = examples / (max(1, pairs) * count) if count else 0.0
    return {**metrics, "rewards/accuracy": right * scale}


def reference_ranking_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: Sequence[EncodedRanking],
    pad_id: int,
    batch_size: int,
) -> list[torch.Tensor]:
    """Per ranking, the (K_r,) reference log-probs of its answers (on the CPU)."""
    if not rows:
        return []
    items = [item for row in rows for item in row.items()]
    flat = reference_completion_logps(policy, reference, items, pad_id, batch_size=batch_size)
    return list(flat.split([len(row.answers) for row in rows]))


def evaluate(
    loop: TrainLoop,
    model: torch.nn.Module,
    rows: list[EncodedRanking],
    ref: list[torch.Tensor],
    pad_id: int,
    cfg: ListwiseConfig,
    loss_fn: Callable[..., Any],
) -> dict[str, float]:
    """Mean loss and reward metrics of the current policy on held-out rankings."""
    pairs = sum(row.ordered_pairs for row in rows)
    parts = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start : start + cfg.train.micro_batch_size]
            batch, ranks, mask = ranking_batch(chunk, pad_id)
            out = completion_logps(model, loop.to_device(batch))
            chunk_ref = torch.cat(ref[start : start + len(chunk)]).to(loop.device)
            ranks, mask = ranks.to(loop.device), mask.to(loop.device)
            losses, metrics = ranking_loss(loss_fn, cfg, out.sums, out.counts, chunk_ref, ranks, mask)
            metrics = {"loss": losses.mean(), **metrics}
            parts.append((len(chunk), pair_weighted_accuracy(metrics, chunk, len(chunk), len(rows), pairs)))
    model.train()
    return weighted_means(parts, "eval/")


def train(cfg: ListwiseConfig, *, loss_fn: Callable[..., Any] = listwise_dpo_loss) -> RunResult:
    """Run listwise DPO as configured; ``loss_fn`` replaces :func:`listwise_dpo_loss` (same inputs)."""
    loop = TrainLoop.open(cfg, "listwise")
    policy, reference, tokenizer = load_policy_and_reference(cfg.model, cfg.reference_model)
    pad_id = tokenizer.pad_token_id
    train_lists, eval_lists = load_listwise_splits(cfg.data, cfg.train.seed, loop.run.output_dir)
    train_rows = [encode_ranking(tokenizer, r, cfg.data) for r in train_lists]
    eval_rows = [encode_ranking(tokenizer, r, cfg.data) for r in eval_lists]
    plan = step_plan(len(train_rows), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    reference = loop.frozen(reference) if reference is not None else None

    size = cfg.train.micro_batch_size
    train_ref = None
    if cfg.precompute_reference:
        answers = sum(len(r.answers) for r in train_rows + eval_rows)
        console.print(
            f"scoring {answers} answers of {len(train_rows) + len(eval_rows)} rankings under the reference"
        )
        train_ref = reference_ranking_logps(policy, reference, train_rows, pad_id, size)
    eval_ref = reference_ranking_logps(policy, reference, eval_rows, pad_id, size)
    if cfg.precompute_reference:
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    loop.restore()

    def held_out() -> dict[str, float]:
        return evaluate(loop, model, eval_rows, eval_ref, pad_id, cfg, loss_fn) if eval_rows else {}

    for step in loop.steps(len(plan)):
        indices = plan[step]
        pairs = sum(train_rows[i].ordered_pairs for i in indices)
        for micro in loop.micro_batches(indices):
            rows = [train_rows[i] for i in micro.indices]
            batch, ranks, mask = ranking_batch(rows, pad_id)
            out = completion_logps(model, loop.to_device(batch))
            if train_ref is not None:
                ref = torch.cat([train_ref[i] for i in micro.indices])
            else:
                ref = torch.cat(reference_ranking_logps(policy, reference, rows, pad_id, size))
            ref, ranks, mask = ref.to(loop.device), ranks.to(loop.device), mask.to(loop.device)
            losses, metrics = ranking_loss(loss_fn, cfg, out.sums, out.counts, ref, ranks, mask)
            loop.backward(
                losses, micro, pair_weighted_accuracy(metrics, rows, micro.count, len(indices), pairs)
            )
        loop.optimizer_step(step, evaluate=held_out)

    return loop.finish(saver(loop.unwrap(), tokenizer), eval_metrics=held_out())
