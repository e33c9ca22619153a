"""Offline preference losses on policy and reference log-probabilities: DPO, cDPO, IPO, robust DPO, hinge.

Every loss here has the same signature, so a recipe can pick one by name from
:data:`PREFERENCE_LOSSES` and call it with the same arguments::

    losses, metrics = PREFERENCE_LOSSES[name](pc, pr, rc, rr, beta=0.1, label_smoothing=0.0)

where ``pc, pr`` are the policy's log-probs of the chosen and rejected answers and ``rc, rr`` the
reference's, each of shape (B,). The common quantity is the difference of log-ratios

    h = (pc - rc) - (pr - rr) = log [pi(y_c) / ref(y_c)] - log [pi(y_r) / ref(y_r)].

The functions use whatever log-probs they are given: summed over the completion (the papers'
definition and what ``prefalign.ops.sequence_logps`` returns) or averaged per token (divide
by the token counts first; this is what TRL 1.16 does for IPO, see :func:`ipo_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PreferenceLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _check_shapes(*tensors: torch.Tensor) -> None:
    # Broadcasting a (B,) against a (B, 1) would silently build a (B, B) loss; refuse it instead.
    shape = tensors[0].shape
    if len(shape) != 1 or any(t.shape != shape for t in tensors):
        raise ValueError(f"expected four (B,) log-prob tensors, got {[tuple(t.shape) for t in tensors]}")


def _logratio_difference(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    return chosen_logratios, rejected_logratios, chosen_logratios - rejected_logratios


def _implicit_reward_metrics(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    """Batch means of DPO's implicit rewards ``beta * log pi/ref`` (Rafailov et al. 2023, eq. 5).

    Same quantities as TRL's DPOTrainer logs (there named ``rewards/accuracies`` and
    ``rewards/margins``); every value is a detached () tensor so a recipe can log it directly.
    """
    chosen = beta * chosen_logratios.detach()
    rejected = beta * rejected_logratios.detach()
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/accuracy": (chosen > rejected).float().mean(),
        "rewards/margin": (chosen - rejected).mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }


def _unsmoothed_gap_loss(
    name: str,
    logps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    beta: float,
    label_smoothing: float,
    per_pair: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``per_pair(h)`` for a loss of the log-ratio gap alone that has no label-smoothed form.

    ``logps`` is ``(pc, pr, rc, rr)``, each (B,); returns (B,) losses and the shared metrics.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if label_smoothing:
        raise ValueError(f"{name} has no label smoothing; use 'cdpo' or 'robust' for noisy labels")
    chosen_lr, rejected_lr, h = _logratio_difference(*logps)
    metrics = _implicit_reward_metrics(chosen_lr, rejected_lr, logps[0], logps[1], beta)
    return per_pair(h), metrics


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO's sigmoid loss (Rafailov et al. 2023, eq. 7), conservative with ``label_smoothing``.

    ``loss_i = -(1 - eps) log sigmoid(beta h_i) - eps log sigmoid(-beta h_i)``

    with ``h = (pc - rc) - (pr - rr)``. With ``eps = 0`` this is eq. 7; with ``eps > 0`` it is
    conservative DPO (cDPO, Mitchell 2023, "A note on DPO with noisy preferences"): the
    cross-entropy against labels that are flipped with probability ``eps``, so the loss is
    minimised at a finite margin instead of pushing ``h`` to infinity. At ``pi = ref`` (h = 0)
    the loss is ``ln 2`` for every ``eps``.

    TRL 1.16 has no cDPO switch on its ``sigmoid`` loss (its ``label_smoothing`` only feeds
    ``robust``, ``exo_pair`` and ``aot``); its ``aot`` loss on a single pair is this formula.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) policy log-probs of each answer.
        ref_chosen_logps, ref_rejected_logps: (B,) reference log-probs of each answer.
        beta: strength of the implicit KL penalty toward the reference (> 0).
        label_smoothing: assumed label-flip probability ``eps`` in [0, 0.5].

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics as in
        :func:`_implicit_reward_metrics` (detached () tensors).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5], got {label_smoothing}")
    chosen_lr, rejected_lr, h = _logratio_difference(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    logits = beta * h
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    metrics = _implicit_reward_metrics(
        chosen_lr, rejected_lr, policy_chosen_logps, policy_rejected_logps, beta
    )
    return losses, metrics


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO loss (Azar et al. 2023, "A General Theoretical Paradigm...", eq. 17).

    ``loss_i = (h_i - 1 / (2 beta))^2`` with ``h = (pc - rc) - (pr - rr)``; ``beta`` is the
    paper's regularisation strength tau. The loss regresses the log-ratio gap onto a finite
    target ``1 / (2 beta)`` instead of maximising it, so it does not overfit deterministic
    preferences. At ``pi = ref`` it equals ``1 / (4 beta^2)``.

    Length convention: the paper defines ``h`` with sequence log-probs. TRL 1.16
    (``DPOTrainer._compute_loss``, ``loss_type="ipo"``) divides each log-ratio by its completion's
    token count first (per-token averages, which TRL says matches the paper's experiments). This
    function applies no normalisation: pass ``sums / counts`` from
    :func:`prefalign.ops.sequence_logps` to reproduce TRL, or the sums for the paper's form.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) policy log-probs of each answer.
        ref_chosen_logps, ref_rejected_logps: (B,) reference log-probs of each answer.
        beta: regularisation strength tau (> 0).
        label_smoothing: accepted so every entry of :data:`PREFERENCE_LOSSES` shares one
            signature; IPO has no label-noise variant, so anything but 0 is an error.

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics as in
        :func:`_implicit_reward_metrics` (detached () tensors).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _unsmoothed_gap_loss("ipo_loss", logps, beta, label_smoothing, lambda h: (h - 1 / (2 * beta)) ** 2)


def robust_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", the de-biased loss of Sec. 3).

    ``loss_i = [-(1 - eps) log sigmoid(beta h_i) + eps log sigmoid(-beta h_i)] / (1 - 2 eps)``

    Unlike cDPO's smoothed cross-entropy, this is an unbiased estimate of the clean-label DPO
    loss when labels flip with probability ``eps``, so its minimiser does not shrink toward a
    finite margin. Equals TRL 1.16's ``loss_type="robust"``; ``eps = 0`` is plain DPO.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) policy log-probs of each answer.
        ref_chosen_logps, ref_rejected_logps: (B,) reference log-probs of each answer.
        beta: strength of the implicit KL penalty (> 0).
        label_smoothing: label-flip probability ``eps`` in [0, 0.5) (0.5 divides by zero).

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics as in
        :func:`_implicit_reward_metrics` (detached () tensors).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) for robust DPO, got {label_smoothing}")
    chosen_lr, rejected_lr, h = _logratio_difference(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    logits = beta * h
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
    metrics = _implicit_reward_metrics(
        chosen_lr, rejected_lr, policy_chosen_logps, policy_rejected_logps, beta
    )
    return losses, metrics


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinge loss on the log-ratio gap (SLiC-HF, Zhao et al. 2023, eq. 2, with a reference model).

    ``loss_i = max(0, 1 - beta h_i)`` with ``h = (pc - rc) - (pr - rr)``: the calibration loss of
    SLiC with the margin ``delta = 1 / beta`` and log-probs measured against the reference, as in
    Liu et al. 2024 ("Statistical Rejection Sampling...", RSO) and TRL 1.16's ``loss_type="hinge"``.
    Unlike the sigmoid loss it stops pushing once a pair is ``1 / beta`` nats apart. At ``pi = ref``
    it equals 1.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) policy log-probs of each answer.
        ref_chosen_logps, ref_rejected_logps: (B,) reference log-probs of each answer.
        beta: inverse margin (> 0).
        label_smoothing: accepted for the shared signature; the hinge has no smoothed form, so
            anything but 0 is an error.

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics as in
        :func:`_implicit_reward_metrics` (detached () tensors).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _unsmoothed_gap_loss(
        "hinge_loss", logps, beta, label_smoothing, lambda h: torch.relu(1 - beta * h)
    )


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "sigmoid": dpo_loss,
    # cDPO is the sigmoid loss with label_smoothing > 0; the alias lets configs name it.
    "cdpo": dpo_loss,
    "ipo": ipo_loss,
    "robust": robust_dpo_loss,
    "hinge": hinge_loss,
}
"""Preference losses by name. All take ``(pc, pr, rc, rr, *, beta, label_smoothing=0.0)``."""
