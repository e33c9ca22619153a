"""From rewards to advantages: KL-shaped token rewards, KL controllers, GAE, whitening, group baselines.

These feed the policy losses of :mod:`prefalign.losses.policy`. Completion tokens are laid out
(B, T), right-padded, with a ``mask`` (B, T) that is true (or 1) on real completion tokens; every
function reads only the masked positions and writes 0 elsewhere, so padding may hold anything.

* PPO (Ouyang et al. 2022; the recipe of Huang et al., "The N Implementation Details of RLHF with
  PPO", ICLR blog track 2024): the reward model's score of the whole completion ``s`` is paid at the
  last real token (EOS) and every token pays a KL penalty towards the reference,
  ``r_t = -beta * KL_t + [t = last] * s`` (:func:`kl_penalty_rewards`); ``beta`` is fixed or
  adapted (:class:`FixedKLController`, :class:`AdaptiveKLController`, Ziegler et al. 2019); a value
  model turns the token rewards into advantages with :func:`gae`; advantages are then whitened
  (:func:`whiten`, mean shifted) and, optionally, the rewards before GAE (scale only).
* GRPO / Dr. GRPO: one scalar reward per completion, ``G`` completions per prompt in consecutive
  blocks, advantage = reward minus the group mean, divided by the group std for GRPO
  (:func:`group_advantages`).
* RLOO: reward minus the mean of the other ``k - 1`` completions of the prompt
  (:func:`rloo_advantages`). REINFORCE with a baseline: ``r - b`` (:func:`reinforce_baseline_advantages`).

Sequence-level advantages (N,) apply to every token of their completion: pass them as (N,) to
``ppo_policy_loss``, which broadcasts them over T.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from prefalign.ops.kl import token_kl
from prefalign.ops.masked import masked_whiten as whiten
from prefalign.ops.masked import token_mask

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "GROUP_SCALES",
    "gae",
    "group_advantages",
    "kl_penalty_rewards",
    "reinforce_baseline_advantages",
    "rloo_advantages",
    "whiten",
]

# ``whiten(x, mask, shift_mean=True, eps=1e-8)`` is ops.masked.masked_whiten (one implementation):
# one mean and unbiased variance over all masked entries, as TRL's masked_whiten (trl/core.py, v0.x),
# 0 at masked positions. PPO whitens advantages with the mean shifted and, with whiten_rewards, the
# token rewards before GAE with shift_mean=False (Huang et al. 2024, details on advantage and reward
# normalisation).


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438, eq. 16).

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = sum_l (gamma * lam)^l delta_{t+l}``, computed
    backwards as ``A_t = delta_t + gamma * lam * A_{t+1}``; the return (value target) is
    ``R_t = A_t + V_t``. Each row's episode is its masked tokens: the value after the last real
    token is 0 (the completion has ended), and nothing flows back across a masked position.
    ``lam = 1`` gives Monte-Carlo returns (``R_t = sum_k gamma^k r_{t+k}``), ``lam = 0`` one-step TD.
    Huang et al. 2024 use ``gamma = 1, lam = 0.95``. The loop runs over T, vectorised over B.

    Args:
        rewards: (B, T) per-token rewards (e.g. :func:`kl_penalty_rewards`).
        values: (B, T) value estimates V(s_t) of the state before each token.
        mask: (B, T) bool or 0/1, true on real completion tokens.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1].

    Returns:
        ``(advantages, returns)``, both (B, T), 0 at masked positions.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    keep = token_mask(rewards, mask)
    if values.shape != rewards.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} differ")
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    r = torch.where(keep, rewards, zero)
    v = torch.where(keep, values, zero)  # so V after a row's last real token reads as 0
    running = torch.zeros_like(r[:, 0])
    steps: list[torch.Tensor] = []
    for t in reversed(range(r.shape[1])):
        next_value = v[:, t + 1] if t + 1 < r.shape[1] else torch.zeros_like(running)
        delta = r[:, t] + gamma * next_value - v[:, t]
        # `running` is 0 after a masked position, so no advantage crosses the end of a row.
        running = torch.where(keep[:, t], delta + gamma * lam * running, zero)
        steps.append(running)
    advantages = torch.stack(steps[::-1], dim=1) if steps else torch.zeros_like(r)
    returns = torch.where(keep, advantages + v, zero)
    return advantages, returns


def kl_penalty_rewards(
    scores: torch.Tensor,
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-token rewards with a KL penalty and the sequence score paid at the last real token.

    ``r_t = -kl_coef * KL_t + [t = last real token of the row] * score``: the KL-regularised reward
    ``R(x, y) = s(x, y) - beta * log(pi(y|x) / ref(y|x))`` of Ziegler et al. 2019 (arXiv 1909.08593,
    eq. 2) and Ouyang et al. 2022 (eq. 2), spread over tokens with the score at EOS as in Huang et al.
    2024. With ``k1`` (``log pi - log ref``) the row sum is exactly that R; ``k3`` (Schulman 2020,
    never negative, lower variance) is the alternative; both come from :mod:`prefalign.ops.kl`.
    (TRL's PPOTrainer, before TRL 1.x removed it, added the score one position *past* the last
    real token whenever the row had room, ``actual_end = sequence_lengths + 1``, and kept that
    position's value; here the score is paid at the EOS token itself, as Huang et al. describe.)

    Args:
        scores: (B,) reward-model scores of the completions.
        logps: (B, T) log-probs of the sampled tokens under the policy that sampled them.
        ref_logps: (B, T) log-probs of the same tokens under the reference model.
        mask: (B, T) bool or 0/1, true on real completion tokens.
        kl_coef: beta >= 0 (e.g. ``controller.value``).
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (:data:`prefalign.ops.kl.KL_ESTIMATORS`).

    Returns:
        (B, T) rewards, 0 at masked positions; a row without real tokens gets no score.
    """
    keep = token_mask(logps, mask)
    if scores.shape != (logps.shape[0],):
        raise ValueError(f"expected scores of shape ({logps.shape[0]},), got {tuple(scores.shape)}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    rewards = -kl_coef * token_kl(logps, ref_logps, keep, estimator=estimator)
    if keep.shape[1] == 0:
        return rewards
    positions = torch.arange(keep.shape[1], device=keep.device)
    last = torch.where(keep, positions, -1).amax(dim=-1, keepdim=True)  # (B, 1); -1 for an empty row
    at_end = positions == last
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    return rewards + torch.where(at_end, scores.to(rewards.dtype).unsqueeze(-1), zero)


class FixedKLController:
    """A constant KL coefficient ``value`` (Ziegler et al. 2019 use a fixed beta for most runs)."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """Leaves ``value`` unchanged and returns it (same interface as the adaptive controller)."""
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593, §2.2): proportional control.

    ``e = clip(KL / target - 1, -0.2, 0.2)`` and ``beta <- beta * (1 + e * n_steps / horizon)``, so
    beta grows while the measured KL is above ``target`` and shrinks below it, by at most a factor
    ``1 +- 0.2 * n_steps / horizon`` per update (the paper's ``K_beta = 0.1`` is ``n_steps / horizon``
    for one update per batch). ``n_steps`` is the number of samples the KL was measured on (OpenAI
    lm-human-preferences and old TRL pass the batch size, summed over processes).
    ``state_dict`` / ``load_state_dict`` round-trip ``value`` exactly, so a resumed run continues
    with the same beta.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"need init_kl_coef >= 0, target > 0, horizon > 0; got {init_kl_coef}, {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """Adapts ``value`` to the KL measured on ``n_steps`` samples; returns the new value."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


GroupScale = Literal["std", "batch", "none"]
GROUP_SCALES: tuple[str, ...] = ("std", "batch", "none")


def _grouped(rewards: torch.Tensor, group_size: int, minimum: int = 1) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"expected rewards of shape (N,), got {tuple(rewards.shape)}")
    if group_size < minimum or rewards.shape[0] % group_size:
        raise ValueError(f"group_size must be >= {minimum} and divide N={rewards.shape[0]}, got {group_size}")
    return rewards.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: GroupScale = "std", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024, arXiv 2402.03300, §4.1.2).

    ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` with the unbiased (n - 1) std, as TRL's
    GRPOTrainer. ``scale="none"`` keeps ``r_i - mean`` (Dr. GRPO, Liu et al. 2025, arXiv 2503.20783,
    §3: dividing by the std up-weights prompts that are too easy or too hard); ``"batch"`` divides
    by the std of the whole batch instead (Liu et al. 2025, "Tricks or Traps?", arXiv 2508.08221).
    A group of one (or a batch of one for ``"batch"``) has std 0, so its advantage is 0.

    Args:
        rewards: (N,) one reward per completion; groups are consecutive blocks of ``group_size``
            (the completions of one prompt).
        group_size: G, completions per prompt; must divide N.
        scale: ``"std"``, ``"batch"`` or ``"none"``.
        eps: added to the std.

    Returns:
        (N,) advantages; each group's sum is 0.
    """
    grouped = _grouped(rewards, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.reshape(-1)
    if scale == "std":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred)
    elif scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
    else:
        raise ValueError(f"scale must be one of {GROUP_SCALES}, got {scale!r}")
    return (centred / (std + eps)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740).

    ``A_i = r_i - 1/(k-1) * sum_{j != i} r_j`` over the ``k`` completions of a prompt, which equals
    ``k/(k-1) * (r_i - mean(r_group))``: each sample's baseline is independent of it, so the policy
    gradient stays unbiased.

    Args:
        rewards: (N,) one reward per completion, groups in consecutive blocks of ``group_size``.
        group_size: k >= 2 (leave-one-out needs another sample); must divide N.

    Returns:
        (N,) advantages; each group's sum is 0.
    """
    grouped = _grouped(rewards, group_size, minimum=2)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def reinforce_baseline_advantages(rewards: torch.Tensor, baseline: float | torch.Tensor) -> torch.Tensor:
    """REINFORCE with a baseline (Williams 1992): ``A_i = r_i - b``.

    ``b`` is supplied by the caller (a running mean of past rewards, a value estimate, ...) and
    should not depend on ``r_i``'s own sample, or the estimator is biased.

    Args:
        rewards: (N,) one reward per completion.
        baseline: a float, a () tensor, or an (N,) tensor of per-sample baselines.

    Returns:
        (N,) advantages.
    """
    if rewards.dim() != 1:
        raise ValueError(f"expected rewards of shape (N,), got {tuple(rewards.shape)}")
    b = torch.as_tensor(baseline, dtype=rewards.dtype, device=rewards.device)
    if b.dim() != 0 and b.shape != rewards.shape:
        raise ValueError(
            f"baseline must be a scalar or of shape {tuple(rewards.shape)}, got {tuple(b.shape)}"
        )
    return rewards - b
