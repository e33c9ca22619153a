"""Supervised fine-tuning: maximise the likelihood of completion tokens (the prompt is context).

Rows are prompt/completion pairs (text or messages) or documents (``{"text": ...}``, no prompt).
A document is encoded by :func:`prefalign.tokens.encode_document` and trained on every token
after its first (the first has nothing before it to be predicted from).

The loss is the mean negative log-likelihood over all trained tokens of an optimizer step: each
row contributes its summed token NLL and the loop divides by the step's token count over every
process (``total=`` of :meth:`~prefalign.train.TrainLoop.micro_batches`), so neither the gradient
nor the logged loss depends on how the step is split into micro-batches or processes. Held-out
rows (``data.eval``, or ``data.eval_fraction`` of ``data.train``) give the token-mean NLL and its
perplexity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Annotated, Any

import torch

from prefalign.config import DataConfig, ModelConfig, OutputDir, TrainConfig
from prefalign.feedback.formats import SFTRow, load_sft_rows
from prefalign.models.scoring import completion_logps
from prefalign.recipes.common import encode, load_policy, load_splits, saver
from prefalign.tokens import encode_document, right_pad
from prefalign.train import MicroBatch, RunResult, TrainLoop, step_plan

TokenIds = tuple[list[int], list[int]]


@dataclasses.dataclass
class SFTConfig:
    """Configuration of ``prefalign sft``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    output_dir: Annotated[str, OutputDir()] = "runs/sft"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


def encode_row(tokenizer: Any, row: SFTRow, data: DataConfig) -> TokenIds:
    """(context_ids, trained_ids) of one row.

    A row with a prompt is its prompt and completion (:func:`prefalign.recipes.common.encode`); a
    document is its first token (context) and every later token (trained), within ``data.max_length``.
    """
    if isinstance(row.prompt, str) and not row.prompt and isinstance(row.completion, str):
        ids = encode_document(tokenizer, row.completion, max_length=data.max_length)
        return ids[:1], ids[1:]
    return encode(tokenizer, row.prompt, row.completion, data)


def row_nll(
    model: torch.nn.Module, rows: Sequence[TokenIds], pad_id: int, loop: TrainLoop
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) summed NLL of each row's trained tokens and (B,) how many there are (the scorer's mask)."""
    batch = loop.to_device(right_pad([p for p, _ in rows], [c for _, c in rows], pad_id))
    out = completion_logps(model, batch)
    return -(out.token_logps * out.mask).sum(dim=-1), out.mask.sum(dim=-1)


def step_token_mean(nll: torch.Tensor, micro: MicroBatch, examples: int, tokens: int) -> torch.Tensor:
    """What one micro-batch records as ``loss`` so the logged value is the step's token mean.

    The loop logs the example-weighted mean of the values its micro-batches record (``micro.count``
    of the step's ``examples`` rows, over every process); recording ``sum * examples / (tokens *
    count)`` therefore logs ``step NLL sum / tokens`` for every split. A placeholder records 0.
    """
    if not micro.count:
        return nll.new_zeros(())
    return nll.detach().sum() * examples / (max(1, tokens) * micro.count)


@torch.no_grad()
def evaluate(
    loop: TrainLoop, model: torch.nn.Module, rows: list[TokenIds], pad_id: int, batch_size: int
) -> dict[str, float]:
    """Token-mean NLL and perplexity of the current model on held-out rows."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        nll, counts = row_nll(model, rows[start : start + batch_size], pad_id, loop)
        total += float(nll.sum())
        tokens += int(counts.sum())
    model.train()
    loss = total / max(1, tokens)
    return {"eval/loss": loss, "eval/perplexity": math.exp(loss)}


def train(cfg: SFTConfig) -> RunResult:
    """Fine-tune a causal LM on completions (and documents) as configured."""
    loop = TrainLoop.open(cfg, "sft")
    policy, tokenizer = load_policy(cfg.model)
    pad_id = tokenizer.pad_token_id
    train_rows, eval_rows = load_splits(load_sft_rows, cfg.data, cfg.train.seed, loop.run.output_dir)
    encoded = [encode_row(tokenizer, r, cfg.data) for r in train_rows]
    eval_encoded = [encode_row(tokenizer, r, cfg.data) for r in eval_rows]
    plan = step_plan(len(encoded), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    loop.restore()

    def held_out() -> dict[str, float]:
        return evaluate(loop, model, eval_encoded, pad_id, cfg.train.micro_batch_size) if eval_encoded else {}

    for step in loop.steps(len(plan)):
        indices = plan[step]
        # The denominator of the token mean: trained tokens of the whole step, on every process.
        tokens = sum(len(encoded[i][1]) for i in indices)
        for micro in loop.micro_batches(indices, total=tokens):
            nll, _ = row_nll(model, [encoded[i] for i in micro.indices], pad_id, loop)
            loop.backward(nll, micro, {"loss": step_token_mean(nll, micro, len(indices), tokens)})
        loop.optimizer_step(step, {"tokens": tokens}, evaluate=held_out)

    return loop.finish(saver(loop.unwrap(), tokenizer), eval_metrics=held_out())
