"""Reward-model inference: encoding, scoring, ensembles, ordinal levels and the pairwise report.

A reward model is a sequence classifier whose k outputs are k reward heads (k = 1 for a single
model, k > 1 for an ensemble trained by ``prefalign reward ensemble_size=k``). Several models
sharing a tokenizer are an ensemble too: their heads are pooled.

* :func:`encode_reward_text` turns a (prompt, completion) into the ids a reward model reads,
  rendered and encoded by :mod:`prefalign.tokens` as for a policy (the chat template when the
  tokenizer has one, the raw strings otherwise); :func:`collate_reward_rows` right-pads them.
* :func:`score_heads` is the forward used in training and inference; :func:`score_texts`,
  :func:`score_texts_with_uncertainty` and :func:`score_all_heads` score many rows without
  gradients, each batch on its model's device, results on the CPU.
* :func:`evaluate_pairs` scores preference pairs and reports them as RewardBench does
  (:func:`pairwise_report`).
* :func:`ordinal_level_probs` reads rewards through the cut points of an ordinal reward model
  (saved as ``rating_thresholds.json``, :func:`write_rating_thresholds`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from prefalign.losses.reward import ordered_thresholds
from prefalign.models.loading import unwrap_model
from prefalign.models.scoring import model_device
from prefalign.tokens import Text, encode_completion, encode_prompt, has_chat_template, right_pad
from prefalign.utils import atomic_write_text

RATING_THRESHOLDS_FILE = "rating_thresholds.json"
Models = torch.nn.Module | Sequence[torch.nn.Module]


# ---- encoding -----------------------------------------------------------------------------------
def encode_reward_text(
    tokenizer: Any, prompt: Text, completion: Text, *, max_length: int, max_prompt_length: int = 0
) -> list[int]:
    """Ids a reward model reads for one (prompt, completion): the prompt ids followed by the
    completion ids as :func:`prefalign.tokens.encode_prompt` and
    :func:`prefalign.tokens.encode_completion` give them for a policy (the chat template when the
    tokenizer has one; otherwise the raw prompt with the tokenizer's special tokens, e.g.
    ``[CLS] prompt [SEP]`` for a BERT encoder, then the completion and EOS when there is one).

    At most ``max_length`` ids: the prompt keeps its last ``max_prompt_length`` tokens (0: as many
    as leave one completion token), and the completion loses its end. Without a chat template the
    prompt's leading special tokens (``[CLS]``, BOS) stay when it is cut, since a classifier may
    read its score there.
    """
    limit = max(1, max_length - 1)
    cap = min(max_prompt_length, limit) if max_prompt_length > 0 else limit
    prompt_ids = encode_prompt(tokenizer, prompt)
    if len(prompt_ids) > cap:
        lead: list[int] = []
        if not has_chat_template(tokenizer):
            special = set(tokenizer.all_special_ids)
            while len(lead) < min(len(prompt_ids), cap - 1) and prompt_ids[len(lead)] in special:
                lead.append(prompt_ids[len(lead)])
        prompt_ids = lead + prompt_ids[len(prompt_ids) - (cap - len(lead)) :]
    completion_ids = encode_completion(tokenizer, prompt, completion)
    return prompt_ids + completion_ids[: max(1, max_length - len(prompt_ids))]


def collate_reward_rows(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (B, T) of encoded rows."""
    batch = right_pad(rows, [()] * len(rows), pad_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


# ---- scoring ------------------------------------------------------------------------------------
def score_heads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, k) reward of every head per row, fp32; gradients flow when enabled."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def head_count(model: torch.nn.Module) -> int:
    """Reward heads of a model (``config.num_labels``; 1 when it has none)."""
    config = getattr(unwrap_model(model), "config", None)
    return int(getattr(config, "num_labels", 1) or 1)


def _members(models: Models) -> list[torch.nn.Module]:
    return [models] if isinstance(models, torch.nn.Module) else list(models)


@torch.no_grad()
def score_all_heads(
    models: Models,
    tokenizer: Any,
    prompts: Sequence[Text],
    completions: Sequence[Text],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    max_prompt_length: int = 0,
) -> torch.Tensor:
    """(N, K) rewards of every head of every model (K = total heads), on the CPU.

    Models are scored in eval mode (restored afterwards), each batch on the model's own device.
    """
    members = _members(models)
    rows = [
        encode_reward_text(tokenizer, p, c, max_length=max_length, max_prompt_length=max_prompt_length)
        for p, c in zip(prompts, completions, strict=True)
    ]
    size = max(1, batch_size)
    columns = []
    for model in members:
        was_training = model.training
        model.eval()
        device = model_device(model)
        parts = []
        try:
            for start in range(0, len(rows), size):
                batch = collate_reward_rows(rows[start : start + size], tokenizer.pad_token_id)
                parts.append(score_heads(model, {k: v.to(device) for k, v in batch.items()}).cpu())
        finally:
            model.train(was_training)
        columns.append(torch.cat(parts) if parts else torch.zeros(0, head_count(model)))
    return torch.cat(columns, dim=1)


def ensemble_mean_std(heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) mean and (N,) unbiased standard deviation of (N, K) head rewards (std 0 when K = 1)."""
    if heads.shape[1] < 2:
        return heads.mean(dim=1), torch.zeros(heads.shape[0], dtype=heads.dtype)
    return heads.mean(dim=1), heads.std(dim=1, unbiased=True)


def score_texts_with_uncertainty(
    models: Models,
    tokenizer: Any,
    prompts: Sequence[Text],
    completions: Sequence[Text],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    max_prompt_length: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble reward and its uncertainty per row: (mean (N,), std (N,)) over all heads of all
    ``models`` (k heads of one model, or several models sharing ``tokenizer``)."""
    heads = score_all_heads(
        models,
        tokenizer,
        prompts,
        completions,
        batch_size=batch_size,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    )
    return ensemble_mean_std(heads)


def score_texts(
    models: Models,
    tokenizer: Any,
    prompts: Sequence[Text],
    completions: Sequence[Text],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    max_prompt_length: int = 0,
) -> torch.Tensor:
    """(N,) rewards of (prompt, completion) rows (an ensemble's mean)."""
    mean, _ = score_texts_with_uncertainty(
        models,
        tokenizer,
        prompts,
        completions,
        batch_size=batch_size,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    )
    return mean


def with_reward_heads(model: torch.nn.Module, n_heads: int) -> torch.nn.Module:
    """Replace a sequence classifier's 1-output ``score``/``classifier`` head by an ``n_heads``-output
    one (each new head drawn by the model's own initialiser); the model itself for ``n_heads == 1``."""
    if n_heads == 1:
        return model
    for name in ("score", "classifier"):
        old = getattr(model, name, None)
        if isinstance(old, torch.nn.Linear):
            new = torch.nn.Linear(old.in_features, n_heads, bias=old.bias is not None)
            model._init_weights(new)  # type: ignore[operator]
            setattr(model, name, new.to(device=old.weight.device, dtype=old.weight.dtype))
            model.config.num_labels = n_heads
            model.num_labels = n_heads
            return model
    raise ValueError(
        f"{n_heads} reward heads: {type(model).__name__} has no linear 'score'/'classifier' head"
    )


# ---- ordinal heads ------------------------------------------------------------------------------
class OrdinalRewardModel(torch.nn.Module):
    """A reward model plus the ordered cut points of a cumulative-logit rating model, per head.

    The cut points start evenly spaced around 0 (``softplus(0)`` apart) and are kept ordered by
    :func:`prefalign.losses.reward.ordered_thresholds`; they are saved next to the model by
    :func:`write_rating_thresholds`.
    """

    def __init__(self, backbone: torch.nn.Module, n_levels: int, n_heads: int) -> None:
        super().__init__()
        if n_levels < 2:
            raise ValueError(f"ordinal regression needs at least 2 levels, got {n_levels}")
        self.backbone = backbone
        spacing = float(torch.nn.functional.softplus(torch.tensor(0.0)))
        self.first = torch.nn.Parameter(torch.full((n_heads,), -spacing * (n_levels - 2) / 2))
        self.gaps = torch.nn.Parameter(torch.zeros(n_heads, n_levels - 2))

    def forward(self, **inputs: torch.Tensor) -> Any:
        return self.backbone(**inputs)

    def thresholds(self) -> torch.Tensor:
        """(k, L-1) increasing cut points of every head."""
        return torch.stack([ordered_thresholds(f, g) for f, g in zip(self.first, self.gaps, strict=True)])


def reward_scorer(model: torch.nn.Module) -> torch.nn.Module:
    """The sequence classifier that scores: the backbone of an :class:`OrdinalRewardModel`, any
    other (unwrapped) model itself."""
    model = unwrap_model(model)
    return model.backbone if isinstance(model, OrdinalRewardModel) else model


def ordinal_level_probs(rewards: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(N, L) probability of each rating level under a cumulative-logit model.

    ``P(y <= l) = sigmoid(theta_l - r)`` with increasing cut points ``theta`` (L-1,)
    (McCullagh 1980, eq. 2.3; the model :func:`prefalign.losses.reward.ordinal_rating_loss` trains).

    Args:
        rewards: (N,) rewards of one head.
        thresholds: (L-1,) that head's cut points.
    """
    inf = torch.tensor([float("inf")], dtype=rewards.dtype, device=rewards.device)
    cuts = torch.cat([-inf, thresholds.to(rewards), inf])
    cumulative = torch.sigmoid(cuts.unsqueeze(0) - rewards.unsqueeze(1))  # (N, L+1)
    return cumulative[:, 1:] - cumulative[:, :-1]


def write_rating_thresholds(final_dir: Path, levels: Sequence[str], thresholds: torch.Tensor) -> Path:
    """Write an ordinal reward model's level names and (k, L-1) cut points next to it."""
    path = Path(final_dir) / RATING_THRESHOLDS_FILE
    body = {"levels": list(levels), "thresholds": thresholds.detach().cpu().tolist()}
    atomic_write_text(path, json.dumps(body, indent=2))
    return path


def read_rating_thresholds(model_dir: Path) -> tuple[list[str], torch.Tensor]:
    """(level names, (k, L-1) cut points) saved by :func:`write_rating_thresholds`."""
    body = json.loads((Path(model_dir) / RATING_THRESHOLDS_FILE).read_text(encoding="utf-8"))
    return list(body["levels"]), torch.tensor(body["thresholds"], dtype=torch.float32)


# ---- the pairwise report ------------------------------------------------------------------------
class Pair(Protocol):
    """What the report reads of a preference pair (e.g. ``prefalign.feedback.formats.PreferencePair``)."""

    @property
    def prompt(self) -> Text: ...
    @property
    def chosen(self) -> Text: ...
    @property
    def rejected(self) -> Text: ...
    @property
    def subset(self) -> str | None: ...


def text_length(text: Text) -> int:
    """Characters of a completion (for messages, of all their contents)."""
    return len(text) if isinstance(text, str) else sum(len(str(m.get("content", ""))) for m in text)


def expected_calibration_error(probabilities: torch.Tensor, n_bins: int = 10) -> float:
    """ECE of pairwise win probabilities whose true answer is always "chosen wins".

    Each pair predicts its more probable side with confidence ``max(p, 1 - p)``; confidences in
    [0.5, 1] are cut into ``n_bins`` equal bins and ``ECE = sum_b (n_b / N) |accuracy_b -
    confidence_b|`` (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3). A pair at
    exactly p = 0.5 counts as wrong, as in the accuracy.

    Args:
        probabilities: (N,) ``P(chosen beats rejected)`` per pair.
    """
    if probabilities.numel() == 0:
        return 0.0
    p = probabilities.double().flatten()
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double()
    bins = ((confidence - 0.5) * 2 * n_bins).long().clamp(0, n_bins - 1)
    total = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, torch.ones_like(p))
    conf_sum = torch.zeros_like(total).index_add_(0, bins, confidence)
    right_sum = torch.zeros_like(total).index_add_(0, bins, correct)
    used = total > 0
    gap = (right_sum[used] - conf_sum[used]).abs()  # n_b * |acc_b - conf_b|
    return float(gap.sum() / p.numel())


def pairwise_report(
    pairs: Sequence[Pair],
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    chosen_std: torch.Tensor | None = None,
    rejected_std: torch.Tensor | None = None,
) -> dict[str, Any]:
    """RewardBench-style metrics of given rewards on pairs.

    RewardBench (Lambert et al. 2024, arXiv 2403.13787, sec. 4) counts a pair as right when
    ``r(chosen) > r(rejected)`` (a tie is wrong); a section's score is the accuracy over all its
    pairs and the leaderboard score the unweighted mean of sections: ``accuracy`` is over all pairs,
    ``subset_mean_accuracy`` over the subsets. Beside it stand the longer-answer baseline (how often
    the chosen answer is simply the longer one) and the calibration of ``P(chosen wins) =
    sigmoid(r_chosen - r_rejected)``, the Bradley-Terry reading of the rewards.

    Args:
        pairs: the N pairs (for subsets and answer lengths).
        chosen, rejected: (N,) rewards of the chosen and rejected answers.
        chosen_std, rejected_std: optional (N,) ensemble spread, reported as ``mean_uncertainty``.

    Returns:
        ``accuracy``, ``subset_mean_accuracy``, ``length_baseline_accuracy``, ``calibration_error``,
        ``num_pairs``, ``mean_margin``, ``subsets`` (name -> accuracy), ``subset_sizes`` and
        ``length_baseline_subsets``; pairs without a subset are grouped under ``"all"``.
    """
    if len(pairs) != chosen.numel() or chosen.shape != rejected.shape:
        raise ValueError(
            f"{len(pairs)} pairs but rewards of shapes {tuple(chosen.shape)} and {tuple(rejected.shape)}"
        )
    if not pairs:
        return {}
    chosen, rejected = chosen.double().flatten(), rejected.double().flatten()
    correct = (chosen > rejected).double()
    longer = torch.tensor(
        [float(text_length(p.chosen) > text_length(p.rejected)) for p in pairs], dtype=torch.float64
    )
    groups: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        groups.setdefault(pair.subset or "all", []).append(index)
    subsets = {name: float(correct[idx].mean()) for name, idx in sorted(groups.items())}
    report: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "subset_mean_accuracy": sum(subsets.values()) / len(subsets),
        "length_baseline_accuracy": float(longer.mean()),
        "calibration_error": expected_calibration_error(torch.sigmoid(chosen - rejected)),
        "num_pairs": len(pairs),
        "mean_margin": float((chosen - rejected).mean()),
        "subsets": subsets,
        "subset_sizes": {name: len(idx) for name, idx in sorted(groups.items())},
        "length_baseline_subsets": {name: float(longer[idx].mean()) for name, idx in sorted(groups.items())},
    }
    if chosen_std is not None and rejected_std is not None:
        report["mean_uncertainty"] = float(torch.cat([chosen_std, rejected_std]).double().mean())
    return report


def evaluate_pairs(
    models: Models,
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    max_length: int,
    max_prompt_length: int = 0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """:func:`pairwise_report` of a reward model (or ensemble) on pairs; ``mean_uncertainty`` is
    the ensemble spread when there are several heads. Each distinct (prompt, answer) is scored once
    (the pairs implied by a ranking or by ratings reuse every answer several times)."""
    if not pairs:
        return {}
    index: dict[str, int] = {}
    rows: list[tuple[Text, Text]] = []
    slots = []
    for pair in pairs:
        for answer in (pair.chosen, pair.rejected):
            key = json.dumps([pair.prompt, answer], sort_keys=True)
            if key not in index:
                index[key] = len(rows)
                rows.append((pair.prompt, answer))
            slots.append(index[key])
    heads = score_all_heads(
        models,
        tokenizer,
        [prompt for prompt, _ in rows],
        [answer for _, answer in rows],
        batch_size=batch_size,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    )
    mean, std = ensemble_mean_std(heads)
    chosen_slots, rejected_slots = torch.tensor(slots[0::2]), torch.tensor(slots[1::2])
    chosen, rejected = mean[chosen_slots], mean[rejected_slots]
    if heads.shape[1] > 1:
        return pairwise_report(
            pairs, chosen, rejected, chosen_std=std[chosen_slots], rejected_std=std[rejected_slots]
        )
    return pairwise_report(pairs, chosen, rejected)
