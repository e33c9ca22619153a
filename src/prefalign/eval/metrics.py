"""Metrics for generated text: sentiment judges, diversity, length, KL to the reference, reward.

* :func:`vader_compound` — VADER compound score in [-1, 1] (the demo's hidden "gold" truth);
* :func:`textblob_polarity` — TextBlob pattern-lexicon polarity in [-1, 1], an independent second judge;
* :func:`strong_rate` — share of scores at or above a threshold (0.8 for VADER: clearly positive);
* :func:`distinct_n` — unique n-grams / total n-grams pooled over all samples;
* :func:`kl_to_reference` — Monte-Carlo KL(policy || reference) on the policy's own samples
  (scored by :mod:`prefalign.models.scoring`, estimated by :mod:`prefalign.ops.kl`);
* :func:`reward_scores` — scalar reward-model scores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import Any

import torch

from prefalign.models.reward import score_texts
from prefalign.models.scoring import completion_logps, model_device, reference_scope
from prefalign.ops import sequence_kl
from prefalign.tokens import right_pad

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


@lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound score of each text, in [-1, 1]."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


def textblob_polarity(texts: Sequence[str]) -> list[float]:
    """TextBlob polarity of each text, in [-1, 1] (pattern lexicon; no corpora download needed)."""
    from textblob import TextBlob

    return [float(TextBlob(t).sentiment.polarity) for t in texts]


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence."""
    return float(sum(values) / len(values)) if len(values) else math.nan


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (0 when either side is constant or shorter than 2)."""
    n = len(x)
    if n < 2:
        return 0.0
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else 0.0


def strong_rate(scores: Sequence[float], threshold: float = 0.8) -> float:
    """Share of scores >= ``threshold``."""
    return float(sum(s >= threshold for s in scores) / len(scores)) if len(scores) else math.nan


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (the unit of :func:`distinct_n` for strings)."""
    return _WORD.findall(text.lower())


def distinct_n(samples: Sequence[str] | Sequence[Sequence[Hashable]], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams, pooled over all samples.

    Strings are split with :func:`words`; any other sequence (e.g. token ids) is used as is.
    Returns 0 when there is no n-gram at all.
    """
    seen: set[tuple[Hashable, ...]] = set()
    total = 0
    for sample in samples:
        tokens = words(sample) if isinstance(sample, str) else list(sample)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _completion_token_logps(
    model: torch.nn.Module,
    rows: Sequence[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    batch_size: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) log-probs of each row's completion tokens, aligned at the first completion token,
    and the (N, C) bool mask of real tokens, on the CPU; scored by
    :func:`prefalign.models.scoring.completion_logps` in eval mode, without gradients."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    per_row: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), max(1, batch_size)):
                chunk = rows[start : start + max(1, batch_size)]
                batch = right_pad([p for p, _ in chunk], [c for _, c in chunk], pad_id)
                out = completion_logps(
                    model, {k: v.to(device) for k, v in batch.items()}, temperature=temperature
                )
                per_row += [out.token_logps[i][out.mask[i]].cpu() for i in range(len(chunk))]
    finally:
        model.train(was_training)
    width = max(len(r) for r in per_row)
    logps = torch.zeros(len(per_row), width)
    mask = torch.zeros(len(per_row), width, dtype=torch.bool)
    for i, row in enumerate(per_row):
        logps[i, : len(row)] = row
        mask[i, : len(row)] = True
    return logps, mask


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    stderr = float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), stderr


def kl_to_reference(
    policy: torch.nn.Module,
    samples: Sequence[Any],
    *,
    reference: torch.nn.Module | None = None,
    pad_id: int = 0,
    batch_size: int = 16,
    temperature: float = 1.0,
    reference_prompt_ids: Sequence[Sequence[int]] | None = None,
) -> dict[str, float]:
    """Estimate KL(policy || reference) per completion from the policy's own samples.

    Each completion's per-token log-probs under both models (:mod:`prefalign.models.scoring`) go
    through the estimators of :mod:`prefalign.ops.kl` (Schulman 2020, "Approximating KL
    Divergence"), summed over the completion's tokens: ``kl`` is the mean of the k1 sums
    ``sum_t [log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)]`` (unbiased, high variance; single
    samples can be negative), ``kl_k3`` the mean of the k3 sums (also unbiased, never negative per
    sample). The samples must come from the policy at the same ``temperature`` used here (the demo
    samples at temperature 1), otherwise they estimate something else. ``samples`` need
    ``prompt_ids`` and ``completion_ids`` (see :class:`prefalign.rollout.Sample`). With
    ``reference=None`` the policy must be a LoRA model and the reference is the same model with
    adapters disabled. ``reference_prompt_ids`` (one per sample) is what the reference reads instead
    of each sample's ``prompt_ids`` when the policy was prompted differently: a policy from
    conditional training reads the prompt plus a ``<|good|>`` token the reference does not know,
    and ``KL(pi(.|x, good) || ref(.|x))`` is the divergence of what it generates.

    Returns ``kl``, ``kl_stderr`` (standard error), ``kl_per_token`` (k1 sum over all tokens /
    tokens), ``kl_k3`` and ``kl_k3_stderr``; NaN when no sample has a completion token.
    """
    if reference_prompt_ids is not None and len(reference_prompt_ids) != len(samples):
        raise ValueError(
            f"reference_prompt_ids: {len(reference_prompt_ids)} prompts for {len(samples)} samples"
        )
    ref_prompts = reference_prompt_ids or [s.prompt_ids for s in samples]
    kept = [(s, p) for s, p in zip(samples, ref_prompts, strict=True) if len(s.completion_ids)]
    rows = [(list(s.prompt_ids), list(s.completion_ids)) for s, _ in kept]
    ref_rows = [(list(p), list(s.completion_ids)) for s, p in kept]
    keys = ("kl", "kl_stderr", "kl_per_token", "kl_k3", "kl_k3_stderr")
    if not rows:
        return dict.fromkeys(keys, math.nan)
    kw = {"pad_id": pad_id, "batch_size": batch_size, "temperature": temperature}
    logps, mask = _completion_token_logps(policy, rows, **kw)
    with reference_scope(policy, reference) as ref_model:
        ref_logps, _ = _completion_token_logps(ref_model, ref_rows, **kw)
    k1 = sequence_kl(logps.double(), ref_logps.double(), mask, estimator="k1")
    k3 = sequence_kl(logps.double(), ref_logps.double(), mask, estimator="k3")
    kl, kl_stderr = _mean_and_stderr(k1)
    kl_k3, kl_k3_stderr = _mean_and_stderr(k3)
    per_token = float(k1.sum() / mask.sum())
    return dict(zip(keys, (kl, kl_stderr, per_token, kl_k3, kl_k3_stderr), strict=True))


def reward_scores(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    tokenizer: Any,
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> list[float]:
    """Scalar reward of each (prompt, completion) from a trained ``prefalign reward`` model (or an
    ensemble: the heads' mean), via :func:`prefalign.models.reward.score_texts`."""
    scores = score_texts(model, tokenizer, prompts, completions, batch_size=batch_size, max_length=max_length)
    return [float(s) for s in scores]


def text_metrics(completions: Sequence[str], lengths: Sequence[int] | None = None) -> dict[str, float]:
    """Judge-free summary of a set of completions: gold (VADER), judge2 (TextBlob), diversity, length.

    ``lengths`` are token counts (e.g. ``len(sample.completion_ids)``); word counts are used without them.
    """
    gold = vader_compound(completions)
    judge2 = textblob_polarity(completions)
    if lengths is None:
        lengths = [len(words(c)) for c in completions]
    return {
        "gold_mean": mean(gold),
        "gold_strong_rate": strong_rate(gold, 0.8),
        "judge2_mean": mean(judge2),
        "distinct2": distinct_n(completions, 2),
        "mean_length": mean([float(n) for n in lengths]),
    }
