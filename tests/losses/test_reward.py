"""Bradley-Terry reward loss: hand-worked values and a cross-check against TRL 1.16's RewardTrainer."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from prefalign.losses import bradley_terry_loss
from prefalign.losses.reward import (
    bootstrap_weights,
    ordered_thresholds,
    ordinal_rating_loss,
    plackett_luce_loss,
    rating_mse_loss,
)


def test_equal_rewards_give_ln2() -> None:
    r = torch.tensor([0.0, 3.0, -2.5])
    losses, metrics = bradley_terry_loss(r, r.clone())
    torch.testing.assert_close(losses, torch.full((3,), math.log(2)))
    assert float(metrics["accuracy"]) == 0.0  # ties are not counted as correct
    assert float(metrics["margin"]) == 0.0


def test_worked_example_with_margin_and_centring() -> None:
    chosen, rejected = torch.tensor([2.0]), torch.tensor([1.0])
    # No margin: -log sigmoid(1) = log(1 + e^-1) = 0.3132617
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected)[0], torch.tensor([0.31326169]))
    # Margin 0.5: -log sigmoid(2 - 1 - 0.5) = log(1 + e^-0.5) = log(1.6065307) = 0.4740770
    losses, metrics = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5]))
    torch.testing.assert_close(losses, torch.tensor([0.47407698]))
    # Centring 0.01: + 0.01 * (2 + 1)^2 = + 0.09 -> 0.5640770
    losses, _ = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5]), center_coef=0.01)
    torch.testing.assert_close(losses, torch.tensor([0.56407698]))
    assert set(metrics) == {"accuracy", "margin", "rewards/chosen", "rewards/rejected"}
    assert float(metrics["accuracy"]) == 1.0 and float(metrics["margin"]) == 1.0  # margin metric ignores m
    assert float(metrics["rewards/chosen"]) == 2.0 and float(metrics["rewards/rejected"]) == 1.0


def test_metrics_detached_and_shapes_checked() -> None:
    chosen = torch.randn(4, requires_grad=True)
    losses, metrics = bradley_terry_loss(chosen, torch.randn(4))
    assert losses.shape == (4,) and losses.requires_grad
    assert all(m.shape == () and not m.requires_grad for m in metrics.values())
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(4), torch.zeros(4, 1))


# ---- cross-check against TRL 1.16 ---------------------------------------------------------------
# RewardTrainer.compute_loss (trl/trainer/reward_trainer.py) is called on a stand-in `self` and a
# stand-in model that returns the given rewards as (2B, 1) logits, batch order [chosen, rejected].


def _trl_reward(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None, coef: float | None
) -> tuple[torch.Tensor, dict[str, float]]:
    trainer_mod = pytest.importorskip("trl.trainer.reward_trainer")
    logits = torch.cat([chosen, rejected]).unsqueeze(-1)

    class FakeRM:
        training = False

        def __call__(self, **_: Any) -> SimpleNamespace:
            return SimpleNamespace(logits=logits)

    model = FakeRM()
    trainer = SimpleNamespace(
        model=model,
        args=SimpleNamespace(center_rewards_coefficient=coef),
        accelerator=SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs: dict[str, Any] = {"input_ids": torch.ones(2 * chosen.shape[0], 3, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = margin
    loss = trainer_mod.RewardTrainer.compute_loss(trainer, model, inputs)
    return loss, {k: v[-1] for k, v in trainer._metrics["eval"].items()}


@pytest.mark.parametrize(("use_margin", "coef"), [(False, None), (True, None), (True, 0.01), (False, 0.1)])
def test_matches_trl_reward_trainer(use_margin: bool, coef: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(7, generator=g) * 2, torch.randn(7, generator=g) * 2
    margin = torch.rand(7, generator=g) if use_margin else None
    losses, metrics = bradley_terry_loss(chosen, rejected, margin=margin, center_coef=coef or 0.0)
    trl_loss, trl_metrics = _trl_reward(chosen, rejected, margin, coef)
    torch.testing.assert_close(losses.mean(), trl_loss)
    # Per-example: one pair per call.
    per_pair = torch.stack(
        [
            _trl_reward(
                chosen[i : i + 1], rejected[i : i + 1], None if margin is None else margin[i : i + 1], coef
            )[0]
            for i in range(7)
        ]
    )
    torch.testing.assert_close(losses, per_pair)
    assert float(metrics["accuracy"]) == pytest.approx(trl_metrics["accuracy"])
    assert float(metrics["margin"]) == pytest.approx(trl_metrics["margin"], rel=1e-6)


# ---- listwise Plackett-Luce ---------------------------------------------------------------------
def test_plackett_luce_with_two_responses_is_bradley_terry() -> None:
    rewards = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    ranks = torch.tensor([[1, 2], [2, 1]] * 3)
    pl, metrics = plackett_luce_loss(rewards, ranks)
    best = torch.where(ranks[:, 0] == 1, rewards[:, 0], rewards[:, 1])
    other = torch.where(ranks[:, 0] == 1, rewards[:, 1], rewards[:, 0])
    bt, bt_metrics = bradley_terry_loss(best, other)
    torch.testing.assert_close(pl, bt)
    assert float(metrics["accuracy"]) == pytest.approx(float(bt_metrics["accuracy"]))


def test_plackett_luce_worked_example() -> None:
    # Rewards (a, b, c) = (1, 0, -1), ranking b > a > c:
    # -[0 - log(e^1 + e^0 + e^-1)] - [1 - log(e^1 + e^-1)] = 1.4076059 + 0.1269280 = 1.5345339
    losses, metrics = plackett_luce_loss(torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[2, 1, 3]]))
    torch.testing.assert_close(losses, torch.tensor([1.5345339]))
    assert float(metrics["accuracy"]) == pytest.approx(2 / 3)  # b<a wrong; b>c and a>c right


def test_plackett_luce_matches_choix_and_sums_to_one_over_permutations() -> None:
    choix_utils = pytest.importorskip("choix.utils")
    import itertools

    params = torch.tensor([0.3, -1.2, 0.8, 0.1], dtype=torch.float64)
    total = 0.0
    for order in itertools.permutations(range(4)):
        ranks = torch.empty(4, dtype=torch.long)
        ranks[list(order)] = torch.arange(1, 5)
        loss, _ = plackett_luce_loss(params.unsqueeze(0), ranks.unsqueeze(0))
        expected = -choix_utils.log_likelihood_rankings([list(order)], params.numpy())
        assert float(loss) == pytest.approx(expected, rel=1e-12)
        total += math.exp(-float(loss))
    assert total == pytest.approx(1.0, rel=1e-12)


def test_plackett_luce_mask_and_breslow_ties() -> None:
    rewards = torch.tensor([[0.5, 0.2, -0.3, 9.0]])
    # The fourth response is padding: masking it equals dropping it.
    masked, _ = plackett_luce_loss(rewards, torch.tensor([[1, 2, 3, 1]]), torch.tensor([[1, 1, 1, 0]]))
    dropped, _ = plackett_luce_loss(rewards[:, :3], torch.tensor([[1, 2, 3]]))
    torch.testing.assert_close(masked, dropped)
    # Tie a = b above c (Breslow): each of a and b is chosen from {a, b, c}; c makes no choice.
    tied, _ = plackett_luce_loss(rewards[:, :3], torch.tensor([[1, 1, 2]]))
    denominator = math.log(math.exp(0.5) + math.exp(0.2) + math.exp(-0.3))
    assert float(tied) == pytest.approx(-(0.5 - denominator) - (0.2 - denominator), rel=1e-6)
    # All tied: no preference at all.
    assert float(plackett_luce_loss(rewards, torch.ones(1, 4, dtype=torch.long))[0]) == 0.0


# ---- rating regression --------------------------------------------------------------------------
def test_rating_mse_worked_example() -> None:
    losses, metrics = rating_mse_loss(torch.tensor([0.5, 1.0]), torch.tensor([0.2, 1.0]))
    torch.testing.assert_close(losses, torch.tensor([0.09, 0.0]))
    assert float(metrics["mae"]) == pytest.approx(0.15)


def test_ordinal_worked_example_and_probabilities_sum_to_one() -> None:
    thresholds = torch.tensor([-0.5, 0.5])
    # r=0, level 0: sigmoid(-0.5) = 0.3775407 -> 0.9740770
    # r=1, level 1: sigmoid(-0.5) - sigmoid(-1.5) = 0.1951152 -> 1.6341654
    # r=-1, level 2: 1 - sigmoid(1.5) = 0.1824255 -> 1.7014132
    losses, _ = ordinal_rating_loss(torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0, 1, 2]), thresholds)
    torch.testing.assert_close(losses, torch.tensor([0.9740770, 1.6341654, 1.7014132]))
    for r in (-30.0, -1.0, 0.3, 25.0):
        rewards = torch.full((3,), r, dtype=torch.float64)
        probs = torch.exp(-ordinal_rating_loss(rewards, torch.arange(3), thresholds.double())[0])
        assert float(probs.sum()) == pytest.approx(1.0, rel=1e-9)


def test_ordinal_gradients_finite_far_from_the_thresholds() -> None:
    rewards = torch.tensor([-60.0, 60.0, 60.0], requires_grad=True)
    first, gaps = torch.tensor(0.0, requires_grad=True), torch.tensor([0.0, 1.0], requires_grad=True)
    losses, _ = ordinal_rating_loss(rewards, torch.tensor([3, 0, 3]), ordered_thresholds(first, gaps))
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(rewards.grad).all()
    assert torch.isfinite(gaps.grad).all() and rewards.grad[0] < 0 and rewards.grad[1] > 0
    cuts = ordered_thresholds(torch.tensor(-1.0), torch.tensor([-5.0, 3.0]))
    assert (cuts[1:] > cuts[:-1]).all()
    with pytest.raises(ValueError, match="levels"):
        ordinal_rating_loss(torch.zeros(1), torch.tensor([5]), torch.tensor([0.0, 1.0]))


def test_bootstrap_weights_are_poisson_and_stable() -> None:
    ids = torch.arange(4000)
    weights = bootstrap_weights(ids, 3, seed=7)
    assert weights.shape == (4000, 3)
    assert float(weights.mean()) == pytest.approx(1.0, abs=0.05)
    assert float((weights == 0).float().mean()) == pytest.approx(math.exp(-1), abs=0.03)
    torch.testing.assert_close(bootstrap_weights(ids[10:20], 3, seed=7), weights[10:20])
    assert not torch.equal(bootstrap_weights(ids, 3, seed=8), weights)
