"""Reward-model losses: pairwise Bradley-Terry (margins, centring), listwise Plackett-Luce from
rankings, rating regression (squared error, ordinal cumulative logit), and bootstrap weights for
ensembles."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of the preferred answer under a Bradley-Terry model.

    ``loss_i = -log sigmoid(r_c - r_r - m) + center_coef * (r_c + r_r)^2``

    * Bradley-Terry model ``P(c > r) = sigmoid(r_c - r_r)`` (Bradley & Terry 1952), as the reward
      model loss of Ouyang et al. 2022 (InstructGPT), eq. 1.
    * Margin ``m``: Touvron et al. 2023 (Llama 2), eq. 2: the chosen reward must beat the rejected
      one by at least ``m`` before the loss saturates; larger for clearer preferences.
    * Centring term: Eisenstein et al. 2023 ("Helping or Herding?"), the auxiliary loss that
      pulls ``r_c + r_r`` to 0 so rewards stay near zero mean; it is TRL's
      ``RewardConfig.center_rewards_coefficient`` (TRL adds ``coef * mean((r_c + r_r)^2)``, which
      is the batch mean of this per-example term).

    Args:
        chosen_rewards: (B,) scalar rewards of the preferred answers.
        rejected_rewards: (B,) scalar rewards of the other answers.
        margin: optional (B,) (or broadcastable) required reward gap.
        center_coef: weight of the centring term; 0 disables it.

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics are detached scalars:
        ``accuracy`` (fraction with r_c > r_r), ``margin`` (mean r_c - r_r),
        ``rewards/chosen`` and ``rewards/rejected`` (means).
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(
            f"expected two (B,) reward tensors, got {tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
        )
    diff = chosen_rewards - rejected_rewards
    logits = diff if margin is None else diff - margin
    # logsigmoid is the numerically stable form of log(sigmoid(x)) for large |x|.
    losses = -F.logsigmoid(logits)
    if center_coef:
        losses = losses + center_coef * (chosen_rewards + rejected_rewards) ** 2

    diff = diff.detach()
    metrics = {
        "accuracy": (diff > 0).float().mean(),
        "margin": diff.mean(),
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
    }
    return losses, metrics


def plackett_luce_loss(
    rewards: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of a ranking of K responses under a Plackett-Luce model.

    ``loss_b = -sum_{i: rank_i < worst} [ r_i - log sum_{j: rank_j >= rank_i} exp(r_j) ]``

    * Plackett-Luce (Luce 1959; Plackett 1975): a ranking is a sequence of choices, each of the best
      remaining response with probability ``softmax`` over what remains. Listwise reward models from
      rankings: Zhu et al. 2023, "Principled RLHF from Pairwise or K-wise Comparisons", eq. 3
      (arXiv 2301.11270), the K-wise loss of InstructGPT's ranking data done as one likelihood.
    * Ties: the Breslow (1974) approximation used for tied event times in Cox regression. Every
      response of a tied level is chosen against the same risk set (that level and all worse ones),
      so a tie adds no preference between its members; without ties this is exactly Plackett-Luce.
      Responses of the worst level are never a choice (nothing is left to beat), so they add no term.
    * With K = 2 and no tie this is the Bradley-Terry loss, ``-log sigmoid(r_best - r_other)``.

    Args:
        rewards: (B, K) scalar rewards.
        ranks: (B, K) integer ranks, 1 = best; equal ranks are ties.
        mask: optional (B, K) bool, True where a response exists (rows may rank fewer than K).

    Returns:
        ``(losses, metrics)``: losses (B,); metrics ``accuracy`` (share of ordered pairs, over all
        rows, whose better response has the higher reward) and ``rewards/mean``.
    """
    if rewards.dim() != 2 or rewards.shape != ranks.shape:
        raise ValueError(
            f"expected (B, K) rewards and ranks, got {tuple(rewards.shape)} and {tuple(ranks.shape)}"
        )
    present = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    if present.shape != rewards.shape:
        raise ValueError(f"mask shape {tuple(present.shape)} differs from rewards {tuple(rewards.shape)}")
    ranks = ranks.to(rewards.device)
    losses = plackett_luce_nll(rewards, ranks, present)

    with torch.no_grad():
        better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & present.unsqueeze(1) & present.unsqueeze(2)
        right = better & (rewards.unsqueeze(2) > rewards.unsqueeze(1))
        accuracy = right.sum().float() / better.sum().clamp(min=1)
        metrics = {"accuracy": accuracy, "rewards/mean": rewards.detach()[present].mean()}
    return losses, metrics


def plackett_luce_nll(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) Plackett-Luce negative log-likelihood of rankings with Breslow ties (the body shared by
    :func:`plackett_luce_loss` and the listwise DPO loss; see the former for the formula).

    Args:
        scores: (B, K) scores; entries where ``valid`` is False may hold anything, even NaN.
        ranks: (B, K) integer ranks, lower is better; equal ranks are ties.
        valid: (B, K) bool, False for padding.
    """
    k = scores.shape[1]
    scores = scores.masked_fill(~valid, 0.0)
    # risk[b, i, j]: response j is still unchosen when response i is picked (rank_j >= rank_i). The
    # diagonal is always in, so every logsumexp is finite (also for padding, masked below).
    eye = torch.eye(k, dtype=torch.bool, device=scores.device)
    risk = (valid.unsqueeze(1) & (ranks.unsqueeze(1) >= ranks.unsqueeze(2))) | eye
    log_denominator = torch.logsumexp(scores.unsqueeze(1).masked_fill(~risk, -math.inf), dim=-1)
    worst = ranks.long().masked_fill(~valid, torch.iinfo(torch.long).min).amax(dim=1, keepdim=True)
    chooses = valid & (ranks < worst)  # the worst group makes no choice
    return -(scores - log_denominator).masked_fill(~chooses, 0.0).sum(dim=1)


def rating_mse_loss(
    rewards: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Squared error between rewards and (normalised) human ratings: ``loss_i = (r_i - y_i)^2``.

    Rating regression as the reward model of e.g. Wang et al. 2023 (HelpSteer, arXiv 2311.09528),
    which regresses Likert-scale attribute ratings. Targets are usually the consensus rating mapped
    to [0, 1] so the reward scale does not depend on the rating scale.

    Args:
        rewards: (B,) predicted rewards.
        targets: (B,) target ratings.

    Returns:
        ``(losses, metrics)``: losses (B,); metrics ``mae`` and ``rewards/mean``.
    """
    if rewards.shape != targets.shape or rewards.dim() != 1:
        raise ValueError(f"expected two (B,) tensors, got {tuple(rewards.shape)} and {tuple(targets.shape)}")
    error = rewards - targets.to(rewards)
    return error**2, {"mae": error.detach().abs().mean(), "rewards/mean": rewards.detach().mean()}


def ordered_thresholds(first: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """Strictly increasing cut points ``theta_0 < ... < theta_{L-2}`` from free parameters.

    ``theta_0 = first`` and ``theta_k = theta_{k-1} + softplus(gaps_k)``: gradient steps can never
    put the thresholds out of order. ``first`` is a scalar (or (1,)), ``gaps`` (L-2,).
    """
    return torch.cat([first.reshape(1), first.reshape(1) + torch.cumsum(F.softplus(gaps), dim=0)])


def ordinal_rating_loss(
    rewards: torch.Tensor, levels: torch.Tensor, thresholds: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of ordinal ratings under a cumulative-logit (proportional odds) model.

    ``P(y <= k) = sigmoid(theta_k - r)`` for cut points ``theta_0 < ... < theta_{L-2}``, so
    ``P(y = k) = sigmoid(theta_k - r) - sigmoid(theta_{k-1} - r)`` with ``theta_{-1} = -inf`` and
    ``theta_{L-1} = +inf``; ``loss_i = -log P(y_i = k_i)``. McCullagh 1980, "Regression Models for
    Ordinal Data", eq. 2.3. The reward ``r`` is the latent quality; a higher reward moves mass to
    higher levels, and only the order of the levels is used, not their spacing.

    The difference of sigmoids is computed in log space:
    ``log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(b - a))`` for a > b.

    Args:
        rewards: (B,) latent rewards.
        levels: (B,) integer levels in [0, L-1] (0 = worst).
        thresholds: (L-1,) increasing cut points (see :func:`ordered_thresholds`).

    Returns:
        ``(losses, metrics)``: losses (B,); metrics ``accuracy`` (most probable level is the true one)
        and ``rewards/mean``.
    """
    if rewards.dim() != 1 or levels.shape != rewards.shape:
        raise ValueError(
            f"expected (B,) rewards and levels, got {tuple(rewards.shape)} and {tuple(levels.shape)}"
        )
    n_levels = thresholds.numel() + 1
    levels = levels.to(device=rewards.device, dtype=torch.long)
    if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= n_levels):
        raise ValueError(
            f"levels must lie in [0, {n_levels - 1}], got [{int(levels.min())}, {int(levels.max())}]"
        )
    inf = torch.tensor([float("inf")], dtype=rewards.dtype, device=rewards.device)
    cuts = torch.cat([-inf, thresholds.to(rewards), inf])  # (L+1,)
    upper = cuts[levels + 1] - rewards  # a
    lower = cuts[levels] - rewards  # b < a
    gap = upper - lower  # theta_k - theta_{k-1} > 0, +inf at the ends
    log_prob = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-gap))
    losses = -log_prob

    with torch.no_grad():
        cumulative = torch.sigmoid(cuts.unsqueeze(0) - rewards.detach().unsqueeze(1))  # (B, L+1)
        predicted = (cumulative[:, 1:] - cumulative[:, :-1]).argmax(dim=1)
        metrics = {"accuracy": (predicted == levels).float().mean(), "rewards/mean": rewards.detach().mean()}
    return losses, metrics


def bootstrap_weights(example_ids: torch.Tensor, n_heads: int, seed: int) -> torch.Tensor:
    """(B, n_heads) Poisson(1) weights, a fixed function of (example id, head, seed).

    The online bootstrap of Osband et al. 2016 ("Deep Exploration via Bootstrapped DQN", sec. 3):
    each head of an ensemble sees every example a Poisson(1) number of times, so heads trained on
    one shared batch still learn from different resamples of the data and disagree where the data
    are thin. Tying the draw to the example id (not the step) gives each head the same resample in
    every epoch and on resume.
    """
    # SeedSequence([seed, id]) is a stable, well-mixed stream per example.
    counts = [
        np.random.default_rng([seed, int(i)]).poisson(1.0, n_heads) for i in example_ids.reshape(-1).tolist()
    ]
    return torch.tensor(np.array(counts, dtype=np.float32).reshape(-1, n_heads))
