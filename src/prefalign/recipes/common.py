"""Pieces every recipe uses: tokenisation of rows, padding, the step plan, optimizer, accelerator, the final save.

These are plain functions; each recipe still reads top to bottom (setup, loop, save) and calls them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase, get_scheduler

from prefalign.config import DataConfig, ModelConfig, TrainConfig
from prefalign.feedback.formats import PreferencePair, load_pairs, split_pairs, split_rows
from prefalign.models import LoraSettings, load_causal_lm, merge_and_save
from prefalign.ops import sequence_logps, shift_for_causal_lm
from prefalign.run import Run, RunResult

Text = str | list[dict[str, Any]]
RowT = TypeVar("RowT")


# ---- text rendering ----------------------------------------------------------------------------
def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Text) -> str:
    """Prompt text as the model sees it: chat template for messages, the string itself otherwise."""
    if isinstance(prompt, list):
        if tokenizer.chat_template is None:
            return _plain_transcript(prompt) + "assistant: "
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt


def _plain_transcript(messages: list[dict[str, Any]]) -> str:
    """``role: content`` lines, for models without a chat template (e.g. a BERT reward encoder)."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def render_completion(tokenizer: PreTrainedTokenizerBase, prompt: Text, completion: Text) -> str:
    """Completion text including its end marker, so the model learns where to stop.

    For messages the chat template renders prompt + completion and we keep what follows the
    prompt (this picks up the template's own end-of-turn token); plain text gets the EOS token.
    """
    if isinstance(completion, list) and tokenizer.chat_template is None:
        return "\n".join(str(m["content"]) for m in completion) + (tokenizer.eos_token or "")
    if isinstance(completion, list):
        messages = (
            prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        ) + completion
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        head = render_prompt(tokenizer, prompt if isinstance(prompt, list) else messages[:1])
        if full.startswith(head):
            return full[len(head) :]
        return completion[-1]["content"] + (tokenizer.eos_token or "")
    return completion + (tokenizer.eos_token or "")


@dataclass
class TokenizedPair:
    """Prompt ids shared by both answers, and each answer's ids (already truncated)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def tokenize_prompt_completion(
    tokenizer: PreTrainedTokenizerBase, prompt: Text, completion: Text, data: DataConfig
) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) with the prompt left-truncated and the completion right-truncated."""
    prompt_text = render_prompt(tokenizer, prompt)
    # A chat template already writes its own BOS; plain prompts get the tokenizer's specials.
    prompt_ids = _encode(tokenizer, prompt_text, special=not isinstance(prompt, list))
    prompt_ids = prompt_ids[-data.max_prompt_length :] if data.max_prompt_length > 0 else prompt_ids
    completion_ids = _encode(tokenizer, render_completion(tokenizer, prompt, completion), special=False)
    room = max(1, data.max_length - len(prompt_ids))
    return prompt_ids, completion_ids[:room]


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, pair: PreferencePair, data: DataConfig
) -> TokenizedPair:
    prompt_ids, chosen = tokenize_prompt_completion(tokenizer, pair.prompt, pair.chosen, data)
    _, rejected = tokenize_prompt_completion(tokenizer, pair.prompt, pair.rejected, data)
    return TokenizedPair(prompt_ids, chosen, rejected)


def pad_sequences(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad prompt+completion rows into a batch.

    Returns ``input_ids`` (B, T), ``attention_mask`` (B, T) and ``loss_mask`` (B, T), the latter 1
    exactly on completion tokens (the tokens whose log-probabilities the losses use).
    """
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(p + c)
        attention[i, :n] = 1
        loss_mask[i, len(p) : n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def collate_pairs(rows: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows: one (2B, T) batch so one forward scores both."""
    prompts = [r.prompt_ids for r in rows] * 2
    completions = [r.chosen_ids for r in rows] + [r.rejected_ids for r in rows]
    return pad_sequences(prompts, completions, pad_id)


def completion_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each row's completion tokens, and their counts: ((B,), (B,)).

    ``batch`` is a :func:`pad_sequences` batch (``loss_mask`` marks the completion). Only the
    positions from the earliest completion token on go through the LM head (``logits_to_keep``):
    the prompt's logits are never used, and with a large vocabulary the head and its log-softmax
    are a large share of the step.
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
    return sequence_logps(logits.float(), labels, mask)


# ---- data --------------------------------------------------------------------------------------
def load_splits(
    load: Callable[..., list[RowT]],
    data: DataConfig,
    seed: int,
    report_dir: Any = None,
    *,
    what: str,
    split: Callable[..., tuple[list[RowT], list[RowT]]] = split_rows,
) -> tuple[list[RowT], list[RowT]]:
    """Training and held-out rows as the config asks (separate file, or a seeded split).

    ``load(source, on_error=, report_path=)`` reads one file; ``split(rows, eval_fraction=, seed=)``
    holds out ``data.eval_fraction`` of the training rows when there is no ``data.eval``; ``what``
    names the rows a file should hold, for the error when ``data.train`` is empty.
    """
    if not data.train:
        raise ValueError(f"data.train is empty: name {what}")
    report = str(report_dir / "rejected_rows.jsonl") if report_dir is not None else None
    rows = load(data.train, on_error=data.on_error, report_path=report)
    if data.eval:
        return rows, load(data.eval, on_error=data.on_error, report_path=report)
    if data.eval_fraction > 0:
        return split(rows, eval_fraction=data.eval_fraction, seed=seed)
    return rows, []


def load_pair_splits(
    data: DataConfig, seed: int, report_dir: Any = None
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and held-out pairs (:func:`load_splits`; a split is stratified by subset)."""
    what = "a JSONL/Parquet/CSV file or a built-in dataset such as 'hhh'"
    return load_splits(load_pairs, data, seed, report_dir, what=what, split=split_pairs)


def load_tokenized_pairs(
    tokenizer: PreTrainedTokenizerBase, data: DataConfig, seed: int, report_dir: Any = None
) -> tuple[list[TokenizedPair], list[TokenizedPair]]:
    """:func:`load_pair_splits`, each pair tokenised with :func:`tokenize_pair`."""
    train, held_out = load_pair_splits(data, seed, report_dir)
    train_rows = [tokenize_pair(tokenizer, p, data) for p in train]
    return train_rows, [tokenize_pair(tokenizer, p, data) for p in held_out]


# ---- schedule ----------------------------------------------------------------------------------
def step_plan(num_examples: int, train: TrainConfig) -> list[list[int]]:
    """Example indices for every optimizer step, fixed by the seed.

    Each epoch is a fresh permutation drawn from ``seed + epoch``; because the whole plan is a pure
    function of (num_examples, config), a resumed run picks up exactly where it stopped.
    """
    if num_examples == 0:
        raise ValueError("no training examples")
    per_epoch = math.ceil(num_examples / train.batch_size)
    total = train.max_steps if train.max_steps > 0 else max(1, math.ceil(per_epoch * train.epochs))
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < total:
        generator = torch.Generator().manual_seed(train.seed + epoch)
        order = torch.randperm(num_examples, generator=generator).tolist()
        for start in range(0, num_examples, train.batch_size):
            plan.append(order[start : start + train.batch_size])
            if len(plan) == total:
                break
        epoch += 1
    return plan


def micro_batches(indices: list[int], micro_batch_size: int, accelerator: Accelerator) -> list[list[int]]:
    """This process's share of one optimizer step, cut into micro-batches."""
    mine = indices[accelerator.process_index :: accelerator.num_processes]
    return [mine[i : i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)] or [[]]


def loss_scale(global_count: int, accelerator: Accelerator) -> float:
    """Factor turning a per-process *sum* of per-example losses into this step's mean.

    Dividing by the global example count (not the micro-batch size) makes the accumulated gradient
    identical for any micro-batch split; multiplying by the process count undoes DDP's averaging.
    """
    return accelerator.num_processes / max(1, global_count)


# ---- models and optimisation -------------------------------------------------------------------
def lora_settings(model: ModelConfig) -> LoraSettings | None:
    if not model.lora:
        return None
    targets: str | list[str] = model.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraSettings(
        r=model.lora_r, alpha=model.lora_alpha, dropout=model.lora_dropout, target_modules=targets
    )


def load_policy(model: ModelConfig) -> tuple[Any, Any]:
    """(policy, tokenizer): the causal LM to train, with LoRA adapters when ``model.lora``, dropout off."""
    policy, tokenizer = load_causal_lm(model.name, lora=lora_settings(model))
    disable_dropout(policy)
    return policy, tokenizer


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: log-ratios against the reference must not be noisy."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def make_accelerator() -> Accelerator:
    return Accelerator(cpu=not torch.cuda.is_available())


def build_optimizer(
    model: torch.nn.Module, train: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    # The fused kernel updates all tensors in one pass (about a fifth of a CPU step on small
    # models, docs/BENCHMARKS.md); it needs every parameter floating-point on a CPU or CUDA device.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(
        params, lr=train.learning_rate, weight_decay=train.weight_decay, fused=fused
    )
    if train.lr_scheduler not in ("constant", "linear", "cosine"):
        raise ValueError(
            f"train.lr_scheduler: expected constant, linear or cosine, got {train.lr_scheduler!r}"
        )
    name = "constant_with_warmup" if train.lr_scheduler == "constant" else train.lr_scheduler
    scheduler = get_scheduler(
        name, optimizer=optimizer, num_warmup_steps=train.warmup_steps, num_training_steps=total_steps
    )
    return optimizer, scheduler


def clip_and_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Accelerator,
    max_norm: float,
) -> float:
    """Clip (when asked), step optimizer and schedule, clear gradients; returns the pre-clip grad norm."""
    params = [p for p in model.parameters() if p.requires_grad]
    if max_norm > 0:
        norm = accelerator.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def mean_metrics(parts: list[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, float]:
    """Example-weighted mean of per-micro-batch metric dicts."""
    total = sum(n for n, _ in parts) or 1
    keys = parts[0][1].keys() if parts else []
    return {k: sum(float(m[k]) * n for n, m in parts) / total for k in keys}


# ---- save --------------------------------------------------------------------------------------
def save_final(
    run: Run,
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    steps: int,
    last: dict[str, float],
    eval_metrics: dict[str, Any],
) -> RunResult:
    """The end of a run: ``eval.json`` (when there are held-out metrics), then the merged model in
    ``final/``; returns the run's result. ``model`` is the unwrapped policy, ``steps`` the plan length."""
    if eval_metrics:
        run.write_json("eval.json", eval_metrics)
    final_dir = run.output_dir / "final"
    merge_and_save(model, tokenizer, final_dir)
    return RunResult(run.output_dir, final_dir, steps, last, eval_metrics)
