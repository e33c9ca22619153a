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
``(seed, rater index)`` and the draws happen in a fixed order. The output is
:class:`prefalign.feedback.schema.Rating` records (``item_id`` = the prompt, ``response_id`` = the
completion, ``metadata["position"]`` = where it was shown), which the demo writes and reads back
with :func:`~prefalign.feedback.schema.save_feedback` / :func:`~prefalign.feedback.schema.load_feedback`
and aggregates with :func:`prefalign.feedback.aggregate.aggregate_ratings`, as it would real feedback.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from prefalign.feedback.schema import Rating, RatingScale

SCALE_MAX = 10
SCALE = RatingScale(0, SCALE_MAX)
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
) -> list[Rating]:
    """Every rater rates every item; returns :class:`Rating` records grouped by rater, then prompt.

    ``truth`` maps texts to scores in [-1, 1] (default: VADER compound). Items of one prompt are
    shown together, in an order each rater draws independently; ``metadata["position"]`` records the
    0-based place an item was shown at, so position bias can be audited later.
    """
    if truth is None:
        from prefalign.eval.metrics import vader_compound

        truth = vader_compound
    hidden = dict(zip((it.item_id for it in items), truth([it.response for it in items]), strict=True))
    by_prompt: dict[str, list[Item]] = {}
    for it in items:
        by_prompt.setdefault(it.prompt_id, []).append(it)
    records: list[Rating] = []
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
                    Rating(
                        rater_id=rater.rater_id,
                        item_id=it.prompt_id,
                        prompt=it.prompt,
                        response_id=it.item_id,
                        response=it.response,
                        value=rating,
                        timestamp=clock.isoformat(),
                        metadata={"position": position},
                    )
                )
    return records


def position_effects(
    records: Sequence[Rating], scores: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Per rater: mean residual (rating - consensus) when shown first, minus when shown later.

    ``scores[item_id][response_id]`` is the consensus (e.g. ``RatingConsensus.scores``); records
    without ``metadata["position"]`` are left out. A rater without both kinds of records gets 0.
    """
    first: dict[str, list[float]] = {}
    later: dict[str, list[float]] = {}
    for rec in records:
        position = rec.metadata.get("position")
        if position is None:
            continue
        residual = SCALE.to_number(rec.value) - scores[rec.item_id][rec.response_id]
        (first if position == 0 else later).setdefault(rec.rater_id, []).append(residual)
    raters = sorted({rec.rater_id for rec in records})
    return {
        r: (sum(first[r]) / len(first[r]) - sum(later[r]) / len(later[r]))
        if r in first and r in later
        else 0.0
        for r in raters
    }
