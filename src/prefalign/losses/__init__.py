"""Losses: pure functions from tensors to ``(per_example_losses (B,), metrics)``, plus one reduction.

No loss reduces its output or calls a model; the recipe computes log-probs / rewards, calls a
loss, then reduces with :func:`reduce_loss` (or :func:`reduce_token_loss`) using the optimizer
step's global item count. RL losses are per token (B, T) and reduce with
:func:`policy_loss_reduction`; their advantages come from :mod:`prefalign.losses.advantages`.
"""

from prefalign.losses.advantages import (
    GROUP_SCALES,
    AdaptiveKLController,
    FixedKLController,
    gae,
    group_advantages,
    kl_penalty_rewards,
    reinforce_baseline_advantages,
    rloo_advantages,
    whiten,
)
from prefalign.losses.contrastive import info_nce_loss
from prefalign.losses.phf import PHF_OBJECTIVES
from prefalign.losses.policy import (
    POLICY_REDUCTIONS,
    clipped_value_loss,
    policy_loss_reduction,
    ppo_policy_loss,
    token_entropy,
)
from prefalign.losses.preference import (
    PAIRWISE_LOSSES,
    PairwiseLoss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    listwise_dpo_loss,
    orpo_loss,
    robust_dpo_loss,
    simpo_loss,
    with_sft_loss,
)
from prefalign.losses.reduction import TOKEN_REDUCTION_MODES, reduce_loss, reduce_token_loss
from prefalign.losses.reward import bradley_terry_loss

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "GROUP_SCALES",
    "POLICY_REDUCTIONS",
    "clipped_value_loss",
    "gae",
    "group_advantages",
    "kl_penalty_rewards",
    "policy_loss_reduction",
    "ppo_policy_loss",
    "reinforce_baseline_advantages",
    "rloo_advantages",
    "token_entropy",
    "whiten",
    "PHF_OBJECTIVES",
    "PAIRWISE_LOSSES",
    "PairwiseLoss",
    "TOKEN_REDUCTION_MODES",
    "bradley_terry_loss",
    "dpo_loss",
    "info_nce_loss",
    "ipo_loss",
    "reduce_loss",
    "reduce_token_loss",
    "hinge_loss",
    "robust_dpo_loss",
    "kto_loss",
    "kto_reference_point",
    "listwise_dpo_loss",
    "orpo_loss",
    "simpo_loss",
    "with_sft_loss",
]
