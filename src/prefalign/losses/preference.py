"""Offline preference losses: DPO, cDPO, IPO, robust DPO, hinge; SimPO, ORPO; KTO; listwise DPO; +SFT.

The pairwise losses are registered by name in :data:`PAIRWISE_LOSSES`, each with how it is fed::

    entry = PAIRWISE_LOSSES[name]
    losses, metrics = entry.fn(pc, pr, rc, rr, beta=0.1)      # entry.reference is True
    losses, metrics = entry.fn(pc, pr, beta=2.0, gamma=0.5)   # reference-free (simpo, orpo)

where ``pc, pr`` are the policy's log-probs of the chosen and rejected answers and ``rc, rr`` the
reference's, each of shape (B,). The common quantity is the difference of log-ratios

    h = (pc - rc) - (pr - rr) = log [pi(y_c) / ref(y_c)] - log [pi(y_r) / ref(y_r)].

The functions use whatever log-probs they are given: summed over the completion (the papers'
definition and what ``prefalign.models.scoring`` returns) or averaged per token (divide by the
token counts first; SimPO and ORPO take averages, see ``PairwiseLoss.average_logps``).

The rest of the family has other inputs, so each has its own signature:

* :func:`kto_loss`: unpaired desirable / undesirable examples and a KL reference point;
* :func:`listwise_dpo_loss`: a ranking of K responses, (B, K) log-probs (Plackett-Luce DPO);
* :func:`with_sft_loss`: adds the chosen answer's length-normalised NLL to any of the above
  (RPO; TRL's ``loss_type=[..., "sft"]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefalign.losses.reward import plackett_luce_nll

PreferenceLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _check_shapes(*tensors: torch.Tensor) -> None:
    # Broadcasting a (B,) against a (B, 1) would silently build a (B, B) loss; refuse it instead.
    shape = tensors[0].shape
    if len(shape) != 1 or any(t.shape != shape for t in tensors):
        raise ValueError(
            f"expected {len(tensors)} (B,) log-prob tensors of one shape, got {[tuple(t.shape) for t in tensors]}"
        )


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
        label_smoothing: accepted so every reference pairwise loss shares one
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


# ---- reference-free pairwise losses: SimPO, ORPO ----------------------------------------------------


def _check_beta(beta: float) -> None:
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    arXiv 2405.14734, eq. 6).

    ``loss_i = -log sigmoid(beta * (pc_i - pr_i) - gamma)``

    where ``pc, pr`` are the policy's *average per-token* log-probs of each answer
    (``log pi(y|x) / |y|``, i.e. ``sums / counts`` from :func:`prefalign.ops.sequence_logps`): the
    implicit reward is ``beta / |y| * log pi(y|x)`` (eq. 4), with no reference model, and ``gamma``
    is a target reward margin the chosen answer must clear. With ``label_smoothing = eps > 0`` the
    loss is smoothed as in cDPO, ``-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)``, which is what
    TRL 1.16's ``CPOTrainer(loss_type="simpo")`` computes (its ``simpo_gamma`` is this ``gamma``).
    At ``pc = pr`` the loss is ``-log sigmoid(-gamma)``.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) average per-token log-probs.
        beta: reward scale (> 0); the paper uses 2 to 10, TRL defaults to 0.1.
        gamma: target reward margin (>= 0); TRL defaults to 0.5.
        label_smoothing: assumed label-flip probability in [0, 0.5].

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics as in
        :func:`_implicit_reward_metrics` with the SimPO reward ``beta * pc`` (detached () tensors).
    """
    _check_beta(beta)
    if gamma < 0:
        raise ValueError(f"gamma (SimPO's target margin) must be >= 0, got {gamma}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5], got {label_smoothing}")
    _check_shapes(policy_chosen_logps, policy_rejected_logps)
    logits = beta * (policy_chosen_logps - policy_rejected_logps) - gamma
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    metrics = _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, policy_chosen_logps, policy_rejected_logps, beta
    )
    return losses, metrics


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable on both sides of ``-ln 2`` (Maechler 2012).

    ``x`` is capped just below 0 so a sequence the model is certain of (average log-prob rounding to
    exactly 0) gives a large negative value instead of ``-inf``.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    far = x < -math.log(2)
    # Each branch sees only inputs it is stable on, so the unused one cannot put NaN in the gradient.
    return torch.where(
        far, torch.log1p(-torch.exp(x.where(far, -1.0))), torch.log(-torch.expm1(x.where(~far, -0.5)))
    )


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float,
    chosen_nll: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
    arXiv 2403.07691, eqs. 4-7).

    ``loss_i = nll_i - beta * log sigmoid(log odds(y_c) - log odds(y_r))``

    with ``odds(y) = p / (1 - p)`` for the length-normalised likelihood ``p = exp(avg log-prob)``
    (eq. 4), so ``log odds = pc - log(1 - exp(pc))``. The second term is the odds-ratio loss
    ``L_OR`` (eq. 7) weighted by ``lambda`` (eq. 6; TRL's ``ORPOConfig.beta``, named ``beta`` here so
    every pairwise loss takes the same keyword). ``nll_i`` is ``L_SFT``, the NLL of the chosen answer;
    by default ``-pc_i``, its per-token average over the answer's tokens. TRL 1.16 instead takes one
    token mean of the chosen NLL over the whole batch *and the prompt tokens*; pass ``chosen_nll`` to
    use any other normalisation. No reference model.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) average per-token log-probs (< 0).
        beta: weight ``lambda`` of the odds-ratio term (> 0); the paper uses 0.1 to 0.25.
        chosen_nll: optional (B,) SFT term; defaults to ``-policy_chosen_logps``.

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced; metrics: the reward metrics of
        :func:`_implicit_reward_metrics` with reward ``beta * avg log-prob`` (as TRL logs them),
        ``nll_loss``, ``log_odds_ratio`` (mean ``log sigmoid`` of the log odds ratio) and
        ``log_odds_chosen`` (mean log odds ratio); detached () tensors.
    """
    _check_beta(beta)
    _check_shapes(policy_chosen_logps, policy_rejected_logps)
    nll = -policy_chosen_logps if chosen_nll is None else chosen_nll
    if nll.shape != policy_chosen_logps.shape:
        raise ValueError(
            f"chosen_nll must have shape {tuple(policy_chosen_logps.shape)}, got {tuple(nll.shape)}"
        )
    log_odds = (policy_chosen_logps - policy_rejected_logps) - (
        _log1mexp(policy_chosen_logps) - _log1mexp(policy_rejected_logps)
    )
    ratio = F.logsigmoid(log_odds)
    losses = nll - beta * ratio
    metrics = _implicit_reward_metrics(
        policy_chosen_logps, policy_rejected_logps, policy_chosen_logps, policy_rejected_logps, beta
    )
    metrics.update(
        {
            "nll_loss": nll.detach().mean(),
            "log_odds_ratio": ratio.detach().mean(),
            "log_odds_chosen": log_odds.detach().mean(),
        }
    )
    return losses, metrics


@dataclass(frozen=True)
class PairwiseLoss:
    """One entry of :data:`PAIRWISE_LOSSES`: the function and how to feed it."""

    fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    reference: bool
    """Takes ``(pc, pr, rc, rr, *, beta, ...)`` with reference log-probs; else ``(pc, pr, *, beta, ...)``."""
    average_logps: bool
    """Takes per-token average log-probs (sum / token count) instead of sums."""
    options: tuple[str, ...] = ()
    """Keyword arguments it accepts besides ``beta`` (the function's own parameter names)."""


PAIRWISE_LOSSES: dict[str, PairwiseLoss] = {
    "sigmoid": PairwiseLoss(dpo_loss, reference=True, average_logps=False, options=("label_smoothing",)),
    # cDPO is the sigmoid loss with label_smoothing > 0; the alias lets configs name it.
    "cdpo": PairwiseLoss(dpo_loss, reference=True, average_logps=False, options=("label_smoothing",)),
    # IPO on sequence sums (the paper's form; TRL averages per token).
    "ipo": PairwiseLoss(ipo_loss, reference=True, average_logps=False),
    "robust": PairwiseLoss(
        robust_dpo_loss, reference=True, average_logps=False, options=("label_smoothing",)
    ),
    "hinge": PairwiseLoss(hinge_loss, reference=True, average_logps=False),
    "simpo": PairwiseLoss(
        simpo_loss, reference=False, average_logps=True, options=("label_smoothing", "gamma")
    ),
    "orpo": PairwiseLoss(orpo_loss, reference=False, average_logps=True),
}
"""The pairwise preference losses by name (``prefalign dpo loss=NAME``): the one registry of the family."""


# ---- KTO: unpaired desirable / undesirable examples -------------------------------------------------


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point ``z_ref``: a detached estimate of ``KL(pi || ref)``, clamped at 0.

    ``z_ref = max(0, mean_j [log pi(y'_j | x_j) - log ref(y'_j | x_j)])`` over *mismatched* pairs
    ``(x_j, y'_j)``: each prompt with another example's completion, so the estimate looks at
    completions the policy did not see with that prompt. TRL 1.16 builds them by shifting the
    completions of a batch by one (``y'_j = y_{j-1}``), averages over the whole batch (all
    processes), detaches and clamps at 0; this does the same on the log-probs it is given.

    Args:
        policy_kl_logps, ref_kl_logps: (M,) summed log-probs of the mismatched completions.

    Returns:
        A () tensor, detached; 0 when ``M = 0``.
    """
    _check_shapes(policy_kl_logps, ref_kl_logps)
    if policy_kl_logps.numel() == 0:
        return policy_kl_logps.new_zeros(())
    return (policy_kl_logps - ref_kl_logps).detach().mean().clamp(min=0)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    ref_kl_logps: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Kahneman-Tversky Optimization (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect
    Theoretic Optimization", arXiv 2402.01306, eq. 7, the loss TRL 1.16's ``KTOTrainer`` labels so).

    With the log-ratio ``r_i = log pi(y_i|x_i) - log ref(y_i|x_i)`` and the reference point
    ``z = kto_reference_point(policy_kl_logps, ref_kl_logps)`` (detached, >= 0):

    * desirable (``labels_i`` true):    ``loss_i = lambda_D * (1 - sigmoid(beta * (r_i - z)))``
    * undesirable (``labels_i`` false): ``loss_i = lambda_U * (1 - sigmoid(beta * (z - r_i)))``

    i.e. ``lambda_y - v(x, y)`` with the prospect-theoretic value ``v``. Examples need no partner:
    each is judged good or bad on its own. At ``pi = ref`` (``r = z = 0``) every loss is
    ``lambda_y / 2``. The paper suggests weights with ``lambda_D n_D / (lambda_U n_U)`` in
    [1, 4/3] when the classes are unbalanced.

    Args:
        policy_logps, ref_logps: (B,) summed log-probs of each example's completion.
        labels: (B,) bool, True for desirable completions.
        policy_kl_logps, ref_kl_logps: (M,) summed log-probs of the mismatched (prompt, completion)
            pairs for the KL estimate; pass empty tensors to use ``z = 0``.
        beta: scale of the log-ratio in the value function (> 0).
        desirable_weight, undesirable_weight: ``lambda_D`` and ``lambda_U`` (> 0).

    Returns:
        ``(losses, metrics)``: losses (B,) in input order, unreduced. Metrics (detached ()
        tensors): ``kl`` (= z); ``rewards/chosen`` and ``logps/chosen`` (means over the desirable
        examples; present only when there is one), ``rewards/rejected`` and ``logps/rejected``
        (likewise for undesirable ones) and ``rewards/margin`` when both are present. Rewards are
        ``beta * r`` as in TRL.
    """
    _check_beta(beta)
    if desirable_weight <= 0 or undesirable_weight <= 0:
        raise ValueError(
            f"desirable_weight and undesirable_weight must be positive, got {desirable_weight}, {undesirable_weight}"
        )
    _check_shapes(policy_logps, ref_logps)
    if labels.shape != policy_logps.shape:
        raise ValueError(f"labels must have shape {tuple(policy_logps.shape)}, got {tuple(labels.shape)}")
    desirable = labels.bool()
    z = kto_reference_point(policy_kl_logps, ref_kl_logps).to(policy_logps.dtype)
    logratios = policy_logps - ref_logps
    chosen_losses = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z)))
    rejected_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z - logratios)))
    losses = torch.where(desirable, chosen_losses, rejected_losses)

    rewards = beta * logratios.detach()
    logps = policy_logps.detach()
    metrics: dict[str, torch.Tensor] = {"kl": z}
    for name, members in (("chosen", desirable), ("rejected", ~desirable)):
        if members.any():
            metrics[f"rewards/{name}"] = rewards[members].mean()
            metrics[f"logps/{name}"] = logps[members].mean()
    if "rewards/chosen" in metrics and "rewards/rejected" in metrics:
        metrics["rewards/margin"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses, metrics


# ---- listwise DPO (Plackett-Luce) -------------------------------------------------------------------


def listwise_dpo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    *,
    beta: float,
    ranks: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO for a ranking of K responses under the Plackett-Luce model (Rafailov et al. 2023,
    arXiv 2305.18290, appendix A.3, the model of eq. 18; the "DPO_PL" list-MLE loss of LiPO,
    Liu et al. 2024, arXiv 2402.01878).

    With implicit rewards ``s_k = beta * (log pi(y_k|x) - log ref(y_k|x))`` and the responses in
    ranked order ``y_1 > y_2 > ... > y_K``:

    ``loss = -sum_{k=1}^{K-1} [ s_k - log sum_{j=k}^{K} exp(s_j) ]``

    the negative log-likelihood that a rater picks the best response, then the best of the rest,
    and so on (the k = K term is log 1 = 0). For K = 2 it is DPO's sigmoid loss
    ``-log sigmoid(s_1 - s_2)`` (eq. 7). At ``pi = ref`` an untied ranking of K costs ``log K!``.

    Ties (equal ``ranks``): tied responses are interchangeable. Each is scored against the same
    set, itself, the rest of its group and everything ranked below (Breslow's approximation to the
    likelihood summed over every order within the tie, as for ties in Cox's partial likelihood).
    The worst group contributes nothing, since every order of the last responses agrees with the
    ranking; so a row whose responses are all tied has loss 0, and any order of a tie gives the
    same loss.

    Args:
        policy_logps, ref_logps: (B, K) summed log-probs of each response.
        beta: strength of the implicit KL penalty (> 0).
        ranks: optional (B, K) integer ranks, lower is better (1 = best); equal ranks are ties. The
            responses need not be sorted. Defaults to the column order (best first, no ties).
        mask: optional (B, K) bool, False for padding in rankings of fewer than K responses. Every
            row needs at least two real responses.

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced. Metrics (detached () tensors):
        ``rewards/chosen`` / ``logps/chosen`` are batch means over the best-ranked responses,
        ``rewards/rejected`` / ``logps/rejected`` over the worst-ranked, ``rewards/margin`` their
        difference and ``rewards/accuracy`` the fraction of strictly ordered response pairs whose
        rewards are in the right order; for K = 2 these equal :func:`dpo_loss`'s metrics.
    """
    _check_beta(beta)
    if policy_logps.dim() != 2 or policy_logps.shape != ref_logps.shape:
        raise ValueError(
            f"expected two (B, K) log-prob tensors, got {tuple(policy_logps.shape)} and {tuple(ref_logps.shape)}"
        )
    b, k = policy_logps.shape
    device = policy_logps.device
    valid = torch.ones(b, k, dtype=torch.bool, device=device) if mask is None else mask.to(torch.bool)
    if ranks is None:
        ranks = torch.arange(k, device=device).expand(b, k)
    if valid.shape != (b, k) or ranks.shape != (b, k):
        raise ValueError(f"ranks and mask must have shape {(b, k)}")
    if ranks.is_floating_point():
        raise ValueError("ranks must be integers (lower is better)")
    if b and int(valid.sum(dim=1).min()) < 2:
        raise ValueError("every ranking needs at least two responses (mask has a row with fewer)")

    # Padding may hold anything (even NaN): give it a finite score that is never used.
    scores = (beta * (policy_logps - ref_logps)).masked_fill(~valid, 0.0)
    losses = plackett_luce_nll(scores, ranks, valid)
    worst = ranks.long().masked_fill(~valid, torch.iinfo(torch.long).min).max(dim=1, keepdim=True).values

    metrics = _listwise_metrics(scores.detach(), policy_logps.detach(), ranks, valid, worst)
    return losses, metrics


def _listwise_metrics(
    scores: torch.Tensor, logps: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor, worst: torch.Tensor
) -> dict[str, torch.Tensor]:
    highest = torch.iinfo(torch.long).max
    best = valid & (ranks == ranks.long().masked_fill(~valid, highest).min(dim=1, keepdim=True).values)
    last = valid & (ranks == worst)

    def row_mean(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        return ((values * members).sum(dim=1) / members.sum(dim=1).clamp(min=1)).mean()

    ordered = valid.unsqueeze(2) & valid.unsqueeze(1) & (ranks.unsqueeze(2) < ranks.unsqueeze(1))
    right = ordered & (scores.unsqueeze(2) > scores.unsqueeze(1))
    chosen, rejected = row_mean(scores, best), row_mean(scores, last)
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/accuracy": right.sum() / ordered.sum().clamp(min=1),
        "rewards/margin": chosen - rejected,
        "logps/chosen": row_mean(logps, best),
        "logps/rejected": row_mean(logps, last),
    }


# ---- SFT term (RPO) -----------------------------------------------------------------------------------


def with_sft_loss(
    preference: tuple[torch.Tensor, dict[str, torch.Tensor]],
    chosen_nll: torch.Tensor,
    *,
    sft_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Add the chosen answer's length-normalised NLL to any preference loss (RPO).

    ``loss_i = preference_i + sft_coef * nll_i``, with ``nll_i = -log pi(y_c|x) / |y_c|``.

    This is the DPO+NLL objective of Iterative RPO (Pang et al. 2024, "Iterative Reasoning
    Preference Optimization", arXiv 2404.19733, Sec. 2), which keeps the chosen answer's
    likelihood from falling while the margin grows. The paper writes ``L_NLL + alpha * L_DPO``;
    weighting the NLL instead (``sft_coef``) is TRL's convention (``rpo_alpha`` in older releases;
    ``loss_type=[..., "sft"]`` with ``loss_weights`` in 1.16, where the SFT term is a token mean over
    the batch's chosen answers, equal to this per pair). The same minimiser as the paper's with
    ``sft_coef = 1 / alpha``, at a different overall scale.

    Args:
        preference: ``(losses, metrics)`` as returned by any loss here; losses (B,).
        chosen_nll: (B,) length-normalised NLL of each chosen answer (``-sums / counts``).
        sft_coef: weight of the NLL term (>= 0; 0 returns the preference loss unchanged).

    Returns:
        ``(losses, metrics)``: losses (B,); the metrics gain ``loss/preference`` (mean of the
        preference part) and ``nll/chosen`` (mean of ``chosen_nll``), detached () tensors.
    """
    losses, metrics = preference
    if sft_coef < 0:
        raise ValueError(f"sft_coef must be >= 0, got {sft_coef}")
    if chosen_nll.shape != losses.shape:
        raise ValueError(f"chosen_nll must have shape {tuple(losses.shape)}, got {tuple(chosen_nll.shape)}")
    combined = losses + sft_coef * chosen_nll if sft_coef else losses
    extra = {"loss/preference": losses.detach().mean(), "nll/chosen": chosen_nll.detach().mean()}
    return combined, {**metrics, **extra}
