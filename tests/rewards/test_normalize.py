"""Running normalisation (prefalign.rewards.normalize): the merged statistics equal numpy's over all
batches at once, and a normaliser restored from its JSON state continues identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prefalign.rewards import RunningNormalizer


def test_batches_of_any_size_give_the_statistics_of_their_concatenation() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=generator) * 3 + 5 for n in (1, 7, 2, 30, 4)]
    norm = RunningNormalizer()
    for batch in batches:
        norm.update(batch)
    everything = torch.cat(batches).double().numpy()
    assert norm.count == 44
    assert norm.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert norm.var == pytest.approx(everything.var(ddof=1), rel=1e-12)
    x = torch.tensor([5.0, 8.0])
    expected = (x.double().numpy() - everything.mean()) / everything.std(ddof=1)
    np.testing.assert_allclose(norm.normalize(x).numpy(), expected, rtol=1e-6)
    assert norm.normalize(x).dtype == torch.float32


def test_hand_worked_values_and_scale_only() -> None:
    norm = RunningNormalizer(shift_mean=False)
    norm.update(torch.tensor([1.0, 3.0]))
    norm.update(torch.tensor([[5.0]]))  # any shape; every value counts
    # values 1, 3, 5: mean 3, unbiased var ((4 + 0 + 4) / 2) = 4, std 2
    assert (norm.count, norm.mean, norm.var, norm.std) == (3, 3.0, 4.0, 2.0)
    assert norm.normalize(torch.tensor([4.0, -2.0])).tolist() == [2.0, -1.0]  # sign kept
    norm.shift_mean = True
    assert norm.normalize(torch.tensor([4.0, -2.0])).tolist() == [0.5, -2.5]


def test_before_two_values_the_scale_is_one_and_constant_rewards_do_not_blow_up() -> None:
    norm = RunningNormalizer(shift_mean=False)
    assert norm.normalize(torch.tensor([2.0])).tolist() == [2.0]
    norm.update(torch.tensor([2.0]))
    assert norm.std == 1.0
    norm.update(torch.tensor([]))  # nothing to merge
    assert norm.count == 1
    norm.update(torch.tensor([2.0, 2.0]))
    assert norm.std == 0.0
    assert norm.normalize(torch.tensor([1e-8])).tolist() == [1.0]  # divided by eps, not by 0


def test_state_resumes_exactly_through_json() -> None:
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(5, generator=generator) for _ in range(6)]
    whole = RunningNormalizer()
    first = RunningNormalizer()
    for batch in batches:
        whole.update(batch)
    for batch in batches[:3]:
        first.update(batch)
    resumed = RunningNormalizer()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for batch in batches[3:]:
        resumed.update(batch)
    assert resumed.state_dict() == whole.state_dict()  # bit-identical, not approximately
    assert torch.equal(resumed.normalize(batches[0]), whole.normalize(batches[0]))


def test_bad_input_and_bad_state_are_refused() -> None:
    norm = RunningNormalizer()
    with pytest.raises(ValueError, match="rewards must be finite"):
        norm.update(torch.tensor([1.0, float("nan")]))
    assert norm.count == 0
    with pytest.raises(ValueError, match=r"missing \['m2'\]"):
        norm.load_state_dict({"count": 1, "mean": 0.0})
    with pytest.raises(ValueError, match="invalid"):
        norm.load_state_dict({"count": 2, "mean": 0.0, "m2": -1.0})
