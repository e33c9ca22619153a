"""Masked reductions against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefalign.ops import masked_mean, masked_sum, masked_var, masked_whiten


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.4
    mask[0, 0] = True  # at least one selected value overall
    return values, mask


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_masked_sum_and_mean_match_numpy(dim: int | None) -> None:
    values, mask = _data()
    ma = np.ma.masked_array(values.numpy(), mask=~mask.numpy())
    # np.ma returns a plain scalar for a full reduction and a masked array (empty slices masked) otherwise.
    expected_sum = np.ma.filled(ma.sum(axis=dim), 0.0)
    expected_mean = np.ma.filled(ma.mean(axis=dim), 0.0)
    torch.testing.assert_close(masked_sum(values, mask, dim), torch.as_tensor(expected_sum))
    torch.testing.assert_close(masked_mean(values, mask, dim), torch.as_tensor(expected_mean))


def test_masked_mean_of_empty_slice_is_zero_not_nan() -> None:
    values, mask = _data()
    mask[1] = False
    out = masked_mean(values, mask, dim=-1)
    assert out[1] == 0 and torch.isfinite(out).all()
    assert masked_mean(values, torch.zeros_like(mask)) == 0


def test_mask_broadcasts_and_accepts_float() -> None:
    values, _ = _data()
    row_mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # (T,) broadcast over B
    expected = values[:, row_mask.bool()].mean()
    torch.testing.assert_close(masked_mean(values, row_mask), expected)


def test_masked_values_do_not_leak_inf_or_nan() -> None:
    values, mask = _data()
    values = values.masked_fill(~mask, float("-inf"))
    values[~mask & (torch.arange(6) % 2 == 0)] = float("nan")
    assert torch.isfinite(masked_sum(values, mask)).all()
    assert torch.isfinite(masked_mean(values, mask, dim=-1)).all()


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_numpy(shift_mean: bool) -> None:
    values, mask = _data(seed=1)
    sel = values.numpy()[mask.numpy()]
    mean, var = sel.mean(), sel.var(ddof=1)
    expected = (values.numpy() - mean) / np.sqrt(var + 1e-8)
    if not shift_mean:
        expected = expected + mean
    expected = np.where(mask.numpy(), expected, 0.0)
    torch.testing.assert_close(masked_whiten(values, mask, shift_mean=shift_mean), torch.as_tensor(expected))
    torch.testing.assert_close(masked_var(values, mask), torch.as_tensor(var))
    torch.testing.assert_close(masked_var(values, mask, unbiased=False), torch.as_tensor(sel.var()))


def test_masked_whiten_selected_values_are_standardised() -> None:
    values, mask = _data(seed=2)
    out = masked_whiten(values * 5 + 3, mask)
    torch.testing.assert_close(masked_mean(out, mask), torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(masked_var(out, mask), torch.tensor(1.0, dtype=torch.float64))
