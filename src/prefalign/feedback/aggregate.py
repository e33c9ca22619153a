"""Aggregate many raters' feedback into consensus scores, rater reliabilities and spammer flags.

Two layers:

* **Array functions** (pure, numpy/scipy only, vectorised with ``np.bincount``; no Python loop runs
  over records). Inputs are integer-coded arrays of length ``N`` (one entry per judgment):
  ``rater (N,)`` in ``[0, n_raters)``, ``item (N,)`` in ``[0, n_items)`` and ``value``/``label``
  ``(N,)``; pairwise functions take ``winner``/``loser`` or ``a``/``b`` (``a`` shown first).

  ==============================  ===========================================================
  ratings (numbers)               :func:`mean_consensus`, :func:`median_consensus`,
                                  :func:`reliability_weighted_consensus`
  ratings (labels, K classes)     :func:`dawid_skene` (Dawid & Skene 1979)
  calibration per rater           :func:`zscore_calibrate`, :func:`ordinal_calibrate`
  spammers                        :func:`raykar_yu_spammer_score`, :func:`detect_spammers`
  comparisons                     :func:`bradley_terry` (Hunter 2004 MM),
                                  :func:`noisy_bradley_terry` (Bugakova et al. 2019),
                                  :func:`comparison_agreement`
  rankings                        :func:`plackett_luce` (Hunter 2004 MM)
  ==============================  ===========================================================

* **Record wrappers** over :mod:`prefalign.feedback.schema` records: :func:`aggregate_ratings`,
  :func:`aggregate_comparisons`, :func:`aggregate_rankings`. They encode ids to integers, call the
  array functions and return a small dataclass keyed by the original ids, with ``as_dict()``.

Every consensus is keyed by ``(item_id, response_id)``: a response is scored *within* the item
(prompt) it was shown under, so the same text under two prompts gets two scores. Results nest
``scores[item_id][response_id]``.

Reference implementations these match (cross-checked in ``tests/feedback/test_aggregate.py``):
crowd-kit 1.4.2 (``DawidSkene``, ``MajorityVote``, ``BradleyTerry``, ``NoisyBradleyTerry``) and
choix 0.4 (``mm_pairwise``, ``mm_rankings``, ``ilsr_pairwise``, ``ilsr_rankings``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from prefalign.feedback.schema import Comparison, Ranking, Rating, RatingScale

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# crowd-kit clips probabilities at 1e-10 (its _EPS) before taking logs; we use the same floor so
# that Dawid-Skene posteriors agree with crowd-kit's to ~1e-10.
_EPS = 1e-10


# ----------------------------------------------------------------------------------------- inputs


def _codes(x: ArrayLike, name: str, n: int | None) -> tuple[IntArray, int]:
    """A (N,) array of non-negative integer codes and the number of categories (``n`` or max + 1)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(
            f"{name} must hold integer codes, got dtype {arr.dtype}; encode ids with "
            "np.unique(ids, return_inverse=True)"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} codes must be >= 0, got {int(arr.min())}")
    size = int(arr.max()) + 1 if arr.size else 0
    if n is None:
        n = size
    elif size > n:
        raise ValueError(f"{name} has code {size - 1} but n={n} categories were declared")
    return arr, int(n)


def _floats(x: ArrayLike, name: str, size: int) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} holds NaN or infinite values (first at index {int(np.argmin(np.isfinite(arr)))})"
        )
    return arr


def _ratings(
    rater: ArrayLike, item: ArrayLike, value: ArrayLike, n_raters: int | None, n_items: int | None
) -> tuple[IntArray, IntArray, FloatArray, int, int]:
    r, n_raters = _codes(rater, "rater", n_raters)
    i, n_items = _codes(item, "item", n_items)
    if r.shape != i.shape:
        raise ValueError(f"rater and item must have the same length, got {r.size} and {i.size}")
    return r, i, _floats(value, "value", r.size), n_raters, n_items


def _segment_starts(counts: IntArray) -> IntArray:
    """Offsets of consecutive segments of the given sizes: [0, c0, c0 + c1, ...]."""
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


# ------------------------------------------------------------------------------ numeric consensus


def mean_consensus(
    rater: ArrayLike, item: ArrayLike, value: ArrayLike, *, n_items: int | None = None
) -> FloatArray:
    """Plain mean rating per item.

    Args:
        rater: (N,) rater codes (checked, then unused: every rating counts once; the argument keeps
            the signature interchangeable with :func:`reliability_weighted_consensus`).
        item: (N,) item codes.
        value: (N,) numeric ratings.
        n_items: number of items (default ``item.max() + 1``).

    Returns:
        (n_items,) mean rating; NaN for items without ratings.
    """
    _, i, v, _, n_items = _ratings(rater, item, value, None, n_items)
    counts = np.bincount(i, minlength=n_items)
    sums = np.bincount(i, weights=v, minlength=n_items)
    out = np.full(n_items, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def median_consensus(
    rater: ArrayLike, item: ArrayLike, value: ArrayLike, *, n_items: int | None = None
) -> FloatArray:
    """Median rating per item (mean of the two middle ratings for an even count).

    Robust to a minority of extreme raters, unlike the mean. Vectorised: one lexsort by
    (item, value), then each item's middle element(s) are read at its segment offset.

    Args:
        rater: (N,) rater codes (unused, see :func:`mean_consensus`).
        item: (N,) item codes.
        value: (N,) numeric ratings.
        n_items: number of items.

    Returns:
        (n_items,) median rating; NaN for items without ratings.
    """
    _, i, v, _, n_items = _ratings(rater, item, value, None, n_items)
    sorted_v = v[np.lexsort((v, i))]
    counts = np.bincount(i, minlength=n_items)
    start = _segment_starts(counts)
    has = counts > 0
    lo = start[has] + (counts[has] - 1) // 2
    hi = start[has] + counts[has] // 2
    out = np.full(n_items, np.nan)
    out[has] = 0.5 * (sorted_v[lo] + sorted_v[hi])
    return out


def _group_pearson(
    group: IntArray, x: FloatArray, y: FloatArray, n_groups: int
) -> tuple[FloatArray, IntArray]:
    """Pearson correlation of x and y within each group; 0 where a side is constant or n < 2.

    Two-pass (means first, then centred sums) so large offsets do not cancel catastrophically.
    Returns ``(r (n_groups,), n (n_groups,))``.
    """
    n = np.bincount(group, minlength=n_groups)
    safe = np.maximum(n, 1)
    mx = np.bincount(group, weights=x, minlength=n_groups) / safe
    my = np.bincount(group, weights=y, minlength=n_groups) / safe
    dx = x - mx[group]
    dy = y - my[group]
    sxx = np.bincount(group, weights=dx * dx, minlength=n_groups)
    syy = np.bincount(group, weights=dy * dy, minlength=n_groups)
    sxy = np.bincount(group, weights=dx * dy, minlength=n_groups)
    # A "constant" side is one whose spread is at rounding level relative to its mean.
    floor_x = n * (1e-9 * (np.abs(mx) + 1.0)) ** 2
    floor_y = n * (1e-9 * (np.abs(my) + 1.0)) ** 2
    ok = (n >= 2) & (sxx > floor_x) & (syy > floor_y)
    r = np.zeros(n_groups)
    r[ok] = sxy[ok] / np.sqrt(sxx[ok] * syy[ok])
    return np.clip(r, -1.0, 1.0), n.astype(np.int64)


@dataclass(frozen=True)
class WeightedConsensus:
    """Result of :func:`reliability_weighted_consensus`."""

    scores: FloatArray
    """(n_items,) weighted mean rating; NaN for items without ratings."""
    weights: FloatArray
    """(n_raters,) relative rater weights, the largest is 1; 0 for raters :func:`detect_spammers` flags."""
    agreement: FloatArray
    """(n_raters,) Pearson correlation of each rater's ratings with the leave-one-out consensus."""
    n_compared: IntArray
    """(n_raters,) ratings of each rater that had a leave-one-out consensus (others rated the item)."""
    iterations: int
    converged: bool


def reliability_weighted_consensus(
    rater: ArrayLike,
    item: ArrayLike,
    value: ArrayLike,
    *,
    n_raters: int | None = None,
    n_items: int | None = None,
    min_agreement: float = 0.1,
    z: float | None = 1.645,
    max_agreement: float = 0.99,
    max_iter: int = 50,
    tol: float = 1e-6,
) -> WeightedConsensus:
    """Weighted mean rating per item, rater weights learned from agreement with the others.

    Model: rater ``r`` reports ``v = t_i + e`` with independent noise of variance ``sigma_r^2``
    around the item's true score ``t_i``. The minimum-variance unbiased combination is the
    inverse-variance weighted mean (the precision-weighted estimate of Raykar et al. 2010,
    "Learning from crowds", JMLR 11, for continuous labels with per-annotator precision). Precision is not observed, so
    it is estimated from agreement: with ``a_r`` the Pearson correlation between the rater's
    ratings and the consensus of the *other* raters, ``a_r^2 / (1 - a_r^2)`` is the rater's
    signal-to-noise ratio ``Var(t) / sigma_r^2``, i.e. proportional to ``1 / sigma_r^2`` (the same
    weight ``prefalign.demo.raters`` uses). Correlation rather than squared error makes the weight
    blind to a rater's offset and scale (a strict rater who rates everything 2 points lower is
    still informative); those are what :func:`zscore_calibrate` removes.

    Iteration (a fixed point, usually 3-10 rounds):

    1. leave-one-out consensus of each rating: ``c_-r(i) = sum_{r' != r} w_r' v_r'i / sum w_r'``
       (all ratings of one rater on one item leave together);
    2. ``a_r = corr(v_r, c_-r)`` over the rater's ratings that have such a consensus;
    3. ``w_r = a^2 / (1 - a^2)`` with ``a`` clipped to ``[0, max_agreement]`` (one near-perfect
       rater must not get infinite weight); ``w_r = 0`` for the raters :func:`detect_spammers`
       flags: agreement below ``min_agreement`` (near-zero or negative: a spammer or an
       adversary) or, with ``z``, not significantly above 0 (a random rater correlates 0.2 with
       anything on 40 items by chance); weights rescaled to a maximum of 1;
    4. stop when no weight moves more than ``tol``.

    Items rated only by zero-weight raters fall back to their plain mean, so every rated item keeps a
    score. Cost per round: O(N) bincounts.

    Args:
        rater, item: (N,) integer codes.
        value: (N,) numeric ratings.
        n_raters, n_items: sizes (default max code + 1).
        min_agreement: agreement below which a rater's weight is 0.
        z: one-sided critical value of the "agreement > 0" test behind a zero weight (None: off).
        max_agreement: cap on agreement before it becomes a weight.
        max_iter: maximum rounds; ``max_iter=1`` gives agreement with the plain leave-one-out mean.
        tol: convergence threshold on the largest weight change.

    Returns:
        :class:`WeightedConsensus`.
    """
    r, i, v, n_raters, n_items = _ratings(rater, item, value, n_raters, n_items)
    # One entry per (item, rater) pair: a rater who rated an item twice leaves the LOO mean as one.
    pair_code, pair_of = np.unique(i * n_raters + r, return_inverse=True)
    pair_item = pair_code // n_raters
    pair_rater = pair_code % n_raters
    pair_n = np.bincount(pair_of, minlength=pair_code.size).astype(np.float64)
    pair_sum = np.bincount(pair_of, weights=v, minlength=pair_code.size)

    weights = np.ones(n_raters)
    agreement = np.zeros(n_raters)
    n_compared = np.zeros(n_raters, dtype=np.int64)
    converged = False
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - read after the loop
        wp = weights[pair_rater]
        item_w = np.bincount(pair_item, weights=wp * pair_n, minlength=n_items)
        item_s = np.bincount(pair_item, weights=wp * pair_sum, minlength=n_items)
        other_w = item_w[pair_item] - wp * pair_n
        other_s = item_s[pair_item] - wp * pair_sum
        # Relative threshold: "others" whose total weight is rounding noise are no consensus.
        has_other = other_w > 1e-12 * np.maximum(item_w[pair_item], 1e-300)
        loo = np.zeros_like(other_w)
        loo[has_other] = other_s[has_other] / other_w[has_other]
        ok = has_other[pair_of]
        agreement, n_compared = _group_pearson(r[ok], v[ok], loo[pair_of][ok], n_raters)
        a = np.clip(agreement, 0.0, max_agreement)
        new = a * a / (1.0 - a * a)
        new[detect_spammers(agreement=agreement, n=n_compared, threshold=min_agreement, z=z).flagged] = 0.0
        top = new.max() if new.size else 0.0
        if top <= 0.0:
            # Nobody agrees with anybody: no reliability signal; keep the zero weights and stop.
            weights = new
            break
        new /= top
        delta = float(np.abs(new - weights).max())
        weights = new
        if delta < tol:
            converged = True
            break

    wp = weights[pair_rater]
    item_w = np.bincount(pair_item, weights=wp * pair_n, minlength=n_items)
    item_s = np.bincount(pair_item, weights=wp * pair_sum, minlength=n_items)
    scores = mean_consensus(r, i, v, n_items=n_items)
    weighted = item_w > 0
    scores[weighted] = item_s[weighted] / item_w[weighted]
    return WeightedConsensus(scores, weights, agreement, n_compared, iteration, converged)


def _weighted_scores(
    rater: ArrayLike, item: ArrayLike, value: ArrayLike, *, n_items: int | None = None
) -> FloatArray:
    return reliability_weighted_consensus(rater, item, value, n_items=n_items).scores


RATING_CONSENSUS: dict[str, Callable[..., FloatArray]] = {
    "mean": mean_consensus,
    "median": median_consensus,
    "weighted": _weighted_scores,
}
"""Numeric consensus methods by name: ``(rater, item, value, *, n_items=None) -> (n_items,) scores``."""


# ------------------------------------------------------------------------------------ calibration


def zscore_calibrate(rater: ArrayLike, value: ArrayLike) -> FloatArray:
    """Per-rater z-scores mapped back onto the pooled scale.

    ``v' = m + s * (v - m_r) / s_r`` with ``m_r, s_r`` the rater's mean and (population) standard
    deviation and ``m, s`` those of all ratings pooled. Removes each rater's offset (lenient vs
    strict) and spread (uses the whole scale vs only the middle), the usual z-normalisation of
    judge scores. A rater with a single distinct value (no spread) maps to the pooled mean.

    Args:
        rater: (N,) rater codes.
        value: (N,) numeric ratings.

    Returns:
        (N,) calibrated ratings, same order.
    """
    r, n_raters = _codes(rater, "rater", None)
    v = _floats(value, "value", r.size)
    if not v.size:
        return v.copy()
    n = np.bincount(r, minlength=n_raters)
    safe = np.maximum(n, 1)
    mean_r = np.bincount(r, weights=v, minlength=n_raters) / safe
    dev = v - mean_r[r]
    sd_r = np.sqrt(np.bincount(r, weights=dev * dev, minlength=n_raters) / safe)
    spread = sd_r > 1e-12 * (np.abs(mean_r) + 1.0)
    z = np.zeros_like(v)
    has = spread[r]
    z[has] = dev[has] / sd_r[r][has]
    return float(v.mean()) + float(v.std()) * z


def ordinal_calibrate(rater: ArrayLike, value: ArrayLike) -> FloatArray:
    """Each rater's ratings mapped through their own empirical CDF onto the pooled quantiles.

    Quantile normalisation per rater: a rating's mid-rank CDF value within its rater,
    ``F_r(v) = (#{v_r < v} + #{v_r = v} / 2) / n_r``, is looked up in the pooled distribution with
    Hazen plotting positions (``np.quantile(..., method="hazen")``). Unlike z-scores this uses only
    the *order* of a rater's ratings, so it also fixes non-linear scale use (e.g. a rater who only
    ever says 4 or 5 out of 5). Hazen positions make the map the identity for a rater whose
    ratings *are* the pooled distribution (ties map to the tied value).

    Args:
        rater: (N,) rater codes.
        value: (N,) numeric ratings.

    Returns:
        (N,) calibrated ratings, same order; values lie in the pooled range.
    """
    r, n_raters = _codes(rater, "rater", None)
    v = _floats(value, "value", r.size)
    if not v.size:
        return v.copy()
    distinct, vcode = np.unique(v, return_inverse=True)
    # (rater, value) keys sort by rater then value: counts below a key within its rater are the
    # cumulative count before it minus the rater's offset.
    keys, key_of, key_count = np.unique(r * distinct.size + vcode, return_inverse=True, return_counts=True)
    key_rater = keys // distinct.size
    n_r = np.bincount(r, minlength=n_raters)
    before = np.cumsum(key_count) - key_count - _segment_starts(n_r)[key_rater]
    cdf = (before + 0.5 * key_count) / n_r[key_rater]
    return np.quantile(v, cdf[key_of], method="hazen")


CALIBRATIONS: dict[str, Callable[[ArrayLike, ArrayLike], FloatArray]] = {
    "zscore": zscore_calibrate,
    "ordinal": ordinal_calibrate,
}


# ------------------------------------------------------------------------------------ Dawid-Skene


@dataclass(frozen=True)
class DawidSkeneResult:
    """Result of :func:`dawid_skene`."""

    posteriors: FloatArray
    """(n_items, K) P(true class = k | all labels); the prior for items without labels."""
    priors: FloatArray
    """(K,) class priors."""
    confusion: FloatArray
    """(n_raters, K, K): ``confusion[r, true, observed]`` = P(rater r says observed | true); rows sum to 1."""
    class_counts: FloatArray
    """(n_raters, K) expected number of each rater's labels per true class (sum of posteriors)."""
    iterations: int
    """EM iterations run (E-steps after the majority-vote initialisation)."""
    log_likelihood: float
    """Marginal log-likelihood ``sum_i log sum_k prior_k prod_j confusion[r_j, k, l_j]`` at the final parameters."""
    converged: bool


def _ds_m_step(
    r: IntArray, i: IntArray, lab: IntArray, post: FloatArray, used: NDArray[np.bool_], n_raters: int
) -> FloatArray:
    """Confusion matrices from soft class assignments: expected counts, normalised per true class.

    Like crowd-kit's ``DawidSkene._m_step``, a label a rater never used has probability 0 and the
    labels they did use are floored at 1e-10 before normalising.
    """
    k = post.shape[1]
    key = r * k + lab
    counts = np.stack(
        [np.bincount(key, weights=post[i, c], minlength=n_raters * k).reshape(n_raters, k) for c in range(k)],
        axis=1,
    )  # (n_raters, K true, K observed)
    counts = np.where(used[:, None, :], np.maximum(counts, _EPS), 0.0)
    totals = counts.sum(axis=2, keepdims=True)
    # A rater with no labels at all has an all-zero matrix: make it uninformative (uniform).
    return np.divide(counts, totals, out=np.full_like(counts, 1.0 / k), where=totals > 0)


def _ds_e_step(
    r: IntArray, i: IntArray, lab: IntArray, priors: FloatArray, confusion: FloatArray, n_items: int
) -> tuple[FloatArray, float]:
    """Posterior class probabilities per item and the marginal log-likelihood (log-sum-exp)."""
    k = priors.size
    log_conf = np.log(np.maximum(confusion, 1e-300))
    per_label = log_conf[r, :, lab]  # (N, K): log P(observed label | true = k)
    log_joint = np.log(np.maximum(priors, _EPS))[None, :] + np.stack(
        [np.bincount(i, weights=per_label[:, c], minlength=n_items) for c in range(k)], axis=1
    )
    top = log_joint.max(axis=1, keepdims=True)
    unnorm = np.exp(log_joint - top)
    total = unnorm.sum(axis=1, keepdims=True)
    return unnorm / total, float((np.log(total) + top).sum())


def dawid_skene(
    rater: ArrayLike,
    item: ArrayLike,
    label: ArrayLike,
    *,
    n_raters: int | None = None,
    n_items: int | None = None,
    n_classes: int | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) class posteriors, class priors and per-rater confusion matrices by EM.

    Model (Dawid & Skene 1979): item ``i`` has a latent class ``z_i ~ Categorical(p)``;
    rater ``r`` labels it ``l`` with probability ``pi_r[z_i, l]``, independently across raters.

    * Initialisation: majority-vote vote fractions per item (crowd-kit's ``MajorityVote``
      ``fit_predict_proba``), then priors and confusions from them (the M-step).
    * E-step: ``P(z_i = k | labels) ∝ p_k prod_j pi_{r_j}[k, l_j]``, in log space.
    * M-step: ``p_k`` = mean posterior; ``pi_r[k, l]`` = expected count of (true k, said l),
      normalised over ``l``.

    This is crowd-kit 1.4.2's ``DawidSkene`` step for step (same initialisation, the same 1e-10
    floors, the same order: E-step, priors, M-step), so after the same number of iterations the
    posteriors agree to ~1e-10. Two differences. (1) Stopping: crowd-kit stops when its "ELBO" per
    label rises by less than ``tol``, but that sum adds the log prior once per *label* rather than
    once per item, so it is not EM's monotone bound and can peak while EM is still moving (then it
    stops early whatever ``tol``); we stop when the marginal log-likelihood per label, which EM never
    decreases (Dempster et al. 1977), rises by less than ``tol``. (2) Classes: crowd-kit's classes
    are the labels present in the data; ours are ``0..n_classes-1``, so a class nobody used (an
    unused scale label) is kept, with a tiny prior.

    Cost per iteration: 2K bincounts over N labels plus an (N, K) gather.

    Args:
        rater, item: (N,) integer codes.
        label: (N,) class codes in ``[0, K)``.
        n_raters, n_items, n_classes: sizes (default max code + 1).
        max_iter: maximum EM iterations.
        tol: stop when the log-likelihood per label improves by less than this.

    Returns:
        :class:`DawidSkeneResult`.
    """
    r, n_raters = _codes(rater, "rater", n_raters)
    i, n_items = _codes(item, "item", n_items)
    lab, k = _codes(label, "label", n_classes)
    if not r.size == i.size == lab.size:
        raise ValueError(
            f"rater, item and label must have the same length, got {r.size}, {i.size}, {lab.size}"
        )
    if k < 2:
        raise ValueError(f"Dawid-Skene needs at least 2 classes, got {k}")
    n = max(r.size, 1)
    used = np.bincount(r * k + lab, minlength=n_raters * k).reshape(n_raters, k) > 0

    votes = np.bincount(i * k + lab, minlength=n_items * k).reshape(n_items, k).astype(np.float64)
    n_votes = votes.sum(axis=1)
    rated = n_votes > 0
    post = np.full((n_items, k), 1.0 / k)
    post[rated] = votes[rated] / n_votes[rated, None]
    priors = post[rated].mean(axis=0) if rated.any() else np.full(k, 1.0 / k)
    confusion = _ds_m_step(r, i, lab, post, used, n_raters)

    converged = False
    previous = -math.inf
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - read after the loop
        post, loglik = _ds_e_step(r, i, lab, priors, confusion, n_items)
        priors = post[rated].mean(axis=0) if rated.any() else priors
        confusion = _ds_m_step(r, i, lab, post, used, n_raters)
        if loglik / n - previous < tol:
            converged = True
            break
        previous = loglik / n
    _, final_loglik = _ds_e_step(r, i, lab, priors, confusion, n_items)
    class_counts = np.stack(
        [np.bincount(r, weights=post[i, c], minlength=n_raters) for c in range(k)], axis=1
    )
    # Items nobody labelled carry no evidence: their posterior is the prior.
    post[~rated] = priors
    return DawidSkeneResult(post, priors, confusion, class_counts, iteration, final_loglik, converged)


# ------------------------------------------------------------------------------------- spammers


def raykar_yu_spammer_score(confusion: ArrayLike) -> FloatArray:
    """Spammer score of Raykar & Yu 2012 (JMLR 13, "Eliminating spammers and ranking annotators").

    A spammer answers without looking: their label distribution does not depend on the true class,
    so all rows of their confusion matrix are equal (a rank-one matrix ``e u^T``). The score is the
    squared distance to the nearest such matrix, scaled to ``[0, 1]``:

    ``S_r = 1 / (K (K - 1)) * sum_{k < k'} sum_l (pi_r[k, l] - pi_r[k', l])^2``

    0 for a spammer, 1 for a perfect (or a perfectly adversarial, label-permuting) rater; for two
    classes it is ``(sensitivity + specificity - 1)^2``.

    Args:
        confusion: (n_raters, K, K) row-stochastic matrices ``[rater, true, observed]``.

    Returns:
        (n_raters,) scores in [0, 1].
    """
    conf = np.asarray(confusion, dtype=np.float64)
    if conf.ndim != 3 or conf.shape[1] != conf.shape[2] or conf.shape[1] < 2:
        raise ValueError(f"confusion must have shape (n_raters, K, K) with K >= 2, got {conf.shape}")
    k = conf.shape[1]
    diff = conf[:, :, None, :] - conf[:, None, :, :]
    # The double sum over ordered pairs counts every unordered pair twice.
    return (diff * diff).sum(axis=(1, 2, 3)) / (2.0 * k * (k - 1))


@dataclass(frozen=True)
class SpammerReport:
    """Result of :func:`detect_spammers`."""

    score: FloatArray
    """(n_raters,) agreement (correlation-like, in [-1, 1]) or Raykar-Yu score (in [0, 1])."""
    flagged: NDArray[np.bool_]
    """(n_raters,) True for suspected spammers."""
    threshold: float
    rule: str
    """Human-readable rule that produced the flags."""


def detect_spammers(
    *,
    agreement: ArrayLike | None = None,
    n: ArrayLike | None = None,
    confusion: ArrayLike | None = None,
    class_counts: ArrayLike | None = None,
    threshold: float | None = None,
    z: float | None = 1.645,
) -> SpammerReport:
    """Flag raters whose judgments carry (almost) no information about the consensus.

    Two kinds of evidence, pass one:

    * ``confusion`` (n_raters, K, K) from :func:`dawid_skene`: flag when the Raykar & Yu (2012)
      spammer score (:func:`raykar_yu_spammer_score`) is below ``threshold`` (default 0.05; for
      two classes, ``|sensitivity + specificity - 1| < 0.22``) plus, with ``class_counts``
      (``DawidSkeneResult.class_counts``), the score a spammer would get from estimation noise
      alone. An estimated row of a spammer's matrix is an empirical distribution of ``m_k`` draws
      from one distribution ``u``, so ``E (pi[k, l] - pi[k', l])^2 = u_l (1 - u_l) (1/m_k + 1/m_k')``
      and the expected score is ``(1 - sum_l u_l^2) / K * sum_k 1 / m_k`` (``m_k`` floored at 1):
      about 0.05 for K = 5 and 100 labels, which would otherwise hide every spammer with few labels.
    * ``agreement`` (n_raters,) in [-1, 1] with counts ``n``: the Pearson agreement of
      :func:`reliability_weighted_consensus` or the sign agreement of :func:`comparison_agreement`.
      Flag when agreement is below ``threshold`` (default 0.1) **or**, with ``z`` set and more than
      3 judgments, when it is not significantly above 0: Fisher's ``atanh(a) * sqrt(n - 3) < z``
      (one-sided, z = 1.645 is the 5% level; under "no agreement" ``atanh(a) sqrt(n - 3)`` is about
      standard normal, Fisher 1921). This keeps a random rater with a lucky positive correlation on
      20 items from passing; ``z=None`` uses the threshold alone (tiny panels).

    Args:
        agreement: (n_raters,) agreement scores.
        n: (n_raters,) judgments behind each agreement score (needed with ``z``).
        confusion: (n_raters, K, K) Dawid-Skene confusion matrices.
        class_counts: (n_raters, K) expected labels per true class behind each matrix.
        threshold: score below which a rater is flagged.
        z: one-sided critical value of the significance rule, or None.

    Returns:
        :class:`SpammerReport`.
    """
    if (agreement is None) == (confusion is None):
        raise ValueError("pass exactly one of agreement= (with n=) or confusion=")
    if confusion is not None:
        cut = 0.05 if threshold is None else float(threshold)
        conf = np.asarray(confusion, dtype=np.float64)
        score = raykar_yu_spammer_score(conf)
        if class_counts is None:
            return SpammerReport(score, score < cut, cut, f"Raykar-Yu spammer score < {cut:g}")
        m = np.asarray(class_counts, dtype=np.float64)
        if m.shape != conf.shape[:2]:
            raise ValueError(f"class_counts must have shape {conf.shape[:2]}, got {m.shape}")
        u = (m[:, :, None] * conf).sum(axis=1) / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
        floor = (1.0 - (u * u).sum(axis=1)) / conf.shape[1] * (1.0 / np.maximum(m, 1.0)).sum(axis=1)
        return SpammerReport(
            score, score < cut + floor, cut, f"Raykar-Yu spammer score < {cut:g} + a spammer's expected score"
        )
    cut = 0.1 if threshold is None else float(threshold)
    score = np.asarray(agreement, dtype=np.float64)
    flagged = ~(score >= cut)  # NaN agreement is no evidence of reliability
    rule = f"agreement < {cut:g}"
    if z is not None:
        if n is None:
            raise ValueError("the significance rule needs n= (judgments per rater); pass z=None to skip it")
        counts = np.asarray(n, dtype=np.float64)
        if counts.shape != score.shape:
            raise ValueError(f"n must have shape {score.shape}, got {counts.shape}")
        testable = counts > 3
        fisher = np.arctanh(np.clip(score, -0.999999, 0.999999)) * np.sqrt(np.maximum(counts - 3.0, 0.0))
        flagged |= testable & (fisher < z)
        rule += f" or atanh(agreement) * sqrt(n - 3) < {z:g}"
    return SpammerReport(score, flagged, cut, rule)


# ----------------------------------------------------------------------------------- pairwise


@dataclass(frozen=True)
class StrengthFit:
    """Result of :func:`bradley_terry` and :func:`plackett_luce`."""

    scores: FloatArray
    """(n_items,) log-strengths ``theta``, centred to mean 0; ``P(i beats j) = sigmoid(theta_i - theta_j)``."""
    log_likelihood: float
    """Log-likelihood of the data at ``scores`` (without the prior)."""
    iterations: int
    converged: bool


def _choix_weights(params: FloatArray) -> FloatArray:
    """Strengths from log-strengths, rescaled to arithmetic mean 1 (choix's ``exp_transform``).

    The scale matters when ``alpha > 0``: the prior's pseudo-counts are relative to a strength of 1,
    so we renormalise exactly as choix does to reach the same fixed point.
    """
    w = np.exp(params - params.mean())
    return w * (w.size / w.sum())


def _mm(
    wins: FloatArray,
    denoms: Callable[[FloatArray], FloatArray],
    n_items: int,
    alpha: float,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, int, bool]:
    """Hunter's (2004) MM iteration in choix's form: ``theta <- centre(log((W + a) / (D(w) + a)))``.

    Converged when the L1 change of the centred parameters is at most ``tol * n_items``, checked
    from the second update on (choix's ``NormOfDifferenceTest``, which never compares with the
    starting point).
    """
    params = np.zeros(n_items)
    previous: FloatArray | None = None
    for iteration in range(1, max_iter + 1):  # noqa: B007 - read after the loop
        d = denoms(_choix_weights(params))
        params = np.log((wins + alpha) / (d + alpha))
        params -= params.mean()
        if previous is not None and np.abs(previous - params).sum() <= tol * n_items:
            return params, iteration, True
        previous = params
    return params, max_iter, False


def _check_ml_exists(wins: FloatArray, seen: NDArray[np.bool_], alpha: float) -> None:
    if alpha > 0:
        return
    if not seen.all():
        missing = int(np.argmin(seen))
        raise ValueError(
            f"item {missing} appears in no comparison or ranking: its strength is undefined without a prior; "
            "use alpha > 0 (e.g. 0.1)"
        )
    if (wins <= 0).any():
        never = int(np.argmax(wins <= 0))
        raise ValueError(
            f"item {never} never wins (or is never chosen), so its maximum-likelihood strength is -infinity; use alpha > 0 (e.g. 0.1)"
        )


def _log_sigmoid(x: FloatArray) -> FloatArray:
    return -np.logaddexp(0.0, -x)


def bradley_terry(
    winner: ArrayLike,
    loser: ArrayLike,
    *,
    n_items: int | None = None,
    tie: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    alpha: float = 0.1,
    max_iter: int = 10_000,
    tol: float = 1e-8,
) -> StrengthFit:
    """Bradley-Terry log-strengths from pairwise comparisons by Hunter's (2004) MM algorithm.

    Model (Bradley & Terry 1952): ``P(i beats j) = w_i / (w_i + w_j)``, ``w = exp(theta)``.
    MM update (Hunter 2004): ``w_i <- W_i / sum_{comparisons c of i} 1 / (w_i + w_j(c))``,
    with ``W_i`` the wins of ``i``. With ``alpha > 0`` the update is choix's regularised
    ``(W_i + alpha) / (D_i + alpha)`` (choix ``mm_pairwise``; without choix's renormalisation below
    its fixed point would be the MAP estimate under a Gamma(alpha + 1, alpha) prior on the strengths,
    Caron & Doucet 2012), which keeps items that never win or never lose finite and makes the
    strengths identifiable on a disconnected comparison graph. The iteration, the renormalisation of
    strengths to mean 1 and the convergence test are choix's, so results match ``mm_pairwise`` to
    rounding, and the ``alpha = 0`` fixed point is the maximum-likelihood estimate that
    ``ilsr_pairwise`` finds (when it exists: Hunter's strong-connectivity condition).

    Ties: a tied comparison (``tie[c]`` True, winner/loser order irrelevant) counts as half a win
    for each side and one comparison in the denominators, i.e. the likelihood term
    ``(log P(i > j) + log P(j > i)) / 2``. crowd-kit's ``BradleyTerry`` and choix have no ties
    (crowd-kit silently drops rows whose label is neither side).

    ``weight`` (N,) scales each comparison's contribution (e.g. rater reliability); the default 1
    reproduces choix.

    Args:
        winner, loser: (N,) item codes.
        n_items: number of items (default max code + 1).
        tie: optional (N,) bool, True where the comparison was a tie.
        weight: optional (N,) non-negative weights.
        alpha: prior strength (pseudo-count); 0 gives maximum likelihood (raises when an item
            never wins, since its estimate is then -infinity).
        max_iter: maximum MM iterations.
        tol: convergence threshold on the mean absolute change of ``theta`` (choix's).

    Returns:
        :class:`StrengthFit` with ``scores`` (n_items,) centred log-strengths.
    """
    win, n_w = _codes(winner, "winner", n_items)
    lose, n_l = _codes(loser, "loser", n_items)
    if win.shape != lose.shape:
        raise ValueError(f"winner and loser must have the same length, got {win.size} and {lose.size}")
    n_items = n_items if n_items is not None else max(n_w, n_l)
    w = np.ones(win.size) if weight is None else _floats(weight, "weight", win.size)
    if (w < 0).any():
        raise ValueError("weight must be non-negative")
    t = np.zeros(win.size, dtype=bool) if tie is None else np.asarray(tie, dtype=bool)
    if t.shape != win.shape:
        raise ValueError(f"tie must have shape {win.shape}, got {t.shape}")
    half = np.where(t, 0.5, 1.0) * w
    wins = np.bincount(win, weights=half, minlength=n_items) + np.bincount(
        lose, weights=np.where(t, 0.5, 0.0) * w, minlength=n_items
    )
    seen = np.bincount(win, minlength=n_items) + np.bincount(lose, minlength=n_items) > 0
    _check_ml_exists(wins, seen, alpha)

    def denoms(strength: FloatArray) -> FloatArray:
        val = w / (strength[win] + strength[lose])
        return np.bincount(win, weights=val, minlength=n_items) + np.bincount(
            lose, weights=val, minlength=n_items
        )

    params, iterations, converged = _mm(wins, denoms, n_items, alpha, max_iter, tol)
    diff = params[win] - params[lose]
    loglik = float(
        np.sum(w * np.where(t, 0.5 * (_log_sigmoid(diff) + _log_sigmoid(-diff)), _log_sigmoid(diff)))
    )
    return StrengthFit(params, loglik, iterations, converged)


@dataclass(frozen=True)
class NoisyBTFit:
    """Result of :func:`noisy_bradley_terry`."""

    scores: FloatArray
    """(n_items,) log-strengths, centred to mean 0."""
    skill: FloatArray
    """(n_raters,) probability that the rater follows the Bradley-Terry comparison (else a biased coin)."""
    position_bias: FloatArray
    """(n_raters,) logit ``q_r`` of choosing the first-shown item when not following the comparison;
    > 0 favours the first-shown (``a``) item; the choice probability is ``sigmoid(q_r)``."""
    global_position_bias: float
    """Logit ``beta`` added to ``theta_a - theta_b`` for everyone (0 when ``global_bias=False``)."""
    log_likelihood: float
    """Log-likelihood of the data at the fitted parameters (without the prior)."""
    iterations: int
    converged: bool


def _sigmoid_pair(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(sigmoid(x), sigmoid(-x))`` from one ``exp``: no overflow, no ``1 - p`` cancellation.

    ``1 / (1 + t)`` and ``t / (1 + t)`` with ``t = exp(-x)`` are both accurate to a few ulp for any
    ``x`` (sums of positive terms); clipping to +-700 keeps ``t`` finite and only moves values below
    1e-304. numpy's SIMD ``exp`` is ~3x faster than ``scipy.special.expit`` here, and this pair is
    most of the cost of a noisy-BT evaluation on a million comparisons.
    """
    t = np.clip(x, -700.0, 700.0)
    np.negative(t, out=t)
    np.exp(t, out=t)
    big = t + 1.0
    np.reciprocal(big, out=big)  # sigmoid(x)
    t *= big  # sigmoid(-x)
    return big, t


def _orient_comparisons(
    r: IntArray, a: IntArray, b: IntArray, y: FloatArray, w: FloatArray
) -> tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray, IntArray]:
    """Rows as "the chosen side won": ``(r, a, b, sign, omega, r_signed)``, ``sign`` +1 (a chosen) or -1.

    ``r_signed = 2 r + (sign < 0)`` indexes per-rater values interleaved as ``[f(q_0), f(-q_0),
    f(q_1), ...]``, so ``f(sign q_r)`` is one gather from a (2 n_raters,) array.
    A fractional outcome (a tie, 0.5) becomes two rows, ``a`` chosen with weight ``w y`` and ``b``
    chosen with weight ``w (1 - y)``, so the likelihood ``sum omega log P(chosen)`` equals
    ``sum w (y log P(a) + (1 - y) log P(b))`` and each row needs one probability, not two.
    """
    frac = np.flatnonzero((y > 0.0) & (y < 1.0))
    sign = np.concatenate([np.where(y > 0.0, 1.0, -1.0), np.full(frac.size, -1.0)])
    omega = np.concatenate([np.where((y > 0.0) & (y < 1.0), w * y, w), w[frac] * (1.0 - y[frac])])
    keep = np.concatenate([np.arange(y.size), frac])
    r = r[keep]
    return r, a[keep], b[keep], sign, omega, 2 * r + (sign < 0)


def _noisy_bt_terms(
    s: FloatArray,
    g: FloatArray,
    q: FloatArray,
    beta: float,
    r: IntArray,
    a: IntArray,
    b: IntArray,
    sign: FloatArray,
    omega: FloatArray,
    r_signed: IntArray,
) -> tuple[float, FloatArray, FloatArray, FloatArray]:
    """Log-likelihood and its per-row partial derivatives wrt ``d``, ``g_r``, ``q_r``.

    Rows come from :func:`_orient_comparisons`. With ``d = s_a - s_b + beta``, ``e = sign d``,
    ``u = sign q_r`` and ``gamma = sigma(g_r)``, the chosen side's probability is
    ``P = gamma sigma(e) + (1 - gamma) sigma(u)`` and ``ll = sum omega log P``. ``P`` is a sum of
    two positive terms (no cancellation), ``1 - gamma`` is ``sigma(-g)`` per rater (no ``1 - p``
    rounding), and the derivatives use the responsibility ``rho = gamma sigma(e) / P`` -- the
    posterior that the rater followed the comparison, as in EM -- so no ratio can overflow:
    ``d ll / d d = omega rho sigma(-e) sign``, ``d ll / d g = omega (rho - gamma)``,
    ``d ll / d q = omega (1 - rho) sigma(-u) sign``. About twenty passes over the N rows (this
    is the whole cost of a noisy-BT evaluation on a million comparisons).

    ``r_signed`` (from :func:`_orient_comparisons`) picks ``sigma(+-q_r)`` per row.
    """
    e = s[a]
    e -= s[b]
    e += beta
    e *= sign
    gam, ngam = _sigmoid_pair(g)
    gam_r = gam[r]
    sig_e, grad_d = _sigmoid_pair(e)  # grad_d starts as sigma(-e)
    # sigma(u), sigma(-u) for u = sign q_r: per rater and sign, then one gather each.
    sig_q, sig_nq = _sigmoid_pair(np.stack([q, -q], axis=1).ravel())
    sig_u, grad_q = sig_q[r_signed], sig_nq[r_signed]  # grad_q starts as sigma(-u)
    follow = sig_e
    follow *= gam_r
    p = sig_u
    p *= ngam[r]
    p += follow
    np.maximum(p, 1e-300, out=p)
    loglik = float(omega @ np.log(p))
    rho = np.divide(follow, p, out=follow)  # P(followed | this side chosen), in follow's memory
    grad_d *= rho
    grad_d *= omega
    grad_d *= sign
    grad_q *= 1.0 - rho
    grad_q *= omega
    grad_q *= sign
    grad_g = rho - gam_r
    grad_g *= omega
    return loglik, grad_d, grad_g, grad_q


def noisy_bradley_terry(
    rater: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    *,
    n_raters: int | None = None,
    n_items: int | None = None,
    weight: ArrayLike | None = None,
    global_bias: bool = True,
    l2: float = 0.5,
    l2_rater: float = 0.1,
    init_scores: ArrayLike | None = None,
    max_iter: int = 1000,
    tol: float = 1e-8,
) -> NoisyBTFit:
    """Bradley-Terry with per-rater skill and position bias (Bugakova et al. 2019), by L-BFGS.

    Model (crowd-kit's ``NoisyBradleyTerry``; Bugakova, Fedorova, Gusev, Drutsa 2019, "Aggregation
    of pairwise comparisons with reduction of biases"): rater ``r`` shown ``a`` first and ``b``
    second picks ``a`` with probability

    ``P_r(a) = sigma(g_r) * sigma(theta_a - theta_b + beta) + (1 - sigma(g_r)) * sigma(q_r)``

    i.e. with probability ``skill = sigma(g_r)`` they compare the items (Bradley-Terry, plus a
    global first-position bonus ``beta``, our addition) and otherwise they flip a coin biased
    towards the first-shown item by ``q_r`` (a careless rater who always clicks "left" has
    ``q_r >> 0``; a pure spammer has skill near 0 and ``q_r`` near 0).

    Fit: maximum a-posteriori with Gaussian priors ``N(0, 1 / l2)`` on ``theta`` and
    ``N(0, 1 / l2_rater)`` on ``g``, ``q`` and ``beta``, by ``scipy.optimize`` L-BFGS-B on the mean negative log-posterior
    with the analytic gradient. Ties (``outcome`` 0.5) count half for each side, as in
    :func:`bradley_terry`; ``outcome`` may be any probability that ``a`` won. The objective is
    non-convex; it starts from the plain Bradley-Terry fit (or ``init_scores``), skill
    ``sigmoid(2) = 0.88``, no bias.

    Why the priors are not tiny: the mixture can explain any item's record by "these raters were not
    looking", so with sparse data (tens of comparisons per item) a nearly flat prior lets the
    maximum run away -- strengths spread, careful raters' skills sink (on the bench workload with
    ``l2 = 0.01`` the correlation with the truth *falls* from 0.81 to 0.74 as L-BFGS proceeds).
    ``l2 = 0.5`` (prior sd 1.4 logits: a 2-sd response beats an average one 94% of the time) fixes
    the shift of ``theta`` and this; ``l2_rater = 0.1`` (sd 3.2 logits) keeps a rater who always
    answers "a" finite and the ``q`` of a careful rater, seen only in their few inattentive choices,
    from wandering.

    Differences from crowd-kit 1.4.2: same likelihood (checked pointwise in the tests), but crowd-kit
    starts from random parameters, its regulariser (a logistic pull of ``theta`` towards a free
    anchor) enters the loss and its gradient with opposite signs, and its hand-written gradient
    writes the bias derivative one slot off and overwrites instead of accumulating, so its L-BFGS
    stops away from the optimum; ours is checked against finite differences.

    Args:
        rater: (N,) rater codes.
        a, b: (N,) item codes, ``a`` shown first.
        outcome: (N,) 1 if ``a`` won, 0 if ``b`` won, 0.5 for a tie.
        n_raters, n_items: sizes (default max code + 1).
        weight: optional (N,) non-negative weights.
        global_bias: fit the global position bias ``beta`` (else fixed at 0, crowd-kit's model).
        l2: prior precision of the item log-strengths.
        l2_rater: prior precision of the skill and bias logits and of ``beta``.
        init_scores: optional (n_items,) starting log-strengths.
        max_iter: maximum L-BFGS iterations.
        tol: L-BFGS ``ftol`` (relative decrease of the objective).

    Returns:
        :class:`NoisyBTFit`.
    """
    from scipy.optimize import minimize  # heavy import, only needed here

    r, n_raters = _codes(rater, "rater", n_raters)
    ia, n_a = _codes(a, "a", n_items)
    ib, n_b = _codes(b, "b", n_items)
    if not r.size == ia.size == ib.size:
        raise ValueError(f"rater, a and b must have the same length, got {r.size}, {ia.size}, {ib.size}")
    n_items = n_items if n_items is not None else max(n_a, n_b)
    y = _floats(outcome, "outcome", r.size)
    if ((y < 0) | (y > 1)).any():
        raise ValueError("outcome must lie in [0, 1] (1: a won, 0: b won, 0.5: tie)")
    w = np.ones(r.size) if weight is None else _floats(weight, "weight", r.size)
    total = max(float(w.sum()), 1e-12)

    if init_scores is None:
        win = np.where(y >= 0.5, ia, ib)
        lose = np.where(y >= 0.5, ib, ia)
        s0 = bradley_terry(win, lose, n_items=n_items, tie=y == 0.5, weight=w, alpha=0.1, tol=1e-6).scores
    else:
        s0 = _floats(init_scores, "init_scores", n_items)
    x0 = np.concatenate([s0, np.full(n_raters, 2.0), np.zeros(n_raters), [0.0] if global_bias else []])
    n_s, n_g = n_items, n_raters
    precision = np.concatenate([np.full(n_s, l2), np.full(x0.size - n_s, l2_rater)])

    rows = _orient_comparisons(r, ia, ib, y, w)
    ro, ao, bo = rows[:3]

    def objective(x: FloatArray) -> tuple[float, FloatArray]:
        s, g, q = x[:n_s], x[n_s : n_s + n_g], x[n_s + n_g : n_s + 2 * n_g]
        beta = float(x[-1]) if global_bias else 0.0
        loglik, gd, gg, gq = _noisy_bt_terms(s, g, q, beta, *rows)
        grad = np.concatenate(
            [
                np.bincount(ao, weights=gd, minlength=n_s) - np.bincount(bo, weights=gd, minlength=n_s),
                np.bincount(ro, weights=gg, minlength=n_g),
                np.bincount(ro, weights=gq, minlength=n_g),
                [gd.sum()] if global_bias else [],
            ]
        )
        # Mean negative log-posterior: per-comparison scale keeps L-BFGS tolerances size-independent.
        value = (-loglik + 0.5 * float(precision @ (x * x))) / total
        return value, (-grad + precision * x) / total

    res = minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-9, "maxcor": 20},
    )
    x = res.x
    s, g, q = x[:n_s], x[n_s : n_s + n_g], x[n_s + n_g : n_s + 2 * n_g]
    beta = float(x[-1]) if global_bias else 0.0
    loglik = _noisy_bt_terms(s, g, q, beta, *rows)[0]
    skill = _sigmoid_pair(g)[0]
    return NoisyBTFit(s - s.mean(), skill, q.copy(), beta, loglik, int(res.nit), bool(res.success))


@dataclass(frozen=True)
class ComparisonAgreement:
    """Result of :func:`comparison_agreement`."""

    agreement: FloatArray
    """(n_raters,) mean of +1 (chose the item with the higher consensus score) / -1 (the lower) over
    decisive comparisons: ``2 * accuracy - 1``; 0 for a coin-flipper."""
    n: IntArray
    """(n_raters,) decisive comparisons (no tie, unequal scores) behind each agreement."""
    position_bias: FloatArray
    """(n_raters,) mean of ``1{a won} - sigmoid(theta_a - theta_b)`` over all the rater's
    comparisons (ties count 1/2): how much more often than the consensus predicts the rater picks the
    first-shown item, in probability units; > 0 favours ``a``."""
    global_position_bias: float
    """The same residual over all comparisons."""


def comparison_agreement(
    rater: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    scores: ArrayLike,
    *,
    n_raters: int | None = None,
    leave_one_out: bool = True,
    prior_precision: float = 0.0,
) -> ComparisonAgreement:
    """Per-rater agreement with consensus scores and empirical first-position bias.

    With sparse data (each item in ~20 comparisons) a rater's own choice visibly pulls the consensus
    of the two items it compares towards itself, so even a coin-flipper would seem to agree. With
    ``leave_one_out`` each comparison is scored against the consensus refitted without it,
    approximated by one Newton step (the infinitesimal jackknife): removing comparison ``c`` with
    residual ``y_c - p_c`` moves ``theta_a`` by ``-(y_c - p_c) / I_a`` and ``theta_b`` by
    ``+(y_c - p_c) / I_b``, where ``I_i = sum_{c of i} p_c (1 - p_c) + prior_precision`` is item
    ``i``'s Bradley-Terry Fisher information. Exact refits per rater would cost one fit each.

    Args:
        rater: (N,) rater codes.
        a, b: (N,) item codes, ``a`` shown first.
        outcome: (N,) 1 if ``a`` won, 0 if ``b`` won, 0.5 for a tie.
        scores: (n_items,) consensus log-strengths.
        n_raters: number of raters.
        leave_one_out: score each comparison against the consensus without it (approximately).
        prior_precision: curvature the fit's prior adds to every item's information (e.g. ``l2`` of
            :func:`noisy_bradley_terry`, about ``alpha`` for :func:`bradley_terry`).

    Returns:
        :class:`ComparisonAgreement`.
    """
    r, n_raters = _codes(rater, "rater", n_raters)
    theta = np.asarray(scores, dtype=np.float64)
    ia, _ = _codes(a, "a", theta.size)
    ib, _ = _codes(b, "b", theta.size)
    y = _floats(outcome, "outcome", r.size)
    diff = theta[ia] - theta[ib]
    if leave_one_out:
        p, np_ = _sigmoid_pair(diff)
        var = p * np_
        info = (
            np.bincount(ia, weights=var, minlength=theta.size)
            + np.bincount(ib, weights=var, minlength=theta.size)
            + prior_precision
        )
        # An item seen only in this one comparison has information var_c: removing the comparison
        # leaves it undetermined, so cap the correction instead of dividing by ~0.
        shift = (y - p) * (1.0 / np.maximum(info[ia], 1e-3) + 1.0 / np.maximum(info[ib], 1e-3))
        diff = diff - np.clip(shift, -10.0, 10.0)
    sign = np.sign(diff) * np.sign(y - 0.5)
    decisive = sign != 0
    n = np.bincount(r[decisive], minlength=n_raters)
    agree = np.bincount(r[decisive], weights=sign[decisive], minlength=n_raters)
    agreement = np.divide(agree, n, out=np.zeros(n_raters), where=n > 0)
    residual = y - _sigmoid_pair(diff)[0]
    count = np.bincount(r, minlength=n_raters)
    bias = np.divide(
        np.bincount(r, weights=residual, minlength=n_raters), count, out=np.zeros(n_raters), where=count > 0
    )
    overall = float(residual.mean()) if residual.size else 0.0
    return ComparisonAgreement(agreement, n.astype(np.int64), bias, overall)


# ----------------------------------------------------------------------------------- rankings


Ordering = Sequence["int | Sequence[int]"]
"""One ranking, best first: each entry is an item code or a sequence of tied item codes."""


@dataclass(frozen=True)
class _Stages:
    """Rankings padded to a (R, L) grid of items and a (R, G) grid of tied groups."""

    items: IntArray  # (R, L) item codes, -1 = padding
    group_of: IntArray  # (R, L) group index of each element
    first: IntArray  # (R, G) position of each group's first element
    size: IntArray  # (R, G) group sizes, 0 = padding
    active: NDArray[np.bool_]  # (R, G) stage contributes to the likelihood


def _stages(rankings: Sequence[Ordering], n_items: int | None) -> tuple[_Stages, int]:
    groups: list[list[list[int]]] = [
        [[int(e)] if np.ndim(e) == 0 else [int(x) for x in e] for e in ranking] for ranking in rankings
    ]
    n_r = len(groups)
    lengths = [sum(len(g) for g in rk) for rk in groups]
    n_groups = [len(rk) for rk in groups]
    width, depth = max(lengths, default=0), max(n_groups, default=0)
    items = np.full((n_r, width), -1, dtype=np.int64)
    group_of = np.zeros((n_r, width), dtype=np.int64)
    first = np.zeros((n_r, depth), dtype=np.int64)
    size = np.zeros((n_r, depth), dtype=np.int64)
    for row, rk in enumerate(groups):
        pos = 0
        for gi, grp in enumerate(rk):
            items[row, pos : pos + len(grp)] = grp
            group_of[row, pos : pos + len(grp)] = gi
            first[row, gi] = pos
            size[row, gi] = len(grp)
            pos += len(grp)
        seen = items[row, :pos]
        if np.unique(seen).size != seen.size:
            raise ValueError(f"ranking {row} lists an item twice: {rk}")
    flat, n_items = _codes(items[items >= 0], "ranked item", n_items)
    del flat
    # The last group is a stage only when it is a tie: a single last item "beats" only itself.
    last = np.array(n_groups, dtype=np.int64) - 1
    active = size > 0
    rows = np.arange(n_r)
    has = last >= 0
    active[rows[has], last[has]] &= size[rows[has], last[has]] > 1
    return _Stages(items, group_of, first, size, active), n_items


def plackett_luce(
    rankings: Sequence[Ordering],
    *,
    n_items: int | None = None,
    weight: ArrayLike | None = None,
    alpha: float = 0.1,
    max_iter: int = 10_000,
    tol: float = 1e-8,
) -> StrengthFit:
    """Plackett-Luce log-strengths from (partial, tied) rankings by Hunter's (2004) MM algorithm.

    Model (Plackett 1975, Luce 1959): a ranking is a sequence of choices, each picking the next item
    from those left with probability ``w_i / sum_{j left} w_j``. MM update (Hunter 2004):
    ``w_i <- W_i / sum_{stages s with i still left} 1 / sum_{j left at s} w_j`` with ``W_i`` the
    stages ``i`` wins. As in :func:`bradley_terry`, ``alpha > 0`` gives choix's regularised update and
    the iteration reproduces choix's ``mm_rankings`` for strict rankings.

    Partial rankings: an item a rater did not rank is simply absent (the marginal of a Plackett-Luce
    ranking on a subset is Plackett-Luce on that subset, so dropping is exact).

    Ties (our choice, stated): a tied group ``G`` facing the remaining set ``R`` (``G`` and everything
    ranked below) is one stage whose likelihood is the geometric mean of its members' choice
    probabilities, ``prod_{i in G} (w_i / sum_R w)^(1 / |G|)`` -- Breslow's (1974) tie rule with
    each tied member weighted ``1 / |G|``. This keeps the total weight of a stage at 1 and makes a
    two-item ranking with a tie exactly :func:`bradley_terry`'s half-win tie; a tied group at the
    bottom still pulls its members together. (The exact likelihood, a sum over the ``|G|!`` orders,
    has no closed-form MM step.) A single item at the bottom is no stage.

    ``weight`` (R,) scales each ranking's contribution (e.g. rater reliability).

    Args:
        rankings: R orderings, best first; an entry is an item code or a sequence of tied codes.
        n_items: number of items (default max code + 1).
        weight: optional (R,) non-negative weights.
        alpha: prior pseudo-count (0: maximum likelihood; raises when an item never wins a stage).
        max_iter: maximum MM iterations.
        tol: convergence threshold on the mean absolute change of ``theta``.

    Returns:
        :class:`StrengthFit`.
    """
    st, n_items = _stages(rankings, n_items)
    n_r = st.items.shape[0]
    rw = np.ones(n_r) if weight is None else _floats(weight, "weight", n_r)
    if (rw < 0).any():
        raise ValueError("weight must be non-negative")
    valid = st.items >= 0
    safe_items = np.where(valid, st.items, 0)
    safe_size = np.maximum(st.size, 1)
    # Wins: each member of an active stage wins 1/|G| of the ranking's weight.
    el_active = np.take_along_axis(st.active, st.group_of, axis=1) & valid
    el_size = np.take_along_axis(safe_size, st.group_of, axis=1)
    wins = np.bincount(
        safe_items[el_active], weights=(rw[:, None] / el_size)[el_active], minlength=n_items
    ).astype(np.float64)
    seen = np.bincount(safe_items[valid], minlength=n_items) > 0
    _check_ml_exists(wins, seen, alpha)
    stage_w = np.where(st.active, rw[:, None], 0.0)

    def denoms(strength: FloatArray) -> FloatArray:
        w_el = np.where(valid, strength[safe_items], 0.0)
        # Sum over each element and everything after it in its ranking (a reversed cumsum per row:
        # no cancellation across rankings, unlike one global cumsum).
        suffix = np.cumsum(w_el[:, ::-1], axis=1)[:, ::-1]
        risk = np.take_along_axis(suffix, st.first, axis=1)  # (R, G) sum over a stage's choice set
        val = np.divide(stage_w, risk, out=np.zeros_like(stage_w), where=st.active)
        # An element is in the choice set of its own stage and of every stage above it.
        upto = np.take_along_axis(np.cumsum(val, axis=1), st.group_of, axis=1)
        return np.bincount(safe_items[valid], weights=upto[valid], minlength=n_items)

    params, iterations, converged = _mm(wins, denoms, n_items, alpha, max_iter, tol)
    w_el = np.where(valid, np.exp(params)[safe_items], 0.0)
    suffix = np.cumsum(w_el[:, ::-1], axis=1)[:, ::-1]
    log_risk = np.log(np.maximum(np.take_along_axis(suffix, st.first, axis=1), 1e-300))
    loglik = float(
        np.sum((rw[:, None] / el_size * np.where(valid, params[safe_items], 0.0))[el_active])
        - np.sum((stage_w * log_risk)[st.active])
    )
    return StrengthFit(params, loglik, iterations, converged)


# ------------------------------------------------------------------------------ record wrappers


@dataclass(frozen=True)
class RaterSummary:
    """One rater in a consensus result."""

    n: int
    """Judgments by this rater."""
    weight: float | None
    """Weight in the consensus: reliability weight (``weighted``), 1 (``mean``/``median``),
    Raykar-Yu score (``dawid_skene``); None where the method has no weights."""
    agreement: float | None
    """Agreement with the consensus (Pearson for ratings; sign agreement for comparisons/rankings)."""
    spammer: bool
    """Flagged by :func:`detect_spammers`."""
    spammer_score: float | None = None
    """Raykar-Yu score (``dawid_skene``) else None."""
    skill: float | None = None
    """Noisy-BT skill (probability of really comparing) for ``noisy_bt``."""
    position_bias: float | None = None
    """Comparisons: excess rate of choosing the first-shown response over the consensus prediction."""
    bias_logit: float | None = None
    """Noisy-BT ``q_r``: logit of choosing the first-shown response when not comparing."""


@dataclass(frozen=True)
class RatingConsensus:
    """Result of :func:`aggregate_ratings`; ``scores[item_id][response_id]``."""

    method: str
    calibrate: str | None
    scores: dict[str, dict[str, float]]
    """Consensus rating per response (posterior mean class value for ``dawid_skene``)."""
    n_ratings: dict[str, dict[str, int]]
    raters: dict[str, RaterSummary]
    labels: dict[str, dict[str, str | float]] | None = None
    """``dawid_skene``: the most probable label per response (a scale label or a number)."""
    posteriors: dict[str, dict[str, dict[str, float]]] | None = None
    """``dawid_skene``: class probabilities per response, keyed by label (as text)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ComparisonConsensus:
    """Result of :func:`aggregate_comparisons`; ``scores[item_id][response_id]`` are log-strengths."""

    method: str
    scores: dict[str, dict[str, float]]
    n_comparisons: dict[str, dict[str, int]]
    raters: dict[str, RaterSummary]
    global_position_bias: float
    """Excess rate of first-shown wins over the consensus prediction, all raters."""
    global_bias_logit: float | None
    """Noisy-BT ``beta``; None for ``bt``."""
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RankingConsensus:
    """Result of :func:`aggregate_rankings`; ``scores[item_id][response_id]`` are log-strengths."""

    scores: dict[str, dict[str, float]]
    n_rankings: dict[str, dict[str, int]]
    raters: dict[str, RaterSummary]
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Keys:
    """Integer codes for (item_id, response_id) pairs via np.unique (sorted, so deterministic)."""

    def __init__(self, item_ids: Sequence[str], response_ids: Sequence[str]) -> None:
        self.items, item_code = np.unique(np.asarray(item_ids, dtype=object).astype(str), return_inverse=True)
        self.responses, resp_code = np.unique(
            np.asarray(response_ids, dtype=object).astype(str), return_inverse=True
        )
        pairs, self.code = np.unique(item_code * self.responses.size + resp_code, return_inverse=True)
        self.pair_item = self.items[pairs // self.responses.size]
        self.pair_response = self.responses[pairs % self.responses.size]

    @property
    def n(self) -> int:
        return int(self.pair_item.size)

    def nest(
        self, values: Sequence[Any] | NDArray[Any], cast: Callable[[Any], Any] = float
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for it, resp, val in zip(self.pair_item.tolist(), self.pair_response.tolist(), values, strict=True):
            out.setdefault(it, {})[resp] = cast(val)
        return out


def _check_kind(records: Sequence[Any], cls: type, what: str) -> None:
    if not records:
        raise ValueError(f"no {what} to aggregate")
    for index, rec in enumerate(records):
        if not isinstance(rec, cls):
            raise TypeError(f"record {index}: expected a {cls.__name__}, got {type(rec).__name__}")


def _optional(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def aggregate_ratings(
    records: Sequence[Rating],
    scale: RatingScale | str | None = None,
    *,
    method: Literal["weighted", "mean", "median", "dawid_skene"] = "weighted",
    calibrate: Literal["zscore", "ordinal"] | None = None,
    min_agreement: float = 0.1,
    spam_z: float | None = 1.645,
) -> RatingConsensus:
    """Consensus rating of every (item_id, response_id) from many raters' :class:`Rating` records.

    Values are read through ``scale`` (:meth:`RatingScale.to_number`: a label scale maps labels to
    0..K-1); without a scale every value must be a number. ``calibrate`` first maps each rater's
    values through :func:`zscore_calibrate` or :func:`ordinal_calibrate` (not with
    ``dawid_skene``, whose confusion matrices already model each rater's use of the labels).

    Methods: ``mean``/``median`` (:func:`mean_consensus`, :func:`median_consensus`), ``weighted``
    (:func:`reliability_weighted_consensus`) and ``dawid_skene`` (:func:`dawid_skene` over the
    scale's labels, or over the distinct numbers for a numeric scale; the score is the posterior mean
    value, ``labels`` the most probable one). Raters: agreement with the leave-one-out consensus
    (weighted: final weights; mean/median: the plain mean) and spammer flags from
    :func:`detect_spammers` (``dawid_skene``: the Raykar-Yu score).

    Raises:
        ValueError: naming the record index, rater and item of a value that the scale rejects.
    """
    _check_kind(records, Rating, "ratings")
    parsed = RatingScale.parse(scale) if scale is not None else None
    values = np.empty(len(records))
    for index, rec in enumerate(records):
        try:
            if parsed is not None:
                values[index] = parsed.to_number(rec.value)
            elif isinstance(rec.value, str):
                raise ValueError(f"{rec.value!r} is a label; pass scale=RatingScale(labels=...)")
            else:
                values[index] = float(rec.value)
        except ValueError as exc:
            raise ValueError(
                f"record {index} (rater {rec.rater_id!r}, item {rec.item_id!r}), field 'value': {exc}"
            ) from None
    keys = _Keys([rec.item_id for rec in records], [rec.response_id for rec in records])
    rater_names, rater = np.unique(
        np.array([rec.rater_id for rec in records], dtype=object).astype(str), return_inverse=True
    )
    n_raters = rater_names.size
    counts = np.bincount(rater, minlength=n_raters)
    n_ratings = keys.nest(np.bincount(keys.code, minlength=keys.n), int)

    if method == "dawid_skene":
        if calibrate is not None:
            raise ValueError(
                "calibrate= does not apply to dawid_skene: its confusion matrices model each rater"
            )
        if parsed is not None and parsed.labels is not None:
            classes = np.arange(len(parsed.labels), dtype=np.float64)
            names: list[str | float] = list(parsed.labels)
        else:
            classes = np.unique(values)
            names = [float(c) for c in classes]
        if classes.size < 2:
            raise ValueError("dawid_skene needs at least two distinct values or labels")
        label = np.searchsorted(classes, values)
        ds = dawid_skene(rater, keys.code, label, n_raters=n_raters, n_items=keys.n, n_classes=classes.size)
        spam = detect_spammers(confusion=ds.confusion, class_counts=ds.class_counts)
        raters = {
            str(name): RaterSummary(
                int(counts[j]), float(spam.score[j]), None, bool(spam.flagged[j]), float(spam.score[j])
            )
            for j, name in enumerate(rater_names)
        }
        best = ds.posteriors.argmax(axis=1)
        return RatingConsensus(
            method,
            None,
            keys.nest(ds.posteriors @ classes),
            n_ratings,
            raters,
            labels=keys.nest([names[c] for c in best], lambda x: x),
            posteriors=keys.nest(
                ds.posteriors, lambda p: {str(nm): float(x) for nm, x in zip(names, p, strict=True)}
            ),
        )

    if method not in RATING_CONSENSUS:
        raise ValueError(
            f"unknown method {method!r}; expected one of {', '.join([*RATING_CONSENSUS, 'dawid_skene'])}"
        )
    if calibrate is not None:
        if calibrate not in CALIBRATIONS:
            raise ValueError(f"unknown calibrate {calibrate!r}; expected one of {', '.join(CALIBRATIONS)}")
        values = CALIBRATIONS[calibrate](rater, values)
    fit = reliability_weighted_consensus(
        rater,
        keys.code,
        values,
        n_raters=n_raters,
        n_items=keys.n,
        min_agreement=min_agreement,
        z=spam_z,
        max_iter=50 if method == "weighted" else 1,
    )
    if method == "weighted":
        scores, weights = fit.scores, fit.weights
    else:
        scores = RATING_CONSENSUS[method](rater, keys.code, values, n_items=keys.n)
        weights = np.ones(n_raters)
    spam = detect_spammers(agreement=fit.agreement, n=fit.n_compared, threshold=min_agreement, z=spam_z)
    raters = {
        str(name): RaterSummary(
            int(counts[j]), float(weights[j]), float(fit.agreement[j]), bool(spam.flagged[j])
        )
        for j, name in enumerate(rater_names)
    }
    return RatingConsensus(method, calibrate, keys.nest(scores), n_ratings, raters)


def aggregate_comparisons(
    records: Sequence[Comparison],
    *,
    method: Literal["bt", "noisy_bt"] = "bt",
    alpha: float = 0.1,
    l2: float = 0.5,
    min_agreement: float = 0.1,
    spam_z: float | None = 1.645,
) -> ComparisonConsensus:
    """Consensus log-strength of every (item_id, response_id) from :class:`Comparison` records.

    ``a`` is the response shown first. ``winner == "tie"`` counts half a win each. The optional
    ``strength`` field (how much better) is not used: it is a margin, not a count of wins.

    Methods: ``bt`` (:func:`bradley_terry`, prior ``alpha``) and ``noisy_bt``
    (:func:`noisy_bradley_terry`, prior precision ``l2``: adds each rater's skill and position-bias
    logit and a global position bias). Strengths of responses under different items are on separate
    scales (they never meet in a comparison). Raters: :func:`comparison_agreement` with the consensus
    (sign agreement and first-position residual) and :func:`detect_spammers` flags.
    """
    _check_kind(records, Comparison, "comparisons")
    items = [rec.item_id for rec in records]
    keys = _Keys(items + items, [rec.a_id for rec in records] + [rec.b_id for rec in records])
    n = len(records)
    a, b = keys.code[:n], keys.code[n:]
    if (a == b).any():
        index = int(np.argmax(a == b))
        raise ValueError(f"record {index}: a_id and b_id are the same response ({records[index].a_id!r})")
    outcome = np.array([{"a": 1.0, "b": 0.0, "tie": 0.5}[rec.winner] for rec in records])
    rater_names, rater = np.unique(
        np.array([rec.rater_id for rec in records], dtype=object).astype(str), return_inverse=True
    )
    n_raters = rater_names.size

    noisy: NoisyBTFit | None = None
    if method == "bt":
        winner = np.where(outcome >= 0.5, a, b)
        loser = np.where(outcome >= 0.5, b, a)
        fit = bradley_terry(winner, loser, n_items=keys.n, tie=outcome == 0.5, alpha=alpha)
        scores, converged = fit.scores, fit.converged
    elif method == "noisy_bt":
        noisy = noisy_bradley_terry(rater, a, b, outcome, n_raters=n_raters, n_items=keys.n, l2=l2)
        scores, converged = noisy.scores, noisy.converged
    else:
        raise ValueError(f"unknown method {method!r}; expected 'bt' or 'noisy_bt'")
    agree = comparison_agreement(
        rater, a, b, outcome, scores, n_raters=n_raters, prior_precision=alpha if noisy is None else l2
    )
    spam = detect_spammers(agreement=agree.agreement, n=agree.n, threshold=min_agreement, z=spam_z)
    counts = np.bincount(rater, minlength=n_raters)
    raters = {
        str(name): RaterSummary(
            int(counts[j]),
            None if noisy is None else float(noisy.skill[j]),
            float(agree.agreement[j]),
            bool(spam.flagged[j]),
            skill=None if noisy is None else float(noisy.skill[j]),
            position_bias=float(agree.position_bias[j]),
            bias_logit=None if noisy is None else float(noisy.position_bias[j]),
        )
        for j, name in enumerate(rater_names)
    }
    n_comp = np.bincount(a, minlength=keys.n) + np.bincount(b, minlength=keys.n)
    return ComparisonConsensus(
        method,
        keys.nest(scores),
        keys.nest(n_comp, int),
        raters,
        agree.global_position_bias,
        None if noisy is None else _optional(noisy.global_position_bias),
        converged,
    )


def aggregate_rankings(
    records: Sequence[Ranking],
    *,
    alpha: float = 0.1,
    min_agreement: float = 0.1,
    spam_z: float | None = 1.645,
) -> RankingConsensus:
    """Consensus log-strength of every (item_id, response_id) from :class:`Ranking` records.

    Fits :func:`plackett_luce` (ties and unranked responses as documented there; prior ``alpha``).
    A rater's agreement is the mean over the ordered pairs their rankings imply (i above j) of +1
    when the consensus agrees and -1 when it does not, i.e. Kendall's tau-a against the consensus
    pooled over their rankings; spammer flags come from :func:`detect_spammers`.
    """
    _check_kind(records, Ranking, "rankings")
    item_ids: list[str] = []
    response_ids: list[str] = []
    shapes: list[list[int]] = []
    for rec in records:
        groups = rec.ordered()
        shapes.append([len(g) for g in groups])
        for group in groups:
            item_ids.extend(rec.item_id for _ in group)
            response_ids.extend(resp.id for resp in group)
    keys = _Keys(item_ids, response_ids)
    codes = keys.code.tolist()
    orderings: list[list[list[int]]] = []
    pos = 0
    for sizes in shapes:
        ordering = []
        for s in sizes:
            ordering.append(codes[pos : pos + s])
            pos += s
        orderings.append(ordering)
    fit = plackett_luce(orderings, n_items=keys.n, alpha=alpha)

    rater_names, rater_of = np.unique(
        np.array([rec.rater_id for rec in records], dtype=object).astype(str), return_inverse=True
    )
    # Implied pairs (above, below) per ranking: few responses per ranking, so a loop over rankings.
    above: list[int] = []
    below: list[int] = []
    who: list[int] = []
    for index, ordering in enumerate(orderings):
        for gi, group in enumerate(ordering):
            lower = [x for g in ordering[gi + 1 :] for x in g]
            for hi in group:
                above.extend([hi] * len(lower))
                below.extend(lower)
                who.extend([int(rater_of[index])] * len(lower))
    n_raters = rater_names.size
    agree = comparison_agreement(
        np.asarray(who, dtype=np.int64),
        np.asarray(above, dtype=np.int64),
        np.asarray(below, dtype=np.int64),
        np.ones(len(above)),
        fit.scores,
        n_raters=n_raters,
        prior_precision=alpha,
    )
    spam = detect_spammers(agreement=agree.agreement, n=agree.n, threshold=min_agreement, z=spam_z)
    counts = np.bincount(rater_of, minlength=n_raters)
    raters = {
        str(name): RaterSummary(int(counts[j]), None, float(agree.agreement[j]), bool(spam.flagged[j]))
        for j, name in enumerate(rater_names)
    }
    return RankingConsensus(
        keys.nest(fit.scores), keys.nest(np.bincount(keys.code, minlength=keys.n), int), raters, fit.converged
    )


__all__ = [
    "CALIBRATIONS",
    "RATING_CONSENSUS",
    "ComparisonAgreement",
    "ComparisonConsensus",
    "DawidSkeneResult",
    "NoisyBTFit",
    "RankingConsensus",
    "RaterSummary",
    "RatingConsensus",
    "SpammerReport",
    "StrengthFit",
    "WeightedConsensus",
    "aggregate_comparisons",
    "aggregate_rankings",
    "aggregate_ratings",
    "bradley_terry",
    "comparison_agreement",
    "dawid_skene",
    "detect_spammers",
    "mean_consensus",
    "median_consensus",
    "noisy_bradley_terry",
    "ordinal_calibrate",
    "plackett_luce",
    "raykar_yu_spammer_score",
    "reliability_weighted_consensus",
    "zscore_calibrate",
]
