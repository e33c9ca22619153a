"""A data-quality report on a batch of feedback: who judged what, how well raters agree, suspected
spammers, position and length bias, duplicates and contradictions.

:func:`inspect_feedback` is pure analysis over validated records (it reads and writes nothing) and
returns an :class:`InspectReport`; :func:`render_report` turns it into the text that
``prefalign data inspect`` prints, :meth:`InspectReport.as_dict` into strict JSON, and
:func:`plot_report` draws it to a PNG.

What each section measures:

* **agreement**: :func:`~prefalign.feedback.agreement.ratings_agreement` (Krippendorff's alpha at the
  scale's level: ordinal for a label scale, interval for a numeric one, nominal for unordered labels;
  Fleiss' kappa for labels; mean pairwise Cohen's kappa) and
  :func:`~prefalign.feedback.agreement.comparisons_agreement` (win/tie/loss, nominal alpha). A rater's
  repeated judgment of one unit counts once (the last one): agreement is between raters.
* **raters and spammers**: the rater summaries of :func:`~prefalign.feedback.aggregate.aggregate_ratings`
  (reliability-weighted), :func:`~prefalign.feedback.aggregate.aggregate_comparisons` (Bradley-Terry) and
  :func:`~prefalign.feedback.aggregate.aggregate_rankings` (Plackett-Luce). Their spammer rule flags a
  rater whose agreement with the others is below 0.1 or not significantly above 0; a rater who shares
  fewer than ``min_overlap`` judgments with anyone has no measurable agreement, so is reported as
  "cannot tell" (``spammer=None``) rather than flagged.
* **position bias**: the share of decisive comparisons won by the first-shown answer ``a``, with a
  Wilson 95% interval and the exact two-sided binomial p-value against 0.5; per rater the same, plus
  the noisy Bradley-Terry skill and bias logit (:func:`~prefalign.feedback.aggregate.noisy_bradley_terry`)
  once there are ``noisy_bt_min`` comparisons. A rater is flagged when they have at least
  :data:`BIAS_MIN_N` decisive comparisons, their share is at least :data:`BIAS_MIN_EFFECT` away from
  0.5, and the binomial test rejects 0.5 at 5% after a Bonferroni correction over the raters tested.
  Comparisons whose source does not record the display order (TRL, HH-RLHF and SHP rows) are left out.
* **length bias**: over the pairs the judgments imply (comparisons: winner vs loser; rankings: every
  pair of levels; ratings: every pair of responses of an item with different mean scores;
  one row per judgment, no merging), the share where the chosen answer is longer, in characters and in
  whitespace tokens (pairs of equal length left out), with interval and p-value; the mean lengths;
  and for ratings the Spearman correlation of the value with the response length.
* **duplicates**: exact repeats (same kind, rater, item, content and answer; timestamps and metadata
  ignored), one rater judging one unit twice with different answers (contradictions), comparisons
  with the same answer on both sides, and what :func:`~prefalign.feedback.convert.feedback_to_pairs`
  with default options would drop (ties, merged duplicates, contradictions between raters).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefalign.feedback.schema import (
    Comparison,
    Edit,
    Feedback,
    Ranking,
    Rating,
    RatingScale,
    text_id,
    to_dict,
)
from prefalign.feedback.validate import DataError, Text

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile (Wilson intervals)."""
MIN_OVERLAP = 5
"""Judgments a rater must share with other raters before a spammer call is made."""
NOISY_BT_MIN = 50
"""Comparisons (display order known) needed before the noisy Bradley-Terry per-rater bias is fitted."""
BIAS_MIN_N = 10
"""Decisive comparisons a rater needs before their position bias is tested."""
BIAS_MIN_EFFECT = 0.2
"""Smallest distance of a rater's first-shown share from 0.5 that is flagged as strong bias."""
BIAS_RULE = (
    f">= {BIAS_MIN_N} decisive comparisons, first-shown share >= {0.5 + BIAS_MIN_EFFECT:.1f} or "
    f"<= {0.5 - BIAS_MIN_EFFECT:.1f}, binomial p < 0.05 / raters tested"
)
JUDGMENT_KINDS = ("rating", "comparison", "ranking")


# --------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Share:
    """``k`` of ``n`` with a Wilson 95% interval and the exact two-sided binomial p-value against 0.5."""

    k: int
    n: int
    share: float | None
    low: float | None
    high: float | None
    p_value: float | None


@dataclass(frozen=True)
class AgreementSummary:
    """Inter-rater agreement of one kind of judgment (``"rating"`` or ``"comparison"``)."""

    kind: str
    level: str
    """The level of measurement of the headline ``alpha``."""
    alpha: float | None
    alphas: dict[str, float | None]
    fleiss_kappa: float | None
    mean_pairwise_kappa: float | None
    kappa_weights: str | None
    percent_agreement: float | None
    n_units: int
    units_multi: int
    """Units (a rated response, a compared pair) judged by two or more raters."""
    per_rater: dict[str, float | None]
    per_rater_metric: str


@dataclass(frozen=True)
class RaterRow:
    """One rater's judgments of one kind, as the aggregation saw them."""

    rater_id: str
    kind: str
    n: int
    shared: int
    """Judgments on units (ratings) or items (comparisons, rankings) another rater also judged."""
    agreement: float | None
    weight: float | None
    spammer: bool | None
    """True: flagged; False: agrees with the others; None: too little overlap to tell."""
    reason: str | None


@dataclass(frozen=True)
class RaterPosition:
    """One rater's first-shown wins."""

    rater_id: str
    first: Share
    skill: float | None
    bias_logit: float | None
    flagged: bool


@dataclass(frozen=True)
class PositionBias:
    """How often the first-shown answer wins, overall and per rater."""

    first: Share
    ties: int
    order_unknown: int
    """Comparisons left out because their source does not record which answer was shown first."""
    per_rater: list[RaterPosition]
    noisy_bt: bool
    global_bias_logit: float | None
    flagged: list[str]
    rule: str


@dataclass(frozen=True)
class LengthBias:
    """Does the chosen answer tend to be the longer one?"""

    n_pairs: int
    sources: dict[str, int]
    """Pairs per kind of judgment they came from."""
    chars: Share
    tokens: Share
    mean_chosen_chars: float | None
    mean_rejected_chars: float | None
    mean_chosen_tokens: float | None
    mean_rejected_tokens: float | None
    rating_length_spearman: float | None
    n_ratings: int
    chosen_chars: list[int] = field(default_factory=list, repr=False)
    rejected_chars: list[int] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Duplicates:
    """Repeated, contradictory and degenerate judgments."""

    exact: int
    """Records repeating an earlier one (kind, rater, item, content, answer)."""
    contradictions: int
    """(rater, unit) pairs judged two or more times with different answers."""
    self_pairs: int
    """Comparisons with the same answer on both sides."""
    examples: list[str]
    conversion: dict[str, int] | None
    """What the default pair conversion (best_vs_worst, merged) keeps and drops."""


@dataclass(frozen=True)
class InspectReport:
    """Everything ``prefalign data inspect`` reports; see the module docstring."""

    sources: dict[str, str]
    """File -> format it was read as."""
    n_records: int
    kinds: dict[str, int]
    n_raters: int
    n_items: int
    n_responses: int
    records_per_rater: dict[str, float]
    items_multi_rater: int
    scale: str | None
    agreement: list[AgreementSummary]
    raters: list[RaterRow]
    spammers: list[RaterRow]
    position: PositionBias | None
    length: LengthBias | None
    duplicates: Duplicates
    rejected: list[dict[str, Any]]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready dict (NaN -> None); the per-pair length lists are left out."""
        data = asdict(self)
        if data["length"] is not None:
            data["length"].pop("chosen_chars")
            data["length"].pop("rejected_chars")
        return _clean(data)


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _num(x: Any) -> float | None:
    """A finite float, or None (NaN, inf, None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------- helpers


def binomial_share(k: int, n: int) -> Share:
    """``k`` successes of ``n``: share, Wilson 95% interval, exact two-sided binomial p-value vs 0.5."""
    if n <= 0:
        return Share(k, 0, None, None, None, None)
    from scipy.stats import binom

    p = k / n
    z2 = Z95 * Z95
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Under p = 0.5 the distribution is symmetric: two-sided p = 2 P(X <= min(k, n - k)).
    p_value = min(1.0, 2.0 * float(binom.cdf(min(k, n - k), n, 0.5)))
    return Share(k, n, p, max(0.0, centre - half), min(1.0, centre + half), p_value)


def _plain(text: Text) -> str:
    """The words of a text or of a conversation's message contents."""
    if isinstance(text, str):
        return text
    parts: list[str] = []
    for message in text:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )
    return "\n".join(parts)


def text_length(text: Text) -> tuple[int, int]:
    """(characters, whitespace tokens) of a text or a conversation's message contents."""
    plain = _plain(text)
    return len(plain), len(plain.split())


def scale_spec(scale: RatingScale | None) -> str | None:
    """``"0-10"`` or ``"bad,medium,good"``: the form ``--scale`` takes."""
    if scale is None:
        return None
    if scale.labels is not None:
        return ",".join(scale.labels)
    return f"{scale.low:g}-{scale.high:g}"


def infer_scale(records: Sequence[Feedback]) -> RatingScale | None:
    """A numeric scale spanning the observed rating values; None for labels or no ratings."""
    values = [r.value for r in records if isinstance(r, Rating)]
    if not values or any(isinstance(v, str) for v in values):
        return None
    low, high = float(min(values)), float(max(values))
    return RatingScale(low, high if high > low else low + 1.0)


def _unit(record: Feedback) -> tuple[Hashable, ...]:
    """What one judgment is about: repeated judgments of a unit by one rater should agree."""
    if isinstance(record, Rating):
        return ("rating", record.item_id, record.response_id)
    if isinstance(record, Comparison):
        return ("comparison", record.item_id, *sorted((record.a_id, record.b_id)))
    if isinstance(record, Ranking):
        return ("ranking", record.item_id, tuple(sorted(r.id for r in record.responses)))
    if isinstance(record, Edit):
        return ("edit", record.item_id, record.response_id)
    return ("demonstration", record.item_id)


def _answer(record: Feedback) -> Hashable:
    """The judgment itself, comparable across repeats (a/b order and rank numbering normalised)."""
    if isinstance(record, Rating):
        v = record.value
        return v.strip().lower() if isinstance(v, str) else float(v)
    if isinstance(record, Comparison):
        if record.winner == "tie":
            return "tie"
        return record.a_id if record.winner == "a" else record.b_id
    if isinstance(record, Ranking):
        return tuple(tuple(sorted(r.id for r in group)) for group in record.ordered())
    if isinstance(record, Edit):
        return json.dumps(record.edited, sort_keys=True)
    return json.dumps(record.response, sort_keys=True)


def _exact_key(record: Feedback) -> str:
    row = to_dict(record)
    row.pop("timestamp", None)
    row.pop("metadata", None)
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


def _is_self_pair(c: Comparison) -> bool:
    return c.a_id == c.b_id or c.a == c.b


def _response_ids(record: Feedback) -> list[tuple[str, str]]:
    if isinstance(record, Rating):
        return [(record.item_id, record.response_id)]
    if isinstance(record, Comparison):
        return [(record.item_id, record.a_id), (record.item_id, record.b_id)]
    if isinstance(record, Ranking):
        return [(record.item_id, r.id) for r in record.responses]
    if isinstance(record, Edit):
        return [(record.item_id, record.response_id), (record.item_id, text_id(record.edited))]
    return [(record.item_id, text_id(record.response))]


def _last_per_unit(records: Sequence[Feedback]) -> list[Feedback]:
    """One judgment per (rater, unit): the last one (agreement statistics need one)."""
    last: dict[tuple[str, tuple[Hashable, ...]], Feedback] = {}
    for record in records:
        key = (record.rater_id, _unit(record))
        last.pop(key, None)  # keep the order of the last occurrences
        last[key] = record
    return list(last.values())


def shared_judgments(records: Sequence[Feedback]) -> dict[str, int]:
    """Per rater: judgments on what another rater also judged (a response for ratings, else an item)."""

    def key(record: Feedback) -> Hashable:
        return (record.item_id, record.response_id) if isinstance(record, Rating) else record.item_id

    raters_of: dict[Hashable, set[str]] = defaultdict(set)
    for record in records:
        raters_of[key(record)].add(record.rater_id)
    shared: Counter[str] = Counter()
    for record in records:
        shared[record.rater_id] += 0
        if len(raters_of[key(record)]) >= 2:
            shared[record.rater_id] += 1
    return dict(shared)


def spammer_reason(
    agreement: float | None, spammer: bool | None, shared: int, min_overlap: int
) -> str | None:
    """Why a rater is (or cannot be) flagged, in words."""
    if spammer is None:
        return f"only {shared} judgment(s) shared with other raters (< {min_overlap}): cannot tell"
    if not spammer:
        return None
    if agreement is None:
        return "flagged by the consensus method's spammer rule"
    if agreement < 0.1:
        return f"agreement {agreement:+.2f} with the others is below 0.1"
    return f"agreement {agreement:+.2f} with the others is not significantly above 0 (one-sided 5%)"


# -------------------------------------------------------------------------------------------- pieces


def _agreement(kind: str, records: Sequence[Feedback], scale: RatingScale | None) -> AgreementSummary:
    from prefalign.feedback.agreement import comparisons_agreement, ratings_agreement

    deduped = _last_per_unit(records)
    if kind == "rating":
        report = ratings_agreement(deduped, scale)  # type: ignore[arg-type]
        if scale is not None and scale.is_ordinal:
            level = "ordinal"
        elif "interval" in report.alpha:
            level = "interval"
        else:
            level = "nominal"
    else:
        report = comparisons_agreement(deduped)  # type: ignore[arg-type]
        level = "nominal"
    raters_per_unit: dict[Hashable, set[str]] = defaultdict(set)
    for record in deduped:
        raters_per_unit[_unit(record)].add(record.rater_id)
    return AgreementSummary(
        kind=kind,
        level=level,
        alpha=_num(report.alpha.get(level)),
        alphas={k: _num(v) for k, v in report.alpha.items()},
        fleiss_kappa=_num(report.fleiss_kappa),
        mean_pairwise_kappa=_num(report.mean_pairwise_kappa),
        kappa_weights=report.kappa_weights,
        percent_agreement=_num(report.percent_agreement),
        n_units=report.n_units,
        units_multi=sum(len(r) >= 2 for r in raters_per_unit.values()),
        per_rater={k: _num(v) for k, v in report.per_rater.items()},
        per_rater_metric=report.per_rater_metric,
    )


def consensus(
    kind: str,
    records: Sequence[Feedback],
    *,
    scale: RatingScale | None,
    method: str | None = None,
    calibrate: str | None = None,
) -> Any:
    """The aggregate of one kind of judgment (``RatingConsensus``, ``ComparisonConsensus`` or
    ``RankingConsensus``) with the default method unless ``method`` names one."""
    from prefalign.feedback import aggregate as ag

    if kind == "rating":
        return ag.aggregate_ratings(records, scale, method=method or "weighted", calibrate=calibrate)  # type: ignore[arg-type]
    if kind == "comparison":
        return ag.aggregate_comparisons(records, method=method or "bt")  # type: ignore[arg-type]
    return ag.aggregate_rankings(records)  # type: ignore[arg-type]


def rater_rows(kind: str, result: Any, records: Sequence[Feedback], *, min_overlap: int) -> list[RaterRow]:
    """The rater table of one aggregate, with the overlap guard on spammer calls."""
    shared = shared_judgments(records)
    rows = []
    for rater_id, summary in sorted(result.raters.items()):
        n_shared = shared.get(rater_id, 0)
        agreement = _num(summary.agreement) if n_shared else None  # nobody to agree with
        spammer: bool | None = bool(summary.spammer) if n_shared >= min_overlap else None
        rows.append(
            RaterRow(
                rater_id=rater_id,
                kind=kind,
                n=summary.n,
                shared=n_shared,
                agreement=agreement,
                weight=_num(summary.weight),
                spammer=spammer,
                reason=spammer_reason(agreement, spammer, n_shared, min_overlap),
            )
        )
    return rows


def _position(comparisons: Sequence[Comparison], order_unknown: int, *, noisy_bt_min: int) -> PositionBias:
    decisive = [c for c in comparisons if c.winner != "tie"]
    first = binomial_share(sum(c.winner == "a" for c in decisive), len(decisive))
    noisy = None
    if len(comparisons) >= noisy_bt_min:
        from prefalign.feedback.aggregate import aggregate_comparisons

        noisy = aggregate_comparisons(comparisons, method="noisy_bt")
    by_rater: dict[str, list[Comparison]] = defaultdict(list)
    for c in decisive:
        by_rater[c.rater_id].append(c)
    for c in comparisons:  # raters with only ties still get a row
        by_rater.setdefault(c.rater_id, [])
    shares = {r: binomial_share(sum(c.winner == "a" for c in cs), len(cs)) for r, cs in by_rater.items()}
    tested = [r for r, s in shares.items() if s.n >= BIAS_MIN_N]
    cut = 0.05 / max(len(tested), 1)
    rows = []
    for rater_id in sorted(shares):
        s = shares[rater_id]
        flagged = (
            rater_id in tested
            and s.share is not None
            and abs(s.share - 0.5) >= BIAS_MIN_EFFECT - 1e-12
            and (s.p_value or 1.0) < cut
        )
        summary = noisy.raters.get(rater_id) if noisy is not None else None
        rows.append(
            RaterPosition(
                rater_id=rater_id,
                first=s,
                skill=_num(summary.skill) if summary is not None else None,
                bias_logit=_num(summary.bias_logit) if summary is not None else None,
                flagged=flagged,
            )
        )
    return PositionBias(
        first=first,
        ties=len(comparisons) - len(decisive),
        order_unknown=order_unknown,
        per_rater=rows,
        noisy_bt=noisy is not None,
        global_bias_logit=_num(noisy.global_bias_logit) if noisy is not None else None,
        flagged=[r.rater_id for r in rows if r.flagged],
        rule=BIAS_RULE,
    )


def _length(
    judgments: Sequence[Feedback], conv_scale: RatingScale | None, notes: list[str]
) -> LengthBias | None:
    from prefalign.feedback.convert import ConversionConfig, feedback_to_pairs

    usable = [r for r in judgments if not isinstance(r, Rating) or conv_scale is not None]
    try:
        pairs, _ = feedback_to_pairs(
            usable, ConversionConfig(scale=conv_scale, rating_strategy="all", dedupe=False)
        )
    except ValueError as exc:  # e.g. one item with two prompts: ratings cannot be paired
        notes.append(f"length bias: ratings left out ({exc})")
        usable = [r for r in usable if not isinstance(r, Rating)]
        pairs, _ = feedback_to_pairs(usable, ConversionConfig(dedupe=False))
    sources = Counter((p.source or "?").split(":", 1)[0] for p in pairs)
    chosen = [text_length(p.chosen) for p in pairs]
    rejected = [text_length(p.rejected) for p in pairs]

    def share(index: int) -> Share:
        longer = sum(c[index] > r[index] for c, r in zip(chosen, rejected))
        unequal = sum(c[index] != r[index] for c, r in zip(chosen, rejected))
        return binomial_share(longer, unequal)

    def mean(values: list[tuple[int, int]], index: int) -> float | None:
        return statistics.fmean(v[index] for v in values) if values else None

    ratings = [r for r in judgments if isinstance(r, Rating)]
    rho = None
    numbers: list[float] = []
    if ratings and (conv_scale is not None):
        numbers = [conv_scale.to_number(r.value) for r in ratings]
        lengths = [text_length(r.response)[0] for r in ratings]
        if len(ratings) >= 3 and len(set(numbers)) > 1 and len(set(lengths)) > 1:
            from scipy.stats import spearmanr

            rho = _num(spearmanr(numbers, lengths).statistic)
    if not pairs and not ratings:
        return None
    return LengthBias(
        n_pairs=len(pairs),
        sources=dict(sorted(sources.items())),
        chars=share(0),
        tokens=share(1),
        mean_chosen_chars=mean(chosen, 0),
        mean_rejected_chars=mean(rejected, 0),
        mean_chosen_tokens=mean(chosen, 1),
        mean_rejected_tokens=mean(rejected, 1),
        rating_length_spearman=rho,
        n_ratings=len(ratings),
        chosen_chars=[c[0] for c in chosen],
        rejected_chars=[r[0] for r in rejected],
    )


def _duplicates(records: Sequence[Feedback], conv_scale: RatingScale | None, notes: list[str]) -> Duplicates:
    from prefalign.feedback.convert import ConversionConfig, feedback_to_pairs

    seen: set[str] = set()
    exact = 0
    answers: dict[tuple[str, tuple[Hashable, ...]], set[Hashable]] = defaultdict(set)
    examples: list[str] = []
    for record in records:
        key = _exact_key(record)
        if key in seen:
            exact += 1
            if len(examples) < 5:
                examples.append(
                    f"exact repeat: {record.kind} by rater {record.rater_id} on item {record.item_id}"
                )
        seen.add(key)
        if record.kind in JUDGMENT_KINDS:
            answers[(record.rater_id, _unit(record))].add(_answer(record))
    contradictions = 0
    for (rater_id, unit), given in answers.items():
        if len(given) > 1:
            contradictions += 1
            if len(examples) < 10:
                examples.append(
                    f"rater {rater_id} judged {unit[0]} item {unit[1]} {len(given)} different ways"
                )
    self_pairs = sum(_is_self_pair(r) for r in records if isinstance(r, Comparison))
    usable = [r for r in records if not isinstance(r, Rating) or conv_scale is not None]
    conversion: dict[str, int] | None
    try:
        conversion = feedback_to_pairs(usable, ConversionConfig(scale=conv_scale))[1].as_dict()
    except ValueError as exc:
        notes.append(f"default conversion preview failed: {exc}")
        conversion = None
    return Duplicates(exact, contradictions, self_pairs, examples, conversion)


# -------------------------------------------------------------------------------------------- report


def inspect_feedback(
    records: Sequence[Feedback],
    *,
    scale: RatingScale | str | None = None,
    order_known: Sequence[bool] | None = None,
    sources: Mapping[str, str] | None = None,
    rejected: Sequence[DataError | Mapping[str, Any]] = (),
    min_overlap: int = MIN_OVERLAP,
    noisy_bt_min: int = NOISY_BT_MIN,
    notes: Sequence[str] = (),
) -> InspectReport:
    """Analyse a batch of feedback records (see the module docstring).

    ``scale`` reads rating values (default: unordered labels, or the observed numeric range);
    ``order_known[i]`` False marks a comparison whose ``a`` was not necessarily shown first (left out
    of position bias); ``sources`` (file -> format) and ``rejected`` (rows skipped on import) are
    carried into the report, and so are ``notes`` (lines for the report's Notes).
    """
    records = list(records)
    if order_known is not None and len(order_known) != len(records):
        raise ValueError(f"order_known has {len(order_known)} entries for {len(records)} records")
    parsed = RatingScale.parse(scale) if scale is not None else None
    notes = list(notes)
    ratings = [r for r in records if isinstance(r, Rating)]
    labels_without_scale = bool(ratings) and parsed is None and infer_scale(ratings) is None
    mixed = labels_without_scale and any(not isinstance(r.value, str) for r in ratings)
    # The scale for pairing ratings: the given one, else the observed numeric range.
    conv_scale = parsed if parsed is not None else infer_scale(ratings)
    if mixed:
        notes.append(
            "ratings mix numbers and labels (e.g. two Argilla questions) and no --scale was given: "
            "ratings are left out of agreement, spammer detection, length bias and pairs"
        )
    elif labels_without_scale:
        notes.append(
            "ratings are labels and no --scale was given: agreement is nominal, and ratings are left out "
            "of spammer detection, length bias and pairs; pass the labels worst first, e.g. --scale bad,medium,good"
        )
    elif ratings and parsed is None and conv_scale is not None:
        notes.append(f"ratings read on the observed range {scale_spec(conv_scale)}; pass --scale to set it")

    per_rater = Counter(r.rater_id for r in records)
    raters_of_item: dict[str, set[str]] = defaultdict(set)
    for r in records:
        raters_of_item[r.item_id].add(r.rater_id)
    responses = {key for r in records for key in _response_ids(r)}
    counts = sorted(per_rater.values())

    comparisons = [r for r in records if isinstance(r, Comparison)]
    clean_comparisons = [c for c in comparisons if not _is_self_pair(c)]
    rankings = [r for r in records if isinstance(r, Ranking)]

    agreement = []
    if ratings and not mixed:
        agreement.append(_agreement("rating", ratings, parsed))
    if clean_comparisons:
        agreement.append(_agreement("comparison", clean_comparisons, None))

    raters: list[RaterRow] = []
    groups: list[tuple[str, list[Any]]] = [
        ("rating", ratings if not labels_without_scale else []),
        ("comparison", clean_comparisons),
        ("ranking", rankings),
    ]
    for kind, group in groups:
        if group:
            result = consensus(kind, group, scale=parsed)
            raters.extend(rater_rows(kind, result, group, min_overlap=min_overlap))

    known = [True] * len(records) if order_known is None else list(order_known)
    ordered = [r for r, k in zip(records, known) if k and isinstance(r, Comparison) and not _is_self_pair(r)]
    unknown = sum(1 for r, k in zip(records, known) if not k and isinstance(r, Comparison))
    position = _position(ordered, unknown, noisy_bt_min=noisy_bt_min) if ordered else None
    if unknown:
        notes.append(
            f"position bias: {unknown} comparison(s) left out: their format (TRL, HH-RLHF, SHP) does not "
            "record which answer was shown first"
        )
    if position is not None and not position.noisy_bt:
        notes.append(
            f"per-rater noisy Bradley-Terry bias needs >= {noisy_bt_min} comparisons with known order "
            f"(have {len(ordered)})"
        )

    judgments = [
        r
        for r in records
        if r.kind in JUDGMENT_KINDS and not (isinstance(r, Comparison) and _is_self_pair(r))
    ]
    length = _length(judgments, conv_scale, notes) if judgments else None
    duplicates = _duplicates(records, conv_scale, notes)
    return InspectReport(
        sources=dict(sources or {}),
        n_records=len(records),
        kinds={k: v for k, v in sorted(Counter(r.kind for r in records).items(), key=lambda kv: -kv[1])},
        n_raters=len(per_rater),
        n_items=len(raters_of_item),
        n_responses=len(responses),
        records_per_rater=(
            {"min": counts[0], "median": statistics.median(counts), "max": counts[-1]} if counts else {}
        ),
        items_multi_rater=sum(len(v) >= 2 for v in raters_of_item.values()),
        scale=scale_spec(parsed if parsed is not None else conv_scale),
        agreement=agreement,
        raters=raters,
        spammers=[r for r in raters if r.spammer],
        position=position,
        length=length,
        duplicates=duplicates,
        rejected=[e.to_dict() if isinstance(e, DataError) else dict(e) for e in rejected],
        notes=notes,
    )


# ------------------------------------------------------------------------------------------- render


def plural(n: int, noun: str) -> str:
    """``"1 unit"``, ``"2 units"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _f(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_share(s: Share) -> str:
    """``8 of 10 (80.0%, 95% CI 49.0%-94.3%, p = 0.109 vs 50%)``."""
    if s.n == 0:
        return "no decisive cases"
    return (
        f"{s.k} of {s.n} ({_pct(s.share)}, 95% CI {_pct(s.low)}-{_pct(s.high)}, "
        f"p = {_f(s.p_value, '.3g')} vs 50%)"
    )


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str, indent: str = "  "
) -> list[str]:
    """Columns padded to a common width; ``align`` has one ``l`` or ``r`` per column."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = []
    for row in (header, *rows):
        cells = [str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _spam_cell(row: RaterRow) -> str:
    return {True: "YES", False: "no", None: "n/a"}[row.spammer]


def render_report(report: InspectReport) -> str:
    """The report as aligned plain text (what ``prefalign data inspect`` prints)."""
    out: list[str] = []
    n_files = len(report.sources)
    where = f" from {n_files} file{'s' if n_files != 1 else ''}" if n_files else ""
    out.append(f"{plural(report.n_records, 'record')}{where}")
    for path, fmt in report.sources.items():
        out.append(f"  {path}  ({fmt})")
    if report.scale:
        out.append(f"rating scale: {report.scale}")

    out += ["", "Records"]
    out += text_table(["kind", "records"], [[k, str(v)] for k, v in report.kinds.items()], "lr")
    rpr = report.records_per_rater
    out.append(
        f"  raters {report.n_raters}, items {report.n_items}, responses {report.n_responses}, "
        f"items judged by >= 2 raters {report.items_multi_rater}"
    )
    if rpr:
        out.append(f"  records per rater: min {rpr['min']:g}, median {rpr['median']:g}, max {rpr['max']:g}")

    out += ["", "Agreement"]
    if not report.agreement:
        out.append("  no ratings or comparisons")
    for a in report.agreement:
        kappa = "" if a.kappa_weights is None else f" ({a.kappa_weights})"
        out.append(
            f"  {a.kind}s: Krippendorff alpha ({a.level}) {_f(a.alpha)}; Fleiss kappa {_f(a.fleiss_kappa)}; "
            f"mean pairwise Cohen kappa{kappa} {_f(a.mean_pairwise_kappa)}; raw agreement {_f(a.percent_agreement)}"
        )
        out.append(f"    {plural(a.n_units, 'unit')}, {a.units_multi} judged by >= 2 raters")

    out += ["", "Raters"]
    if report.raters:
        rows = [
            [
                r.rater_id,
                r.kind,
                str(r.n),
                str(r.shared),
                _f(r.agreement, "+.2f"),
                _f(r.weight),
                _spam_cell(r),
            ]
            for r in report.raters
        ]
        out += text_table(["rater", "kind", "n", "shared", "agreement", "weight", "spammer"], rows, "llrrrrl")
    else:
        out.append("  no ratings, comparisons or rankings to aggregate")

    out += ["", "Suspected spammers"]
    if report.spammers:
        out += text_table(
            ["rater", "kind", "score", "reason"],
            [[r.rater_id, r.kind, _f(r.agreement, "+.2f"), r.reason or ""] for r in report.spammers],
            "llrl",
        )
    else:
        undecided = sum(r.spammer is None for r in report.raters)
        extra = f" ({undecided} rater row(s) share too few judgments to tell)" if undecided else ""
        out.append(f"  none{extra}")

    out += ["", "Position bias (does the first-shown answer win?)"]
    p = report.position
    if p is None:
        out.append("  no comparisons with a known display order")
    else:
        out.append(f"  first shown won {format_share(p.first)}; ties {p.ties}")
        rows = [
            [
                r.rater_id,
                str(r.first.n),
                _pct(r.first.share),
                f"{_pct(r.first.low)}-{_pct(r.first.high)}" if r.first.n else "n/a",
                _f(r.first.p_value, ".3g"),
                _f(r.skill),
                _f(r.bias_logit, "+.2f"),
                "YES" if r.flagged else "no",
            ]
            for r in p.per_rater
        ]
        out += text_table(
            ["rater", "n", "first", "95% CI", "p", "skill", "bias logit", "flagged"], rows, "lrrrrrrl", "    "
        )
        if p.global_bias_logit is not None:
            out.append(f"  noisy Bradley-Terry global first-position logit {p.global_bias_logit:+.2f}")
        out.append(f"  flag rule: {p.rule}")

    out += ["", "Length bias (is the chosen answer the longer one?)"]
    lb = report.length
    if lb is None:
        out.append("  no judgments")
    else:
        origin = ", ".join(f"{v} from {k}s" for k, v in lb.sources.items()) or "none"
        out.append(f"  {plural(lb.n_pairs, 'pair')} ({origin})")
        out.append(f"  chosen longer in characters: {format_share(lb.chars)}")
        out.append(f"  chosen longer in tokens:     {format_share(lb.tokens)}")
        if lb.n_pairs:
            out.append(
                f"  mean length chosen {_f(lb.mean_chosen_chars, '.1f')} chars / {_f(lb.mean_chosen_tokens, '.1f')} "
                f"tokens, rejected {_f(lb.mean_rejected_chars, '.1f')} chars / {_f(lb.mean_rejected_tokens, '.1f')} tokens"
            )
        if lb.n_ratings:
            out.append(
                f"  ratings vs response length: Spearman rho {_f(lb.rating_length_spearman, '+.2f')} "
                f"over {plural(lb.n_ratings, 'rating')}"
            )

    d = report.duplicates
    out += ["", "Duplicates and conflicts"]
    out.append(f"  exact duplicate records: {d.exact}")
    out.append(f"  same rater, same unit, different answers: {d.contradictions}")
    out.append(f"  self-pairs (same answer on both sides): {d.self_pairs}")
    for example in d.examples:
        out.append(f"    - {example}")
    if d.conversion is not None:
        c = d.conversion
        out.append(
            f"  default conversion to pairs: {plural(c['rows'], 'pair')}; ties {c['ties']}, self-pairs {c['self_pairs']}, "
            f"duplicates merged {c['duplicates_merged']}, contradictions between raters {c['contradictions']} "
            f"({c['split_dropped']} even splits dropped, {c['minority_votes']} minority votes dropped), "
            f"unpaired {c['unpaired']}, filtered {c['filtered']}"
        )

    out += ["", f"Rejected rows: {len(report.rejected)}"]
    for e in report.rejected[:10]:
        out.append(f"  {e['file']}, line {e['line']}, field '{e['field']}': {e['message']}")
    if len(report.rejected) > 10:
        out.append(f"  ... and {len(report.rejected) - 10} more")
    if report.notes:
        out += ["", "Notes"]
        out += [f"  - {n}" for n in report.notes]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- plot


def plot_report(report: InspectReport, path: str | os.PathLike) -> Path:
    """A PNG with per-rater agreement, per-rater first-shown share and chosen/rejected lengths.

    Raises ImportError naming the package to install when matplotlib is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # a core dependency, but a trimmed install may lack it
        raise ImportError(
            "--plot needs matplotlib: pip install matplotlib (it is a dependency of prefalign; reinstall it)"
        ) from exc

    fig = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_agree, ax_pos, ax_len, ax_kinds = fig.subplots(2, 2).ravel()

    def empty(ax: Any, title: str, why: str) -> None:
        ax.set_title(title)
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])

    rows = [r for r in report.raters if r.agreement is not None]
    if rows:
        labels = [f"{r.rater_id} ({r.kind[:4]})" for r in rows]
        colours = ["tab:red" if r.spammer else "tab:grey" if r.spammer is None else "tab:blue" for r in rows]
        ax_agree.barh(labels, [r.agreement for r in rows], color=colours)
        ax_agree.axvline(0.1, color="tab:red", linestyle="--", linewidth=1)
        ax_agree.set_xlim(-1, 1)
        ax_agree.set_xlabel("agreement with the others (red: suspected spammer, grey: too little overlap)")
        ax_agree.set_title("Per-rater agreement")
        ax_agree.invert_yaxis()
    else:
        empty(ax_agree, "Per-rater agreement", "no rater agreement to show")

    pos = report.position
    if pos is not None and any(r.first.n for r in pos.per_rater):
        shown = [r for r in pos.per_rater if r.first.n]
        y = list(range(len(shown)))
        share = [r.first.share or 0.0 for r in shown]
        err = [
            [s - (r.first.low or 0.0) for s, r in zip(share, shown)],
            [(r.first.high or 0.0) - s for s, r in zip(share, shown)],
        ]
        ax_pos.errorbar(share, y, xerr=err, fmt="o", color="tab:blue", ecolor="tab:grey")
        for yi, r in zip(y, shown):
            if r.flagged:
                ax_pos.plot(share[yi], yi, "o", color="tab:red")
        ax_pos.axvline(0.5, color="black", linewidth=1)
        ax_pos.set_yticks(y, [r.rater_id for r in shown])
        ax_pos.set_xlim(-0.02, 1.02)
        ax_pos.set_xlabel(f"share won by the first-shown answer (all: {_pct(pos.first.share)})")
        ax_pos.set_title("Position bias per rater (95% CI)")
        ax_pos.invert_yaxis()
    else:
        empty(ax_pos, "Position bias per rater", "no comparisons with a known display order")

    lb = report.length
    if lb is not None and lb.n_pairs:
        top = max(max(lb.chosen_chars), max(lb.rejected_chars))
        bins = min(30, max(5, lb.n_pairs // 2))
        edges = [top * k / bins for k in range(bins + 1)] if top > 0 else [0, 1]
        ax_len.hist(lb.rejected_chars, bins=edges, alpha=0.6, label="rejected", color="tab:orange")
        ax_len.hist(lb.chosen_chars, bins=edges, alpha=0.6, label="chosen", color="tab:green")
        ax_len.set_xlabel("answer length (characters)")
        ax_len.set_ylabel("pairs")
        ax_len.set_title(f"Chosen vs rejected length (chosen longer: {_pct(lb.chars.share)})")
        ax_len.legend()
    else:
        empty(ax_len, "Chosen vs rejected length", "no pairs")

    if report.kinds:
        ax_kinds.bar(list(report.kinds), list(report.kinds.values()), color="tab:blue")
        ax_kinds.set_ylabel("records")
        ax_kinds.set_title(f"{report.n_records} records, {report.n_raters} raters, {report.n_items} items")
    else:
        empty(ax_kinds, "Records", "no records")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


__all__ = [
    "AgreementSummary",
    "Duplicates",
    "InspectReport",
    "LengthBias",
    "PositionBias",
    "RaterPosition",
    "RaterRow",
    "Share",
    "binomial_share",
    "consensus",
    "format_share",
    "infer_scale",
    "inspect_feedback",
    "plot_report",
    "plural",
    "rater_rows",
    "render_report",
    "scale_spec",
    "shared_judgments",
    "text_length",
    "text_table",
]
