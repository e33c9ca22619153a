"""What several recipes share: loading data splits and the policy (with its reference), pairs
encoded and batched, the pairwise (DPO-family) loss of a batch, held-out evaluation in
micro-batches, the final save.

Recipes import this module and never each other; the step loop lives in :mod:`prefalign.train`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import torch

from prefalign.config import ConfigError, DataConfig, ModelConfig
from prefalign.feedback.formats import PreferencePair, load_pairs, split_pairs, split_rows
from prefalign.losses.preference import PAIRWISE_LOSSES, PairwiseLoss, with_sft_loss
from prefalign.models import LoraSettings, disable_dropout, is_peft_model, load_causal_lm, merge_and_save
from prefalign.tokens import Text, encode_prompt_completion, right_pad

RowT = TypeVar("RowT")


# ---- data --------------------------------------------------------------------------------------
def load_splits(
    load: Callable[..., list[RowT]],
    data: DataConfig,
    seed: int,
    report_dir: Path | None = None,
    *,
    split: Callable[..., tuple[list[RowT], list[RowT]]] = split_rows,
) -> tuple[list[RowT], list[RowT]]:
    """Training and held-out rows as the config asks (separate file, or a seeded split).

    ``load(source, on_error=, report_path=)`` reads one file; ``split(rows, eval_fraction=, seed=)``
    holds out ``data.eval_fraction`` of the training rows when there is no ``data.eval``.
    """
    report = str(report_dir / "rejected_rows.jsonl") if report_dir is not None else None
    rows = load(data.train, on_error=data.on_error, report_path=report)
    if data.eval:
        return rows, load(data.eval, on_error=data.on_error, report_path=report)
    if data.eval_fraction > 0:
        return split(rows, eval_fraction=data.eval_fraction, seed=seed)
    return rows, []


def load_pair_splits(
    data: DataConfig, seed: int, report_dir: Path | None = None
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and held-out pairs (:func:`load_splits`; a split is stratified by subset)."""
    return load_splits(load_pairs, data, seed, report_dir, split=split_pairs)


def encode(tokenizer: Any, prompt: Text, completion: Text, data: DataConfig) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) within ``data.max_length`` / ``data.max_prompt_length``."""
    return encode_prompt_completion(
        tokenizer, prompt, completion, max_length=data.max_length, max_prompt_length=data.max_prompt_length
    )


@dataclass
class EncodedPair:
    """Prompt ids shared by both answers, and each answer's ids (already truncated)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def encode_pair(tokenizer: Any, pair: PreferencePair, data: DataConfig) -> EncodedPair:
    prompt_ids, chosen = encode(tokenizer, pair.prompt, pair.chosen, data)
    _, rejected = encode(tokenizer, pair.prompt, pair.rejected, data)
    return EncodedPair(prompt_ids, chosen, rejected)


def pair_batch(rows: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows: one (2B, T) batch so one forward scores both."""
    prompts = [r.prompt_ids for r in rows] * 2
    completions = [r.chosen_ids for r in rows] + [r.rejected_ids for r in rows]
    return right_pad(prompts, completions, pad_id)


def pair_items(rows: Sequence[EncodedPair]) -> list[tuple[list[int], list[int]]]:
    """``[chosen_0, ..., chosen_n, rejected_0, ...]`` as (prompt_ids, completion_ids) for scoring."""
    return [(r.prompt_ids, r.chosen_ids) for r in rows] + [(r.prompt_ids, r.rejected_ids) for r in rows]


# ---- pairwise losses ---------------------------------------------------------------------------
class PairwiseSettings(Protocol):
    """The config fields a pairwise loss reads (a dataclass: DPOConfig, OnlineDPOConfig); the
    loss's keyword options are read from the fields of the same name."""

    loss: str
    beta: float
    label_smoothing: float
    gamma: float
    sft_coef: float


def check_pairwise_options(cfg: PairwiseSettings) -> None:
    """ConfigError when ``label_smoothing`` or a non-default ``gamma`` is set for a loss without it."""
    loss = PAIRWISE_LOSSES[cfg.loss]
    if cfg.label_smoothing and "label_smoothing" not in loss.options:
        raise ConfigError(f"label_smoothing: loss {cfg.loss!r} has no label smoothing; set it to 0")
    default_gamma = next(f.default for f in dataclasses.fields(cast(Any, cfg)) if f.name == "gamma")
    if cfg.gamma != default_gamma and "gamma" not in loss.options:
        raise ConfigError(f"gamma: loss {cfg.loss!r} has no target margin (gamma is for loss=simpo)")


def pair_loss(
    loss: PairwiseLoss,
    cfg: PairwiseSettings,
    logps: torch.Tensor,
    counts: torch.Tensor,
    ref: torch.Tensor | None,
    loss_fn: Callable[..., Any] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The configured loss of one :func:`pair_batch` batch.

    ``logps`` and ``counts`` (2B,) are the policy's summed log-probs of [chosen; rejected] and
    their token counts; ``ref`` the (B, 2) reference log-probs (None when reference-free).
    The loss's keyword options are read from the config fields of the same name. Returns (B,)
    losses and the loss's detached metrics.
    """
    counts = counts.clamp(min=1).to(logps.dtype)
    half = logps.shape[0] // 2
    scale = counts if loss.average_logps else torch.ones_like(counts)
    policy = logps / scale
    args = [policy[:half], policy[half:]]
    if loss.reference:
        assert ref is not None
        ref = ref.to(logps) / torch.stack([scale[:half], scale[half:]], dim=1)
        args += [ref[:, 0], ref[:, 1]]
    options = {k: getattr(cfg, k) for k in loss.options}
    out = (loss_fn or loss.fn)(*args, beta=cfg.beta, **options)
    if cfg.sft_coef:
        out = with_sft_loss(out, -logps[:half] / counts[:half], sft_coef=cfg.sft_coef)
    return out


# ---- models ------------------------------------------------------------------------------------
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


def load_policy_and_reference(
    model: ModelConfig, reference_model: str = "", *, need_reference: bool = True
) -> tuple[Any, torch.nn.Module | None, Any]:
    """(policy, reference, tokenizer). The reference is a frozen, dropout-free copy, or None when
    the policy is a LoRA model (its adapters off play the reference) or none is needed."""
    policy, tokenizer = load_policy(model)
    if not need_reference or is_peft_model(policy):
        return policy, None, tokenizer
    reference, _ = load_causal_lm(reference_model or model.name)
    reference.requires_grad_(False).eval()
    disable_dropout(reference)
    return policy, reference, tokenizer


def saver(model: torch.nn.Module, tokenizer: Any) -> Callable[[Path], Path]:
    """The final save of a policy: adapters merged, a plain folder ``from_pretrained`` loads."""
    return lambda final_dir: merge_and_save(model, tokenizer, final_dir)


# ---- evaluation --------------------------------------------------------------------------------
def weighted_means(
    parts: Sequence[tuple[int, dict[str, torch.Tensor]]], prefix: str = ""
) -> dict[str, float]:
    """Example-weighted means of per-chunk metric dicts, keys prefixed (e.g. ``eval/``)."""
    total = sum(n for n, _ in parts) or 1
    keys = parts[0][1].keys() if parts else []
    return {f"{prefix}{k}": sum(float(m[k]) * n for n, m in parts) / total for k in keys}
