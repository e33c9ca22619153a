"""Weighted sum, length and missing-EOS penalties, normalisation order, rewards at EOS
(prefalign.rewards.shaping), against hand-worked numbers."""

from __future__ import annotations

import pytest
import torch

from prefalign.rewards import (
    RuleReward,
    RunningNormalizer,
    ShapedReward,
    WeightedSum,
    length_penalty,
    missing_eos_penalty,
    rewards_at_eos,
)
from prefalign.rewards.base import Reward, RewardBreakdown


class Fixed(Reward):
    """A component returning given values (and one extra part, as the reward model does)."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def score(self, samples):
        values = torch.tensor(self.values[: len(samples)])
        return RewardBreakdown(values, {self.name: values, f"{self.name}_extra": values * 0})


def test_weighted_sum_keeps_unweighted_parts(make_sample) -> None:
    samples = [make_sample(t) for t in ("a", "b", "c")]
    total = WeightedSum([(Fixed("x", [1.0, 2.0, 3.0]), 2.0), (Fixed("y", [10.0, 0.0, -10.0]), -0.5)])
    breakdown = total.score(samples)
    assert breakdown.total.tolist() == [-3.0, 4.0, 11.0]  # 2x - y/2
    assert breakdown.parts["x"].tolist() == [1.0, 2.0, 3.0]  # logged unweighted
    assert breakdown.parts["y"].tolist() == [10.0, 0.0, -10.0]
    assert set(breakdown.parts) == {"x", "x_extra", "y", "y_extra", "sum"}
    assert breakdown.parts["sum"] is breakdown.total


def test_weighted_sum_refuses_clashing_names() -> None:
    with pytest.raises(ValueError, match="distinct"):
        WeightedSum([(Fixed("x", []), 1.0), (Fixed("x", []), 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        WeightedSum([])


def test_penalties() -> None:
    assert length_penalty(torch.tensor([0, 3, 10]), 0.1).tolist() == pytest.approx([0.0, -0.3, -1.0])
    assert missing_eos_penalty(torch.tensor([True, False]), 2.0).tolist() == [0.0, -2.0]


def test_shaping_adds_length_and_missing_eos_penalties(make_sample) -> None:
    samples = [
        make_sample("a", tokens=4),
        make_sample("b", tokens=10, finished=False),
        make_sample("c", tokens=1),
    ]
    shaped = ShapedReward(Fixed("x", [1.0, 1.0, 0.0]), length_penalty=0.05, missing_eos_penalty=1.5)
    breakdown = shaped.score(samples)
    # 1 - 0.2, 1 - 0.5 - 1.5, 0 - 0.05
    assert breakdown.total.tolist() == pytest.approx([0.8, -1.0, -0.05])
    assert breakdown.parts["length_penalty"].tolist() == pytest.approx([-0.2, -0.5, -0.05])
    assert breakdown.parts["missing_eos_penalty"].tolist() == [0.0, -1.5, 0.0]
    assert set(breakdown.parts) == {"x", "x_extra", "length_penalty", "missing_eos_penalty", "total"}
    assert shaped.state_dict() == {}


def test_normalisation_comes_last_and_update_can_be_skipped(make_sample) -> None:
    samples = [
        make_sample("a", tokens=2),
        make_sample("b", tokens=2, finished=False),
        make_sample("c", tokens=2),
    ]
    shaped = ShapedReward(
        Fixed("x", [3.0, 4.0, 8.0]),
        length_penalty=0.5,
        missing_eos_penalty=3.0,
        normalizer=RunningNormalizer(),
    )
    breakdown = shaped.score(samples)
    # shaped: 3-1 = 2, 4-1-3 = 0, 8-1 = 7 -> mean 3, unbiased var (1 + 9 + 16) / 2 = 13
    assert breakdown.parts["unnormalized"].tolist() == [2.0, 0.0, 7.0]
    expected = (torch.tensor([2.0, 0.0, 7.0]) - 3.0) / 13**0.5
    torch.testing.assert_close(breakdown.total, expected)
    assert shaped.state_dict() == {"count": 3, "mean": 3.0, "m2": 26.0}
    before = shaped.state_dict()
    again = shaped.score(samples[:1], update=False)  # evaluation: scored with, not added to, the stats
    torch.testing.assert_close(again.total, expected[:1])
    assert shaped.state_dict() == before


def test_gather_feeds_every_process_reward_to_the_statistics(make_sample) -> None:
    other_rank = torch.tensor([10.0, 20.0])
    shaped = ShapedReward(
        RuleReward([("a", 1.0)]),
        normalizer=RunningNormalizer(shift_mean=False),
        gather=lambda local: torch.cat([local, other_rank]),
    )
    total = shaped([make_sample("a"), make_sample("b")])
    stats = torch.tensor([1.0, 0.0, 10.0, 20.0], dtype=torch.float64)
    assert shaped.normalizer is not None and shaped.normalizer.count == 4
    torch.testing.assert_close(total, (torch.tensor([1.0, 0.0]) / stats.std()).float())


def test_state_dict_round_trip(make_sample) -> None:
    samples = [make_sample(t) for t in ("aa", "a", "b")]
    one = ShapedReward(RuleReward([("a", 1.0)]), normalizer=RunningNormalizer())
    one(samples)
    two = ShapedReward(RuleReward([("a", 1.0)]), normalizer=RunningNormalizer())
    two.load_state_dict(one.state_dict())
    assert torch.equal(one(samples), two(samples))


def test_rewards_sit_at_the_last_completion_token() -> None:
    out = rewards_at_eos(torch.tensor([1.5, -2.0, 3.0]), torch.tensor([2, 4, 1]), width=4)
    assert out.tolist() == [[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, -2.0], [3.0, 0.0, 0.0, 0.0]]
    assert out.sum(dim=1).tolist() == [1.5, -2.0, 3.0]
    assert rewards_at_eos(torch.zeros(0), torch.zeros(0, dtype=torch.long), width=3).shape == (0, 3)
    for lengths in ([0, 1, 1], [1, 5, 1]):
        with pytest.raises(ValueError, match=r"lengths must be in 1\.\.4"):
            rewards_at_eos(torch.ones(3), torch.tensor(lengths), width=4)
    with pytest.raises(ValueError, match="expected"):
        rewards_at_eos(torch.ones(3), torch.tensor([1, 1]), width=4)
