"""PHF objectives (Korbak et al. 2023) against hand-worked numbers."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from prefalign.losses.phf import PHF_OBJECTIVES, awr_loss, nll_loss, rwr_loss, unlikelihood_loss
from prefalign.losses.reduction import reduce_token_loss

LN2 = math.log(2)


def _logps(*probs: float) -> torch.Tensor:
    return torch.log(torch.tensor([list(probs)], dtype=torch.float64))


def test_nll_is_minus_log_p_on_masked_tokens_only() -> None:
    logps = _logps(0.5, 0.25, 0.1)
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = nll_loss(logps, mask)
    torch.testing.assert_close(loss, torch.tensor([[LN2, 2 * LN2, 0.0]], dtype=torch.float64))
    assert float(metrics["nll"]) == pytest.approx(1.5 * LN2)


def test_unlikelihood_penalises_tokens_of_bad_segments() -> None:
    # good p=0.5: -ln 0.5; bad p=0.9: -ln(1 - 0.9) = ln 10; bad p=0.2: -ln 0.8; masked: 0.
    logps = _logps(0.5, 0.9, 0.2, 0.3).requires_grad_()
    good = torch.tensor([[True, False, False, True]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, metrics = unlikelihood_loss(logps, mask, good)
    expected = torch.tensor([[LN2, math.log(10), -math.log(0.8), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)
    assert float(metrics["good_fraction"]) == pytest.approx(1 / 3)
    assert float(metrics["unlikelihood"]) == pytest.approx((math.log(10) - math.log(0.8)) / 2)
    # d/dlog p of -log(1 - p) is p / (1 - p): 9 at p = 0.9; of -log p it is -1.
    loss.sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-1.0, 9.0, 0.25, 0.0]], dtype=torch.float64))


def test_unlikelihood_weight_scales_only_the_bad_tokens_and_stays_finite_at_p_1() -> None:
    logps = _logps(0.5, 0.9, 1.0)
    good = torch.tensor([[True, False, False]])
    loss, _ = unlikelihood_loss(logps, torch.ones(1, 3), good, unlikelihood_weight=0.5)
    torch.testing.assert_close(
        loss, torch.tensor([[LN2, 0.5 * math.log(10), -0.5 * math.log(1e-20)]], dtype=torch.float64)
    )


def test_rwr_weights_nll_by_exp_score_over_beta_and_clips() -> None:
    logps = _logps(0.5, 0.5, 0.5)
    scores = torch.tensor([[0.0, -1.0, 10.0]], dtype=torch.float64)
    loss, metrics = rwr_loss(logps, torch.ones(1, 3), scores, beta=1.0, max_weight=100.0)
    # weights 1, e^-1, min(e^10, 100) = 100
    expected = torch.tensor([[LN2, math.exp(-1) * LN2, 100 * LN2]], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)
    assert float(metrics["weight"]) == pytest.approx((1 + math.exp(-1) + 100) / 3)
    loss2, _ = rwr_loss(logps, torch.ones(1, 3), scores, beta=2.0, max_weight=1e9)
    assert float(loss2[0, 1]) == pytest.approx(math.exp(-0.5) * LN2)
    assert float(loss2[0, 2]) == pytest.approx(math.exp(5) * LN2)


def test_awr_weights_by_advantage_and_trains_the_value_by_mse() -> None:
    # A = R - V = [0.5, -0.5]; w = [e^0.5, e^-0.5];
    # loss = 0.5 * w * ln 2 + 0.5 * (V - R)^2 = [0.5 e^0.5 ln2 + 0.125, 0.5 e^-0.5 ln2 + 0.125]
    logps = _logps(0.5, 0.5).requires_grad_()
    scores = torch.tensor([[0.0, -1.0]], dtype=torch.float64)
    values = torch.tensor([[-0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    loss, metrics = awr_loss(logps, torch.ones(1, 2), scores, values, beta=1.0, alpha=0.5)
    w = torch.tensor([[math.exp(0.5), math.exp(-0.5)]], dtype=torch.float64)
    torch.testing.assert_close(loss, 0.5 * w * LN2 + 0.125)
    assert float(metrics["advantage"]) == pytest.approx(0.0)
    assert float(metrics["value_loss"]) == pytest.approx(0.25)
    loss.sum().backward()
    # The advantage uses V detached: the value gets only the MSE gradient (1 - a) * 2 * (V - R).
    torch.testing.assert_close(values.grad, torch.tensor([[-0.5, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(logps.grad, -0.5 * w)


def test_awr_with_alpha_1_and_zero_values_is_rwr() -> None:
    torch.manual_seed(0)
    logps = torch.log_softmax(torch.randn(2, 5, 7), -1)[..., 0]
    scores, mask = torch.randn(2, 5), torch.randint(0, 2, (2, 5))
    awr, _ = awr_loss(logps, mask, scores, torch.zeros(2, 5), beta=0.7, alpha=1.0)
    rwr, _ = rwr_loss(logps, mask, scores, beta=0.7)
    torch.testing.assert_close(awr, rwr)


def test_token_mean_over_the_step_is_invariant_to_the_micro_batch_split() -> None:
    torch.manual_seed(0)
    logps = torch.log_softmax(torch.randn(6, 4, 9), -1)[..., 0]
    scores, mask = torch.randn(6, 4), torch.randint(0, 2, (6, 4))
    total = int(mask.sum())
    full = reduce_token_loss(rwr_loss(logps, mask, scores, beta=1.0)[0], mask, total_tokens=total)
    parts = sum(
        reduce_token_loss(rwr_loss(logps[s], mask[s], scores[s], beta=1.0)[0], mask[s], total_tokens=total)
        for s in (slice(0, 1), slice(1, 4), slice(4, 6))
    )
    torch.testing.assert_close(parts, full)


def test_each_objective_declares_the_loss_parameters_it_takes() -> None:
    assert set(PHF_OBJECTIVES) == {"mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"}
    declared = {name: (o.inputs, o.options) for name, o in PHF_OBJECTIVES.items()}
    assert declared == {
        "mle": ((), ()),
        "filtering": ((), ()),
        "conditional": ((), ()),
        "unlikelihood": (("good",), ("unlikelihood_weight",)),
        "rwr": (("scores",), ("beta", "max_weight")),
        "awr": (("scores", "values"), ("beta", "max_weight", "alpha")),
    }
    for name, objective in PHF_OBJECTIVES.items():
        params = inspect.signature(objective.loss).parameters
        assert list(params) == ["policy_logps", "mask", *objective.inputs, *objective.options], name
    assert PHF_OBJECTIVES["conditional"].corpus == "condition"
    assert PHF_OBJECTIVES["filtering"].corpus == "filter"


def test_the_phf_config_has_a_field_for_every_loss_option() -> None:
    # The recipe passes each option as the config field of the same name.
    from dataclasses import fields

    from prefalign.recipes.phf import PHFConfig

    names = {f.name for f in fields(PHFConfig)}
    assert {o for objective in PHF_OBJECTIVES.values() for o in objective.options} <= names


def test_shape_mismatch_and_bad_hyperparameters_are_refused() -> None:
    logps = _logps(0.5, 0.5)
    with pytest.raises(ValueError, match="shape"):
        rwr_loss(logps, torch.ones(1, 3), torch.zeros(1, 2), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        rwr_loss(logps, torch.ones(1, 2), torch.zeros(1, 2), beta=0.0)
    with pytest.raises(ValueError, match="alpha"):
        awr_loss(logps, torch.ones(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), beta=1.0, alpha=2.0)
