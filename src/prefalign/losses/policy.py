"""Policy-gradient losses for RL on completions: PPO's clipped surrogate (with DAPO's clip-higher
and GSPO's sequence ratio), the GRPO-family reductions, PPO's clipped value loss, token entropy.

Inputs are (B, T) right-padded completion tensors with a ``mask`` (B, T), true on real tokens;
masked positions may hold anything (``-inf`` log-probs included) and give 0 loss and 0 gradient.

The clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, eq. 7), per token::

    rho_t = pi(y_t | ...) / pi_old(y_t | ...) = exp(logp_t - old_logp_t)
    loss_t = -min(rho_t * A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_t)

with ``eps_high = eps_low`` in PPO and ``eps_high > eps_low`` in DAPO's clip-higher (Yu et al.
2025, arXiv 2503.14476, §3.1: more room for low-probability tokens to rise, against entropy
collapse). GSPO (Zheng et al. 2025, arXiv 2507.18071) replaces rho_t by one ratio per sequence,
``s_i = exp(mean_t (logp_t - old_logp_t))`` (the length-normalised sequence likelihood ratio), and
clips it with the sequence's advantage.

The losses stay per token; :func:`policy_loss_reduction` turns them into the scalar that
``backward`` is called on. The GRPO variants differ only there:

* ``grpo``: ``1/G sum_i 1/|o_i| sum_t loss_it`` (Shao et al. 2024, arXiv 2402.03300, eq. 3);
* ``dr_grpo``: ``1/(G * L_max) sum_i sum_t loss_it`` (Liu et al. 2025, arXiv 2503.20783, §3: the
  per-sequence 1/|o_i| rewards short correct answers and long wrong ones; a constant does not);
* ``dapo``: ``1/(sum_i |o_i|) sum_i sum_t loss_it`` (Yu et al. 2025, §3.3, token-level loss).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from prefalign.losses.reduction import reduce_token_loss
from prefalign.ops.kl import token_kl
from prefalign.ops.masked import masked_mean, masked_sum, token_mask

Level = Literal["token", "sequence"]
PolicyReduction = Literal["grpo", "dr_grpo", "dapo"]


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    level: Level = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss per token (see the module docstring for the formulas).

    Args:
        logps: (B, T) log-probs of the sampled tokens under the policy being trained.
        old_logps: (B, T) the same under the policy that sampled them (no gradient).
        advantages: (B,) one per completion (GRPO, RLOO, GSPO) or (B, T) per token (PPO with GAE).
            ``level="sequence"`` needs (B,).
        mask: (B, T) bool or 0/1, true on real completion tokens.
        clip_low: eps_low, the ratio's lower bound is ``1 - clip_low``.
        clip_high: eps_high, upper bound ``1 + clip_high``; ``None`` means ``clip_low`` (PPO).
            DAPO uses 0.28 with clip_low 0.2.
        level: ``"token"`` (PPO, GRPO, DAPO) or ``"sequence"`` (GSPO: the row's mean log-ratio,
            exponentiated, is the ratio of every token of the row; an empty row has ratio 1).

    Returns:
        ``(losses, metrics)``: losses (B, T), 0 at masked positions. At the sequence level each
        real token carries its row's loss, so the ``grpo`` reduction gives GSPO's
        ``1/G sum_i loss_i`` exactly. Metrics, detached, over real tokens (over non-empty rows for
        ``level="sequence"``): ``clip_fraction`` (share where the clipped term is the one used,
        ``clip_fraction/low`` for ``A < 0, rho < 1 - eps_low`` and ``clip_fraction/high`` for
        ``A > 0, rho > 1 + eps_high``), ``ratio/mean``, ``ratio/max``; always over real tokens:
        ``approx_kl``, the k3 estimate ``(rho - 1) - log rho`` of KL(pi_old || pi) (what TRL and
        Schulman 2020 recommend), and ``approx_kl_k2`` ``= 0.5 * (log rho)^2``, the ``approxkl``
        of Huang et al. 2024 / old TRL PPO.
    """
    keep = token_mask(logps, mask, "logps")
    if old_logps.shape != logps.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and old_logps {tuple(old_logps.shape)} differ")
    high = clip_low if clip_high is None else clip_high
    if not (0.0 < clip_low < 1.0 and high > 0.0):
        raise ValueError(f"need 0 < clip_low < 1 and clip_high > 0, got {clip_low} and {high}")
    zero = torch.zeros((), dtype=logps.dtype, device=logps.device)
    # Zero the inputs (not only the result) at masked positions: exp(-inf - x) would otherwise
    # poison the backward pass with 0 * inf = nan.
    log_ratio = torch.where(keep, logps, zero) - torch.where(keep, old_logps, zero)
    if level == "token":
        if advantages.shape == logps.shape[:1]:
            advantages = advantages.unsqueeze(-1)
        elif advantages.shape == logps.shape:
            advantages = torch.where(keep, advantages, torch.zeros_like(advantages))
        else:
            raise ValueError(f"advantages must be (B,) or (B, T), got {tuple(advantages.shape)}")
        log_weight, counted = log_ratio, keep
    elif level == "sequence":
        if advantages.shape != logps.shape[:1]:
            raise ValueError(
                f"level='sequence' needs advantages of shape (B,), got {tuple(advantages.shape)}"
            )
        log_weight = masked_mean(log_ratio, keep, dim=-1).unsqueeze(-1)  # (B, 1)
        advantages = advantages.unsqueeze(-1)
        counted = keep.any(dim=-1, keepdim=True)
    else:
        raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")
    advantages = advantages.to(logps.dtype)
    ratio = torch.exp(log_weight)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + high)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    losses = torch.where(keep, -surrogate.expand_as(logps), zero)

    with torch.no_grad():
        r = ratio.detach()
        low = (r < 1.0 - clip_low) & (advantages < 0)
        up = (r > 1.0 + high) & (advantages > 0)
        r_b, counted_b = torch.broadcast_tensors(r, counted)
        metrics = {
            "clip_fraction": masked_mean((low | up).to(logps.dtype), counted),
            "clip_fraction/low": masked_mean(low.to(logps.dtype), counted),
            "clip_fraction/high": masked_mean(up.to(logps.dtype), counted),
            "ratio/mean": masked_mean(r, counted),
            # ratio > 0, so filling excluded entries with 0 leaves the max of the counted ones.
            "ratio/max": torch.where(counted_b, r_b, zero).max() if r_b.numel() else zero,
            "approx_kl": masked_mean(token_kl(old_logps, logps, keep, estimator="k3"), keep),
            "approx_kl_k2": masked_mean(token_kl(old_logps, logps, keep, estimator="k2"), keep),
        }
    return losses, metrics


def _grpo(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    max_length: int | None,
    num_items: int | None,
    num_tokens: int | None,
) -> torch.Tensor:
    return reduce_token_loss(per_token, mask, mode="sequence_mean", total_sequences=num_items)


def _dapo(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    max_length: int | None,
    num_items: int | None,
    num_tokens: int | None,
) -> torch.Tensor:
    return reduce_token_loss(per_token, mask, mode="token_mean", total_tokens=num_tokens)


def _dr_grpo(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    max_length: int | None,
    num_items: int | None,
    num_tokens: int | None,
) -> torch.Tensor:
    if max_length is None or max_length <= 0:
        raise ValueError(f"dr_grpo needs a positive max_length (max completion length), got {max_length}")
    count = per_token.shape[0] if num_items is None else num_items
    if count <= 0:
        raise ValueError(f"num_items must be positive, got {count}")
    return masked_sum(per_token, mask) / (count * max_length)


POLICY_REDUCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": _grpo,
    "dr_grpo": _dr_grpo,
    "dapo": _dapo,
}
"""Reduction mode -> ``fn(per_token, mask, max_length, num_items, num_tokens) -> () tensor``."""


def policy_loss_reduction(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: PolicyReduction,
    *,
    max_length: int | None = None,
    num_items: int | None = None,
    num_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce (B, T) policy losses to a scalar the way GRPO, Dr. GRPO or DAPO normalise them.

    * ``grpo``: each sequence's token mean, summed, divided by ``num_items`` (= reduction.py's
      ``sequence_mean``);
    * ``dr_grpo``: masked sum divided by ``num_items * max_length`` (TRL: ``max_completion_length``);
    * ``dapo``: masked sum divided by ``num_tokens`` (= reduction.py's ``token_mean``).

    Invariant to micro-batch size, gradient accumulation and the number of processes when
    ``num_items`` (sequences) and ``num_tokens`` (masked tokens) count the whole optimizer step:
    each numerator is a sum over items, so micro-batch results add up to the full batch's, and the
    denominator is one constant (see :mod:`prefalign.losses.reduction`; under DDP also multiply by
    the process count). ``None`` takes this micro-batch as the whole step.

    Args:
        per_token: (B, T) losses, e.g. from :func:`ppo_policy_loss` (plus any per-token KL term).
        mask: (B, T) bool or 0/1, true on real completion tokens.
        mode: ``"grpo"``, ``"dr_grpo"`` or ``"dapo"``.
        max_length: the constant L_max for ``dr_grpo`` (the generation's max new tokens).
        num_items: sequences in the optimizer step (``grpo``, ``dr_grpo``).
        num_tokens: masked tokens in the optimizer step (``dapo``).

    Returns:
        () tensor.
    """
    token_mask(per_token, mask, "per_token")
    if mode not in POLICY_REDUCTIONS:
        raise ValueError(f"mode must be one of {sorted(POLICY_REDUCTIONS)}, got {mode!r}")
    return POLICY_REDUCTIONS[mode](per_token, mask, max_length, num_items, num_tokens)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss per token (OpenAI baselines ppo2; Huang et al. 2024).

    ``loss_t = 0.5 * max((V_t - R_t)^2, (clip(V_t, V_old_t - c, V_old_t + c) - R_t)^2)``: the value
    may not profit from moving more than ``c`` away from the rollout's estimate (the value term of
    Schulman et al. 2017, eq. 9, with clipping as in its reference code; see Engstrom et al. 2020,
    arXiv 2005.12729, on its effect). ``clip=None`` gives the plain ``0.5 * (V_t - R_t)^2``.

    Args:
        values: (B, T) value predictions of the model being trained.
        old_values: (B, T) values recorded at rollout time.
        returns: (B, T) targets, e.g. the returns of :func:`prefalign.losses.advantages.gae`.
        mask: (B, T) bool or 0/1, true on real completion tokens.
        clip: c > 0, or ``None`` for no clipping.

    Returns:
        ``(losses, metrics)``: losses (B, T), 0 at masked positions; metrics, detached, over real
        tokens: ``clip_fraction`` (share where the clipped error is the larger, so the gradient is
        0) and ``mse`` (mean ``(V_t - R_t)^2``, the value error to monitor).
    """
    keep = token_mask(values, mask, "values")
    if old_values.shape != values.shape or returns.shape != values.shape:
        raise ValueError("values, old_values and returns must have one shape")
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be positive or None, got {clip}")
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v, ret = torch.where(keep, values, zero), torch.where(keep, returns, zero)
    unclipped = (v - ret) ** 2
    if clip is None:
        worst = clipped_err = unclipped
    else:
        v_old = torch.where(keep, old_values, zero)
        clipped_err = (torch.clamp(v, v_old - clip, v_old + clip) - ret) ** 2
        worst = torch.maximum(unclipped, clipped_err)
    losses = torch.where(keep, 0.5 * worst, zero)
    metrics = {
        "clip_fraction": masked_mean((clipped_err > unclipped).to(values.dtype), keep).detach(),
        "mse": masked_mean(unclipped, keep).detach(),
    }
    return losses, metrics


def token_entropy(logits: torch.Tensor, *, chunk_size: int = 128) -> torch.Tensor:
    """Entropy of each next-token distribution, ``H_t = -sum_v p_tv log p_tv`` (nats).

    The entropy bonus of Schulman et al. 2017 (eq. 9) and the entropy to monitor in RLHF (Huang et
    al. 2024). Rows of the flattened (B*T, V) logits are processed ``chunk_size`` at a time, so the
    forward pass never holds more than one chunk's softmax (TRL's ``entropy_from_logits`` does the
    same; under autograd each chunk's softmax is kept for the backward pass). Half-precision logits
    are upcast per chunk. ``-inf`` logits (masked vocabulary) contribute 0, with finite gradients.

    Args:
        logits: (B, T, V) unnormalised scores (already divided by the sampling temperature).
        chunk_size: rows per chunk.

    Returns:
        (B, T) entropies, float32 for half-precision input, else ``logits.dtype``.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected (B, T, V) logits, got {tuple(logits.shape)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for chunk in flat.split(chunk_size, dim=0):
        logp = F.log_softmax(chunk.to(dtype), dim=-1)
        # Clamping -inf to the most negative finite value keeps 0 * log 0 = 0 and its gradient finite.
        parts.append(-(logp.exp() * logp.clamp(min=torch.finfo(dtype).min)).sum(dim=-1))
    out = torch.cat(parts) if parts else flat.new_zeros((0,), dtype=dtype)
    return out.reshape(logits.shape[:-1])
