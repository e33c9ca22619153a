"""Pairwise reward-model loss (Bradley-Terry), with optional margin and reward centring."""

from __future__ import annotations

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
