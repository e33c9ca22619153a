"""InfoNCE: hand-worked values, masking, and the one-negative identity with DPO's sigmoid loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prefalign.losses import dpo_loss, info_nce_loss


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# Worked example: s+ = 2, negatives 1 and 0.
#   tau = 1:   -log e^2 / (e^2 + e^1 + e^0) = log(1 + e^-1 + e^-2) = log(1.5032147) = 0.4076060
#   tau = 0.5: logits 4, 2, 0 -> log(1 + e^-2 + e^-4) = log(1.1536509) = 0.1429316
POSITIVE = _t(2.0)
NEGATIVES = _t(1.0, 0.0).unsqueeze(0)


def test_worked_example() -> None:
    losses, metrics = info_nce_loss(POSITIVE, NEGATIVES, temperature=1.0)
    torch.testing.assert_close(losses, _t(0.4076059644443804))
    losses, _ = info_nce_loss(POSITIVE, NEGATIVES, temperature=0.5)
    torch.testing.assert_close(losses, _t(0.14293162849989968))
    expected = {"accuracy": 1.0, "scores/positive": 2.0, "scores/negative": 0.5, "negatives": 2.0}
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key].shape == () and not metrics[key].requires_grad
        assert float(metrics[key]) == pytest.approx(value)


def test_equal_scores_give_log_one_plus_n() -> None:
    for n in (1, 3, 7):
        scores = torch.full((4, n), -2.5, dtype=torch.float64)
        losses, metrics = info_nce_loss(scores[:, 0] * 1, scores, temperature=0.3)
        torch.testing.assert_close(losses, torch.full((4,), math.log(1 + n), dtype=torch.float64))
        assert float(metrics["accuracy"]) == 0.0  # a tie is not "ranked first"


def test_is_cross_entropy_with_the_positive_as_class_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(5, generator=gen), torch.randn(5, 4, generator=gen)
    losses, _ = info_nce_loss(pos, neg, temperature=0.07)
    logits = torch.cat([pos[:, None], neg], dim=1) / 0.07
    expected = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long), reduction="none")
    torch.testing.assert_close(losses, expected)


def test_masked_negatives_are_left_out() -> None:
    # Row 0: s+ = 0, negatives 1, (5 masked), -1 -> log(1 + e^1 + e^-1) = 1.4076060.
    # Row 1: every negative masked (nan there is ignored) -> loss 0, counted as ranked first.
    pos = _t(0.0, 3.0)
    neg = torch.tensor([[1.0, 5.0, -1.0], [float("nan"), 9.0, 9.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    losses, metrics = info_nce_loss(pos, neg, temperature=1.0, negative_mask=mask)
    torch.testing.assert_close(losses, _t(1.4076059644443804, 0.0))
    assert float(metrics["negatives"]) == 1.0
    assert float(metrics["scores/negative"]) == pytest.approx(0.0)  # mean of 1 and -1
    assert float(metrics["accuracy"]) == pytest.approx(0.5)
    losses.sum().backward()
    assert torch.isfinite(neg.grad).all() and (neg.grad[~mask] == 0).all()


def test_gradient_is_softmax_minus_one_hot_over_tau() -> None:
    # d loss / d s+ = -(1 - p+) / tau with p+ = e^2 / (e^2 + e + 1) = 0.6652410 at tau = 1.
    pos = POSITIVE.clone().requires_grad_(True)
    losses, _ = info_nce_loss(pos, NEGATIVES, temperature=1.0)
    losses.sum().backward()
    assert pos.grad is not None
    assert float(pos.grad[0]) == pytest.approx(-(1 - 0.6652409557748218))


def test_one_negative_is_dpo_sigmoid_loss() -> None:
    # -log e^{a/tau} / (e^{a/tau} + e^{b/tau}) = -log sigmoid((a - b) / tau): with scores
    # beta * (log pi - log ref) and tau = 1, or scores (log pi - log ref) and tau = 1 / beta,
    # InfoNCE with the rejected answer as the only negative is DPO (Rafailov et al. 2023, eq. 7).
    gen = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(6, generator=gen, dtype=torch.float64) * 5 for _ in range(4))
    beta = 0.1
    expected, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    scaled, _ = info_nce_loss(beta * (pc - rc), (beta * (pr - rr)).unsqueeze(1), temperature=1.0)
    tempered, _ = info_nce_loss(pc - rc, (pr - rr).unsqueeze(1), temperature=1 / beta)
    torch.testing.assert_close(scaled, expected)
    torch.testing.assert_close(tempered, expected)
    # and the closed form, at a hand-checked point: -log sigmoid(1) = log(1 + e^-1) = 0.3132617
    one, _ = info_nce_loss(_t(1.5), _t(0.5).unsqueeze(1), temperature=1.0)
    torch.testing.assert_close(one, _t(0.31326168751822286))


def test_no_negatives_gives_zero_loss() -> None:
    losses, metrics = info_nce_loss(_t(1.0, 2.0), torch.zeros(2, 0, dtype=torch.float64), temperature=1.0)
    torch.testing.assert_close(losses, _t(0.0, 0.0))
    assert float(metrics["negatives"]) == 0.0


@pytest.mark.parametrize(
    ("pos", "neg", "kwargs"),
    [
        (torch.zeros(3, 1), torch.zeros(3, 2), {}),  # (B, 1) positive would broadcast
        (torch.zeros(3), torch.zeros(3), {}),  # negatives must be (B, N)
        (torch.zeros(3), torch.zeros(2, 2), {}),  # batch sizes differ
        (torch.zeros(3), torch.zeros(3, 2), {"negative_mask": torch.ones(3, 1, dtype=torch.bool)}),
        (torch.zeros(3), torch.zeros(3, 2), {"temperature": 0.0}),
    ],
)
def test_bad_input_is_refused(pos: torch.Tensor, neg: torch.Tensor, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        info_nce_loss(pos, neg, **{"temperature": 1.0, **kwargs})


def test_rows_are_independent_so_any_split_of_a_step_gives_the_same_losses_and_metrics() -> None:
    # The recipe gives every row of an optimizer step the step's negatives; the loss of a row then
    # depends on that row's scores only, and every metric is a mean of per-row values, so the
    # example-weighted means over any split of the rows equal the full step's (rows with unequal
    # numbers of counted negatives included).
    gen = torch.Generator().manual_seed(2)
    pos, neg = (
        torch.randn(7, generator=gen, dtype=torch.float64),
        torch.randn(7, 5, generator=gen, dtype=torch.float64),
    )
    mask = torch.rand(7, 5, generator=gen) > 0.4
    mask[:, 0] = True  # every row keeps its own rejected answer
    full, full_metrics = info_nce_loss(pos, neg, temperature=0.5, negative_mask=mask)
    for cuts in ([1] * 7, [3, 3, 1], [2, 5]):
        losses, sums, start = [], {k: 0.0 for k in full_metrics}, 0
        for size in cuts:
            part = slice(start, start + size)
            part_losses, metrics = info_nce_loss(
                pos[part], neg[part], temperature=0.5, negative_mask=mask[part]
            )
            losses.append(part_losses)
            for key, value in metrics.items():
                sums[key] += float(value) * size
            start += size
        torch.testing.assert_close(torch.cat(losses), full)
        for key, value in full_metrics.items():
            assert sums[key] / 7 == pytest.approx(float(value), rel=1e-6), key


def test_negative_score_metric_is_the_mean_of_each_rows_mean() -> None:
    # Row 0: negatives 1 and 3 (mean 2); row 1: negative -4 only (and one masked): mean (2 - 4) / 2.
    neg = torch.tensor([[1.0, 3.0], [-4.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    _, metrics = info_nce_loss(_t(0.0, 0.0), neg, temperature=1.0, negative_mask=mask)
    assert float(metrics["scores/negative"]) == pytest.approx(-1.0)
    assert float(metrics["negatives"]) == pytest.approx(1.5)
