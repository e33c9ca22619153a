"""KL estimators (Schulman 2020): hand-worked values, masks, and Monte-Carlo checks against the
exact KL of small categorical distributions."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.ops import KL_ESTIMATORS, kl_k1, kl_k2, kl_k3, sequence_kl, token_kl


def test_hand_worked_values() -> None:
    # log pi = -1, log ref = -2: log r = log ref - log pi = -1.
    #   k1 = 1, k2 = 0.5, k3 = (e^-1 - 1) - (-1) = e^-1.
    # log pi = -2, log ref = -1: log r = 1.
    #   k1 = -1, k2 = 0.5, k3 = (e - 1) - 1 = e - 2.
    # Equal log-probs: every estimator is 0.
    logps = torch.tensor([-1.0, -2.0, -0.7])
    ref = torch.tensor([-2.0, -1.0, -0.7])
    torch.testing.assert_close(kl_k1(logps, ref), torch.tensor([1.0, -1.0, 0.0]))
    torch.testing.assert_close(kl_k2(logps, ref), torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(kl_k3(logps, ref), torch.tensor([math.exp(-1), math.e - 2, 0.0]))
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


def test_k3_is_accurate_for_tiny_differences() -> None:
    # k3 ~ (log r)^2 / 2 for small log r; exp(x) - 1 without expm1 would lose it in float32.
    d = torch.tensor([1e-4], dtype=torch.float32)
    torch.testing.assert_close(kl_k3(torch.zeros(1), d), d**2 / 2, rtol=1e-3, atol=0)


def test_masks_and_sequence_sums() -> None:
    logps = torch.tensor(
        [[-1.0, -2.0, -float("inf")], [-0.5, -float("inf"), -float("inf")]], requires_grad=True
    )
    ref = torch.tensor([[-2.0, -1.0, 0.0], [-0.5, 0.0, -3.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    per_token = token_kl(logps, ref, mask, estimator="k3")
    torch.testing.assert_close(per_token, torch.tensor([[math.exp(-1), math.e - 2, 0.0], [0.0, 0.0, 0.0]]))
    for name, want in (("k1", [0.0, 0.0]), ("k2", [1.0, 0.0]), ("k3", [math.exp(-1) + math.e - 2, 0.0])):
        torch.testing.assert_close(sequence_kl(logps, ref, mask, estimator=name), torch.tensor(want))
    # Padding holds -inf log-probs: neither the value nor the gradient sees them.
    sequence_kl(logps, ref, mask, estimator="k3").sum().backward()
    assert torch.isfinite(logps.grad).all()
    assert logps.grad[0, 2] == 0 and logps.grad[1, 1] == 0
    # d k3 / d log pi = 1 - exp(log ref - log pi): 1 - e^-1 and 1 - e at the two real tokens.
    torch.testing.assert_close(logps.grad[0, :2], torch.tensor([1 - math.exp(-1), 1 - math.e]))
    with pytest.raises(ValueError, match="estimator"):
        token_kl(logps, ref, mask, estimator="k4")
    with pytest.raises(ValueError, match="differ"):
        token_kl(logps, ref[:, :2], None)


def _draws(p: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spread", [0.3, 1.5], ids=["close", "far"])
def test_k1_and_k3_are_unbiased_for_categorical_kl(spread: float) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, generator=gen, dtype=torch.float64)
    log_p = torch.log_softmax(logits, 0)
    log_q = torch.log_softmax(logits + spread * torch.randn(6, generator=gen, dtype=torch.float64), 0)
    exact = float((log_p.exp() * (log_p - log_q)).sum())
    x = _draws(log_p.exp(), 200_000, seed=1)
    estimates = {name: KL_ESTIMATORS[name](log_p[x], log_q[x]) for name in KL_ESTIMATORS}
    for name in ("k1", "k3"):
        values = estimates[name]
        stderr = float(values.std() / math.sqrt(len(values)))
        assert abs(float(values.mean()) - exact) < 4 * stderr, name
    assert bool((estimates["k3"] >= 0).all()) and bool((estimates["k1"] < 0).any())
    if spread < 1:
        # Close distributions: k3 has less variance than k1, and k2's bias is small.
        assert float(estimates["k3"].std()) < float(estimates["k1"].std())
        assert float(estimates["k2"].mean()) == pytest.approx(exact, rel=0.2)
    else:
        # Far apart, k2 is biased: its mean misses the KL by many standard errors.
        values = estimates["k2"]
        assert abs(float(values.mean()) - exact) > 10 * float(values.std() / math.sqrt(len(values)))


def test_sequence_sums_estimate_the_kl_of_two_token_sequences() -> None:
    # pi and ref over sequences (y1, y2) of 4 tokens each, y2 depending on y1: the exact KL sums
    # over all 16 sequences; per-token k1 and k3 summed over each sampled sequence are unbiased.
    gen = torch.Generator().manual_seed(2)
    k = 4
    pi1, ref1 = (torch.log_softmax(torch.randn(k, generator=gen, dtype=torch.float64), 0) for _ in range(2))
    pi2, ref2 = (
        torch.log_softmax(torch.randn(k, k, generator=gen, dtype=torch.float64), 1) for _ in range(2)
    )
    joint_pi = pi1[:, None] + pi2
    exact = float((joint_pi.exp() * (joint_pi - (ref1[:, None] + ref2))).sum())
    n = 200_000
    y1 = _draws(pi1.exp(), n, seed=3)
    # Draw y2 for every y1 at once: one column of uniform noise per row through the CDF of pi2[y1].
    u = torch.rand(n, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y2 = (pi2[y1].exp().cumsum(1) < u).sum(1).clamp(max=k - 1)
    logps = torch.stack([pi1[y1], pi2[y1, y2]], dim=1)
    ref_logps = torch.stack([ref1[y1], ref2[y1, y2]], dim=1)
    mask = torch.ones(n, 2, dtype=torch.bool)
    for name in ("k1", "k3"):
        values = sequence_kl(logps, ref_logps, mask, estimator=name)
        stderr = float(values.std() / math.sqrt(n))
        assert abs(float(values.mean()) - exact) < 4 * stderr, name
