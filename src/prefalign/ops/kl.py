"""Monte-Carlo estimators of KL(pi || ref) from samples of pi.

Schulman 2020, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html). For a sample
``x ~ pi`` with ``log r = log ref(x) - log pi(x)``:

* ``k1 = -log r = log pi(x) - log ref(x)``: unbiased; high variance, and single samples may be
  negative;
* ``k2 = (log r)^2 / 2``: biased (its expectation is an f-divergence that agrees with KL to second
  order, so the bias is small when pi and ref are close); low variance; never negative;
* ``k3 = (r - 1) - log r``: unbiased (``E_pi[r] = 1``, so the ``r - 1`` term has mean 0); never
  negative (``log r <= r - 1``); lower variance than k1 when pi and ref are close.

For sequences the inputs are per-token log-probs of the sampled tokens under each model: each
token's estimate is an estimate of the KL of the two next-token distributions given its prefix,
so by the chain rule the sum over a sequence's tokens (:func:`sequence_kl`) estimates the
sequence-level ``KL(pi(y|x) || ref(y|x))`` (unbiased for k1 and k3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prefalign.ops.masked import masked_sum


def kl_k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """``k1 = log pi - log ref``, elementwise (Schulman 2020)."""
    return logps - ref_logps


def kl_k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """``k2 = (log pi - log ref)^2 / 2``, elementwise (Schulman 2020)."""
    return 0.5 * (logps - ref_logps) ** 2


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """``k3 = (exp(log ref - log pi) - 1) - (log ref - log pi)``, elementwise (Schulman 2020);
    ``exp(.) - 1`` is computed with ``expm1`` to stay accurate when the two are close."""
    log_ratio = ref_logps - logps
    return torch.expm1(log_ratio) - log_ratio


KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
"""Estimator name -> elementwise function ``(logps, ref_logps) -> estimates``."""


def token_kl(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    estimator: str = "k3",
) -> torch.Tensor:
    """Per-token KL estimates, 0 where ``mask`` is false.

    Args:
        logps: (B, T) log-probs of the sampled tokens under pi (the model that drew them).
        ref_logps: (B, T) log-probs of the same tokens under the reference.
        mask: optional (B, T) bool or 0/1, true on real tokens. Masked positions may hold any value
            (e.g. ``-inf``): they are replaced before the estimator runs, so neither the result nor
            its gradient sees them.
        estimator: a key of :data:`KL_ESTIMATORS`.

    Returns:
        (B, T) estimates.
    """
    if logps.shape != ref_logps.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and ref_logps {tuple(ref_logps.shape)} differ")
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose from {sorted(KL_ESTIMATORS)}")
    if mask is None:
        return KL_ESTIMATORS[estimator](logps, ref_logps)
    keep = mask.to(dtype=torch.bool, device=logps.device).expand_as(logps)
    zero = torch.zeros((), dtype=logps.dtype, device=logps.device)
    estimates = KL_ESTIMATORS[estimator](torch.where(keep, logps, zero), torch.where(keep, ref_logps, zero))
    return torch.where(keep, estimates, zero)


def sequence_kl(
    logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, *, estimator: str = "k3"
) -> torch.Tensor:
    """(B,) sequence-level KL estimates: :func:`token_kl` summed over each row's masked tokens."""
    return masked_sum(token_kl(logps, ref_logps, mask, estimator=estimator), mask, dim=-1)
