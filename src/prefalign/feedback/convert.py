"""Raw human feedback -> training rows: preference pairs, listwise rankings and SFT rows.

Each kind of feedback (see :mod:`prefalign.feedback.schema`) becomes training data in its own way:

=================  ======================================================  ==========================
feedback           pairs (:class:`PreferencePair`)                          other rows
=================  ======================================================  ==========================
rating             responses of one item ordered by score; ``strategy``    -
                   picks which pairs; ``margin`` = score gap
ranking            pairs implied by the order (all or adjacent levels);    :class:`ListwiseRow` for a
                   ``margin`` = rank-level difference                       Plackett-Luce loss
comparison         winner over loser; ``margin`` = strength when given      -
edit               edited over original                                     SFT: prompt -> edited
demonstration      demonstration over a model sample for the same prompt    SFT: prompt -> response
=================  ======================================================  ==========================

Rules every pair conversion shares (one place: :func:`_finalize`):

* **Self-pairs** (the same text, or the same response id, on both sides) are dropped: they teach
  nothing and :func:`~prefalign.feedback.formats.load_pairs` rejects them.
* **Duplicates** (same prompt, chosen and rejected, e.g. one comparison judged by several raters)
  are merged into one pair when ``dedupe=True`` (the default): its ``margin`` is the mean of the
  merged margins and its ``source`` counts the votes, e.g. ``"comparison:q7 votes=3"``.
* **Contradictions** (some raters say A>B, others B>A) keep the majority direction (``source`` then
  also says ``against=N``); an exact split is dropped, since no direction is supported. With
  ``dedupe=False`` every judgment stays its own row (contradictions are only counted), which is what
  a rater-aware loss wants.

Every conversion returns ``(rows, report)``; the :class:`ConversionReport` counts what was dropped
and why. Rows keep the input order (of the first judgment that produced them).

Text or conversational: a prompt given as a list of chat messages gives conversational rows, where
chosen/rejected (or the completion) are ``[{"role": "assistant", "content": ...}]`` as TRL's
conversational format wants; a response already given as messages is kept as is, and then a text
prompt becomes one user message so that the row stays of one kind. A batch whose feedback mixes text
and chat prompts gives a mixed list of rows; that is fine in memory, but
:func:`~prefalign.feedback.formats.save_pairs` writes one kind per file, so split such a list by
``pair.is_conversational`` before saving.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prefalign.feedback.formats import ListwiseRow, PreferencePair, SFTRow
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    Feedback,
    Ranking,
    Rating,
    RatingScale,
)
from prefalign.feedback.validate import FieldError, Text, check_text

RatingStrategy = Literal["best_vs_worst", "all", "adjacent", "outside_in"]
RankingStrategy = Literal["all", "adjacent"]
Samples = Mapping[str, Sequence[Text]] | Callable[[Text], Text]

_MAX_ORIGINS_SHOWN = 3  # a pair merged from many items names a few of them, then "+N more"


# --------------------------------------------------------------------------------------------- types


@dataclass
class ConversionReport:
    """What a conversion did with its input: how many rows came out and what was dropped, and why.

    ``ties``, ``self_pairs``, ``filtered`` and ``minority_votes`` count candidate pairs (one per judgment);
    ``duplicates_merged`` counts judgments folded into a pair already there; ``contradictions`` counts
    response pairs judged in both directions, ``split_dropped`` those of them dropped as exact splits.
    """

    records: int = 0  # input records
    rows: int = 0  # pairs (or SFT / listwise rows) returned
    ties: int = 0  # candidate pairs skipped as ties (equal score/rank, gap below min_margin, tie winner)
    self_pairs: int = 0  # candidate pairs whose two sides were the same text or response id
    duplicates_merged: int = 0  # judgments merged into an identical pair (dedupe)
    contradictions: int = 0  # response pairs that raters judged both ways
    split_dropped: int = 0  # ... of which exact splits, dropped
    minority_votes: int = 0  # judgments outvoted by the opposite direction, dropped
    unpaired: int = 0  # items or records with nothing to pair with (one response, no model sample)
    filtered: int = 0  # dropped by an option (min_strength, max_pairs_per_item) or a kind not converted

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for logs and the run's metrics)."""
        return asdict(self)


@dataclass(frozen=True)
class ConversionConfig:
    """Options of :func:`feedback_to_pairs`, one per keyword of the per-kind conversions."""

    scale: RatingScale | str | None = None
    """How rating values are read (``"0-10"``, ``"bad,medium,good"``...); required when there are ratings."""
    scores: Mapping[str, float] | None = None
    """Consensus score per response id (e.g. from :mod:`prefalign.feedback.aggregate`); else rater means."""
    rating_strategy: RatingStrategy = "best_vs_worst"
    """Which pairs a rated item gives: best_vs_worst, all, adjacent or outside_in (see ratings_to_pairs)."""
    min_margin: float = 0.0
    """Smallest score gap (in scale units) that makes a pair; smaller gaps are ties."""
    max_pairs_per_item: int | None = None
    """Keep at most this many pairs per rated item (the largest gaps); None = no cap."""
    normalize_margin: bool = True
    """Divide rating gaps by the scale's span, so margins are in [0, 1] whatever the scale."""
    ranking_strategy: RankingStrategy = "all"
    """Pairs from a ranking: every pair of rank levels ("all") or only neighbouring levels ("adjacent")."""
    include_ties: bool = False
    """Keep tied comparisons as a symmetric pair of rows with margin 0 (see comparisons_to_pairs)."""
    min_strength: float | None = None
    """Drop decisive comparisons with a strength below this (those without a strength are kept)."""
    samples: Samples | None = None
    """Model samples for demonstration pairs: item_id -> texts, or prompt -> one text; None = no pairs."""
    dedupe: bool = True
    """Merge identical pairs (mean margin, votes counted) and resolve contradictions by majority."""


@dataclass(frozen=True)
class _Vote:
    """One judgment that chosen beats rejected (or, with ``tie``, that they are equal), before merging."""

    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None
    origin: str  # "kind:item_id"
    position: int  # index of the (first) record it came from, to keep the input order across kinds
    tie: bool = False
    subset: str | None = None  # the record's metadata["subset"] (e.g. from a TRL file), kept on the pair


# --------------------------------------------------------------------------------------------- helpers


def _text_key(text: Text) -> str:
    # A string and a one-message list with the same content must not collide: prefix the kind.
    return "s" + text if isinstance(text, str) else "l" + json.dumps(text, sort_keys=True, ensure_ascii=False)


def as_messages(text: Text, role: str) -> list[dict[str, Any]]:
    """``text`` as one message of ``role``; a message list is returned as is."""
    return text if isinstance(text, list) else [{"role": role, "content": text}]


def match_shape(prompt: Text, *answers: Text) -> tuple[Text, ...]:
    """Mirror the prompt: all text, or (when the prompt or any answer is a message list) all messages."""
    if isinstance(prompt, str) and all(isinstance(a, str) for a in answers):
        return (prompt, *answers)
    return (as_messages(prompt, "user"), *(as_messages(a, "assistant") for a in answers))


def _expect(records: Sequence[Any], kind: type, function: str) -> None:
    for index, record in enumerate(records):
        if not isinstance(record, kind):
            raise TypeError(
                f"{function} takes {kind.__name__} records; record {index} is {type(record).__name__}"
            )


def _vote(
    report: ConversionReport,
    prompt: Text,
    chosen: Text,
    rejected: Text,
    *,
    origin: str,
    position: int,
    margin: float | None = None,
    chosen_id: str | None = None,
    rejected_id: str | None = None,
    tie: bool = False,
    subset: str | None = None,
) -> _Vote | None:
    """A judgment in TRL's shape, or None (counted) when both sides are the same response."""
    prompt, chosen, rejected = match_shape(prompt, chosen, rejected)
    if chosen == rejected or (chosen_id is not None and chosen_id == rejected_id):
        report.self_pairs += 1
        return None
    return _Vote(prompt, chosen, rejected, margin, origin, position, tie, subset)


def _subset_of(metadata: Mapping[str, Any]) -> str | None:
    subset = metadata.get("subset")
    return subset if isinstance(subset, str) and subset.strip() else None


def _source(origins: Iterable[str], votes: int, against: int = 0) -> str:
    unique = list(dict.fromkeys(origins))
    shown = ",".join(unique[:_MAX_ORIGINS_SHOWN])
    if len(unique) > _MAX_ORIGINS_SHOWN:
        shown += f",+{len(unique) - _MAX_ORIGINS_SHOWN} more"
    return f"{shown} votes={votes}" + (f" against={against}" if against else "")


def _mean_margin(votes: Sequence[_Vote]) -> float | None:
    margins = [v.margin for v in votes if v.margin is not None]
    return sum(margins) / len(margins) if margins else None


def _pair(votes: Sequence[_Vote], against: int = 0) -> PreferencePair:
    first = votes[0]
    subsets = {v.subset for v in votes}
    return PreferencePair(
        prompt=first.prompt,
        chosen=first.chosen,
        rejected=first.rejected,
        subset=first.subset if len(subsets) == 1 else None,  # merged votes from different subsets: none
        margin=_mean_margin(votes),
        source=_source((v.origin for v in votes), len(votes), against),
    )


def _finalize(votes: Sequence[_Vote], *, dedupe: bool, report: ConversionReport) -> list[PreferencePair]:
    """Merge duplicate judgments, settle contradictions by majority, and count what happened."""
    groups: dict[tuple[str, str, str, bool], list[_Vote]] = {}
    for v in votes:
        key = (_text_key(v.prompt), _text_key(v.chosen), _text_key(v.rejected), v.tie)
        groups.setdefault(key, []).append(v)
    # Contradictions are counted either way; only dedupe settles them.
    decisive = {key for key in groups if not key[3]}
    report.contradictions += sum(
        1 for p, c, r, _ in decisive if (p, r, c, False) in decisive and c < r
    )  # c < r: count each unordered pair once
    if not dedupe:
        pairs = [_pair([v]) for v in votes]
        report.rows += len(pairs)
        return pairs
    pairs = []
    done: set[tuple[str, str, str, bool]] = set()
    for key, group in groups.items():  # dicts keep first-seen order, so rows follow the input
        if key in done:
            continue
        done.add(key)
        prompt, chosen, rejected, tie = key
        reverse = (prompt, rejected, chosen, tie)
        opposed = groups.get(reverse, []) if not tie else []
        if opposed:
            done.add(reverse)
            if len(group) == len(opposed):
                report.split_dropped += 1
                continue
            if len(opposed) > len(group):
                group, opposed = opposed, group
            report.minority_votes += len(opposed)
        report.duplicates_merged += len(group) - 1
        pairs.append(_pair(group, against=len(opposed)))
    report.rows += len(pairs)
    return pairs


def _finalize_sft(
    rows: Sequence[tuple[SFTRow, str]], *, dedupe: bool, report: ConversionReport
) -> list[SFTRow]:
    if not dedupe:
        out = [SFTRow(row.prompt, row.completion, source=_source([origin], 1)) for row, origin in rows]
        report.rows += len(out)
        return out
    groups: dict[tuple[str, str], list[tuple[SFTRow, str]]] = {}
    for row, origin in rows:
        groups.setdefault((_text_key(row.prompt), _text_key(row.completion)), []).append((row, origin))
    out = []
    for group in groups.values():
        report.duplicates_merged += len(group) - 1
        first = group[0][0]
        out.append(SFTRow(first.prompt, first.completion, source=_source([o for _, o in group], len(group))))
    report.rows += len(out)
    return out


def _sft(prompt: Text, completion: Text) -> SFTRow:
    prompt, completion = match_shape(prompt, completion)
    return SFTRow(prompt=prompt, completion=completion)


# ------------------------------------------------------------------------------------------- ratings

# A strategy gets the score levels of one item, best first (each level: indices of equal-scored
# responses), and returns the candidate (better, worse) index pairs in the order it prefers them.
_Levels = list[list[int]]


def _best_vs_worst(levels: _Levels) -> list[tuple[int, int]]:
    # One pair per item, as UltraFeedback's binarised sets: the clearest contrast the item offers.
    return [(levels[0][0], levels[-1][0])]


def _all_pairs(levels: _Levels) -> list[tuple[int, int]]:
    flat = [i for level in levels for i in level]
    return [(a, b) for n, a in enumerate(flat) for b in flat[n + 1 :]]


def _adjacent(levels: _Levels) -> list[tuple[int, int]]:
    # Neighbouring score levels only: the hardest (smallest-gap) contrasts, each level tied to the next.
    return [(a, b) for upper, lower in zip(levels, levels[1:]) for a in upper for b in lower]


def _outside_in(levels: _Levels) -> list[tuple[int, int]]:
    # Best with worst, second best with second worst, ...: disjoint pairs, each response used once.
    flat = [i for level in levels for i in level]
    return [(flat[k], flat[-1 - k]) for k in range(len(flat) // 2)]


RATING_STRATEGIES: dict[str, Callable[[_Levels], list[tuple[int, int]]]] = {
    "best_vs_worst": _best_vs_worst,
    "all": _all_pairs,
    "adjacent": _adjacent,
    "outside_in": _outside_in,
}


@dataclass
class _Rated:
    response_id: str
    text: Text
    values: list[float] = field(default_factory=list)


def _rated_items(records: Sequence[Rating], scale: RatingScale) -> dict[str, tuple[int, Text, list[_Rated]]]:
    """item_id -> (index of its first rating, prompt, responses with their numeric values), first seen first."""
    items: dict[str, tuple[int, Text, dict[str, _Rated]]] = {}
    for index, r in enumerate(records):
        _, prompt, responses = items.setdefault(r.item_id, (index, r.prompt, {}))
        if r.prompt != prompt:
            raise ValueError(
                f"item {r.item_id!r}: rating {index} (rater {r.rater_id!r}) has a different prompt"
            )
        rated = responses.setdefault(r.response_id, _Rated(r.response_id, r.response))
        if r.response != rated.text:
            raise ValueError(
                f"item {r.item_id!r}: rating {index} gives response id {r.response_id!r} a different text"
            )
        try:
            rated.values.append(scale.to_number(r.value))
        except ValueError as exc:
            raise ValueError(f"item {r.item_id!r}: rating {index} (rater {r.rater_id!r}): {exc}") from None
    return {item: (first, prompt, list(rated.values())) for item, (first, prompt, rated) in items.items()}


def _score_levels(scores: Sequence[float]) -> _Levels:
    """Indices grouped by equal score, best first (stable within a level: first seen first)."""
    by_score: dict[float, list[int]] = {}
    for i, s in enumerate(scores):
        by_score.setdefault(s, []).append(i)
    return [by_score[s] for s in sorted(by_score, reverse=True)]


def _rating_votes(
    records: Sequence[Rating],
    report: ConversionReport,
    *,
    scale: RatingScale,
    scores: Mapping[str, float] | None,
    strategy: str,
    min_margin: float,
    max_pairs_per_item: int | None,
    normalize_margin: bool,
) -> list[_Vote]:
    if strategy not in RATING_STRATEGIES:
        raise ValueError(
            f"unknown rating strategy {strategy!r}; choose one of {', '.join(RATING_STRATEGIES)}"
        )
    if max_pairs_per_item is not None and max_pairs_per_item < 1:
        raise ValueError(f"max_pairs_per_item must be a positive integer or None, got {max_pairs_per_item}")
    if not math.isfinite(min_margin) or min_margin < 0:
        raise ValueError(f"min_margin must be a non-negative number, got {min_margin}")
    low, high = scale.span
    unit = (high - low) if normalize_margin else 1.0
    votes: list[_Vote] = []
    for item, (position, prompt, responses) in _rated_items(records, scale).items():
        if len(responses) < 2:
            report.unpaired += 1
            continue
        item_scores = []
        for r in responses:
            score = scores.get(r.response_id) if scores is not None else None
            if score is None:
                score = sum(r.values) / len(r.values)
            elif not math.isfinite(score):
                raise ValueError(f"scores[{r.response_id!r}] is {score}; expected a finite number")
            item_scores.append(float(score))
        candidates = []
        for better, worse in RATING_STRATEGIES[strategy](_score_levels(item_scores)):
            gap = item_scores[better] - item_scores[worse]
            if gap <= 0 or gap < min_margin:
                report.ties += 1
            else:
                candidates.append((better, worse, gap))
        if max_pairs_per_item is not None and len(candidates) > max_pairs_per_item:
            # Keep the widest gaps (the most certain preferences), then restore the strategy's order.
            keep = sorted(range(len(candidates)), key=lambda k: -candidates[k][2])[:max_pairs_per_item]
            report.filtered += len(candidates) - max_pairs_per_item
            candidates = [candidates[k] for k in sorted(keep)]
        for better, worse, gap in candidates:
            vote = _vote(
                report,
                prompt,
                responses[better].text,
                responses[worse].text,
                origin=f"rating:{item}",
                position=position,
                margin=gap / unit,
                chosen_id=responses[better].response_id,
                rejected_id=responses[worse].response_id,
            )
            if vote is not None:
                votes.append(vote)
    return votes


def ratings_to_pairs(
    records: Sequence[Rating],
    *,
    scale: RatingScale | str,
    scores: Mapping[str, float] | None = None,
    strategy: RatingStrategy = "best_vs_worst",
    min_margin: float = 0.0,
    max_pairs_per_item: int | None = None,
    normalize_margin: bool = True,
    dedupe: bool = True,
) -> tuple[list[PreferencePair], ConversionReport]:
    """Pairs from ratings: responses of one item, ordered by score, with the score gap as ``margin``.

    Ratings are grouped by ``item_id`` and, within an item, by ``response_id``. A response's score is
    ``scores[response_id]`` when given (a consensus from aggregation, which corrects for harsh and
    lenient raters), else the mean of its raters' values (labels through ``scale``: bad=0, medium=1...).
    ``strategy`` picks the pairs from the responses ordered best first:

    * ``"best_vs_worst"``: one pair per item, the best against the worst (first seen wins a tie);
    * ``"all"``: every pair of responses with different scores;
    * ``"adjacent"``: each score level against the next lower one;
    * ``"outside_in"``: best with worst, second best with second worst...; each response used once.

    A pair whose gap is 0 or below ``min_margin`` (scale units) is a tie and skipped; an item with one
    response yields nothing. ``max_pairs_per_item`` keeps an item's widest gaps. ``margin`` is the gap,
    divided by the scale's span when ``normalize_margin`` (so it lies in [0, 1] on any scale; consensus
    scores on another scale are divided by the same span).
    """
    _expect(records, Rating, "ratings_to_pairs")
    report = ConversionReport(records=len(records))
    votes = _rating_votes(
        records,
        report,
        scale=RatingScale.parse(scale),
        scores=scores,
        strategy=strategy,
        min_margin=min_margin,
        max_pairs_per_item=max_pairs_per_item,
        normalize_margin=normalize_margin,
    )
    return _finalize(votes, dedupe=dedupe, report=report), report


# ------------------------------------------------------------------------------------------ rankings


def _ranking_level_pairs(n_levels: int, strategy: str) -> list[tuple[int, int]]:
    if strategy == "all":
        return [(i, j) for i in range(n_levels) for j in range(i + 1, n_levels)]
    return [(i, i + 1) for i in range(n_levels - 1)]


RANKING_STRATEGIES = ("all", "adjacent")


def _ranking_votes(records: Sequence[Ranking], report: ConversionReport, *, strategy: str) -> list[_Vote]:
    if strategy not in RANKING_STRATEGIES:
        raise ValueError(
            f"unknown ranking strategy {strategy!r}; choose one of {', '.join(RANKING_STRATEGIES)}"
        )
    votes: list[_Vote] = []
    for position, record in enumerate(records):
        levels = record.ordered()
        # Tied responses never form a pair; count them once per tie, whatever the strategy.
        report.ties += sum(len(level) * (len(level) - 1) // 2 for level in levels)
        for i, j in _ranking_level_pairs(len(levels), strategy):
            for better in levels[i]:
                for worse in levels[j]:
                    # Margin in levels, not the rater's numbers: 1,1,3 and 1,1,2 are the same order.
                    vote = _vote(
                        report,
                        record.prompt,
                        better.text,
                        worse.text,
                        origin=f"ranking:{record.item_id}",
                        position=position,
                        margin=float(j - i),
                        chosen_id=better.id,
                        rejected_id=worse.id,
                    )
                    if vote is not None:
                        votes.append(vote)
    return votes


def rankings_to_pairs(
    records: Sequence[Ranking], *, strategy: RankingStrategy = "all", dedupe: bool = True
) -> tuple[list[PreferencePair], ConversionReport]:
    """Pairs implied by rankings: every pair of rank levels (``"all"``) or neighbouring levels only.

    Unranked responses are left out and tied responses never form a pair. ``margin`` is the difference
    in rank levels (1 for neighbours), counted over the ranks actually given, so gaps in the rater's
    numbering (1, 1, 3) do not inflate it.
    """
    _expect(records, Ranking, "rankings_to_pairs")
    report = ConversionReport(records=len(records))
    votes = _ranking_votes(records, report, strategy=strategy)
    return _finalize(votes, dedupe=dedupe, report=report), report


def rankings_to_listwise(records: Sequence[Ranking]) -> tuple[list[ListwiseRow], ConversionReport]:
    """One :class:`ListwiseRow` per ranking: ranked responses best first, ties as equal ranks.

    Unranked responses are dropped. When two responses of a ranking have the same text only the better
    ranked one is kept (a self-pair); a ranking left with fewer than two responses gives no row.
    """
    _expect(records, Ranking, "rankings_to_listwise")
    report = ConversionReport(records=len(records))
    rows = []
    for record in records:
        responses: list[Text] = []
        ranks: list[int] = []
        seen: set[str] = set()
        for level, group in enumerate(record.ordered(), start=1):
            for response in group:
                shaped = match_shape(record.prompt, response.text)[1]
                if _text_key(shaped) in seen:
                    report.self_pairs += 1
                    continue
                seen.add(_text_key(shaped))
                responses.append(shaped)
                ranks.append(level)
        if len(responses) < 2:
            report.unpaired += 1
            continue
        # Levels may have emptied out (all their texts seen above): renumber to stay consecutive.
        dense = {r: k for k, r in enumerate(dict.fromkeys(ranks), start=1)}
        rows.append(
            ListwiseRow(
                prompt=match_shape(record.prompt, responses[0])[0],
                responses=responses,
                ranks=[dense[r] for r in ranks],
                source=_source([f"ranking:{record.item_id}"], 1),
            )
        )
    report.rows = len(rows)
    return rows, report


# --------------------------------------------------------------------------------------- comparisons


def _comparison_votes(
    records: Sequence[Comparison],
    report: ConversionReport,
    *,
    include_ties: bool,
    min_strength: float | None,
) -> list[_Vote]:
    votes: list[_Vote] = []
    for position, c in enumerate(records):
        origin = f"comparison:{c.item_id}"
        at = {"origin": origin, "position": position, "subset": _subset_of(c.metadata)}
        if c.winner == "tie":
            if not include_ties:
                report.ties += 1
                continue
            # Both orders with margin 0: under Bradley-Terry (and DPO) the two rows' losses together
            # are least when the two rewards are equal, i.e. a soft 0.5 label.
            both = [
                _vote(report, c.prompt, x, y, **at, margin=0.0, chosen_id=xi, rejected_id=yi, tie=True)
                for x, xi, y, yi in ((c.a, c.a_id, c.b, c.b_id), (c.b, c.b_id, c.a, c.a_id))
            ]
            votes.extend(v for v in both if v is not None)
            continue
        if min_strength is not None and c.strength is not None and c.strength < min_strength:
            report.filtered += 1
            continue
        chosen, chosen_id, rejected, rejected_id = (
            (c.a, c.a_id, c.b, c.b_id) if c.winner == "a" else (c.b, c.b_id, c.a, c.a_id)
        )
        vote = _vote(
            report,
            c.prompt,
            chosen,
            rejected,
            **at,
            margin=c.strength,
            chosen_id=chosen_id,
            rejected_id=rejected_id,
        )
        if vote is not None:
            votes.append(vote)
    return votes


def comparisons_to_pairs(
    records: Sequence[Comparison],
    *,
    include_ties: bool = False,
    min_strength: float | None = None,
    dedupe: bool = True,
) -> tuple[list[PreferencePair], ConversionReport]:
    """Pairs from pairwise comparisons: the winner is chosen; ``margin`` is the strength when given.

    Ties are skipped unless ``include_ties``, which keeps each tie as two rows (a over b and b over a,
    margin 0): their losses together pull the two rewards together. Tie rows merge only with tie rows,
    so a pair can appear both as a decisive row and as a tie row. ``min_strength`` drops decisive
    comparisons rated weaker than it; comparisons without a strength are kept (none was asked).
    """
    _expect(records, Comparison, "comparisons_to_pairs")
    report = ConversionReport(records=len(records))
    votes = _comparison_votes(records, report, include_ties=include_ties, min_strength=min_strength)
    return _finalize(votes, dedupe=dedupe, report=report), report


# --------------------------------------------------------------------------------------------- edits


def _edit_votes(records: Sequence[Edit], report: ConversionReport) -> list[_Vote]:
    votes = [
        _vote(
            report,
            e.prompt,
            e.edited,
            e.original,
            origin=f"edit:{e.item_id}",
            position=position,
            rejected_id=e.response_id,
        )
        for position, e in enumerate(records)
    ]
    return [v for v in votes if v is not None]


def edits_to_pairs(
    records: Sequence[Edit], *, dedupe: bool = True
) -> tuple[list[PreferencePair], ConversionReport]:
    """Pairs from edits: the edited response is chosen over the original (no margin: edits have no size).

    An edit that left the response unchanged is a self-pair and dropped.
    """
    _expect(records, Edit, "edits_to_pairs")
    report = ConversionReport(records=len(records))
    return _finalize(_edit_votes(records, report), dedupe=dedupe, report=report), report


def edits_to_sft(records: Sequence[Edit], *, dedupe: bool = True) -> tuple[list[SFTRow], ConversionReport]:
    """SFT rows from edits: prompt -> edited response (an unchanged response is still a good target)."""
    _expect(records, Edit, "edits_to_sft")
    report = ConversionReport(records=len(records))
    rows = [(_sft(e.prompt, e.edited), f"edit:{e.item_id}") for e in records]
    return _finalize_sft(rows, dedupe=dedupe, report=report), report


# ------------------------------------------------------------------------------------ demonstrations


def demonstrations_to_sft(
    records: Sequence[Demonstration], *, dedupe: bool = True
) -> tuple[list[SFTRow], ConversionReport]:
    """SFT rows from demonstrations: prompt -> the rater's response."""
    _expect(records, Demonstration, "demonstrations_to_sft")
    report = ConversionReport(records=len(records))
    rows = [(_sft(d.prompt, d.response), f"demonstration:{d.item_id}") for d in records]
    return _finalize_sft(rows, dedupe=dedupe, report=report), report


def _checked_sample(item_id: str, value: Any) -> Text:
    try:
        return check_text("sample", value)
    except FieldError as exc:
        raise ValueError(f"model sample for item {item_id!r}: {exc.message}") from None


def _samples_of(item_id: str, value: Any) -> list[Text]:
    """The samples listed for an item; a bare text or a single conversation counts as one sample."""
    if isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value)
    ):
        value = [value]  # else iterating would split a string into characters, a conversation into turns
    return [_checked_sample(item_id, s) for s in value]


def _demonstration_votes(
    records: Sequence[Demonstration], report: ConversionReport, *, samples: Samples
) -> list[_Vote]:
    cache: dict[str, Text] = {}  # a callable is asked once per distinct prompt
    votes: list[_Vote] = []
    for position, d in enumerate(records):
        if callable(samples):
            key = _text_key(d.prompt)
            if key not in cache:
                cache[key] = _checked_sample(d.item_id, samples(d.prompt))
            drawn: Sequence[Text] = [cache[key]]
        else:
            drawn = _samples_of(d.item_id, samples.get(d.item_id, ()))
        if not drawn:
            report.unpaired += 1
            continue
        for sample in drawn:
            vote = _vote(
                report, d.prompt, d.response, sample, origin=f"demonstration:{d.item_id}", position=position
            )
            if vote is not None:
                votes.append(vote)
    return votes


def demonstrations_to_pairs(
    records: Sequence[Demonstration], samples: Samples, *, dedupe: bool = True
) -> tuple[list[PreferencePair], ConversionReport]:
    """Pairs from demonstrations: the rater's answer is chosen over a model sample for the same prompt.

    ``samples`` is a mapping item_id -> sampled texts (one pair per sample; an item without samples is
    unpaired), or a callable prompt -> one sample, called once per distinct prompt. A sample equal to
    the demonstration is a self-pair and dropped. The pairs carry no margin.
    """
    _expect(records, Demonstration, "demonstrations_to_pairs")
    report = ConversionReport(records=len(records))
    votes = _demonstration_votes(records, report, samples=samples)
    return _finalize(votes, dedupe=dedupe, report=report), report


# ----------------------------------------------------------------------------------------- dispatch


def _config_rating_votes(records: list[Any], report: ConversionReport, cfg: ConversionConfig) -> list[_Vote]:
    if cfg.scale is None:
        raise ValueError("ratings need a scale: set ConversionConfig.scale (e.g. '1-5' or 'bad,medium,good')")
    return _rating_votes(
        records,
        report,
        scale=RatingScale.parse(cfg.scale),
        scores=cfg.scores,
        strategy=cfg.rating_strategy,
        min_margin=cfg.min_margin,
        max_pairs_per_item=cfg.max_pairs_per_item,
        normalize_margin=cfg.normalize_margin,
    )


def _config_demonstration_votes(
    records: list[Any], report: ConversionReport, cfg: ConversionConfig
) -> list[_Vote]:
    if cfg.samples is None:  # nothing to pair them with
        report.unpaired += len(records)
        return []
    return _demonstration_votes(records, report, samples=cfg.samples)


_VotesFn = Callable[[list[Any], ConversionReport, ConversionConfig], list[_Vote]]
_KIND_VOTES: dict[str, _VotesFn] = {
    "rating": _config_rating_votes,
    "ranking": lambda rs, report, cfg: _ranking_votes(rs, report, strategy=cfg.ranking_strategy),
    "comparison": lambda rs, report, cfg: _comparison_votes(
        rs, report, include_ties=cfg.include_ties, min_strength=cfg.min_strength
    ),
    "edit": lambda rs, report, cfg: _edit_votes(rs, report),
    "demonstration": _config_demonstration_votes,
}


def feedback_to_pairs(
    records: Sequence[Feedback], config: ConversionConfig | None = None
) -> tuple[list[PreferencePair], ConversionReport]:
    """Pairs from a mixed batch of feedback, each kind converted as its ``*_to_pairs`` function does.

    Merging and contradiction handling run once over all kinds, so a comparison and a ranking that
    agree on a pair give one pair with two votes (its margin is the mean of their margins, which are in
    different units; set ``dedupe=False`` to keep them apart). Demonstrations give pairs only with
    ``config.samples``; without it they are counted as unpaired (use :func:`feedback_to_sft`).
    """
    cfg = config or ConversionConfig()
    report = ConversionReport(records=len(records))
    by_kind: dict[str, list[int]] = {}  # kind -> positions of its records in the batch
    for index, record in enumerate(records):
        by_kind.setdefault(record.kind, []).append(index)
    votes: list[_Vote] = []
    for kind, positions in by_kind.items():
        # Each kind is converted on its own (ratings need all of an item's records together); then the
        # votes go back to batch positions so that rows follow the input order across kinds too.
        for v in _KIND_VOTES[kind]([records[i] for i in positions], report, cfg):
            votes.append(dataclasses.replace(v, position=positions[v.position]))
    votes.sort(key=lambda v: v.position)  # stable: votes of one record keep their order
    return _finalize(votes, dedupe=cfg.dedupe, report=report), report


def feedback_to_sft(
    records: Sequence[Feedback], *, dedupe: bool = True
) -> tuple[list[SFTRow], ConversionReport]:
    """SFT rows from a mixed batch: edits (prompt -> edited) and demonstrations (prompt -> response).

    Ratings, rankings and comparisons carry no target text of their own and are counted as filtered.
    """
    report = ConversionReport(records=len(records))
    rows: list[tuple[SFTRow, str]] = []
    for record in records:
        if isinstance(record, Edit):
            rows.append((_sft(record.prompt, record.edited), f"edit:{record.item_id}"))
        elif isinstance(record, Demonstration):
            rows.append((_sft(record.prompt, record.response), f"demonstration:{record.item_id}"))
        else:
            report.filtered += 1
    return _finalize_sft(rows, dedupe=dedupe, report=report), report


__all__ = [
    "RATING_STRATEGIES",
    "RANKING_STRATEGIES",
    "ConversionConfig",
    "ConversionReport",
    "ListwiseRow",  # defined in formats with the other row types; re-exported here
    "as_messages",
    "comparisons_to_pairs",
    "demonstrations_to_pairs",
    "demonstrations_to_sft",
    "edits_to_pairs",
    "edits_to_sft",
    "feedback_to_pairs",
    "feedback_to_sft",
    "match_shape",
    "rankings_to_listwise",
    "rankings_to_pairs",
    "ratings_to_pairs",
]
