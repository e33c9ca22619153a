"""Simulated human raters for the sentiment demo.

Each rater sees the completions of one prompt in a shuffled order (their own, seeded) and gives
every completion a 0-10 rating. The hidden truth is the completion's VADER compound score ``c`` in
[-1, 1], mapped to ``5 + 5 c``; raters add their own Gaussian noise and round to an integer in
[0, 10]. The default panel (:data:`DEFAULT_PANEL`) has five raters:

=========  =========  =================================================================
rater      noise sd   quirk
=========  =========  =================================================================
careful    0.5        --
steady     1.0        --
hasty      2.0        --
primacy    1.0        position bias: +2 for the first completion shown, +1 for the second
spammer    --         ignores the text: uniform random integer 0-10
=========  =========  =================================================================

Everything is deterministic given ``seed``: each rater's generator is seeded from
``(seed, rater index)`` and the draws happen in a fixed order. The output is plain feedback records
``{rater_id, item_id, prompt_id, response, rating, timestamp, position}`` written as JSONL, the
same shape real annotation tools produce.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SCALE_MAX = 10
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class RaterProfile:
    """One simulated rater."""

    rater_id: str
    noise_sd: float = 1.0
    """Standard deviation of the Gaussian noise added to the true 0-10 score."""
    position_bias: tuple[float, ...] = ()
    """Bonus added to the completion shown first, second, ... (empty: no position bias)."""
    spammer: bool = False
    """Ignore the text and answer uniformly at random."""


DEFAULT_PANEL: tuple[RaterProfile, ...] = (
    RaterProfile("careful", noise_sd=0.5),
    RaterProfile("steady", noise_sd=1.0),
    RaterProfile("hasty", noise_sd=2.0),
    RaterProfile("primacy", noise_sd=1.0, position_bias=(2.0, 1.0)),
    RaterProfile("spammer", spammer=True),
)


@dataclass(frozen=True)
class Item:
    """A completion to rate."""

    item_id: str
    prompt_id: str
    prompt: str
    response: str


def true_score(compound: float) -> float:
    """Map a VADER compound score in [-1, 1] onto the 0-10 rating scale."""
    return SCALE_MAX / 2 * (1.0 + compound)


def _clip_round(value: float) -> int:
    return int(min(SCALE_MAX, max(0, round(value))))


def simulate_ratings(
    items: Sequence[Item],
    panel: Sequence[RaterProfile] = DEFAULT_PANEL,
    *,
    seed: int = 0,
    truth: Callable[[Sequence[str]], list[float]] | None = None,
) -> list[dict[str, Any]]:
    """Every rater rates every item; returns feedback records grouped by rater, then prompt.

    ``truth`` maps texts to scores in [-1, 1] (default: VADER compound). Items of one prompt are
    shown together, in an order each rater draws independently; ``position`` records the 0-based
    place an item was shown at, so position bias can be audited later.
    """
    if truth is None:
        from prefalign.eval.metrics import vader_compound

        truth = vader_compound
    hidden = dict(zip((it.item_id for it in items), truth([it.response for it in items]), strict=True))
    by_prompt: dict[str, list[Item]] = {}
    for it in items:
        by_prompt.setdefault(it.prompt_id, []).append(it)
    records: list[dict[str, Any]] = []
    for r_index, rater in enumerate(panel):
        rng = random.Random(f"{seed}:{r_index}:{rater.rater_id}")
        clock = EPOCH + timedelta(hours=r_index)
        for prompt_id in sorted(by_prompt):
            shown = list(by_prompt[prompt_id])
            rng.shuffle(shown)
            for position, it in enumerate(shown):
                if rater.spammer:
                    rating = rng.randint(0, SCALE_MAX)
                else:
                    bias = rater.position_bias[position] if position < len(rater.position_bias) else 0.0
                    rating = _clip_round(
                        true_score(hidden[it.item_id]) + bias + rng.gauss(0.0, rater.noise_sd)
                    )
                clock += timedelta(seconds=5 + rng.randint(0, 40))
                records.append(
                    {
                        "rater_id": rater.rater_id,
                        "item_id": it.item_id,
                        "prompt_id": it.prompt_id,
                        "prompt": it.prompt,
                        "response": it.response,
                        "rating": rating,
                        "position": position,
                        "timestamp": clock.isoformat(),
                    }
                )
    return records


def write_records(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write feedback records as JSONL (one object per line); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read JSONL feedback records."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- aggregation ---------------------------------------------------------------------------------
@dataclass
class RaterStats:
    """How one rater agrees with the others."""

    rater_id: str
    num_ratings: int
    agreement: float
    """Pearson correlation of the rater's ratings with the leave-one-out consensus (other raters' mean)."""
    weight: float
    """Weight in the aggregate: the signal-to-noise ratio ``a^2 / (1 - a^2)`` of agreement ``a``; 0 for a spammer."""
    position_effect: float
    """Mean residual (rating - leave-one-out consensus) when shown first, minus when shown later."""
    suspected_spammer: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


def aggregate_ratings(
    records: Sequence[dict[str, Any]], *, spam_threshold: float = 0.2
) -> tuple[dict[str, float], list[RaterStats]]:
    """Reliability-weighted mean rating per item, and per-rater statistics.

    1. For each rater, the leave-one-out consensus of an item is the plain mean of the *other*
       raters' ratings; the rater's agreement is the Pearson correlation with it over all items.
    2. A rater whose agreement is below ``max(spam_threshold, 2.5 / sqrt(n))`` (``n`` ratings; the
       second term is ~2.5 standard errors of a zero correlation, so a random rater is not let
       through by chance on small panels) is flagged as a suspected spammer and gets weight 0. The others get ``a^2 / (1 - a^2)`` for agreement ``a``: if a rating is truth
       plus independent noise, this signal-to-noise ratio is proportional to 1 / noise variance,
       the weight that minimises the variance of the weighted mean.
    3. An item's score is the weighted mean of its ratings (plain mean if all weights are 0).
    """
    ratings: dict[str, dict[str, float]] = {}
    positions: dict[tuple[str, str], int] = {}
    for rec in records:
        ratings.setdefault(rec["item_id"], {})[rec["rater_id"]] = float(rec["rating"])
        positions[(rec["item_id"], rec["rater_id"])] = int(rec.get("position", -1))
    raters = sorted({rec["rater_id"] for rec in records})
    stats: list[RaterStats] = []
    for rater in raters:
        own, loo, first, later = [], [], [], []
        for item, by_rater in ratings.items():
            others = [v for k, v in by_rater.items() if k != rater]
            if rater not in by_rater or not others:
                continue
            consensus = sum(others) / len(others)
            own.append(by_rater[rater])
            loo.append(consensus)
            residual = by_rater[rater] - consensus
            (first if positions.get((item, rater)) == 0 else later).append(residual)
        agreement = pearson(own, loo)
        spam = agreement < max(spam_threshold, 2.5 / max(len(own), 1) ** 0.5)
        effect = (sum(first) / len(first) - sum(later) / len(later)) if first and later else 0.0
        a2 = min(max(agreement, 0.0), 0.99) ** 2
        stats.append(RaterStats(rater, len(own), agreement, 0.0 if spam else a2 / (1 - a2), effect, spam))
    weights = {s.rater_id: s.weight for s in stats}
    scores: dict[str, float] = {}
    for item, by_rater in ratings.items():
        total = sum(weights[r] for r in by_rater)
        if total > 0:
            scores[item] = sum(weights[r] * v for r, v in by_rater.items()) / total
        else:
            scores[item] = sum(by_rater.values()) / len(by_rater)
    return scores, stats
