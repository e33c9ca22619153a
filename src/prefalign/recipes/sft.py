"""Supervised fine-tuning on prompt/completion rows (loss on completion tokens only).

The loss is the mean negative log-likelihood over all completion tokens of an optimizer step:
each micro-batch contributes its token *sum* divided by the step's total completion-token count,
so the gradient does not depend on how the step is split into micro-batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from prefalign.config import DataConfig, ModelConfig, TrainConfig
from prefalign.feedback.formats import load_sft_rows
from prefalign.ops import shift_for_causal_lm, token_logps
from prefalign.recipes.common import (
    build_optimizer,
    clip_and_step,
    load_policy,
    make_accelerator,
    micro_batches,
    pad_sequences,
    save_final,
    step_plan,
    tokenize_prompt_completion,
)
from prefalign.run import Run, RunResult
from prefalign.utils import seed_everything


@dataclasses.dataclass
class SFTConfig:
    """Configuration of ``prefalign sft``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    output_dir: str = "runs/sft"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


def completion_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (B, T-1) and its mask (B, T-1) over completion tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels, mask = shift_for_causal_lm(logits, batch["input_ids"], batch["loss_mask"])
    return -token_logps(logits.float(), labels), mask.float()


def train(cfg: SFTConfig) -> RunResult:
    """Fine-tune a causal LM on completions as configured."""
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    model, tokenizer = load_policy(cfg.model)
    if not cfg.data.train:
        raise ValueError(
            "data.train is empty: name a JSONL/Parquet/CSV file of prompt/completion or messages rows"
        )
    report = str(run.output_dir / "rejected_rows.jsonl")
    rows = load_sft_rows(cfg.data.train, on_error=cfg.data.on_error, report_path=report)
    eval_rows = (
        load_sft_rows(cfg.data.eval, on_error=cfg.data.on_error, report_path=report) if cfg.data.eval else []
    )
    encoded = [tokenize_prompt_completion(tokenizer, r.prompt, r.completion, cfg.data) for r in rows]
    eval_encoded = [
        tokenize_prompt_completion(tokenizer, r.prompt, r.completion, cfg.data) for r in eval_rows
    ]
    pad_id = tokenizer.pad_token_id
    plan = step_plan(len(encoded), cfg.train)
    optimizer, scheduler = build_optimizer(model, cfg.train, len(plan))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    start = run.restore(model, optimizer, scheduler)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "sft"):
        indices = plan[step]
        # Completion tokens of the whole step (all processes): the denominator of the token mean.
        step_tokens = sum(len(encoded[i][1]) for i in indices)
        total_nll = 0.0
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            batch = pad_sequences([encoded[i][0] for i in micro], [encoded[i][1] for i in micro], pad_id)
            nll, mask = completion_nll(model, batch)
            token_sum = (nll * mask).sum()
            accelerator.backward(token_sum * accelerator.num_processes / step_tokens)
            total_nll += float(token_sum.detach())
        grad_norm = clip_and_step(model, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {
            "loss": total_nll * accelerator.num_processes / step_tokens,
            "tokens": step_tokens,
            "grad_norm": grad_norm,
            "learning_rate": scheduler.get_last_lr()[0],
        }
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_encoded:
            last["eval/loss"] = evaluate(model, eval_encoded, pad_id, cfg.train.micro_batch_size)
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(model), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(model)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics: dict[str, Any] = {}
    if eval_encoded:
        loss = evaluate(unwrapped, eval_encoded, pad_id, cfg.train.micro_batch_size)
        eval_metrics = {"loss": loss, "perplexity": float(torch.exp(torch.tensor(loss)))}
    return save_final(run, unwrapped, tokenizer, steps=len(plan), last=last, eval_metrics=eval_metrics)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, encoded: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int
) -> float:
    """Token-mean NLL over held-out completions."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        nll, mask = completion_nll(model, pad_sequences([p for p, _ in chunk], [c for _, c in chunk], pad_id))
        total += float((nll * mask).sum())
        count += int(mask.sum())
    model.train(was_training)
    return total / max(1, count)
