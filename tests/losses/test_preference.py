"""DPO / cDPO / IPO / robust DPO / hinge: hand-worked values and cross-checks against TRL 1.16's DPOTrainer."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from prefalign.losses import PAIRWISE_LOSSES, dpo_loss, hinge_loss, ipo_loss, robust_dpo_loss, with_sft_loss

METRIC_KEYS = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracy",
    "rewards/margin",
    "logps/chosen",
    "logps/rejected",
}


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# Worked example used below: beta = 0.1, policy logps chosen -1, rejected -3, reference -2, -2.
#   h = (pc - rc) - (pr - rr) = (-1 + 2) - (-3 + 2) = 1 - (-1) = 2,   beta * h = 0.2
#   -log sigmoid(0.2) = log(1 + e^-0.2) = log(1.8187308) = 0.5981389
#   -log sigmoid(-0.2) = 0.2 + 0.5981389 = 0.7981389
WORKED = (_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0))


def test_dpo_is_ln2_when_policy_equals_reference() -> None:
    logps = _t(-5.0, -1.5, -30.0)
    other = _t(-2.0, -7.0, -0.1)
    for eps in (0.0, 0.1, 0.3):
        losses, _ = dpo_loss(logps, other, logps, other, beta=0.1, label_smoothing=eps)
        torch.testing.assert_close(losses, torch.full((3,), math.log(2), dtype=torch.float64))


def test_dpo_worked_example() -> None:
    losses, metrics = dpo_loss(*WORKED, beta=0.1)
    torch.testing.assert_close(losses, _t(0.5981388693815918))
    assert set(metrics) == METRIC_KEYS
    expected = {
        "rewards/chosen": 0.1,  # beta * (pc - rc) = 0.1 * 1
        "rewards/rejected": -0.1,  # 0.1 * (-3 + 2)
        "rewards/accuracy": 1.0,
        "rewards/margin": 0.2,
        "logps/chosen": -1.0,
        "logps/rejected": -3.0,
    }
    for key, value in expected.items():
        assert metrics[key].shape == () and float(metrics[key]) == pytest.approx(value)


def test_cdpo_worked_example() -> None:
    # eps = 0.1: 0.9 * 0.5981389 + 0.1 * 0.7981389 = 0.5981389 + 0.1 * 0.2 = 0.6181389
    losses, _ = dpo_loss(*WORKED, beta=0.1, label_smoothing=0.1)
    torch.testing.assert_close(losses, _t(0.6181388693815918))


def test_ipo_worked_example_and_value_at_reference() -> None:
    # target 1 / (2 * 0.1) = 5; h = 2 -> (2 - 5)^2 = 9
    losses, metrics = ipo_loss(*WORKED, beta=0.1)
    torch.testing.assert_close(losses, _t(9.0))
    assert set(metrics) == METRIC_KEYS
    # pi = ref -> h = 0 -> (1 / (2 beta))^2 = 1 / (4 * 0.01) = 25
    logps = _t(-4.0, -2.0)
    losses, _ = ipo_loss(logps, logps - 1, logps, logps - 1, beta=0.1)
    torch.testing.assert_close(losses, _t(25.0, 25.0))
    with pytest.raises(ValueError):
        ipo_loss(*WORKED, beta=0.1, label_smoothing=0.1)


def test_robust_worked_example() -> None:
    # (0.9 * 0.5981389 - 0.1 * 0.7981389) / 0.8 = (0.8 * 0.5981389 - 0.02) / 0.8 = 0.5981389 - 0.025
    losses, _ = robust_dpo_loss(*WORKED, beta=0.1, label_smoothing=0.1)
    torch.testing.assert_close(losses, _t(0.5731388693815918))
    losses0, _ = robust_dpo_loss(*WORKED, beta=0.1)
    torch.testing.assert_close(losses0, dpo_loss(*WORKED, beta=0.1)[0])


def test_hinge_worked_example_and_margin() -> None:
    # beta h = 0.2 (above): max(0, 1 - 0.2) = 0.8. With beta = 1, h = 2 is past the margin: 0.
    losses, _ = hinge_loss(*WORKED, beta=0.1)
    torch.testing.assert_close(losses, _t(0.8))
    torch.testing.assert_close(hinge_loss(*WORKED, beta=1.0)[0], _t(0.0))
    # At pi = ref the loss is 1 whatever beta; the gradient vanishes past the margin.
    torch.testing.assert_close(hinge_loss(_t(-1.0), _t(-2.0), _t(-1.0), _t(-2.0), beta=0.3)[0], _t(1.0))
    pc = _t(-1.0).requires_grad_()
    hinge_loss(pc, _t(-3.0), _t(-2.0), _t(-2.0), beta=1.0)[0].sum().backward()
    assert pc.grad is not None and float(pc.grad) == 0.0
    with pytest.raises(ValueError, match="no label smoothing"):
        hinge_loss(*WORKED, beta=0.1, label_smoothing=0.1)


def test_reference_losses_of_the_registry_share_one_signature() -> None:
    assert PAIRWISE_LOSSES["sigmoid"].fn is dpo_loss and PAIRWISE_LOSSES["ipo"].fn is ipo_loss
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(5, generator=g) for _ in range(4)]
    for name, entry in PAIRWISE_LOSSES.items():
        if not entry.reference:
            continue
        losses, metrics = entry.fn(*args, beta=0.2, label_smoothing=0.0)
        assert losses.shape == (5,), name
        assert set(metrics) == METRIC_KEYS
        assert all(m.shape == () and not m.requires_grad for m in metrics.values())


def test_metrics_are_detached_and_loss_has_grad() -> None:
    pc = torch.randn(4, requires_grad=True)
    losses, metrics = dpo_loss(pc, torch.randn(4), torch.randn(4), torch.randn(4), beta=0.1)
    assert losses.requires_grad
    assert not any(m.requires_grad for m in metrics.values())
    # Logging-friendly: every metric converts to a Python float.
    assert all(isinstance(float(m), float) for m in metrics.values())


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError):
        dpo_loss(torch.zeros(3), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3), beta=0.1)
    with pytest.raises(ValueError):
        dpo_loss(*WORKED, beta=0.0)


# ---- cross-checks against TRL 1.16 --------------------------------------------------------------
# TRL computes its preference losses inside DPOTrainer._compute_loss (trl/trainer/dpo_trainer.py),
# which needs a trainer and a model. We call the real method on a stand-in `self` with
# precompute_ref_logps=True (reference log-probs come from the inputs) and a stand-in model whose
# output carries the per-token log-probs, so all of TRL's own loss arithmetic runs unchanged.


class _FakeLM:
    """Returns fixed per-token log-probs in the shape of TRL's fused-LM-head output."""

    training = False

    def __init__(self, per_token_logps: torch.Tensor) -> None:
        self.per_token_logps = per_token_logps

    def __call__(self, **_: Any) -> SimpleNamespace:
        shape = self.per_token_logps.shape
        return SimpleNamespace(
            log_probs=self.per_token_logps,
            entropy=torch.zeros(shape),
            mean_logits=torch.zeros(shape),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )


def _trl_dpo(
    loss_type: str | list[str],
    beta: float,
    label_smoothing: float,
    logps: tuple[torch.Tensor, ...],
    lengths: tuple[torch.Tensor, torch.Tensor],
    loss_weights: list[float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's batch-mean loss and logged metrics for pairs with given sequence logps and lengths.

    ``loss_type`` may be a list, combined with ``loss_weights`` as TRL's ``DPOConfig`` does.
    """
    loss_types = [loss_type] if isinstance(loss_type, str) else loss_type
    trainer_mod = pytest.importorskip("trl.trainer.dpo_trainer")
    pc, pr, rc, rr = logps
    b = pc.shape[0]
    n = torch.cat(lengths).long()  # (2B,) completion lengths, batch is [chosen, rejected]
    t = int(n.max())
    # Position 0 is the prompt token; completion tokens follow. TRL's IPO divides by the sum of
    # this (unshifted) completion mask, so it equals the completion length.
    completion_mask = torch.zeros(2 * b, t + 1, dtype=torch.long)
    for i, length in enumerate(n.tolist()):
        completion_mask[i, 1 : 1 + length] = 1
    # Spread each sequence's log-prob evenly over its completion tokens (TRL sums over positions).
    per_token = completion_mask[:, 1:].to(pc.dtype) * (torch.cat([pc, pr]) / n.to(pc.dtype)).unsqueeze(1)
    inputs = {
        "input_ids": torch.ones(2 * b, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, t + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    model = _FakeLM(per_token)
    accelerator = SimpleNamespace(
        device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x
    )
    trainer = SimpleNamespace(
        model=model,
        accelerator=accelerator,
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    loss = trainer_mod.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return loss, metrics


def _random_pairs(
    b: int = 6, seed: int = 0
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    logps = tuple(-torch.rand(b, generator=g, dtype=torch.float64) * 20 for _ in range(4))
    lengths = (torch.randint(1, 9, (b,), generator=g), torch.randint(1, 9, (b,), generator=g))
    return logps, lengths


def _per_pair_trl(
    loss_type: str | list[str],
    beta: float,
    eps: float,
    logps: tuple[torch.Tensor, ...],
    lengths: Any,
    loss_weights: list[float] | None = None,
) -> torch.Tensor:
    # TRL returns only the batch mean; one pair per call recovers the per-example losses.
    out = [
        _trl_dpo(
            loss_type,
            beta,
            eps,
            tuple(x[i : i + 1] for x in logps),
            (lengths[0][i : i + 1], lengths[1][i : i + 1]),
            loss_weights,
        )[0]
        for i in range(logps[0].shape[0])
    ]
    return torch.stack(out)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_matches_trl(beta: float) -> None:
    logps, lengths = _random_pairs(seed=1)
    ours, metrics = dpo_loss(*logps, beta=beta)
    torch.testing.assert_close(ours, _per_pair_trl("sigmoid", beta, 0.0, logps, lengths))
    trl_mean, trl_metrics = _trl_dpo("sigmoid", beta, 0.0, logps, lengths)
    torch.testing.assert_close(ours.mean(), trl_mean)
    # Same logged quantities; TRL names two of them in the plural.
    names = {"rewards/accuracy": "rewards/accuracies", "rewards/margin": "rewards/margins"}
    for key, value in metrics.items():
        assert float(value) == pytest.approx(trl_metrics[names.get(key, key)], rel=1e-6, abs=1e-9), key


def test_cdpo_matches_trl_aot_on_single_pairs() -> None:
    # TRL 1.16's "sigmoid" ignores label_smoothing; its "aot" loss is the cDPO formula applied after
    # sorting the batch, and sorting a single pair is the identity, so per-pair aot == cDPO.
    logps, lengths = _random_pairs(seed=2)
    ours, _ = dpo_loss(*logps, beta=0.2, label_smoothing=0.15)
    torch.testing.assert_close(ours, _per_pair_trl("aot", 0.2, 0.15, logps, lengths))


def test_robust_matches_trl() -> None:
    logps, lengths = _random_pairs(seed=3)
    ours, _ = robust_dpo_loss(*logps, beta=0.1, label_smoothing=0.2)
    torch.testing.assert_close(ours, _per_pair_trl("robust", 0.1, 0.2, logps, lengths))


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0])
def test_hinge_matches_trl(beta: float) -> None:
    logps, lengths = _random_pairs(seed=4)
    ours, _ = hinge_loss(*logps, beta=beta)
    torch.testing.assert_close(ours, _per_pair_trl("hinge", beta, 0.0, logps, lengths))


def test_ipo_matches_trl_with_length_normalised_logps() -> None:
    # TRL 1.16 divides each sequence log-ratio by its completion length before IPO's square; our
    # ipo_loss takes whatever logps it is given, so passing per-token means reproduces TRL.
    logps, (n_c, n_r) = _random_pairs(seed=4)
    pc, pr, rc, rr = logps
    n_c64, n_r64 = n_c.double(), n_r.double()
    ours, _ = ipo_loss(pc / n_c64, pr / n_r64, rc / n_c64, rr / n_r64, beta=0.1)
    torch.testing.assert_close(ours, _per_pair_trl("ipo", 0.1, 0.0, logps, (n_c, n_r)))
    trl_mean, _ = _trl_dpo("ipo", 0.1, 0.0, logps, (n_c, n_r))
    torch.testing.assert_close(ours.mean(), trl_mean)
    # With unit lengths both conventions coincide: the paper's (summed) form.
    ones = torch.ones_like(n_c)
    torch.testing.assert_close(
        ipo_loss(*logps, beta=0.1)[0], _per_pair_trl("ipo", 0.1, 0.0, logps, (ones, ones))
    )


@pytest.mark.parametrize(("loss", "sft_coef"), [("sigmoid", 1.0), ("hinge", 0.3), ("robust", 2.0)])
def test_sft_term_matches_trl_loss_type_sft(loss: str, sft_coef: float) -> None:
    # TRL 1.16: loss_type=[loss, "sft"], loss_weights=[1, sft_coef]. Its SFT term is the token mean
    # of the chosen answers' NLL over the batch; for one pair that is -log pi(y_c) / |y_c|.
    logps, (n_c, n_r) = _random_pairs(seed=5)
    eps = 0.1 if loss == "robust" else 0.0
    nll = -logps[0] / n_c.double()
    ours, _ = with_sft_loss(
        PAIRWISE_LOSSES[loss].fn(*logps, beta=0.1, label_smoothing=eps), nll, sft_coef=sft_coef
    )
    expected = _per_pair_trl([loss, "sft"], 0.1, eps, logps, (n_c, n_r), [1.0, sft_coef])
    torch.testing.assert_close(ours, expected)
