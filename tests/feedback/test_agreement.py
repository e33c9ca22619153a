"""Inter-rater agreement: hand-worked values from the papers, cross-checks against reference packages."""

from __future__ import annotations

import itertools
import json
import math

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from prefalign.feedback.agreement import (
    agreement_with_consensus,
    canonical_outcome,
    cohen_kappa,
    coincidence_matrix,
    comparisons_agreement,
    fleiss_counts,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen_kappa,
    percent_agreement,
    ratings_agreement,
    reliability_matrix,
)
from prefalign.feedback.schema import Comparison, Rating, RatingScale

NAN = math.nan
LEVELS = ("nominal", "ordinal", "interval", "ratio")

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": four observers, twelve units,
# values 1-5 with missing data; the paper reports alpha 0.743 (nominal), 0.815 (ordinal), 0.849
# (interval) and 0.797 (ratio). The same matrix is in the `krippendorff` package's doctests.
PAPER = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
WIKI_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _long(matrix: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """A reliability matrix as long-format (rater, item, value) triples, missing values left out."""
    rows = [(r, u, float(v)) for (r, u), v in np.ndenumerate(matrix) if not np.isnan(v)]
    return [r for r, _, _ in rows], [u for _, u, _ in rows], [v for _, _, v in rows]


# ----------------------------------------------------------------------------- Krippendorff's alpha


@pytest.mark.parametrize(
    ("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_alpha_matches_krippendorff_2011_worked_example(level: str, expected: float) -> None:
    alpha = krippendorff_alpha(PAPER, level)
    assert type(alpha) is float and round(alpha, 3) == expected


def test_alpha_binary_two_observers_by_hand() -> None:
    # Krippendorff 2011's first example (two observers, ten units, 0/1): o_00 = 10, o_01 = o_10 = 4,
    # o_11 = 2, n_0 = 14, n_1 = 6, n = 20, so alpha = 1 - 19 * 8 / (2 * 14 * 6) = 0.095.
    data = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
    values, o = coincidence_matrix(data)
    np.testing.assert_array_equal(values, [0, 1])
    np.testing.assert_allclose(o, [[10, 4], [4, 2]])
    assert krippendorff_alpha(data, "nominal") == pytest.approx(1 - 19 * 8 / 168)
    assert round(krippendorff_alpha(data, "nominal"), 3) == 0.095


def test_coincidences_count_each_pairable_value_once() -> None:
    values, o = coincidence_matrix(PAPER)
    np.testing.assert_array_equal(values, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(o, o.T)
    # 41 values, of which unit 12's lone "3" is not pairable.
    assert o.sum() == pytest.approx(40)


def test_alpha_ignores_units_with_fewer_than_two_values_and_empty_raters() -> None:
    base = np.array(PAPER, dtype=float)
    padded = np.hstack([base, [[7.0], [NAN], [NAN], [NAN]], np.full((4, 1), NAN)])
    padded = np.vstack([padded, np.full((1, padded.shape[1]), NAN)])
    for level in ("nominal", "interval"):
        # A lone value adds a value to the domain but no pair, so nothing changes.
        assert krippendorff_alpha(padded, level) == pytest.approx(krippendorff_alpha(base, level), abs=1e-12)


def test_alpha_undefined_cases_are_nan() -> None:
    assert math.isnan(krippendorff_alpha([[1, 2, NAN], [NAN, NAN, 3]]))  # no unit holds two values
    assert math.isnan(krippendorff_alpha([[2, 2, 2], [2, 2, 2]], "nominal"))  # no variation
    assert math.isnan(krippendorff_alpha(np.full((3, 4), NAN)))
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]], "ordinal") == 1.0


def test_alpha_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        krippendorff_alpha(PAPER, "cardinal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="matrix"):
        krippendorff_alpha([1, 2, 3])
    with pytest.raises(ValueError, match="infinite"):
        krippendorff_alpha([[1, math.inf], [1, 2]])
    with pytest.raises(ValueError, match="non-negative"):
        krippendorff_alpha([[-1, 2], [1, 2]], "ratio")


@pytest.mark.parametrize("level", LEVELS)
def test_alpha_matches_krippendorff_package_on_random_data(level: str) -> None:
    rng = np.random.default_rng(123)
    checked = 0
    for trial in range(60):
        n_raters, n_units, n_values = rng.integers(2, 7), rng.integers(2, 25), rng.integers(2, 7)
        data = rng.integers(0, n_values, size=(n_raters, n_units)).astype(float)
        if trial % 3 == 1:  # non-integer values: the value domain is whatever occurs
            data += rng.random(data.shape).round(1)
        data[rng.random(data.shape) < 0.3] = NAN
        try:
            expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        except ValueError:  # the package refuses data with <= 1 value or no pairable unit
            continue
        ours = krippendorff_alpha(data, level)
        if np.isnan(expected):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(float(expected), abs=1e-9)
            checked += 1
    assert checked >= 40


def test_reliability_matrix_codes_labels_in_category_order() -> None:
    rm = reliability_matrix(["a", "b", "a", "b"], [1, 1, 2, 2], ["good", "bad", "good", None])
    assert rm.raters == ["a", "b"] and rm.items == [1, 2]
    assert rm.categories == ("bad", "good")
    np.testing.assert_array_equal(rm.data, [[1, 1], [0, NAN]])
    with pytest.raises(ValueError, match="judged item 1 twice"):
        reliability_matrix(["a", "a"], [1, 1], [1, 2])
    with pytest.raises(ValueError, match="not a category"):
        reliability_matrix(["a"], [1], ["meh"], categories=["bad", "good"])
    with pytest.raises(ValueError, match="same length"):
        reliability_matrix(["a"], [1, 2], [3])


# ------------------------------------------------------------------------------------ Fleiss' kappa


def test_fleiss_kappa_wikipedia_example() -> None:
    assert round(fleiss_kappa(WIKI_FLEISS), 3) == 0.210


def _fleiss_by_pairs(counts: np.ndarray) -> float:
    """Fleiss' kappa from its meaning: P_i = share of agreeing rater pairs on unit i, by enumeration."""
    agree = []
    for row in counts:
        labels = [c for c, k in enumerate(row) for _ in range(int(k))]
        pairs = list(itertools.combinations(labels, 2))
        agree.append(np.mean([x == y for x, y in pairs]))
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = float((p_j**2).sum())
    return (float(np.mean(agree)) - p_e) / (1 - p_e)


def test_fleiss_kappa_matches_pair_enumeration_and_krippendorff_identity() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n_units, n_raters, n_cats = rng.integers(3, 15), rng.integers(2, 6), rng.integers(2, 5)
        labels = rng.integers(0, n_cats, size=(n_raters, n_units))
        counts = np.stack([(labels == c).sum(axis=0) for c in range(n_cats)], axis=1)
        kappa = fleiss_kappa(counts)
        if math.isnan(kappa):
            continue
        assert kappa == pytest.approx(_fleiss_by_pairs(counts), abs=1e-12)
        # With n ratings on each of N units, nominal alpha = 1 - (1 - kappa) (Nn - 1) / (Nn).
        total = n_units * n_raters
        alpha = krippendorff.alpha(reliability_data=labels.astype(float), level_of_measurement="nominal")
        assert 1 - (1 - kappa) * (total - 1) / total == pytest.approx(alpha, abs=1e-12)


def test_fleiss_kappa_edge_cases() -> None:
    assert fleiss_kappa([[3, 0], [0, 3], [0, 0]]) == 1.0  # an all-zero row is a unit nobody rated
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))  # one category only
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="non-negative"):
        fleiss_kappa([[2, -1]])


def test_fleiss_counts_from_long_format() -> None:
    table = fleiss_counts(
        ["r1", "r2", "r3", "r1", "r2", "r3"],
        ["x", "x", "x", "y", "y", "y"],
        ["yes", "no", "yes", "no", "no", "no"],
    )
    assert table.items == ["x", "y"] and table.categories == ("no", "yes")
    np.testing.assert_array_equal(table.counts, [[1, 2], [3, 0]])
    table = fleiss_counts(["r1"], ["x"], ["yes"], categories=["no", "yes", "maybe"])
    np.testing.assert_array_equal(table.counts, [[0, 1, 0]])
    with pytest.raises(ValueError, match="twice"):
        fleiss_counts(["r1", "r1"], ["x", "x"], ["yes", "no"])


# ----------------------------------------------------------------------------------- Cohen's kappa


def test_cohen_kappa_wikipedia_example() -> None:
    # 50 proposals: both yes 20, A yes/B no 5, A no/B yes 10, both no 15; p_o = 0.7, p_e = 0.5.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(weights: str | None) -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        n, n_labels = rng.integers(2, 40), rng.integers(2, 6)
        a = rng.integers(0, n_labels, size=n)
        b = np.where(rng.random(n) < 0.5, a, rng.integers(0, n_labels, size=n))
        expected = cohen_kappa_score(a, b, weights=weights, labels=list(range(n_labels)))
        ours = cohen_kappa(a.tolist(), b.tolist(), weights=weights, labels=range(n_labels))  # type: ignore[arg-type]
        if np.isnan(expected):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(expected, abs=1e-12)
    names = np.array(["bad", "ok", "good"])
    a, b = names[rng.integers(0, 3, 25)], names[rng.integers(0, 3, 25)]
    assert cohen_kappa(a.tolist(), b.tolist(), weights=weights) == pytest.approx(  # type: ignore[arg-type]
        cohen_kappa_score(a, b, weights=weights), abs=1e-12
    )


def test_cohen_kappa_edge_cases() -> None:
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))
    assert math.isnan(cohen_kappa([], []))
    with pytest.raises(ValueError, match="same length"):
        cohen_kappa([1], [1, 2])
    with pytest.raises(ValueError, match="not in labels"):
        cohen_kappa([1, 3], [1, 2], labels=[1, 2])
    with pytest.raises(ValueError, match="weights"):
        cohen_kappa([1, 2], [1, 2], weights="cubic")  # type: ignore[arg-type]


def test_pairwise_cohen_kappa() -> None:
    rater = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    item = [1, 2, 3, 4, 1, 2, 3, 4, 4, 5]
    label = [0, 1, 1, 0, 0, 1, 0, 0, 1, 0]
    result = pairwise_cohen_kappa(rater, item, label)
    assert result.raters == ["a", "b", "c"]
    np.testing.assert_array_equal(result.shared, [[4, 4, 1], [4, 4, 1], [1, 1, 2]])
    assert (
        result.kappa[0, 1]
        == result.kappa[1, 0]
        == pytest.approx(cohen_kappa_score([0, 1, 1, 0], [0, 1, 0, 0]))
    )
    assert np.isnan(result.kappa[0, 2]) and np.isnan(result.kappa[1, 2])  # one shared item
    assert np.isnan(np.diag(result.kappa)).all()
    assert result.mean() == pytest.approx(result.kappa[0, 1])
    with pytest.raises(ValueError, match="min_shared"):
        pairwise_cohen_kappa(rater, item, label, min_shared=1)


def test_pairwise_weighted_kappa_uses_one_scale_for_all_pairs() -> None:
    # Raters a and b only ever use 1 and 3; on the full 1-5 scale a 1-vs-3 miss is two steps.
    rater, item = ["a", "b", "a", "b", "a", "b"], [1, 1, 2, 2, 3, 3]
    label = [1, 3, 3, 3, 1, 1]
    result = pairwise_cohen_kappa(rater, item, label, weights="linear", labels=[1, 2, 3, 4, 5])
    expected = cohen_kappa_score([1, 3, 1], [3, 3, 1], weights="linear", labels=[1, 2, 3, 4, 5])
    assert result.kappa[0, 1] == pytest.approx(expected)


# ------------------------------------------------------------------------- agreement with consensus


def test_consensus_is_leave_one_out() -> None:
    # Two raters per item: the others' majority is just the other rater, so accuracy is the raw
    # agreement (3 of 4). A consensus that included the rater would have them agree with themselves.
    rater = ["a", "b"] * 4
    item = [1, 1, 2, 2, 3, 3, 4, 4]
    label = ["x", "x", "y", "y", "x", "x", "x", "y"]
    assert agreement_with_consensus(rater, item, label, "majority") == {"a": 0.75, "b": 0.75}


def test_consensus_majority_skips_ties_and_lone_items() -> None:
    rater = ["a", "b", "c", "a", "b", "c", "a"]
    item = [1, 1, 1, 2, 2, 2, 3]
    label = ["x", "x", "y", "x", "y", "z", "x"]
    scores = agreement_with_consensus(rater, item, label, "majority", min_items=1)
    # a: item 1 others (x, y) tied -> skipped; item 2 others (y, z) tied -> skipped; item 3 alone.
    assert math.isnan(scores["a"])
    # b: item 1 others (x, y) tied; item 2 others (x, z) tied -> nothing. c: item 1 others (x, x) -> x != y.
    assert math.isnan(scores["b"]) and scores["c"] == 0.0


def test_consensus_pearson_against_others_mean() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=30)
    noise = {"g1": 0.2, "g2": 0.2, "g3": 0.2, "noisy": 3.0}
    rater = [r for r in noise for _ in truth]
    item = [i for _ in noise for i in range(len(truth))]
    value = [float(truth[i] + noise[r] * rng.normal()) for r in noise for i in range(len(truth))]
    scores = agreement_with_consensus(rater, item, value, "mean")
    assert min(scores["g1"], scores["g2"], scores["g3"]) > scores["noisy"] + 0.2
    # By hand for g1: correlate with the mean of the other three raters' values.
    values = np.array(value).reshape(len(noise), -1)
    assert scores["g1"] == pytest.approx(np.corrcoef(values[0], values[1:].mean(axis=0))[0, 1])
    spearman = agreement_with_consensus(rater, item, value, "median", metric="spearman")
    assert set(spearman) == set(noise)
    with pytest.raises(ValueError, match="numeric"):
        agreement_with_consensus(["a", "b"], [1, 1], ["x", "y"], "mean")
    with pytest.raises(ValueError, match="consensus"):
        agreement_with_consensus(["a"], [1], [1.0], "mode")  # type: ignore[arg-type]


def test_consensus_kappa_metric() -> None:
    rater = ["a", "b", "c"] * 4
    item = [i for i in range(4) for _ in range(3)]
    label = ["x", "x", "x", "y", "y", "y", "x", "x", "y", "y", "y", "x"]
    scores = agreement_with_consensus(rater, item, label, "majority", metric="kappa")
    assert scores["a"] == pytest.approx(1.0) and scores["b"] == pytest.approx(1.0)
    assert scores["c"] == pytest.approx(cohen_kappa(["x", "y", "y", "x"], ["x", "y", "x", "y"]))


# ---------------------------------------------------------------------------------- record reports


def _rating(rater: str, item: str, value: float | str, response: str = "r0") -> Rating:
    return Rating(rater, item, "Prompt?", response, f"text of {response}", value)


def test_ratings_agreement_ordinal_labels() -> None:
    scale = RatingScale(labels=("bad", "medium", "good"))
    grid = {
        "r1": ["good", "bad", "medium", "good", "bad"],
        "r2": ["good", "bad", "good", "good", "medium"],
        "r3": ["Good", "bad", "medium", "medium", "bad"],
    }
    records = [_rating(r, f"i{k}", v) for r, vals in grid.items() for k, v in enumerate(vals)]
    report = ratings_agreement(records, scale)
    codes = np.array([[scale.to_number(v) for v in vals] for vals in grid.values()])
    assert set(report.alpha) == {"nominal", "ordinal"}
    assert report.alpha["ordinal"] == pytest.approx(
        krippendorff.alpha(reliability_data=codes, level_of_measurement="ordinal"), abs=1e-12
    )
    counts = np.stack([(codes == c).sum(axis=0) for c in range(3)], axis=1)
    assert report.fleiss_kappa == pytest.approx(fleiss_kappa(counts))
    assert report.kappa_weights == "quadratic"
    assert report.per_rater_metric == "accuracy vs majority" and set(report.per_rater) == set(grid)
    assert (report.n_raters, report.n_items, report.n_units, report.n_judgments) == (3, 5, 5, 15)
    json.dumps(report.as_dict(), allow_nan=False)


def test_ratings_agreement_numeric_and_missing() -> None:
    records = [
        _rating("r1", "i1", 7), _rating("r2", "i1", 8), _rating("r3", "i1", 7),
        _rating("r1", "i2", 2), _rating("r2", "i2", 3),
        _rating("r1", "i3", 9), _rating("r3", "i3", 10),
        _rating("r2", "i4", 5),  # judged once: no pair
        _rating("r1", "i1", 4, response="r1"), _rating("r2", "i1", 5, response="r1"),
    ]  # fmt: skip
    report = ratings_agreement(records, RatingScale(0, 10))
    rm = reliability_matrix(
        [r.rater_id for r in records],
        [(r.item_id, r.response_id) for r in records],
        [r.value for r in records],
    )
    assert set(report.alpha) == {"ordinal", "interval"}
    assert report.alpha["interval"] == pytest.approx(
        krippendorff.alpha(reliability_data=rm.data, level_of_measurement="interval"), abs=1e-12
    )
    assert report.fleiss_kappa is None  # numbers, not labels
    assert report.per_rater_metric == "pearson vs mean"
    assert (report.n_items, report.n_units, report.n_judgments) == (4, 5, 10)
    assert report.percent_agreement == pytest.approx(percent_agreement(rm.data))
    assert ratings_agreement(records).alpha == report.alpha  # no scale: numbers read as they are


def test_ratings_agreement_unscaled_labels_and_uneven_counts() -> None:
    records = [
        _rating("r1", "i1", "spam"), _rating("r2", "i1", "spam"), _rating("r3", "i1", "ham"),
        _rating("r1", "i2", "ham"), _rating("r2", "i2", "ham"),
        _rating("r1", "i3", "ham"), _rating("r2", "i3", "spam"), _rating("r3", "i3", "spam"),
    ]  # fmt: skip
    report = ratings_agreement(records)
    assert set(report.alpha) == {"nominal"}
    assert report.fleiss_kappa is None  # 3, 2 and 3 judgments per unit
    assert report.kappa_weights is None
    even = ratings_agreement([r for r in records if r.item_id != "i2"])
    assert even.fleiss_kappa is not None


def test_ratings_agreement_errors() -> None:
    with pytest.raises(ValueError, match="rater 'r1', item 'i1', response 'r0'"):
        ratings_agreement([_rating("r1", "i1", 11)], RatingScale(0, 10))
    with pytest.raises(ValueError, match="mix numbers and labels"):
        ratings_agreement([_rating("r1", "i1", 1), _rating("r2", "i1", "good")])
    with pytest.raises(ValueError, match="twice"):
        ratings_agreement([_rating("r1", "i1", 1), _rating("r1", "i1", 2)])
    comparison = Comparison("r1", "i1", "p", "x", "X", "y", "Y", "a")
    with pytest.raises(TypeError, match="record 0 is a comparison"):
        ratings_agreement([comparison])  # type: ignore[list-item]


def test_ratings_agreement_too_little_data_is_nan_not_an_error() -> None:
    report = ratings_agreement([_rating("r1", "i1", 3), _rating("r2", "i2", 4)])
    assert all(math.isnan(a) for a in report.alpha.values())
    assert math.isnan(report.mean_pairwise_kappa)
    assert report.as_dict()["alpha"] == {"ordinal": None, "interval": None}
    assert ratings_agreement([]).n_judgments == 0 and comparisons_agreement([]).per_rater == {}


def _comparison(rater: str, item: str, first: str, second: str, winner: str) -> Comparison:
    return Comparison(rater, item, "Prompt?", first, f"text {first}", second, f"text {second}", winner)  # type: ignore[arg-type]


def test_canonical_outcome_flips_swapped_pairs() -> None:
    assert canonical_outcome(_comparison("r", "i", "x", "y", "a")) == (("i", "x", "y"), "first")
    assert canonical_outcome(_comparison("r", "i", "y", "x", "b")) == (("i", "x", "y"), "first")
    assert canonical_outcome(_comparison("r", "i", "y", "x", "a")) == (("i", "x", "y"), "second")
    assert canonical_outcome(_comparison("r", "i", "y", "x", "tie")) == (("i", "x", "y"), "tie")


def test_comparisons_agreement_counts_swapped_orders_as_agreement() -> None:
    records = [
        _comparison("r1", "i1", "x", "y", "a"), _comparison("r2", "i1", "y", "x", "b"),
        _comparison("r1", "i2", "u", "v", "b"), _comparison("r2", "i2", "v", "u", "a"),
        _comparison("r1", "i3", "p", "q", "tie"), _comparison("r2", "i3", "q", "p", "tie"),
    ]  # fmt: skip
    report = comparisons_agreement(records)
    assert report.alpha == {"nominal": 1.0, "ordinal": 1.0}
    assert report.percent_agreement == 1.0 and report.fleiss_kappa == 1.0
    assert report.mean_pairwise_kappa == pytest.approx(1.0)
    assert report.per_rater == {"r1": 1.0, "r2": 1.0}
    # Without the flip the swapped copies would disagree on every untied pair.
    flipped = [*records[:1], _comparison("r2", "i1", "y", "x", "a"), *records[2:]]
    assert comparisons_agreement(flipped).alpha["nominal"] < 1.0


def test_comparisons_agreement_matches_alpha_on_outcome_codes() -> None:
    rng = np.random.default_rng(5)
    records, rows = [], np.full((4, 10), NAN)
    for r in range(4):
        for u in range(10):
            if rng.random() < 0.25:
                continue
            winner = ["a", "tie", "b"][rng.integers(0, 3)]
            swap = bool(rng.integers(0, 2))
            first, second = (f"y{u}", f"x{u}") if swap else (f"x{u}", f"y{u}")
            records.append(_comparison(f"r{r}", f"i{u}", first, second, winner))
            code = {"a": 0, "tie": 1, "b": 2}[winner]
            rows[r, u] = 2 - code if swap else code
    report = comparisons_agreement(records)
    for level in ("nominal", "ordinal"):
        expected = krippendorff.alpha(reliability_data=rows, level_of_measurement=level)
        assert report.alpha[level] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(TypeError, match="Comparison records only"):
        comparisons_agreement([_rating("r1", "i1", 1)])  # type: ignore[list-item]
