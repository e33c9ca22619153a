"""Masked reductions: sums, means and whitening over the positions a mask selects.

``mask`` is boolean or 0/1 and broadcastable to ``values``. Positions outside the mask are
excluded with ``torch.where`` rather than by multiplying by the mask, so a ``-inf`` or ``nan``
at a padded position (e.g. the log-prob of a padding label) cannot leak into the result as
``0 * inf = nan``.
"""

from __future__ import annotations

import torch

Dim = int | tuple[int, ...] | None


def _as_bool_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Expanding up front makes counts (mask.sum) agree with the number of summed values even
    # when the caller passes a mask of broadcastable but smaller shape.
    return mask.to(dtype=torch.bool, device=values.device).expand_as(values)


def token_mask(values: torch.Tensor, mask: torch.Tensor, name: str = "values") -> torch.Tensor:
    """``mask`` as a bool tensor on ``values``' device, after checking both are the same (B, T)."""
    if values.dim() != 2 or mask.shape != values.shape:
        raise ValueError(
            f"expected (B, T) {name} and mask, got {tuple(values.shape)} and {tuple(mask.shape)}"
        )
    return mask.to(dtype=torch.bool, device=values.device)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: Dim = None) -> torch.Tensor:
    """Sum of ``values`` over the positions where ``mask`` is true.

    Args:
        values: any shape, e.g. (B, T).
        mask: bool or 0/1, broadcastable to ``values``.
        dim: dimension(s) to reduce; ``None`` reduces everything to a scalar.

    Returns:
        ``values`` summed over ``dim`` with masked-out positions contributing exactly 0,
        e.g. (B,) for ``dim=-1`` on (B, T) input, () for ``dim=None``.
    """
    keep = _as_bool_mask(values, mask)
    kept = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_count(values: torch.Tensor, mask: torch.Tensor, dim: Dim = None) -> torch.Tensor:
    """Number of selected positions, shaped like ``masked_sum(values, mask, dim)``, in ``values.dtype``."""
    keep = _as_bool_mask(values, mask).to(values.dtype)
    return keep.sum() if dim is None else keep.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: Dim = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true.

    Args:
        values: any shape, e.g. (B, T).
        mask: bool or 0/1, broadcastable to ``values``.
        dim: dimension(s) to reduce; ``None`` reduces everything to a scalar.

    Returns:
        ``masked_sum / count`` over ``dim``. A slice with no selected position gives 0, not
        ``nan``: an empty completion then contributes nothing instead of poisoning the batch's
        gradient.
    """
    total = masked_sum(values, mask, dim)
    count = masked_count(values, mask, dim)
    return total / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the selected ``values`` (scalar), with Bessel's correction when ``unbiased``.

    Args:
        values: any shape.
        mask: bool or 0/1, broadcastable to ``values``.
        unbiased: divide by ``n - 1`` instead of ``n`` (as ``torch.var`` and TRL's ``masked_var``).

    Returns:
        () tensor. With fewer than two selected values the unbiased variance is undefined and 0 is
        returned (whitening then divides by ``sqrt(eps)`` of a zero-centred value, i.e. gives 0).
    """
    mean = masked_mean(values, mask)
    sq = masked_sum((values - mean) ** 2, mask)
    n = masked_count(values, mask)
    denom = (n - 1) if unbiased else n
    return torch.where(denom > 0, sq / denom.clamp(min=1), torch.zeros_like(sq))


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Standardise ``values`` with the mean and (unbiased) variance of the selected positions.

    Used to normalise advantages / rewards before a policy-gradient step (the same convention
    as TRL's ``masked_whiten``: one mean and variance over all selected positions of the batch).

    Args:
        values: any shape, e.g. (B, T).
        mask: bool or 0/1, broadcastable to ``values``.
        shift_mean: if False the mean is added back, so only the scale is normalised.
        eps: added to the variance before the square root.

    Returns:
        Same shape as ``values``: ``(values - mean) / sqrt(var + eps)`` (``+ mean`` when
        ``shift_mean`` is False) at selected positions and 0 elsewhere, so padding stays inert.
    """
    keep = _as_bool_mask(values, mask)
    mean = masked_mean(values, keep)
    var = masked_var(values, keep)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(keep, whitened, torch.zeros((), dtype=whitened.dtype, device=whitened.device))
