"""Pretraining with human feedback (PHF): the token-level objectives of Korbak et al. 2023.

Korbak, Shi, Chen, Bhalerao, Buckley, Phang, Bowman, Perez, "Pretraining Language Models with
Human Preferences", ICML 2023, arXiv 2302.08582, section 2 ("Methods"). A document ``x`` is split
into segments ``x^1 .. x^|x|`` (sentences), each scored by a reward ``R(x^i)``; a segment is
*good* when ``R(x^i) >= t`` for a threshold ``t``. Every token inherits the score of its segment.
The five PHF objectives and the MLE baseline then differ in what they do with those scores:

============  =================================  ===========================================
objective     corpus prepared by the recipe       per-token loss (this module)
============  =================================  ===========================================
mle           every document                      ``-log p``                  (:func:`nll_loss`)
filtering     documents with mean score >= t      ``-log p``                  (:func:`nll_loss`)
conditional   each segment prefixed by            ``-log p``                  (:func:`nll_loss`)
              ``<|good|>`` / ``<|bad|>``
unlikelihood  every document                      ``-log p`` on good tokens,
                                                  ``-a log(1 - p)`` on bad ones (:func:`unlikelihood_loss`)
rwr           every document                      ``-exp(R / beta) log p``    (:func:`rwr_loss`)
awr           every document                      ``-exp((R - V) / beta) log p`` + value MSE (:func:`awr_loss`)
============  =================================  ===========================================

Conventions. Scores are rewards: higher is better (Korbak's code stores *misalignment* scores,
``R = -score``; the paper's section 2 writes rewards, as we do). All tensors are aligned with the
scored target tokens of a causal LM (the ``token_logps`` of :func:`prefalign.models.scoring.completion_logps`):
position ``t`` holds the log-prob of target token ``y_t``, its mask, its segment's score, and the
value predicted from the prefix ``y_<t``. Each loss returns *per-token* losses ``(B, T)``, zero
outside the mask, and a dict of detached metrics (masked means over the given tokens); nothing is
reduced here. The recipe sums each row's token losses and lets the training loop divide by the
optimizer step's token count (its global-count weighting, see :mod:`prefalign.losses.reduction`):
the token mean Korbak's ``CrossEntropyLoss`` takes, invariant to micro-batching.

:data:`PHF_OBJECTIVES` maps each objective's name to a :class:`PHFObjective`: how the corpus is
prepared, and the loss, whose signature says which token tensors it takes (positional, after
``policy_logps`` and ``mask``) and which keyword hyperparameters (keyword-only).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from prefalign.ops.masked import masked_mean

PHFLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

_TINY = 1e-20  # floor of 1 - p inside log(1 - p), as in Korbak's (and Welleck's) implementation


def _check(policy_logps: torch.Tensor, mask: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    if policy_logps.dim() != 2:
        raise ValueError(f"expected per-token log-probs of shape (B, T), got {tuple(policy_logps.shape)}")
    for other in (mask, *others):
        if other.shape != policy_logps.shape:
            raise ValueError(
                f"every token tensor must have the shape of policy_logps {tuple(policy_logps.shape)}, "
                f"got {tuple(other.shape)}"
            )
    return mask.to(torch.bool)


def _weights(advantages: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """``min(exp(A / beta), max_weight)``, computed without overflow (the clip comes first in log space)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if max_weight <= 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    return torch.exp(torch.clamp(advantages / beta, max=math.log(max_weight)))


def nll_loss(policy_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level negative log-likelihood: MLE, filtering and conditional training.

    Korbak et al. 2023, section 2, paragraphs "MLE", "MLE with filtering" and "Conditional
    training": all three maximise ``log pi(x) = sum_t log pi(y_t | y_<t)``; they differ only in
    the corpus the recipe builds (all documents; documents whose mean segment score is at least
    ``t``; segments prefixed by a ``<|good|>`` or ``<|bad|>`` control token, whose own
    log-probabilities are part of the sum in the paper's conditional objective).

    ``loss_t = -log pi(y_t | y_<t)`` on masked tokens, 0 elsewhere.

    Args:
        policy_logps: (B, T) log-probabilities of the target tokens.
        mask: (B, T) bool or 0/1, the tokens that count.

    Returns:
        ``(per_token_loss (B, T), {"nll": masked mean NLL})``.
    """
    keep = _check(policy_logps, mask)
    nll = torch.where(keep, -policy_logps, torch.zeros_like(policy_logps))
    return nll, {"nll": masked_mean(nll.detach(), keep)}


def unlikelihood_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    good: torch.Tensor,
    *,
    unlikelihood_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level unlikelihood on the tokens of bad segments, likelihood elsewhere.

    Korbak et al. 2023, section 2, paragraph "Unlikelihood", after the token-level unlikelihood
    of Welleck et al. 2019 (arXiv 1908.04319, section 3): the negative candidates are the
    ground-truth tokens of segments with ``R(x^i) < t``, so

    ``loss_t = -log p_t``                      if the token's segment is good,
    ``loss_t = -alpha * log(1 - p_t)``         otherwise,

    with ``p_t = pi(y_t | y_<t)`` and ``1 - p_t`` floored at 1e-20 (as in Korbak's and Welleck's
    code); ``alpha`` is ``unlikelihood_weight`` (Korbak use 1).

    Args:
        policy_logps: (B, T) log-probabilities of the target tokens.
        mask: (B, T) bool or 0/1, the tokens that count.
        good: (B, T) bool, True where the target token's segment scores at least the threshold.
        unlikelihood_weight: alpha >= 0, the weight of the unlikelihood term.

    Returns:
        ``(per_token_loss (B, T), metrics)``; metrics: ``nll`` (masked mean of ``-log p`` over all
        tokens), ``unlikelihood`` (mean of ``-log(1 - p)`` over bad tokens), ``good_fraction``.
    """
    keep = _check(policy_logps, mask, good)
    if unlikelihood_weight < 0:
        raise ValueError(f"unlikelihood_weight must be non-negative, got {unlikelihood_weight}")
    good = good.to(torch.bool)
    # log(1 - p) = log(-expm1(log p)): exact for small p where 1 - exp(log p) would round.
    log_one_minus_p = torch.log(torch.clamp(-torch.expm1(policy_logps), min=_TINY))
    per_token = torch.where(good, -policy_logps, -unlikelihood_weight * log_one_minus_p)
    per_token = torch.where(keep, per_token, torch.zeros_like(per_token))
    bad = keep & ~good
    metrics = {
        "nll": masked_mean(-policy_logps.detach(), keep),
        "unlikelihood": masked_mean(-log_one_minus_p.detach(), bad),
        "good_fraction": masked_mean(good.to(policy_logps.dtype), keep),
    }
    return per_token, metrics


def rwr_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    scores: torch.Tensor,
    *,
    beta: float,
    max_weight: float = 1000.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reward-weighted regression: the NLL of each token weighted by ``exp(R / beta)``.

    Korbak et al. 2023, section 2, paragraph "Reward-weighted regression" (after Peters & Schaal
    2007): ``L = sum_i exp(R(x^i) / beta) * log pi(x^i | x^<i)``, i.e. per token

    ``loss_t = -min(exp(R_t / beta), w_max) * log pi(y_t | y_<t)``

    where ``R_t`` is the score of the token's segment. The weights are clipped at ``w_max``
    (``max_weight``; Korbak clip at 1000, their ``clip_weight_max``). No baseline is subtracted:
    that is the difference to :func:`awr_loss` (Korbak's code runs RWR through its AWR class with
    ``alpha=1``; the paper's definition, which we follow, has no value function).

    Args:
        policy_logps: (B, T) log-probabilities of the target tokens.
        mask: (B, T) bool or 0/1, the tokens that count.
        scores: (B, T) segment score (reward) of each target token.
        beta: temperature > 0; smaller beta weighs high-reward segments more sharply.
        max_weight: upper clip of the weights (> 0).

    Returns:
        ``(per_token_loss (B, T), metrics)``; metrics: ``nll`` and ``weight`` (masked means).
    """
    keep = _check(policy_logps, mask, scores)
    weights = _weights(scores.to(policy_logps.dtype), beta, max_weight)
    per_token = torch.where(keep, -weights * policy_logps, torch.zeros_like(policy_logps))
    metrics = {
        "nll": masked_mean(-policy_logps.detach(), keep),
        "weight": masked_mean(weights.detach(), keep),
    }
    return per_token, metrics


def awr_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    scores: torch.Tensor,
    values: torch.Tensor,
    *,
    beta: float,
    max_weight: float = 1000.0,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Advantage-weighted regression with a learned value head as the baseline.

    Korbak et al. 2023, section 2, paragraph "Advantage-weighted regression", after Peng et al.
    2019 (arXiv 1910.00177: the ``exp(A / beta)`` weights of its Algorithm 1, clipped at a maximum
    weight as that paper does): the advantage of a token
    is its segment's reward minus the value ``V(y_<t)`` predicted by a value head from the prefix,
    ``A_t = R_t - V_t``, and the objective mixes the advantage-weighted NLL with the value head's
    squared error, as Korbak's code does with its ``alpha``:

    ``loss_t = alpha * min(exp(A_t / beta), w_max) * (-log pi(y_t | y_<t)) + (1 - alpha) * (V_t - R_t)^2``

    The advantage is computed from ``values.detach()``: the value head learns only from the squared
    error, the policy only from the weighted NLL. Korbak use ``alpha = 0.5``, ``beta = 10`` for
    scores in [0, 1] and clip weights at ``w_max = 1000``.

    Args:
        policy_logps: (B, T) log-probabilities of the target tokens.
        mask: (B, T) bool or 0/1, the tokens that count.
        scores: (B, T) segment score (reward) of each target token.
        values: (B, T) value-head predictions ``V(y_<t)``, aligned with the targets (the value read
            at the position whose logits predict ``y_t``).
        beta: temperature > 0 of the advantage weights.
        max_weight: upper clip of the weights (> 0).
        alpha: in [0, 1], weight of the weighted NLL; ``1 - alpha`` weighs the value MSE.

    Returns:
        ``(per_token_loss (B, T), metrics)``; metrics: ``nll``, ``weight``, ``advantage``,
        ``value``, ``value_loss`` (masked means).
    """
    keep = _check(policy_logps, mask, scores, values)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rewards = scores.to(policy_logps.dtype)
    values = values.to(policy_logps.dtype)
    advantages = rewards - values.detach()
    weights = _weights(advantages, beta, max_weight)
    value_error = (values - rewards) ** 2
    per_token = alpha * weights * -policy_logps + (1.0 - alpha) * value_error
    per_token = torch.where(keep, per_token, torch.zeros_like(per_token))
    metrics = {
        "nll": masked_mean(-policy_logps.detach(), keep),
        "weight": masked_mean(weights.detach(), keep),
        "advantage": masked_mean(advantages.detach(), keep),
        "value": masked_mean(values.detach(), keep),
        "value_loss": masked_mean(value_error.detach(), keep),
    }
    return per_token, metrics


@dataclass(frozen=True)
class PHFObjective:
    """One PHF objective (an entry of :data:`PHF_OBJECTIVES`): its corpus preparation and its loss."""

    loss: PHFLoss
    """The per-token loss ``loss(policy_logps, mask, *inputs, **options)``."""
    corpus: Literal["all", "filter", "condition"]
    """How the recipe prepares the corpus: every document; only documents whose mean segment score
    is at least the threshold; every segment prefixed by a ``<|good|>`` / ``<|bad|>`` control token."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """Token tensors the loss takes after ``(policy_logps, mask)``: its other positional
        parameters, ``good`` (bool, the target's segment is good), ``scores`` (the segment's
        reward) or ``values`` (value-head output)."""
        params = inspect.signature(self.loss).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)[2:]

    @property
    def options(self) -> tuple[str, ...]:
        """The loss's keyword-only hyperparameters, by name (e.g. ``beta``, ``max_weight``)."""
        params = inspect.signature(self.loss).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


PHF_OBJECTIVES: dict[str, PHFObjective] = {
    "mle": PHFObjective(nll_loss, "all"),
    "filtering": PHFObjective(nll_loss, "filter"),
    "conditional": PHFObjective(nll_loss, "condition"),
    "unlikelihood": PHFObjective(unlikelihood_loss, "all"),
    "rwr": PHFObjective(rwr_loss, "all"),
    "awr": PHFObjective(awr_loss, "all"),
}
