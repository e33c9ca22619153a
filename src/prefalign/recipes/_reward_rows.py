"""The reward recipe's data preparation: pairs, rankings or rated responses (from rating records),
the texts each row asks a reward model to score, and the preference pairs that held-out rows imply.

This is not a recipe: only :mod:`prefalign.recipes.reward` imports it, and no other recipe does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefalign.config import ConfigError, DataConfig
from prefalign.feedback.formats import ListwiseRow, PreferencePair, load_listwise_rows, split_rows
from prefalign.recipes.common import load_pair_splits, load_splits
from prefalign.tokens import Text
from prefalign.train import console


@dataclasses.dataclass(frozen=True)
class RatedResponse:
    """One response with its (consensus or single) rating, for rating regression."""

    item_id: str
    prompt: Text
    response: Text
    target: float
    """The rating mapped to [0, 1] (lowest to highest point of the scale)."""
    level: int
    """The rating's level on an ordinal scale, 0 = worst (rounded for consensus means)."""


@dataclasses.dataclass(frozen=True)
class RatingLevels:
    """How ratings map to targets and levels."""

    low: float
    high: float
    names: list[str]
    """One name per level, worst first (empty when the scale has no whole-number steps)."""


def rating_levels(values: Sequence[float | str], *, rating_scale: str, ordinal: bool) -> RatingLevels:
    """The levels of ``rating_scale``, or (when empty) of the lowest to highest numeric value."""
    from prefalign.feedback.schema import RatingScale

    if rating_scale:
        scale = RatingScale.parse(rating_scale)
        if scale.labels is not None:
            return RatingLevels(0.0, float(len(scale.labels) - 1), list(scale.labels))
        low, high = scale.low, scale.high
    else:
        numbers = [float(v) for v in values if not isinstance(v, str)]
        if len(numbers) != len(values) or not numbers:
            raise ConfigError("rating_scale: label ratings need the scale, e.g. rating_scale=bad,medium,good")
        low, high = min(numbers), max(numbers)
        if low == high:
            raise ConfigError(f"every rating is {low:g}: nothing to regress on")
        console.print(f"rating scale read from the data: {low:g}-{high:g} (set rating_scale to fix it)")
    steps = high - low
    if ordinal and (steps != int(steps) or not 1 <= steps <= 100):
        raise ConfigError(f"rating_scale {low:g}-{high:g}: ordinal needs whole-number steps, 2 to 101 levels")
    names = [f"{low + i:g}" for i in range(int(steps) + 1)] if steps == int(steps) else []
    return RatingLevels(low, high, names)


def _split_by_item(records: list[Any], *, eval_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded split of rating records by item, so no prompt is in both halves."""
    items = sorted({r.item_id for r in records})
    _, held_items = split_rows(items, eval_fraction=eval_fraction, seed=seed)
    held = set(held_items)
    return [r for r in records if r.item_id not in held], [r for r in records if r.item_id in held]


def load_rated_splits(
    data: DataConfig,
    seed: int,
    report_dir: Path,
    *,
    rating_scale: str,
    consensus: str,
    ordinal: bool,
) -> tuple[list[RatedResponse], list[RatedResponse], RatingLevels]:
    """Training and held-out rated responses (one per response after ``consensus``, or one per
    rating for ``'none'``) and the rating levels."""
    from prefalign.feedback.schema import Rating, load_feedback

    def load(source: str, *, on_error: str, report_path: str | None) -> list[Rating]:
        records = load_feedback(
            source, scale=rating_scale or None, on_error=on_error, report_path=report_path
        )  # type: ignore[arg-type]
        ratings = [r for r in records if isinstance(r, Rating)]
        if not ratings:
            raise ConfigError(f"{source}: no rating records (the rating objectives train on ratings)")
        if len(ratings) < len(records):
            console.print(f"{source}: {len(records) - len(ratings)} non-rating records ignored")
        return ratings

    train, held = load_splits(load, data, seed, report_dir, split=_split_by_item)
    levels = rating_levels([r.value for r in train + held], rating_scale=rating_scale, ordinal=ordinal)
    rows = [
        rated_rows(part, levels, rating_scale=rating_scale, consensus=consensus) for part in (train, held)
    ]
    return rows[0], rows[1], levels


def rated_rows(
    records: list[Any], levels: RatingLevels, *, rating_scale: str, consensus: str
) -> list[RatedResponse]:
    """Rated responses of rating records: every rating (``consensus='none'``) or one consensus per
    (item, response) (``'mean'``, ``'median'``, ``'weighted'``, ``'dawid_skene'``)."""
    from prefalign.feedback.aggregate import aggregate_ratings
    from prefalign.feedback.schema import RatingScale

    if not records:
        return []
    scale = RatingScale.parse(rating_scale) if rating_scale else RatingScale(levels.low, levels.high)

    def row(rec: Any, value: float) -> RatedResponse:
        target = (value - levels.low) / (levels.high - levels.low)
        level = min(max(round(value - levels.low), 0), max(len(levels.names) - 1, 0))
        return RatedResponse(rec.item_id, rec.prompt, rec.response, target, level)

    if consensus == "none":
        return [row(r, scale.to_number(r.value)) for r in records]
    agreed = aggregate_ratings(records, scale, method=consensus)  # type: ignore[arg-type]
    first: dict[tuple[str, str], Any] = {}
    for rec in records:
        first.setdefault((rec.item_id, rec.response_id), rec)
    return [row(rec, agreed.scores[item][response]) for (item, response), rec in first.items()]


def load_ranking_splits(
    data: DataConfig, seed: int, report_dir: Path
) -> tuple[list[ListwiseRow], list[ListwiseRow]]:
    """Training and held-out rankings (listwise rows; a pair file loads as rankings of two)."""
    return load_splits(load_listwise_rows, data, seed, report_dir)


def load_reward_rows(
    kind: str,
    data: DataConfig,
    seed: int,
    report_dir: Path,
    *,
    rating_scale: str = "",
    consensus: str = "mean",
    ordinal: bool = False,
) -> tuple[list[Any], list[Any], RatingLevels | None]:
    """Training rows, held-out rows and (for ratings) the rating levels of one ``kind`` of data:
    'pairs' (:class:`PreferencePair`), 'rankings' (:class:`ListwiseRow`) or 'ratings'
    (:class:`RatedResponse`)."""
    if kind == "pairs":
        return *load_pair_splits(data, seed, report_dir), None
    if kind == "rankings":
        return *load_ranking_splits(data, seed, report_dir), None
    return load_rated_splits(
        data, seed, report_dir, rating_scale=rating_scale, consensus=consensus, ordinal=ordinal
    )


def row_texts(row: Any) -> list[tuple[Text, Text]]:
    """The (prompt, response) texts a reward model scores for one row: chosen then rejected of a
    pair, every response of a ranking, the one rated response."""
    if isinstance(row, PreferencePair):
        return [(row.prompt, row.chosen), (row.prompt, row.rejected)]
    if isinstance(row, ListwiseRow):
        return [(row.prompt, response) for response in row.responses]
    return [(row.prompt, row.response)]


def implied_pairs(rows: Sequence[Any]) -> list[PreferencePair]:
    """The preference pairs that held-out rows imply, for a RewardBench-style report.

    Pairs are themselves; a ranking gives every two responses of different rank; ratings of one item
    give every two responses with different (mean) ratings.
    """
    pairs: list[PreferencePair] = []
    # Ratings: item -> response -> (prompt, response, targets); single ratings are averaged first.
    by_item: dict[str, dict[str, tuple[Text, Text, list[float]]]] = {}
    for row in rows:
        if isinstance(row, PreferencePair):
            pairs.append(row)
        elif isinstance(row, ListwiseRow):
            for i, better in enumerate(row.responses):
                for j, worse in enumerate(row.responses):
                    if row.ranks[i] < row.ranks[j]:
                        pairs.append(PreferencePair(row.prompt, better, worse))
        else:
            key = json.dumps(row.response, sort_keys=True)
            entry = by_item.setdefault(row.item_id, {}).setdefault(key, (row.prompt, row.response, []))
            entry[2].append(row.target)
    for responses in by_item.values():
        means = [(prompt, text, sum(t) / len(t)) for prompt, text, t in responses.values()]
        for prompt, better, high in means:
            pairs.extend(PreferencePair(prompt, better, worse) for _, worse, low in means if high > low)
    return pairs
