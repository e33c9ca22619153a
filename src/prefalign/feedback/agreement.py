"""Inter-rater agreement: Krippendorff's alpha, Fleiss' and Cohen's kappa, agreement with the consensus.

Two layers:

* array functions on plain data: :func:`krippendorff_alpha` on a reliability-data matrix (raters x
  units, NaN = missing), :func:`fleiss_kappa` on a units x categories count table,
  :func:`cohen_kappa` on two label sequences, and the long-format functions
  :func:`pairwise_cohen_kappa` and :func:`agreement_with_consensus` that take one ``(rater, item,
  value)`` triple per judgment, as feedback is collected;
* record functions on validated feedback: :func:`ratings_agreement` (:class:`Rating` records) and
  :func:`comparisons_agreement` (:class:`Comparison` records), which pick the statistics that fit the
  data and return an :class:`AgreementReport`.

Which statistic when: Krippendorff's alpha is the general one (any number of raters, missing
values, a level of measurement); Fleiss' kappa needs the same number of ratings on every unit;
Cohen's kappa compares two raters on the items both rated. Every statistic is 1 for perfect
agreement, 0 for agreement at the level chance produces, and negative below that. A statistic that is
undefined on the data (no unit rated twice, or no variation at all: every rater gave the same value
everywhere, so chance already explains all agreement) is NaN rather than an error, so a report on a
small batch never crashes.

Long-format inputs: ``rater``, ``item`` and ``value`` are equal-length sequences, ``rater[j]`` gave
``value[j]`` to ``item[j]``; ids can be any hashable (strings, ints, tuples). A rater judging the
same item twice is an error (keep one judgment per rater and item, e.g. the latest). Raters and items
are listed in order of first appearance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from prefalign.feedback.schema import Comparison, Rating, RatingScale

Level = Literal["nominal", "ordinal", "interval", "ratio"]
Weights = Literal["linear", "quadratic"]
Consensus = Literal["mean", "median", "majority"]
ConsensusMetric = Literal["pearson", "spearman", "accuracy", "kappa"]


# ------------------------------------------------------------------------------- Krippendorff's alpha


def _nominal_distance(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    return (values[:, None] != values[None, :]).astype(float)


def _ordinal_distance(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    # delta^2_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 (Krippendorff 2011): the distance between two
    # ranks is the mass of values between them, so it depends on the data's marginals, not on the codes.
    cum = np.cumsum(n_c)
    idx = np.arange(len(values))
    lo, hi = np.minimum(idx[:, None], idx[None, :]), np.maximum(idx[:, None], idx[None, :])
    between = cum[hi] - cum[lo] + n_c[lo]
    return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2


def _interval_distance(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    return (values[:, None] - values[None, :]) ** 2


def _ratio_distance(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    if values.size and values.min() < 0:
        raise ValueError("the ratio level needs non-negative values (a ratio scale has an absolute zero)")
    diff, total = values[:, None] - values[None, :], values[:, None] + values[None, :]
    # c = k = 0 is the only way to get a zero sum, and identical values are at distance 0.
    return np.divide(diff, total, out=np.zeros_like(diff), where=total != 0) ** 2


DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "nominal": _nominal_distance,
    "ordinal": _ordinal_distance,
    "interval": _interval_distance,
    "ratio": _ratio_distance,
}
"""Krippendorff's squared difference functions delta^2_ck by level: (values (V,), n_c (V,)) -> (V, V)."""


def coincidence_matrix(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Krippendorff's coincidence matrix of a reliability-data matrix.

    Args:
        data: (n_raters, n_units) array of numbers, NaN where a rater did not judge a unit.

    Returns:
        ``(values, o)``: the distinct values in ascending order, shape (V,), and the (V, V) matrix
        ``o_ck = sum_u (number of ordered c-k pairs of values in unit u) / (m_u - 1)`` where ``m_u`` is
        the number of values in unit u (Krippendorff 2011). Units with fewer than two values hold no
        pair and add nothing; every pairable value contributes exactly 1 to ``o.sum()``.
    """
    x = np.asarray(data, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a (n_raters, n_units) matrix, got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError("the reliability data holds an infinite value; use NaN for a missing one")
    present = ~np.isnan(x)
    values = np.unique(x[present])
    counts = np.zeros((x.shape[1], values.size))  # (N, V): how many raters gave value v to unit u
    rater_idx, unit_idx = np.nonzero(present)
    np.add.at(counts, (unit_idx, np.searchsorted(values, x[rater_idx, unit_idx])), 1.0)
    m_u = counts.sum(axis=1)
    pairable = m_u >= 2
    counts, m_u = counts[pairable], m_u[pairable]
    scaled = counts / (m_u - 1.0)[:, None]
    # sum_u n_uc n_uk / (m_u - 1), minus the pairs of a value with itself (same rater) on the diagonal.
    o = counts.T @ scaled - np.diag(scaled.sum(axis=0))
    return values, o


def krippendorff_alpha(data: Any, level: Level = "interval") -> float:
    """Krippendorff's alpha reliability coefficient of a reliability-data matrix.

    ``alpha = 1 - D_o / D_e = 1 - (n - 1) * sum_ck o_ck delta^2_ck / sum_ck n_c n_k delta^2_ck``
    (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability", general form), with ``o`` the
    coincidence matrix (:func:`coincidence_matrix`), ``n_c = sum_k o_ck`` the number of pairable values
    c and ``n = sum_c n_c``. The squared differences ``delta^2`` per level (:data:`DISTANCES`):
    nominal ``[c != k]``; ordinal ``(sum_{g=c..k} n_g - (n_c + n_k)/2)^2`` (ranks spaced by the
    marginal frequencies, as Krippendorff defines it and the ``krippendorff`` package computes it);
    interval ``(c - k)^2``; ratio ``((c - k) / (c + k))^2`` (values must be non-negative).

    Args:
        data: (n_raters, n_units) numbers, NaN for a missing value. Units with fewer than two values
            are left out (they hold no pair to agree on). Labels must be coded as numbers first, in
            their order for the ordinal level (:func:`reliability_matrix` does this).
        level: level of measurement.

    Returns:
        alpha, a float <= 1; NaN when no unit has two values, or the pairable values do not vary
        (``D_e = 0``: one value everywhere leaves nothing to tell agreement from chance).
    """
    if level not in DISTANCES:
        raise ValueError(f"level must be one of {', '.join(DISTANCES)}, got {level!r}")
    values, o = coincidence_matrix(data)
    n_c = o.sum(axis=0)
    n = n_c.sum()
    if n < 2:
        return math.nan
    delta2 = DISTANCES[level](values, n_c)
    disagreement_expected = float((np.outer(n_c, n_c) * delta2).sum())
    if disagreement_expected <= 0.0:
        return math.nan
    return 1.0 - (float(n) - 1.0) * float((o * delta2).sum()) / disagreement_expected


# ------------------------------------------------------------------------------------ long format


class ReliabilityData(NamedTuple):
    """A reliability-data matrix built from long-format judgments.

    ``data`` is (len(raters), len(items)) with NaN where a rater did not judge an item; for labels it
    holds the index of the label in ``categories`` (else ``categories`` is None).
    """

    raters: list[Hashable]
    items: list[Hashable]
    data: np.ndarray
    categories: tuple[Hashable, ...] | None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _is_missing(value: Any) -> bool:
    return value is None or (_is_number(value) and math.isnan(float(value)))


def _judgments(
    rater: Sequence[Hashable], item: Sequence[Hashable], value: Sequence[Any]
) -> tuple[list[Hashable], list[Hashable], dict[tuple[int, int], Any]]:
    """Index the triples: (raters, items, {(rater index, item index): value}); missing values dropped."""
    if not len(rater) == len(item) == len(value):
        raise ValueError(
            f"rater, item and value must have the same length, got {len(rater)}, {len(item)}, {len(value)}"
        )
    rater_index: dict[Hashable, int] = {}
    item_index: dict[Hashable, int] = {}
    table: dict[tuple[int, int], Any] = {}
    for r, i, v in zip(rater, item, value):
        key = (rater_index.setdefault(r, len(rater_index)), item_index.setdefault(i, len(item_index)))
        if key in table:
            raise ValueError(
                f"rater {r!r} judged item {i!r} twice; keep one judgment per rater and item (e.g. the latest)"
            )
        if not _is_missing(v):
            table[key] = v
    return list(rater_index), list(item_index), table


def _sorted_categories(labels: Sequence[Any] | set[Any]) -> tuple[Hashable, ...]:
    unique = set(labels)
    try:
        return tuple(sorted(unique))
    except TypeError:  # mixed types (e.g. str and int) do not sort; their string form does
        return tuple(sorted(unique, key=lambda v: (type(v).__name__, str(v))))


def reliability_matrix(
    rater: Sequence[Hashable],
    item: Sequence[Hashable],
    value: Sequence[Any],
    *,
    categories: Sequence[Hashable] | None = None,
) -> ReliabilityData:
    """Long-format judgments -> the (n_raters, n_items) matrix :func:`krippendorff_alpha` takes.

    Numbers are kept as they are; labels (anything else, or every value when ``categories`` is
    given) become their index in ``categories`` (default: the distinct labels sorted). ``None`` and
    NaN values are missing.
    """
    raters, items, table = _judgments(rater, item, value)
    data = np.full((len(raters), len(items)), np.nan)
    if categories is None and all(_is_number(v) for v in table.values()):
        for (r, i), v in table.items():
            data[r, i] = float(v)
        return ReliabilityData(raters, items, data, None)
    cats = tuple(categories) if categories is not None else _sorted_categories(table.values())
    code = {c: k for k, c in enumerate(cats)}
    for (r, i), v in table.items():
        if v not in code:
            raise ValueError(f"rater {raters[r]!r} gave item {items[i]!r} the value {v!r}, not a category")
        data[r, i] = code[v]
    return ReliabilityData(raters, items, data, cats)


# ---------------------------------------------------------------------------------- Fleiss' kappa


class CountTable(NamedTuple):
    """``counts[u, c]`` = how many raters put item ``items[u]`` in category ``categories[c]``."""

    items: list[Hashable]
    categories: tuple[Hashable, ...]
    counts: np.ndarray


def fleiss_counts(
    rater: Sequence[Hashable],
    item: Sequence[Hashable],
    label: Sequence[Hashable],
    *,
    categories: Sequence[Hashable] | None = None,
) -> CountTable:
    """Long-format labels -> the (n_items, n_categories) count table :func:`fleiss_kappa` takes.

    ``rater`` is used to refuse a rater labelling one item twice, which would count them twice.
    """
    cats = (
        tuple(categories)
        if categories is not None
        else _sorted_categories([v for v in label if not _is_missing(v)])
    )
    rm = reliability_matrix(rater, item, label, categories=cats)
    counts = (rm.data[:, :, None] == np.arange(len(cats))).sum(axis=0).astype(float)  # (N, K)
    return CountTable(rm.items, cats, counts)


def fleiss_kappa(counts: Any) -> float:
    """Fleiss' kappa for a fixed number of raters per unit (Fleiss 1971, "Measuring nominal scale
    agreement among many raters").

    With N units, n ratings per unit and ``n_ij`` the count of category j on unit i:
    ``p_j = sum_i n_ij / (N n)``, ``P_i = (sum_j n_ij^2 - n) / (n (n - 1))``,
    ``P_bar = mean_i P_i``, ``P_e = sum_j p_j^2`` and ``kappa = (P_bar - P_e) / (1 - P_e)``.

    Args:
        counts: (n_units, n_categories) non-negative counts. Rows that are all zero (units nobody
            rated) are ignored; every other row must sum to the same n >= 2. For unequal numbers of
            ratings use nominal :func:`krippendorff_alpha`, which is defined for them.

    Returns:
        kappa; NaN when there is no rated unit or every rating is in one category (``P_e = 1``).
    """
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2:
        raise ValueError(f"expected a (n_units, n_categories) count table, got shape {c.shape}")
    if (c < 0).any() or not np.isfinite(c).all():
        raise ValueError("counts must be finite and non-negative")
    c = c[c.sum(axis=1) > 0]
    if c.shape[0] == 0:
        return math.nan
    per_unit = c.sum(axis=1)
    n = per_unit[0]
    if not np.all(per_unit == n) or n < 2:
        raise ValueError(
            "Fleiss' kappa needs the same number (>= 2) of ratings on every unit, got "
            f"{sorted({float(x) for x in per_unit})[:5]}; use krippendorff_alpha(..., level='nominal') instead"
        )
    p_j = c.sum(axis=0) / (c.shape[0] * n)
    p_i = ((c**2).sum(axis=1) - n) / (n * (n - 1.0))
    p_bar, p_e = float(p_i.mean()), float((p_j**2).sum())
    if p_e >= 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


# ----------------------------------------------------------------------------------- Cohen's kappa


def _kappa_weights(n_labels: int, weights: Weights | None) -> np.ndarray:
    i = np.arange(n_labels)
    gap = np.abs(i[:, None] - i[None, :]).astype(float)
    table = {None: (gap > 0).astype(float), "linear": gap, "quadratic": gap**2}
    if weights not in table:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    return table[weights]


def cohen_kappa(
    a: Sequence[Hashable],
    b: Sequence[Hashable],
    *,
    weights: Weights | None = None,
    labels: Sequence[Hashable] | None = None,
) -> float:
    """Cohen's kappa between two raters' labels of the same items (Cohen 1960), optionally weighted.

    ``kappa = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij`` with ``O`` the (L, L) confusion matrix of
    ``a`` against ``b`` and ``E`` its expectation under independence (outer product of the marginals
    over the total). Unweighted ``w_ij = [i != j]`` gives ``(p_o - p_e) / (1 - p_e)``; ``"linear"``
    ``|i - j|`` and ``"quadratic"`` ``(i - j)^2`` weights (Cohen 1968; Fleiss & Cohen 1973) credit
    near misses on an ordinal scale. Same definition as ``sklearn.metrics.cohen_kappa_score``.

    Args:
        a, b: (n_items,) labels, ``a[i]`` and ``b[i]`` for the same item.
        weights: None, ``"linear"`` or ``"quadratic"``.
        labels: the categories in scale order; weights use their positions here. Default: the
            distinct labels of ``a`` and ``b`` sorted. Give the full scale when comparing several
            pairs so that the weights mean the same for each.

    Returns:
        kappa; NaN when chance alone predicts perfect agreement (e.g. both raters always give one label).
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    if len(a) == 0:
        return math.nan
    cats = tuple(labels) if labels is not None else _sorted_categories(set(a) | set(b))
    code = {c: k for k, c in enumerate(cats)}
    unknown = [v for v in (*a, *b) if v not in code]
    if unknown:
        raise ValueError(f"label {unknown[0]!r} is not in labels {cats}")
    observed = np.zeros((len(cats), len(cats)))
    np.add.at(observed, ([code[v] for v in a], [code[v] for v in b]), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    w = _kappa_weights(len(cats), weights)
    chance_disagreement = float((w * expected).sum())
    if chance_disagreement <= 0.0:
        return math.nan
    return 1.0 - float((w * observed).sum()) / chance_disagreement


class PairwiseKappa(NamedTuple):
    """Cohen's kappa for every pair of raters on the items both judged.

    ``kappa[r, s]`` is symmetric, NaN on the diagonal and where raters r and s share fewer than
    ``min_shared`` items; ``shared[r, s]`` is the number of items they share.
    """

    raters: list[Hashable]
    kappa: np.ndarray
    shared: np.ndarray

    def mean(self) -> float:
        """Mean kappa over the rater pairs where it is defined (NaN if none)."""
        upper = self.kappa[np.triu_indices(len(self.raters), k=1)]
        upper = upper[~np.isnan(upper)]
        return float(upper.mean()) if upper.size else math.nan


def pairwise_cohen_kappa(
    rater: Sequence[Hashable],
    item: Sequence[Hashable],
    label: Sequence[Hashable],
    *,
    weights: Weights | None = None,
    labels: Sequence[Hashable] | None = None,
    min_shared: int = 2,
) -> PairwiseKappa:
    """:func:`cohen_kappa` for every pair of raters, each on the items both of them labelled.

    ``labels`` defaults to every label seen, sorted, for all pairs alike, so weighted kappas of
    different pairs are on one scale. ``min_shared`` (>= 2) is the fewest shared items for a kappa.
    """
    if min_shared < 2:
        raise ValueError(
            f"min_shared must be at least 2 (kappa of one item is meaningless), got {min_shared}"
        )
    raters, _, table = _judgments(rater, item, label)
    cats = tuple(labels) if labels is not None else _sorted_categories(table.values())
    by_rater: list[dict[int, Any]] = [{} for _ in raters]
    for (r, i), v in table.items():
        by_rater[r][i] = v
    n = len(raters)
    kappa = np.full((n, n), np.nan)
    shared = np.zeros((n, n), dtype=int)
    for r in range(n):
        for s in range(r + 1, n):
            common = [i for i in by_rater[r] if i in by_rater[s]]
            shared[r, s] = shared[s, r] = len(common)
            if len(common) >= min_shared:
                k = cohen_kappa(
                    [by_rater[r][i] for i in common],
                    [by_rater[s][i] for i in common],
                    weights=weights,
                    labels=cats,
                )
                kappa[r, s] = kappa[s, r] = k
    for r in range(n):
        shared[r, r] = len(by_rater[r])
    return PairwiseKappa(raters, kappa, shared)


# ------------------------------------------------------------------------- agreement with consensus


def _loo_mean(own: Any, others: list[Any]) -> float | None:
    return float(np.mean(others))


def _loo_median(own: Any, others: list[Any]) -> float | None:
    return float(np.median(others))


def _loo_majority(own: Any, others: list[Any]) -> Any | None:
    top = Counter(others).most_common()
    # A tie among the others' top labels means there is no consensus to agree with: skip the item.
    if len(top) > 1 and top[0][1] == top[1][1]:
        return None
    return top[0][0]


CONSENSUS: dict[str, Callable[[Any, list[Any]], Any | None]] = {
    "mean": _loo_mean,
    "median": _loo_median,
    "majority": _loo_majority,
}
"""Consensus of the *other* raters' values on an item; None when there is none (a tied majority)."""


def _pearson(x: Sequence[Any], y: Sequence[Any], labels: tuple[Hashable, ...]) -> float:
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xc, yc = xa - xa.mean(), ya - ya.mean()
    denom = math.sqrt(float((xc**2).sum()) * float((yc**2).sum()))
    return float((xc * yc).sum()) / denom if denom > 0 else math.nan


def _spearman(x: Sequence[Any], y: Sequence[Any], labels: tuple[Hashable, ...]) -> float:
    from scipy.stats import rankdata

    return _pearson(rankdata(np.asarray(x, dtype=float)), rankdata(np.asarray(y, dtype=float)), labels)


def _accuracy(x: Sequence[Any], y: Sequence[Any], labels: tuple[Hashable, ...]) -> float:
    return float(np.mean([u == v for u, v in zip(x, y)]))


def _kappa_metric(x: Sequence[Any], y: Sequence[Any], labels: tuple[Hashable, ...]) -> float:
    return cohen_kappa(list(x), list(y), labels=labels)


CONSENSUS_METRICS: dict[str, Callable[[Sequence[Any], Sequence[Any], tuple[Hashable, ...]], float]] = {
    "pearson": _pearson,
    "spearman": _spearman,
    "accuracy": _accuracy,
    "kappa": _kappa_metric,
}
"""How a rater's values are compared with the consensus: (own (k,), consensus (k,), labels) -> score."""

DEFAULT_METRIC: dict[str, ConsensusMetric] = {"mean": "pearson", "median": "pearson", "majority": "accuracy"}
_NUMERIC_ONLY = {"mean", "median", "pearson", "spearman"}


def agreement_with_consensus(
    rater: Sequence[Hashable],
    item: Sequence[Hashable],
    value: Sequence[Any],
    consensus: Consensus = "mean",
    *,
    metric: ConsensusMetric | None = None,
    min_items: int = 2,
) -> dict[Hashable, float]:
    """How well each rater agrees with the others' consensus, leave-one-out.

    For every item a rater judged, the consensus is computed from the *other* raters' values on that
    item only (a rater counted in their own consensus would agree with themselves, which inflates the
    score most for the raters on the items with fewest judgments); items nobody else judged, and
    items where the others' majority is tied, are skipped. The rater's values are then scored against
    those consensus values.

    Args:
        rater, item, value: long-format judgments (see the module docstring).
        consensus: ``"mean"`` or ``"median"`` of the others' numbers, or their ``"majority"`` label.
        metric: ``"pearson"`` / ``"spearman"`` correlation (numbers), ``"accuracy"`` (share of exact
            matches) or ``"kappa"`` (Cohen's kappa over all labels seen). Default: Pearson for a
            mean/median, accuracy for a majority.
        min_items: fewest comparable items for a score (>= 1; correlations need >= 2).

    Returns:
        ``{rater: score}`` for every rater, in order of first appearance; NaN where the rater has
        fewer than ``min_items`` comparable items or the score is undefined (a constant rater under a
        correlation).
    """
    if consensus not in CONSENSUS:
        raise ValueError(f"consensus must be one of {', '.join(CONSENSUS)}, got {consensus!r}")
    metric = metric or DEFAULT_METRIC[consensus]
    if metric not in CONSENSUS_METRICS:
        raise ValueError(f"metric must be one of {', '.join(CONSENSUS_METRICS)}, got {metric!r}")
    if min_items < 1:
        raise ValueError(f"min_items must be at least 1, got {min_items}")
    raters, items, table = _judgments(rater, item, value)
    needs_numbers = {consensus, metric} & _NUMERIC_ONLY
    if needs_numbers and not all(_is_number(v) for v in table.values()):
        raise ValueError(
            f"{' and '.join(sorted(needs_numbers))} need numeric values; use consensus='majority'"
        )
    labels = _sorted_categories(table.values())
    by_item: list[list[tuple[int, Any]]] = [[] for _ in items]
    for (r, i), v in table.items():
        by_item[i].append((r, v))
    own: list[list[Any]] = [[] for _ in raters]
    agreed: list[list[Any]] = [[] for _ in raters]
    for judged in by_item:
        for r, v in judged:
            others = [w for s, w in judged if s != r]
            target = CONSENSUS[consensus](v, others) if others else None
            if target is not None:
                own[r].append(v)
                agreed[r].append(target)
    score = CONSENSUS_METRICS[metric]
    return {
        name: score(own[r], agreed[r], labels) if len(own[r]) >= min_items else math.nan
        for r, name in enumerate(raters)
    }


# ---------------------------------------------------------------------------------- record reports


@dataclass(frozen=True)
class AgreementReport:
    """Agreement among the raters of a batch of feedback records.

    Attributes:
        alpha: Krippendorff's alpha per level of measurement that fits the data (``"nominal"``,
            ``"ordinal"``, ``"interval"``).
        percent_agreement: share of pairable value pairs (two raters, one unit) that are equal; the
            raw agreement that alpha corrects for chance.
        fleiss_kappa: Fleiss' kappa for label data when every unit judged twice or more has the same
            number of judgments; None otherwise (it is not defined there; see nominal alpha).
        mean_pairwise_kappa: mean Cohen's kappa over rater pairs sharing two or more units (NaN if none).
        kappa_weights: the weighting of those kappas: None, ``"linear"`` or ``"quadratic"``.
        per_rater: each rater's leave-one-out agreement with the others (:func:`agreement_with_consensus`).
        per_rater_metric: what ``per_rater`` measures, e.g. ``"pearson vs mean"``.
        n_raters, n_items, n_units, n_judgments: distinct raters, distinct ``item_id``, distinct units
            judged (a response of an item, or a pair of responses of an item), records.
    """

    alpha: dict[str, float]
    percent_agreement: float
    fleiss_kappa: float | None
    mean_pairwise_kappa: float
    kappa_weights: str | None
    per_rater: dict[str, float]
    per_rater_metric: str
    n_raters: int
    n_items: int
    n_units: int
    n_judgments: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; NaN becomes None (strict JSON has no NaN)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, Mapping):
                return {str(k): clean(v) for k, v in x.items()}
            return x

        return {name: clean(getattr(self, name)) for name in self.__dataclass_fields__}


def percent_agreement(data: Any) -> float:
    """Share of pairable value pairs that agree exactly: ``trace(o) / n`` of the coincidence matrix."""
    _, o = coincidence_matrix(data)
    n = o.sum()
    return float(np.trace(o) / n) if n > 0 else math.nan


def _report(
    rater: list[str],
    unit: list[Hashable],
    value: list[Any],
    *,
    levels: tuple[Level, ...],
    categories: tuple[Hashable, ...],
    kappa_weights: Weights | None,
    consensus: Consensus,
    is_labels: bool,
    n_items: int,
) -> AgreementReport:
    """The shared part of the record reports; ``value`` are numbers, or labels coded by ``categories``."""
    rm = reliability_matrix(rater, unit, value, categories=categories if is_labels else None)
    alpha = {level: krippendorff_alpha(rm.data, level) for level in levels}
    fleiss = None
    if is_labels:
        counts = fleiss_counts(rater, unit, value, categories=categories).counts
        counts = counts[counts.sum(axis=1) >= 2]  # a unit judged once holds no agreement
        if counts.shape[0] and np.all(counts.sum(axis=1) == counts.sum(axis=1)[0]):
            fleiss = fleiss_kappa(counts)
    pairwise = pairwise_cohen_kappa(rater, unit, value, weights=kappa_weights, labels=categories)
    metric = DEFAULT_METRIC[consensus]
    return AgreementReport(
        alpha=alpha,
        percent_agreement=percent_agreement(rm.data),
        fleiss_kappa=fleiss,
        mean_pairwise_kappa=pairwise.mean(),
        kappa_weights=kappa_weights,
        per_rater={str(k): v for k, v in agreement_with_consensus(rater, unit, value, consensus).items()},
        per_rater_metric=f"{metric} vs {consensus}",
        n_raters=len(rm.raters),
        n_items=n_items,
        n_units=len(rm.items),
        n_judgments=len(value),
    )


def _check_kind(records: Sequence[Any], cls: type, name: str) -> None:
    for k, record in enumerate(records):
        if not isinstance(record, cls):
            kind = getattr(record, "kind", type(record).__name__)
            raise TypeError(f"record {k} is a {kind}; {name} takes {cls.__name__} records only")


def ratings_agreement(records: Sequence[Rating], scale: RatingScale | None = None) -> AgreementReport:
    """Agreement of :class:`Rating` records; a unit is one response (``item_id``, ``response_id``).

    The data decide the statistics:

    * ordered labels (``scale`` with ``labels``): alpha nominal and ordinal, Fleiss' kappa, Cohen's
      kappa with quadratic weights, per-rater accuracy against the others' majority label;
    * unordered labels (string values, no scale): alpha nominal, Fleiss' kappa, unweighted Cohen's
      kappa, majority accuracy;
    * numbers: alpha ordinal and interval, quadratic-weighted Cohen's kappa over the integer grid of
      the scale (``[low, high]``, or the observed range without a scale) when every score is a whole
      number, else over the distinct scores in order; per-rater Pearson correlation with the others' mean.

    Raises:
        ValueError: a value off the scale (naming rater, item and response), numbers mixed with labels,
            or a rater rating one response twice.
    """
    _check_kind(records, Rating, "ratings_agreement")
    rater = [r.rater_id for r in records]
    unit: list[Hashable] = [(r.item_id, r.response_id) for r in records]
    n_items = len({r.item_id for r in records})
    if scale is not None:
        values: list[Any] = []
        for r in records:
            try:
                values.append(scale.to_number(r.value))
            except ValueError as exc:
                raise ValueError(
                    f"rater {r.rater_id!r}, item {r.item_id!r}, response {r.response_id!r}: {exc}"
                ) from None
        if scale.is_ordinal:
            cats = tuple(float(k) for k in range(len(scale.labels or ())))
            return _report(
                rater,
                unit,
                values,
                levels=("nominal", "ordinal"),
                categories=cats,
                kappa_weights="quadratic",
                consensus="majority",
                is_labels=True,
                n_items=n_items,
            )
    else:
        values = [r.value for r in records]
        if all(isinstance(v, str) for v in values):
            cats = _sorted_categories([v.strip() for v in values])
            return _report(
                rater,
                unit,
                [v.strip() for v in values],
                levels=("nominal",),
                categories=cats,
                kappa_weights=None,
                consensus="majority",
                is_labels=True,
                n_items=n_items,
            )
        if not all(_is_number(v) for v in values):
            raise ValueError("ratings mix numbers and labels; pass the RatingScale that reads them")
        values = [float(v) for v in values]
    distinct = sorted(set(values))
    if distinct and all(float(v).is_integer() for v in distinct):
        low = scale.low if scale is not None else distinct[0]
        high = scale.high if scale is not None else distinct[-1]
        grid = tuple(float(x) for x in range(math.ceil(low), math.floor(high) + 1))
    else:
        grid = tuple(distinct)
    return _report(
        rater,
        unit,
        values,
        levels=("ordinal", "interval"),
        categories=grid,
        kappa_weights="quadratic",
        consensus="mean",
        is_labels=False,
        n_items=n_items,
    )


COMPARISON_OUTCOMES = ("first", "tie", "second")
"""Canonical comparison outcomes, in order: the response with the smaller id wins, tie, the other wins."""


def canonical_outcome(record: Comparison) -> tuple[tuple[str, str, str], str]:
    """``((item_id, low_id, high_id), outcome)`` of a comparison with its pair in sorted id order.

    Raters who saw the pair in opposite orders (a/b swapped) agree when they prefer the same
    response, so the pair is put in sorted id order and ``winner`` flipped with it: ``"first"`` means
    the response with the smaller id won.
    """
    swapped = record.b_id < record.a_id
    low, high = (record.b_id, record.a_id) if swapped else (record.a_id, record.b_id)
    outcome = {"a": "first", "b": "second", "tie": "tie"}[record.winner]
    if swapped and outcome != "tie":
        outcome = "second" if outcome == "first" else "first"
    return (record.item_id, low, high), outcome


def comparisons_agreement(records: Sequence[Comparison]) -> AgreementReport:
    """Agreement of :class:`Comparison` records on which response wins; a unit is one pair of one item.

    Outcomes are canonical (:func:`canonical_outcome`). Reported: alpha nominal (win/tie/loss as three
    categories) and ordinal (a tie lies between the two wins), Fleiss' kappa when every pair has the
    same number of judgments, unweighted pairwise Cohen's kappa, per-rater accuracy against the others'
    majority outcome. ``strength`` is not used.
    """
    _check_kind(records, Comparison, "comparisons_agreement")
    canonical = [canonical_outcome(r) for r in records]
    # Code outcomes as 0, 1, 2 so the ordinal level sees first < tie < second.
    code = {name: float(k) for k, name in enumerate(COMPARISON_OUTCOMES)}
    return _report(
        [r.rater_id for r in records],
        [u for u, _ in canonical],
        [code[o] for _, o in canonical],
        levels=("nominal", "ordinal"),
        categories=tuple(code.values()),
        kappa_weights=None,
        consensus="majority",
        is_labels=True,
        n_items=len({r.item_id for r in records}),
    )
