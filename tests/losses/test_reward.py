"""Bradley-Terry reward loss: hand-worked values and a cross-check against TRL 1.16's RewardTrainer."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from prefalign.losses import bradley_terry_loss


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
