"""Consensus aggregation: hand-worked cases, cross-checks against crowd-kit and choix, recovery.

Reference libraries (test extras): crowd-kit 1.4.2 (``DawidSkene``, ``MajorityVote``,
``BradleyTerry``, ``NoisyBradleyTerry``) and choix 0.4 (``mm_pairwise``, ``ilsr_pairwise``,
``mm_rankings``, ``ilsr_rankings``). Each cross-check states its tolerance and why.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from scipy.stats import spearmanr

from prefalign.feedback import aggregate as ag
from prefalign.feedback.schema import Comparison, RankedResponse, Ranking, Rating, RatingScale

choix = pytest.importorskip("choix")
crowdkit = pytest.importorskip("crowdkit.aggregation")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------ hand-worked numbers

# 3 raters x 4 items; rater 2 skipped item 3.
RATER = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
ITEM = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2])
VALUE = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 5.0, 4.0, 9.0, 1.0, 4.0])


def test_mean_and_median_by_hand() -> None:
    np.testing.assert_allclose(ag.mean_consensus(RATER, ITEM, VALUE), [4.0, 5 / 3, 4.0, 4.0])
    np.testing.assert_allclose(ag.median_consensus(RATER, ITEM, VALUE), [2.0, 2.0, 4.0, 4.0])
    # An even count takes the mean of the middle two; an item without ratings is NaN.
    out = ag.median_consensus([0, 1], [0, 0], [1.0, 4.0], n_items=2)
    assert out[0] == 2.5 and math.isnan(out[1])
    assert math.isnan(ag.mean_consensus([0], [1], [3.0], n_items=3)[0])


def test_reliability_weights_by_hand() -> None:
    # Raters 0-2 agree perfectly; rater 3 reverses the order. Round 1 (equal weights): rater 0's
    # leave-one-out consensus is mean(r1, r2, r3) = [2, 7/3, 8/3, 3], perfectly correlated with
    # its ratings; rater 3's is [1, 2, 3, 4], correlation -1 -> weight 0. Round 2 repeats that
    # with weights [1, 1, 1, 0], so the fixed point is reached and the consensus ignores rater 3.
    good = [1.0, 2.0, 3.0, 4.0]
    value = good * 3 + good[::-1]
    rater = np.repeat(np.arange(4), 4)
    item = np.tile(np.arange(4), 4)
    fit = ag.reliability_weighted_consensus(rater, item, value)
    np.testing.assert_allclose(fit.weights, [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(fit.agreement, [1.0, 1.0, 1.0, -1.0])
    np.testing.assert_allclose(fit.scores, good)
    assert fit.converged and fit.iterations == 2 and fit.n_compared.tolist() == [4, 4, 4, 4]
    np.testing.assert_allclose(ag.mean_consensus(rater, item, value), [1.75, 2.25, 2.75, 3.25])


def test_calibrations_by_hand() -> None:
    rater = [0, 0, 0, 1, 1, 1]
    value = [1.0, 2.0, 3.0, 3.0, 4.0, 5.0]
    # z-scores: both raters have z = [-sqrt(1.5), 0, sqrt(1.5)]; pooled mean 3, sd sqrt(10/6).
    step = math.sqrt(1.5) * math.sqrt(10 / 6)
    np.testing.assert_allclose(ag.zscore_calibrate(rater, value), [3 - step, 3, 3 + step] * 2)
    # Mid-rank CDF 1/6, 1/2, 5/6 -> Hazen positions 1.5, 3.5, 5.5 of the pooled [1, 2, 3, 3, 4, 5].
    np.testing.assert_allclose(ag.ordinal_calibrate(rater, value), [1.5, 3.0, 4.5] * 2)
    # One rater whose ratings are the pool maps to itself, ties included.
    own = [2.0, 2.0, 5.0, 1.0, 3.0]
    np.testing.assert_allclose(ag.ordinal_calibrate([0] * 5, own), own)
    # A rater with no spread maps to the pooled mean.
    assert ag.zscore_calibrate([0, 0, 1, 1], [4.0, 4.0, 1.0, 3.0])[0] == pytest.approx(3.0)


def test_dawid_skene_unanimous_and_spammer_scores_by_hand() -> None:
    # Three raters agree on every item: posteriors one-hot, confusions the identity, priors 1/2.
    rater = np.repeat([0, 1, 2], 4)
    item = np.tile(np.arange(4), 3)
    label = np.tile([0, 1, 1, 0], 3)
    fit = ag.dawid_skene(rater, item, label)
    np.testing.assert_allclose(fit.posteriors, np.eye(2)[[0, 1, 1, 0]], atol=1e-9)
    np.testing.assert_allclose(fit.priors, [0.5, 0.5])
    np.testing.assert_allclose(fit.confusion, np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-9)
    np.testing.assert_allclose(fit.class_counts, [[2, 2]] * 3, atol=1e-9)

    perfect = np.eye(3)
    spammer = np.tile([0.2, 0.5, 0.3], (3, 1))  # rows equal: the label ignores the truth
    binary = np.array([[0.7, 0.3], [0.2, 0.8]])  # specificity 0.7, sensitivity 0.8
    np.testing.assert_allclose(ag.raykar_yu_spammer_score([perfect, spammer]), [1.0, 0.0], atol=1e-12)
    assert ag.raykar_yu_spammer_score([binary])[0] == pytest.approx((0.8 + 0.7 - 1) ** 2)


def test_detect_spammers_rules_by_hand() -> None:
    agreement = [0.9, 0.05, -0.3, 0.3]
    n = [100, 100, 100, 10]
    # Rater 3: atanh(0.3) * sqrt(7) = 0.82 < 1.645, not significant on 10 ratings.
    assert ag.detect_spammers(agreement=agreement, n=n).flagged.tolist() == [False, True, True, True]
    assert ag.detect_spammers(agreement=agreement, z=None).flagged.tolist() == [False, True, True, False]
    conf = [np.eye(2), np.full((2, 2), 0.5)]
    assert ag.detect_spammers(confusion=conf).flagged.tolist() == [False, True]
    # With 2 labels per class the noise floor of a spammer's score is (1 - 1/2) / 2 * (1/2 + 1/2) = 0.25.
    noisy = [np.array([[0.75, 0.25], [0.25, 0.75]])] * 2  # score 0.25
    flagged = ag.detect_spammers(confusion=noisy, class_counts=[[2, 2], [200, 200]]).flagged
    assert flagged.tolist() == [True, False]
    with pytest.raises(ValueError, match="exactly one"):
        ag.detect_spammers()


def test_bradley_terry_and_ties_by_hand() -> None:
    # A beats B 3 times out of 4: the ML odds are 3, so theta_A - theta_B = log 3.
    fit = ag.bradley_terry([0, 0, 0, 1], [1, 1, 1, 0], alpha=0.0)
    assert fit.scores[0] - fit.scores[1] == pytest.approx(math.log(3), abs=1e-7)
    assert fit.scores.sum() == pytest.approx(0.0, abs=1e-12) and fit.converged
    assert fit.log_likelihood == pytest.approx(3 * math.log(0.75) + math.log(0.25), abs=1e-7)
    # One win plus one tie = 1.5 : 0.5 wins, the same odds.
    tie = ag.bradley_terry([0, 0], [1, 1], tie=[False, True], alpha=0.0)
    assert tie.scores[0] - tie.scores[1] == pytest.approx(math.log(3), abs=1e-7)
    # A two-item ranking is a comparison, and a two-item tie is the half-win tie.
    pl = ag.plackett_luce([[0, 1], [0, 1], [0, 1], [1, 0]], alpha=0.0)
    np.testing.assert_allclose(pl.scores, fit.scores, atol=1e-7)
    assert pl.log_likelihood == pytest.approx(fit.log_likelihood, abs=1e-7)
    pl_tie = ag.plackett_luce([[0, 1], [[0, 1]]], alpha=0.0)
    np.testing.assert_allclose(pl_tie.scores, tie.scores, atol=1e-7)
    # An item that never wins has no ML strength: a clear error, and a prior fixes it.
    with pytest.raises(ValueError, match="never wins"):
        ag.bradley_terry([0, 0], [1, 1], alpha=0.0)
    assert np.isfinite(ag.bradley_terry([0, 0], [1, 1]).scores).all()


def test_plackett_luce_three_items_by_hand() -> None:
    # One ranking 0 > 1 > 2 twice and 2 > 1 > 0 once, with a prior: the result is the fixed point of
    # the MM map, so theta must satisfy (W + a) / (D(w) + a) = w up to choix's normalisation.
    rankings = [[0, 1, 2], [0, 1, 2], [2, 1, 0]]
    fit = ag.plackett_luce(rankings, alpha=0.5)
    w = np.exp(fit.scores)
    w *= 3 / w.sum()
    wins = np.array([2.0, 3.0, 1.0])
    # Stage sets: {0,1,2} and {1,2} twice; {0,1,2} and {0,1} once.
    d = 3 / w.sum() + np.array([0.0, 2 / (w[1] + w[2]) + 1 / (w[0] + w[1]), 2 / (w[1] + w[2])])
    d[0] += 1 / (w[0] + w[1])
    target = np.log((wins + 0.5) / (d + 0.5))
    np.testing.assert_allclose(fit.scores, target - target.mean(), atol=1e-7)
    # Unranked items are dropped; a tied top pair is one stage.
    partial = ag.plackett_luce([[[0, 1], 2], [2, 0]], n_items=4, alpha=0.1)
    assert partial.scores.shape == (4,) and partial.converged


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(TypeError, match="integer codes"):
        ag.mean_consensus([0.5], [0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        ag.mean_consensus([0], [0], [float("nan")])
    with pytest.raises(ValueError, match="twice"):
        ag.plackett_luce([[0, 1, 0]])
    with pytest.raises(ValueError, match="outcome"):
        ag.noisy_bradley_terry([0], [0], [1], [2.0])


# ------------------------------------------------------------------------- cross-checks: choix


def random_comparisons(rng: np.random.Generator, n_items: int, n: int, spread: float = 1.0):
    theta = rng.normal(0.0, spread, n_items)
    a = rng.integers(0, n_items, n)
    b = (a + rng.integers(1, n_items, n)) % n_items
    a_wins = rng.random(n) < sigmoid(theta[a] - theta[b])
    return theta, a, b, np.where(a_wins, a, b), np.where(a_wins, b, a)


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_bradley_terry_equals_choix_mm_pairwise(alpha: float) -> None:
    # Same update, same renormalisation to mean strength 1, same stopping rule: equal to rounding.
    rng = np.random.default_rng(0)
    _, _, _, win, lose = random_comparisons(rng, 30, 400)
    ref = choix.mm_pairwise(30, list(zip(win.tolist(), lose.tolist())), alpha=alpha)
    np.testing.assert_allclose(ag.bradley_terry(win, lose, n_items=30, alpha=alpha).scores, ref, atol=1e-10)


def test_bradley_terry_ml_equals_choix_ilsr_pairwise() -> None:
    # Different algorithms (MM vs iterative spectral) with the same ML fixed point; both stop at
    # mean |change| 1e-8, so they agree to ~1e-6. (choix's ILSR alpha is a different prior --
    # pseudo-transitions of the Markov chain -- so only alpha = 0 is comparable.)
    rng = np.random.default_rng(1)
    _, _, _, win, lose = random_comparisons(rng, 25, 500)
    ref = choix.ilsr_pairwise(25, list(zip(win.tolist(), lose.tolist())), alpha=0.0)
    np.testing.assert_allclose(ag.bradley_terry(win, lose, alpha=0.0).scores, ref, atol=1e-6)


def random_rankings(rng: np.random.Generator, n_items: int, n: int) -> list[list[int]]:
    theta = rng.normal(0.0, 1.0, n_items)
    out = []
    for _ in range(n):
        subset = rng.choice(n_items, size=int(rng.integers(2, 6)), replace=False)
        out.append(subset[np.argsort(-(theta[subset] + rng.gumbel(size=subset.size)))].tolist())
    return out


def test_plackett_luce_equals_choix_rankings() -> None:
    # Partial rankings of 2-5 of 20 items. mm_rankings: same iteration, equal to rounding;
    # ilsr_rankings (alpha 0): same ML fixed point by another algorithm, agree to ~1e-6.
    rng = np.random.default_rng(2)
    rankings = random_rankings(rng, 20, 300)
    for alpha in (0.0, 0.2):
        ref = choix.mm_rankings(20, rankings, alpha=alpha)
        np.testing.assert_allclose(
            ag.plackett_luce(rankings, n_items=20, alpha=alpha).scores, ref, atol=1e-10
        )
    ref = choix.ilsr_rankings(20, rankings, alpha=0.0)
    np.testing.assert_allclose(ag.plackett_luce(rankings, n_items=20, alpha=0.0).scores, ref, atol=1e-6)


# --------------------------------------------------------------------- cross-checks: crowd-kit


def random_labels(rng: np.random.Generator, n_raters: int, n_items: int, k: int):
    truth = rng.integers(0, k, n_items)
    accuracy = rng.uniform(0.35, 0.95, n_raters)
    rater, item = np.nonzero(rng.random((n_raters, n_items)) < 0.6)
    correct = rng.random(rater.size) < accuracy[rater]
    label = np.where(correct, truth[item], rng.integers(0, k, rater.size))
    return rater, item, label


def crowdkit_ds_arrays(model, n_raters: int, n_items: int, k: int):
    probas = model.probas_.reindex(index=range(n_items), columns=range(k)).to_numpy()
    conf = np.zeros((n_raters, k, k))
    for (worker, observed), row in model.errors_.iterrows():  # rows (worker, observed), columns true
        conf[worker, :, observed] = row.reindex(range(k)).to_numpy()
    return probas, model.priors_.reindex(range(k)).to_numpy(), conf


def test_dawid_skene_equals_crowdkit_step_for_step() -> None:
    # Same majority-vote start, same 1e-10 floors, same E/priors/M order: after the same number of
    # iterations (crowd-kit's tol=-inf runs all of them) posteriors agree to 1e-9 (crowd-kit clips
    # its returned posteriors at 1e-10), priors and confusions to 1e-12.
    rng = np.random.default_rng(3)
    rater, item, label = random_labels(rng, 8, 60, 3)
    df = pd.DataFrame({"worker": rater, "task": item, "label": label})
    mv = crowdkit.MajorityVote().fit_predict_proba(df).reindex(index=range(60), columns=range(3)).to_numpy()
    np.testing.assert_allclose(ag.dawid_skene(rater, item, label, max_iter=0).posteriors, mv, atol=1e-12)
    for n_iter in (1, 7, 40):
        ref = crowdkit.DawidSkene(n_iter=n_iter, tol=-np.inf).fit(df)
        probas, priors, conf = crowdkit_ds_arrays(ref, 8, 60, 3)
        fit = ag.dawid_skene(rater, item, label, max_iter=n_iter, tol=-np.inf)
        assert fit.iterations == n_iter
        np.testing.assert_allclose(fit.posteriors, probas, atol=1e-9)
        np.testing.assert_allclose(fit.priors, priors, atol=1e-12)
        np.testing.assert_allclose(fit.confusion, conf, atol=1e-12)


def test_dawid_skene_defaults_close_to_crowdkit() -> None:
    # Default stopping rules differ. crowd-kit stops when its "ELBO" stops rising, but that sum adds
    # the log prior once per label instead of once per item, so it is not EM's monotone bound: here
    # it peaks after ~12 iterations (tol 1e-12 stops there too) while EM is still moving. Ours
    # stops on the marginal log-likelihood, which EM never decreases, after more iterations. So the
    # posteriors differ by up to ~0.04 (tolerance 0.05) while the most probable labels agree exactly.
    rng = np.random.default_rng(4)
    rater, item, label = random_labels(rng, 10, 80, 4)
    df = pd.DataFrame({"worker": rater, "task": item, "label": label})
    probas, _, _ = crowdkit_ds_arrays(crowdkit.DawidSkene(n_iter=100).fit(df), 10, 80, 4)
    fit = ag.dawid_skene(rater, item, label)
    np.testing.assert_allclose(fit.posteriors, probas, atol=0.05)
    assert (fit.posteriors.argmax(1) == probas.argmax(1)).all() and fit.converged


def test_bradley_terry_equals_crowdkit_iterates() -> None:
    # crowd-kit's BradleyTerry is Hunter's unregularised MM with strengths summing to 1: the same
    # iterates as ours with alpha=0 (the update is scale-free without a prior), equal to 1e-10.
    # Its default stopping rule compares p with an alias of itself (p_old = p_new, then p_new is
    # updated in place), so with tol > 0 it always stops after 2 iterations; tol=0 runs all n_iter.
    rng = np.random.default_rng(5)
    _, a, b, win, lose = random_comparisons(rng, 15, 600)
    df = pd.DataFrame({"worker": 0, "left": a, "right": b, "label": win})
    for n_iter in (3, 300):
        ref = np.log(
            crowdkit.BradleyTerry(n_iter=n_iter, tol=0.0).fit(df).scores_.reindex(range(15)).to_numpy()
        )
        ours = ag.bradley_terry(win, lose, alpha=0.0, max_iter=n_iter, tol=0.0).scores
        np.testing.assert_allclose(ours, ref - ref.mean(), atol=1e-10)
    early = np.log(crowdkit.BradleyTerry(n_iter=100).fit(df).scores_.reindex(range(15)).to_numpy())
    ours = ag.bradley_terry(win, lose, alpha=0.0, max_iter=2, tol=0.0).scores
    np.testing.assert_allclose(ours, early - early.mean(), atol=1e-10)


def noisy_instance(rng: np.random.Generator, n_items: int, n: int):
    """Raters: 0-2 careful, 3 position-biased (half the time picks a with prob sigmoid(3)), 4 spammer."""
    theta = rng.normal(0.0, 1.5, n_items)
    a = rng.integers(0, n_items, n)
    b = (a + rng.integers(1, n_items, n)) % n_items
    rater = rng.integers(0, 5, n)
    skill = np.array([0.95, 0.9, 0.85, 0.5, 0.0])
    bias = np.array([0.0, 0.0, 0.0, 3.0, 0.0])
    follow = rng.random(n) < skill[rater]
    p_a = np.where(follow, sigmoid(theta[a] - theta[b]), sigmoid(bias[rater]))
    outcome = (rng.random(n) < p_a).astype(float)
    return theta, rater, a, b, outcome


def test_noisy_bradley_terry_likelihood_equals_crowdkit() -> None:
    # The model is crowd-kit's: its _compute_log_likelihood (regularisation 0) equals our negative
    # log-likelihood at random parameters to 1e-10 relative. crowd-kit packs x = [anchor, theta,
    # q (bias), g (skill)] and codes items from 1.
    from crowdkit.aggregation.utils import factorize

    rng = np.random.default_rng(6)
    _, rater, a, b, outcome = noisy_instance(rng, 12, 300)
    label = np.where(outcome == 1, a, b)
    df = pd.DataFrame({"worker": rater, "left": a, "right": b, "label": label})
    _, coded = factorize(df[["left", "right", "label"]].values)
    _, workers = factorize(df.worker.values)
    for _ in range(3):
        x = rng.normal(0.0, 1.0, 1 + 12 + 2 * 5)
        ref = crowdkit.NoisyBradleyTerry._compute_log_likelihood(x, coded + 1, workers, 12, 5, 0.0)
        rows = ag._orient_comparisons(rater, a, b, outcome, np.ones(300))
        ours = ag._noisy_bt_terms(x[1:13], x[18:], x[13:18], 0.0, *rows)[0]
        assert -ours == pytest.approx(ref, rel=1e-10)


def test_noisy_bradley_terry_gradient_and_crowdkit_fit() -> None:
    # Our analytic gradient matches finite differences (check_grad error < 1e-4 of a norm ~1).
    # crowd-kit's does not (bias derivative written one slot off, regulariser sign flipped), so its
    # L-BFGS stops elsewhere: the fitted orders are compared loosely, Spearman > 0.9, and ours must
    # rank the true strengths at least as well as crowd-kit's minus 0.02.
    # Ties (outcome 0.5) and soft outcomes become two oriented rows each; the gradient covers them.
    rng = np.random.default_rng(7)
    theta, rater, a, b, outcome = noisy_instance(rng, 12, 500)
    n_s, n_r = 12, 5
    soft = outcome.copy()
    soft[:40] = 0.5
    soft[40:50] = 0.2
    weights = rng.uniform(0.5, 2.0, 500)

    for y, w in ((outcome, np.ones(500)), (soft, weights)):
        rows = ag._orient_comparisons(rater, a, b, y, w)
        ro, ao, bo = rows[:3]

        def f(x: np.ndarray, rows=rows) -> float:
            return -ag._noisy_bt_terms(x[:n_s], x[n_s : n_s + n_r], x[n_s + n_r :], 0.3, *rows)[0]

        def grad(x: np.ndarray, rows=rows, ro=ro, ao=ao, bo=bo) -> np.ndarray:
            _, gd, gg, gq = ag._noisy_bt_terms(x[:n_s], x[n_s : n_s + n_r], x[n_s + n_r :], 0.3, *rows)
            gs = np.bincount(ao, gd, n_s) - np.bincount(bo, gd, n_s)
            return -np.concatenate([gs, np.bincount(ro, gg, n_r), np.bincount(ro, gq, n_r)])

        assert check_grad(f, grad, rng.normal(0.0, 1.0, n_s + 2 * n_r)) < 1e-4

    # The oriented likelihood equals the two-sided one, sum w (y log P(a) + (1 - y) log P(b)).
    x = rng.normal(0.0, 1.0, n_s + 2 * n_r)
    s_, g_, q_ = x[:n_s], x[n_s : n_s + n_r], x[n_s + n_r :]
    gam = 1.0 / (1.0 + np.exp(-g_[rater]))
    p_a = gam / (1.0 + np.exp(-(s_[a] - s_[b] + 0.3))) + (1.0 - gam) / (1.0 + np.exp(-q_[rater]))
    two_sided = float(np.sum(weights * (soft * np.log(p_a) + (1.0 - soft) * np.log(1.0 - p_a))))
    rows = ag._orient_comparisons(rater, a, b, soft, weights)
    assert ag._noisy_bt_terms(s_, g_, q_, 0.3, *rows)[0] == pytest.approx(two_sided, rel=1e-12)

    label = np.where(outcome == 1, a, b)
    df = pd.DataFrame({"worker": rater, "left": a, "right": b, "label": label})
    ref = crowdkit.NoisyBradleyTerry(n_iter=100).fit(df).scores_.reindex(range(12)).to_numpy()
    ours = ag.noisy_bradley_terry(rater, a, b, outcome, global_bias=False)
    assert spearmanr(ours.scores, ref)[0] > 0.9
    assert spearmanr(ours.scores, theta)[0] >= spearmanr(ref, theta)[0] - 0.02


# ------------------------------------------------------------------------------------ recovery


def simulated_ratings(rng: np.random.Generator, n_items: int = 150):
    """Raters 0-2 careful (sd 0.5), 3 noisy (sd 2.5) and lenient (+1.5), 4 spammer (uniform 1-10)."""
    truth = rng.uniform(2.0, 9.0, n_items)
    rater = np.repeat(np.arange(5), n_items)
    item = np.tile(np.arange(n_items), 5)
    sd = np.array([0.5, 0.5, 0.5, 2.5, 0.0])
    offset = np.array([0.0, 0.0, 0.0, 1.5, 0.0])
    value = truth[item] + offset[rater] + rng.normal(0.0, 1.0, item.size) * sd[rater]
    spam = rater == 4
    value[spam] = rng.integers(1, 11, int(spam.sum()))
    return truth, rater, item, np.clip(np.rint(value), 1, 10)


def test_weighted_consensus_beats_mean_and_flags_the_spammer() -> None:
    rng = np.random.default_rng(8)
    truth, rater, item, value = simulated_ratings(rng)
    fit = ag.reliability_weighted_consensus(rater, item, value)
    mean = ag.mean_consensus(rater, item, value)
    assert np.corrcoef(fit.scores, truth)[0, 1] > np.corrcoef(mean, truth)[0, 1] + 0.01
    assert fit.weights[4] == 0.0 and fit.weights[:3].min() > 5 * fit.weights[3] > 0
    report = ag.detect_spammers(agreement=fit.agreement, n=fit.n_compared)
    assert report.flagged.tolist() == [False, False, False, False, True]
    # Calibration removes the lenient rater's offset: its z-scored ratings centre on the pool's.
    cal = ag.zscore_calibrate(rater, value)
    assert (
        abs(cal[rater == 3].mean() - cal[rater < 3].mean())
        < 0.1
        < value[rater == 3].mean() - value[rater < 3].mean()
    )


def test_dawid_skene_recovers_labels_and_flags_the_spammer() -> None:
    # 6 raters label 200 items (3 classes): four 80% accurate, one 55%, one spammer who answers
    # uniformly. The spammer's confusion is near rank one and flagged; Dawid-Skene beats the vote.
    rng = np.random.default_rng(13)
    truth = rng.integers(0, 3, 200)
    rater = np.repeat(np.arange(6), 200)
    item = np.tile(np.arange(200), 6)
    accuracy = np.array([0.8, 0.8, 0.8, 0.8, 0.55, 0.0])
    correct = rng.random(item.size) < accuracy[rater]
    label = np.where(correct, truth[item], rng.integers(0, 3, item.size))
    ds = ag.dawid_skene(rater, item, label)
    report = ag.detect_spammers(confusion=ds.confusion, class_counts=ds.class_counts)
    assert report.flagged.tolist() == [False] * 5 + [True]
    assert report.score[5] < 0.05 < 0.3 < report.score[:4].min()
    vote = ag.dawid_skene(rater, item, label, max_iter=0).posteriors  # majority-vote fractions
    assert (ds.posteriors.argmax(1) == truth).mean() >= (vote.argmax(1) == truth).mean()


def test_noisy_bt_recovers_position_bias_and_skills() -> None:
    rng = np.random.default_rng(9)
    theta, rater, a, b, outcome = noisy_instance(rng, 60, 4000)
    fit = ag.noisy_bradley_terry(rater, a, b, outcome)
    assert fit.converged
    assert fit.position_bias[3] > 1.0  # the biased rater favours the first-shown item
    assert fit.skill[4] < 0.2 < 0.7 < fit.skill[:3].min()  # the spammer barely compares
    assert abs(fit.global_position_bias) < 0.2  # nobody else has a position effect
    bt = ag.bradley_terry(np.where(outcome == 1, a, b), np.where(outcome == 1, b, a), n_items=60)
    assert np.corrcoef(fit.scores, theta)[0, 1] > np.corrcoef(bt.scores, theta)[0, 1]
    agree = ag.comparison_agreement(rater, a, b, outcome, bt.scores, prior_precision=0.1)
    assert agree.position_bias[3] > 0.1 > abs(agree.position_bias[:3]).max()
    assert ag.detect_spammers(agreement=agree.agreement, n=agree.n).flagged.tolist() == [False] * 4 + [True]


# ----------------------------------------------------------------------------- record wrappers


def rating(rater: str, item: str, response: str, value: float | str) -> Rating:
    return Rating(rater_id=rater, item_id=item, prompt="p", response_id=response, response="t", value=value)


def test_aggregate_ratings_keys_methods_and_json() -> None:
    truth, rater, item, value = simulated_ratings(np.random.default_rng(10), n_items=40)
    # Items are (prompt, response) pairs: 20 prompts x 2 responses; response ids repeat across prompts.
    records = [
        rating(f"r{r}", f"p{i // 2}", f"resp{i % 2}", float(v))
        for r, i, v in zip(rater, item, value, strict=True)
    ]
    res = ag.aggregate_ratings(records, RatingScale(1, 10))
    assert set(res.scores) == {f"p{k}" for k in range(20)} and set(res.scores["p0"]) == {"resp0", "resp1"}
    assert res.n_ratings["p3"]["resp1"] == 5
    assert res.raters["r4"].spammer and res.raters["r4"].weight == 0.0 and not res.raters["r0"].spammer
    got = np.array([res.scores[f"p{i // 2}"][f"resp{i % 2}"] for i in range(40)])
    assert np.corrcoef(got, truth)[0, 1] > 0.97
    json.dumps(res.as_dict())
    for method in ("mean", "median"):
        plain = ag.aggregate_ratings(records, method=method, calibrate="zscore")
        assert plain.raters["r0"].weight == 1.0 and plain.calibrate == "zscore"
    with pytest.raises(ValueError, match="calibrate"):
        ag.aggregate_ratings(records, method="dawid_skene", calibrate="ordinal")


def test_aggregate_ratings_label_scale_dawid_skene() -> None:
    scale = RatingScale(labels=("bad", "ok", "good"))
    votes = {"x": ["good", "good", "ok"], "y": ["bad", "bad", "bad"], "z": ["ok", "good", "ok"]}
    records = [rating(f"r{k}", "p", resp, lab) for resp, labs in votes.items() for k, lab in enumerate(labs)]
    res = ag.aggregate_ratings(records, scale, method="dawid_skene")
    assert res.labels == {"p": {"x": "good", "y": "bad", "z": "ok"}}
    assert set(res.posteriors["p"]["x"]) == {"bad", "ok", "good"}
    assert res.scores["p"]["y"] < res.scores["p"]["z"] < res.scores["p"]["x"]
    json.dumps(res.as_dict())
    with pytest.raises(ValueError, match=r"record 1 .*'value'"):
        ag.aggregate_ratings([records[0], rating("r9", "p", "x", "great")], scale)
    with pytest.raises(ValueError, match="label"):
        ag.aggregate_ratings(records)  # labels need a scale


def test_aggregate_comparisons_ties_bias_and_json() -> None:
    theta, rater, a, b, outcome = noisy_instance(np.random.default_rng(11), 30, 2500)
    outcome[:50] = 0.5  # some ties
    winner = {1.0: "a", 0.0: "b", 0.5: "tie"}
    records = [
        Comparison(
            rater_id=f"r{r}",
            item_id="p",
            prompt="q",
            a_id=f"x{i}",
            a="",
            b_id=f"x{j}",
            b="",
            winner=winner[y],
        )
        for r, i, j, y in zip(rater, a, b, outcome, strict=True)
    ]
    for method in ("bt", "noisy_bt"):
        res = ag.aggregate_comparisons(records, method=method)
        got = np.array([res.scores["p"][f"x{k}"] for k in range(30)])
        assert np.corrcoef(got, theta)[0, 1] > 0.9
        assert res.raters["r3"].position_bias > 0.1 and res.raters["r4"].spammer
        assert not any(res.raters[f"r{k}"].spammer for k in range(3))
        json.dumps(res.as_dict())
    assert (
        res.raters["r3"].bias_logit > 1.0
        and res.raters["r4"].skill < 0.2
        and res.global_bias_logit is not None
    )
    with pytest.raises(ValueError, match="same response"):
        ag.aggregate_comparisons([dataclasses.replace(records[0], b_id=records[0].a_id)])


def test_aggregate_rankings_with_ties_and_unranked() -> None:
    rng = np.random.default_rng(12)
    strength = {"w": 2.0, "x": 1.0, "y": 0.0, "z": -1.0}
    responses = tuple(RankedResponse(k, k) for k in strength)
    records = []
    for n in range(60):
        noisy = {k: v + rng.gumbel() for k, v in strength.items()}
        order = sorted(noisy, key=lambda k: -noisy[k])
        ranks: list[int | None] = [order.index(k) + 1 for k in strength]
        if n % 5 == 0:
            ranks[3] = None  # z left unranked
        if n % 7 == 0:
            ranks = [min(r, 2) if r is not None else None for r in ranks]  # everything below 1st tied
        records.append(
            Ranking(rater_id=f"r{n % 3}", item_id="p", prompt="q", responses=responses, ranks=tuple(ranks))
        )
    res = ag.aggregate_rankings(records)
    scores = res.scores["p"]
    assert scores["w"] > scores["x"] > scores["y"] > scores["z"]
    assert res.n_rankings["p"]["z"] == 48 and res.converged
    assert all(r.agreement > 0.3 and not r.spammer for r in res.raters.values())
    json.dumps(res.as_dict())
