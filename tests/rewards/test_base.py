"""The reward interface (prefalign.rewards.base): returned values checked, metrics named by part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefalign.rewards import RewardBreakdown, RewardFunction, RuleReward, SampleLike
from prefalign.rewards.base import as_rewards
from prefalign.rollout import Sample


def test_numbers_of_every_common_kind_become_float32_on_the_cpu() -> None:
    for values in (
        [1, 2.5, -3],
        (1.0, 2.5, -3.0),
        np.array([1.0, 2.5, -3.0]),
        torch.tensor([1.0, 2.5, -3.0]),
    ):
        out = as_rewards(values, 3, "f")
        assert out.dtype == torch.float32 and out.device.type == "cpu"
        assert out.tolist() == [1.0, 2.5, -3.0]
    assert as_rewards([True, False], 2, "f").tolist() == [1.0, 0.0]  # a verifier's pass/fail


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, 2.0], r"^f: returned 2 values for 3 samples$"),
        (0.5, r"^f: expected a sequence of 3 numbers, got float$"),
        ("abc", r"^f: expected a sequence of 3 numbers, got str$"),
        (["a", "b", "c"], r"^f: expected 3 numbers, got values of type str$"),
        ([[1.0], [2.0], [3.0]], r"^f: expected 3 numbers, got shape \(3, 1\)$"),
        ([1.0, float("nan"), 2.0], r"^f: value 1 is nan; rewards must be finite$"),
        ([1.0, 2.0, float("-inf")], r"^f: value 2 is -inf; rewards must be finite$"),
    ],
)
def test_wrong_values_are_one_line_errors(values: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_rewards(values, 3, "f")


def test_metrics_are_batch_means_keyed_by_part() -> None:
    breakdown = RewardBreakdown(
        torch.tensor([1.0, 3.0]), {"total": torch.tensor([1.0, 3.0]), "rules": torch.tensor([0.0, 1.0])}
    )
    assert breakdown.metrics() == {"reward/total": 2.0, "reward/rules": 0.5}
    assert RewardBreakdown(torch.zeros(0), {"x": torch.zeros(0)}).metrics("r") == {"r/x": 0.0}


def test_rollout_samples_fit_the_protocol_and_rewards_fit_theirs() -> None:
    sample = Sample("p", 0, 0, "done", [7, 8, 3], [1], finished=True)
    fields: SampleLike = sample  # static check: a rollout Sample is what rewards read
    assert (fields.prompt, fields.completion, fields.finished, fields.num_tokens) == ("p", "done", True, 3)
    rules = RuleReward([("o", 1.0)])
    assert isinstance(rules, RewardFunction)
    assert rules([sample]).tolist() == [1.0]
