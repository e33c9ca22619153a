"""Reward model from preference pairs with the Bradley-Terry loss.

The model is any sequence classifier with one output (the built-in ``minilm-l6``, or a causal LM
backbone whose scalar head reads the last non-pad token). Each pair is scored as prompt+answer for
both answers in one forward pass; the loss is -log sigmoid(r_chosen - r_rejected).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from prefalign.config import DataConfig, ModelConfig, TrainConfig
from prefalign.feedback.formats import PreferencePair
from prefalign.losses.reward import bradley_terry_loss
from prefalign.models import load_reward_model, merge_and_save
from prefalign.recipes.common import (
    Text,
    build_optimizer,
    clip_and_step,
    disable_dropout,
    load_pair_splits,
    lora_settings,
    loss_scale,
    make_accelerator,
    mean_metrics,
    micro_batches,
    render_completion,
    render_prompt,
    step_plan,
)
from prefalign.run import Run, RunResult
from prefalign.utils import seed_everything


@dataclasses.dataclass
class RewardConfig:
    """Configuration of ``prefalign reward``."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(name="tiny-reward"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    center_coef: float = 0.0
    """Weight of the (r_chosen + r_rejected)^2 penalty that keeps rewards centred near 0."""
    output_dir: str = "runs/reward"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Text], completions: list[Text], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenise prompt+completion rows for a sequence classifier, right-padded.

    Encoders with a separator token (BERT-style) get the prompt and completion as a text pair and
    lose prompt tokens first when too long; other models read the plain concatenation.
    """
    prompt_texts = [render_prompt(tokenizer, p) for p in prompts]
    completion_texts = [
        render_completion(tokenizer, p, c) if isinstance(c, list) else c
        for p, c in zip(prompts, completions, strict=True)
    ]
    if tokenizer.sep_token is not None:
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"  # keep the end of the prompt, next to the answer
        try:
            enc = tokenizer(
                prompt_texts,
                completion_texts,
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
        finally:
            tokenizer.truncation_side = side
    else:
        texts = [p + c for p, c in zip(prompt_texts, completion_texts, strict=True)]
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def score(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scalar reward per row, shape (B,)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()


@torch.no_grad()
def score_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Text],
    completions: list[Text],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> torch.Tensor:
    """Rewards of many (prompt, completion) rows, shape (N,)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = encode_texts(
            tokenizer,
            prompts[start : start + batch_size],
            completions[start : start + batch_size],
            max_length,
        )
        out.append(score(model, batch))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def pair_batch(
    tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], max_length: int
) -> dict[str, Any]:
    """Chosen rows then rejected rows, (2B, T)."""
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return encode_texts(tokenizer, prompts, completions, max_length)


def evaluate_pairs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferencePair],
    *,
    max_length: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """RewardBench-style accuracy (share of pairs with r_chosen > r_rejected), overall and per subset,
    beside the longer-answer baseline (share of pairs whose chosen answer is longer)."""
    if not pairs:
        return {}
    chosen = score_texts(
        model,
        tokenizer,
        [p.prompt for p in pairs],
        [p.chosen for p in pairs],
        batch_size=batch_size,
        max_length=max_length,
    )
    rejected = score_texts(
        model,
        tokenizer,
        [p.prompt for p in pairs],
        [p.rejected for p in pairs],
        batch_size=batch_size,
        max_length=max_length,
    )
    correct = (chosen > rejected).float()

    def length(text: Text) -> int:
        return len(text) if isinstance(text, str) else sum(len(m["content"]) for m in text)

    longer = torch.tensor([float(length(p.chosen) > length(p.rejected)) for p in pairs])
    subsets: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        subsets.setdefault(pair.subset or "all", []).append(i)
    return {
        "accuracy": float(correct.mean()),
        "length_baseline_accuracy": float(longer.mean()),
        "num_pairs": len(pairs),
        "mean_margin": float((chosen - rejected).mean()),
        "subsets": {name: float(correct[idx].mean()) for name, idx in sorted(subsets.items())},
    }


def train(cfg: RewardConfig) -> RunResult:
    """Train a reward model as configured."""
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    model, tokenizer = load_reward_model(cfg.model.name, lora=lora_settings(cfg.model))
    disable_dropout(model)
    train_pairs, eval_pairs = load_pair_splits(cfg.data, cfg.train.seed, run.output_dir)
    plan = step_plan(len(train_pairs), cfg.train)
    optimizer, scheduler = build_optimizer(model, cfg.train, len(plan))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    start = run.restore(model, optimizer, scheduler)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "reward"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        parts = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            rewards = score(
                model, pair_batch(tokenizer, [train_pairs[i] for i in micro], cfg.data.max_length)
            )
            half = len(micro)
            losses, metrics = bradley_terry_loss(rewards[:half], rewards[half:], center_coef=cfg.center_coef)
            accelerator.backward(losses.sum() * scale)
            parts.append((half, {"loss": losses.detach().mean(), **metrics}))
        grad_norm = clip_and_step(model, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {**mean_metrics(parts), "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]}
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_pairs:
            held_out = evaluate_pairs(model, tokenizer, eval_pairs, max_length=cfg.data.max_length)
            last["eval/accuracy"] = held_out["accuracy"]
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} acc {last.get('accuracy', 0):.2f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(model), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(model)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics = evaluate_pairs(unwrapped, tokenizer, eval_pairs, max_length=cfg.data.max_length)
    if eval_metrics:
        eval_metrics["split"] = {
            "eval": cfg.data.eval or f"{cfg.data.eval_fraction} of train",
            "seed": cfg.train.seed,
        }
        run.write_json("eval.json", eval_metrics)
    final_dir = run.output_dir / "final"
    merge_and_save(unwrapped, tokenizer, final_dir)
    return RunResult(run.output_dir, final_dir, len(plan), last, eval_metrics)
