"""SimPO / ORPO / KTO / listwise DPO / SFT term: hand-worked values and cross-checks against TRL 1.16."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from prefalign.losses import (
    PAIRWISE_LOSSES,
    dpo_loss,
    kto_loss,
    kto_reference_point,
    listwise_dpo_loss,
    orpo_loss,
    simpo_loss,
    with_sft_loss,
)


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def _cpu_accelerator() -> SimpleNamespace:
    return SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)


# ---- SimPO --------------------------------------------------------------------------------------


def test_simpo_worked_example() -> None:
    # Average log-probs -1 (chosen) and -2 (rejected), beta = 2, gamma = 0.5:
    #   z = 2 * (-1 + 2) - 0.5 = 1.5;  -log sigmoid(1.5) = log(1 + e^-1.5) = 0.2014133
    losses, metrics = simpo_loss(_t(-1.0), _t(-2.0), beta=2.0, gamma=0.5)
    torch.testing.assert_close(losses, _t(0.2014132779827524))
    assert float(metrics["rewards/chosen"]) == pytest.approx(-2.0)  # beta * average log-prob
    assert float(metrics["rewards/margin"]) == pytest.approx(2.0)
    assert float(metrics["rewards/accuracy"]) == 1.0
    # Equal answers: -log sigmoid(-gamma); gamma = 0 gives ln 2.
    x = _t(-1.5, -0.3)
    torch.testing.assert_close(
        simpo_loss(x, x, beta=2.0, gamma=0.0)[0], torch.full((2,), math.log(2), dtype=torch.float64)
    )
    with pytest.raises(ValueError):
        simpo_loss(x, x, beta=2.0, gamma=-1.0)


@pytest.mark.parametrize(("beta", "gamma", "eps"), [(0.1, 0.5, 0.0), (2.0, 1.0, 0.0), (2.5, 0.3, 0.2)])
def test_simpo_matches_trl_cpo(beta: float, gamma: float, eps: float) -> None:
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    g = torch.Generator().manual_seed(11)
    pc, pr = (-torch.rand(7, generator=g) * 4 for _ in range(2))
    trainer = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=gamma,
        beta=beta,
        label_smoothing=eps,
        accelerator=_cpu_accelerator(),
    )
    trl_losses, trl_chosen, trl_rejected = cpo.CPOTrainer.cpo_loss(trainer, pc, pr)
    ours, metrics = simpo_loss(pc, pr, beta=beta, gamma=gamma, label_smoothing=eps)
    torch.testing.assert_close(ours, trl_losses)
    torch.testing.assert_close(metrics["rewards/chosen"], trl_chosen.mean())
    torch.testing.assert_close(metrics["rewards/rejected"], trl_rejected.mean())


# ---- ORPO ---------------------------------------------------------------------------------------


def test_orpo_worked_example() -> None:
    # p_c = 0.5 -> odds 1 (log 0); p_r = 0.25 -> odds 1/3 (log -ln 3); log odds ratio = ln 3.
    #   L_OR = -log sigmoid(ln 3) = log(1 + 1/3) = ln(4/3) = 0.2876821
    #   L_SFT = -log 0.5 = 0.6931472;  loss = 0.6931472 + 0.1 * 0.2876821 = 0.7219154
    pc, pr = _t(math.log(0.5)), _t(math.log(0.25))
    losses, metrics = orpo_loss(pc, pr, beta=0.1)
    torch.testing.assert_close(losses, _t(0.7219153878051233))
    assert float(metrics["log_odds_chosen"]) == pytest.approx(math.log(3))
    assert float(metrics["log_odds_ratio"]) == pytest.approx(-math.log(4 / 3))
    assert float(metrics["nll_loss"]) == pytest.approx(math.log(2))
    # An explicit SFT term replaces the default -pc.
    torch.testing.assert_close(
        orpo_loss(pc, pr, beta=0.1, chosen_nll=_t(2.0))[0], _t(2.0 + 0.1 * math.log(4 / 3))
    )


def test_orpo_is_finite_for_a_certain_answer() -> None:
    pc = torch.tensor([0.0, -1e-9], requires_grad=True)
    losses, _ = orpo_loss(pc, torch.tensor([-2.0, -2.0]), beta=0.2)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(pc.grad).all()


@pytest.mark.parametrize("beta", [0.1, 0.25])
def test_orpo_matches_trl_odds_ratio(beta: float) -> None:
    orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    g = torch.Generator().manual_seed(12)
    # Per-token averages on both sides of -ln 2 (TRL's log1mexp switches branch there).
    pc, pr = (-(torch.rand(9, generator=g) * 3 + 0.01) for _ in range(2))
    trainer = SimpleNamespace(beta=beta, accelerator=_cpu_accelerator())
    trl_or, trl_chosen, trl_rejected, trl_ratio, trl_log_odds = orpo.ORPOTrainer.odds_ratio_loss(
        trainer, pc, pr
    )
    ours, metrics = orpo_loss(pc, pr, beta=beta)
    # TRL returns beta * log sigmoid(log odds ratio) and subtracts it from its NLL.
    torch.testing.assert_close(ours - (-pc), -trl_or)
    torch.testing.assert_close(metrics["log_odds_ratio"], trl_ratio)
    torch.testing.assert_close(metrics["log_odds_chosen"], trl_log_odds)
    torch.testing.assert_close(metrics["rewards/chosen"], trl_chosen.mean())
    torch.testing.assert_close(metrics["rewards/rejected"], trl_rejected.mean())
    # TRL's full ORPO loss is nll - mean(beta * ratio): same value with its NLL passed in.
    nll = torch.full_like(pc, 1.7)
    torch.testing.assert_close(orpo_loss(pc, pr, beta=beta, chosen_nll=nll)[0].mean(), 1.7 - trl_or.mean())


def test_reference_free_registry() -> None:
    free = {n: e.fn for n, e in PAIRWISE_LOSSES.items() if not e.reference}
    assert free == {"simpo": simpo_loss, "orpo": orpo_loss}
    assert all(e.average_logps for e in PAIRWISE_LOSSES.values() if not e.reference)
    g = torch.Generator().manual_seed(0)
    pc, pr = (-torch.rand(5, generator=g) - 0.1 for _ in range(2))
    for name, fn in free.items():
        losses, metrics = fn(pc.clone().requires_grad_(), pr, beta=0.2)
        assert losses.shape == (5,) and losses.requires_grad, name
        assert all(m.shape == () and not m.requires_grad for m in metrics.values())


# ---- KTO ----------------------------------------------------------------------------------------

# Worked example: beta = 0.1; one desirable answer with r = -1 - (-3) = 2, one undesirable with
# r = -4 - (-3) = -1; mismatched pairs give KL estimates (-5 + 6, -6 + 6) -> z = mean(1, 0) = 0.5.
#   desirable:   1 - sigmoid(0.1 * (2 - 0.5))    = 1 - sigmoid(0.15) = 0.4625702
#   undesirable: 1 - sigmoid(0.1 * (0.5 - (-1))) = 1 - sigmoid(0.15) = 0.4625702 (x lambda_U = 2)
KTO_WORKED = (_t(-1.0, -4.0), _t(-3.0, -3.0), torch.tensor([True, False]), _t(-5.0, -6.0), _t(-6.0, -6.0))


def test_kto_worked_example() -> None:
    losses, metrics = kto_loss(*KTO_WORKED, beta=0.1, undesirable_weight=2.0)
    torch.testing.assert_close(losses, _t(0.4625701546562504, 0.9251403093125008))
    assert float(metrics["kl"]) == pytest.approx(0.5)
    assert float(metrics["rewards/chosen"]) == pytest.approx(0.2)
    assert float(metrics["rewards/rejected"]) == pytest.approx(-0.1)
    assert float(metrics["rewards/margin"]) == pytest.approx(0.3)
    assert float(metrics["logps/chosen"]) == -1.0 and float(metrics["logps/rejected"]) == -4.0


def test_kto_reference_point_is_clamped_and_detached() -> None:
    policy_kl = torch.tensor([-7.0, -7.5], requires_grad=True)
    z = kto_reference_point(policy_kl, torch.tensor([-6.0, -6.0]))
    assert float(z) == 0.0 and not z.requires_grad  # mean difference -1.25 clamps to 0
    assert float(kto_reference_point(torch.zeros(0), torch.zeros(0))) == 0.0


def test_kto_is_half_the_weight_at_the_reference() -> None:
    logps = _t(-3.0, -8.0, -1.0)
    labels = torch.tensor([True, False, False])
    losses, metrics = kto_loss(logps, logps, labels, logps, logps, beta=0.3, desirable_weight=1.5)
    torch.testing.assert_close(losses, _t(0.75, 0.5, 0.5))
    # Only desirable examples: the undesirable-side metrics are absent, not NaN.
    _, only = kto_loss(logps, logps, torch.ones(3, dtype=torch.bool), logps, logps, beta=0.3)
    assert "rewards/chosen" in only and "rewards/rejected" not in only and "rewards/margin" not in only


class _FakeKTOModel:
    """TRL's fused-LM-head output: per-token log-probs, 1 scored position per row (T = 2)."""

    training = False

    def __init__(self, logps: torch.Tensor, kl_logps: torch.Tensor) -> None:
        self.logps, self.kl_logps = logps, kl_logps

    def __call__(self, *, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        # The KL rows are marked by token id 2 (see _trl_kto), the examples by 1.
        values = self.kl_logps if int(input_ids[0, 0]) == 2 else self.logps
        zeros = torch.zeros(values.shape[0], 1, dtype=values.dtype)
        return SimpleNamespace(log_probs=values.unsqueeze(1), entropy=zeros, mean_logits=zeros)


def _trl_kto(
    logps: torch.Tensor,
    ref: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    ref_kl: torch.Tensor,
    beta: float,
    weights: tuple[float, float],
) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL 1.16's KTOTrainer._compute_loss on a stand-in trainer (precomputed reference log-probs)."""
    kto = pytest.importorskip("trl.trainer.kto_trainer")
    b, m = logps.shape[0], kl.shape[0]
    model = _FakeKTOModel(logps, kl)
    inputs = {
        "label": labels,
        "input_ids": torch.ones(b, 2, dtype=torch.long),
        "attention_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * b),
        "KL_input_ids": torch.full((m, 2), 2, dtype=torch.long),
        "KL_attention_mask": torch.ones(m, 2, dtype=torch.long),
        "KL_completion_mask": torch.tensor([[0, 1]] * m),
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    trainer = SimpleNamespace(
        model=model,
        accelerator=_cpu_accelerator(),
        calculate_KL=True,
        precompute_ref_logps=True,
        aux_loss_enabled=False,
        loss_type="kto",
        beta=beta,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    trainer._compute_kl_logps = lambda mdl, batch: kto.KTOTrainer._compute_kl_logps(trainer, mdl, batch)
    loss = kto.KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["eval"].items()}


@pytest.mark.parametrize(("beta", "weights"), [(0.1, (1.0, 1.0)), (0.5, (1.0, 1.33)), (0.05, (0.7, 2.0))])
def test_kto_matches_trl(beta: float, weights: tuple[float, float]) -> None:
    g = torch.Generator().manual_seed(13)
    b = 8
    logps, ref = -torch.rand(b, generator=g) * 30, -torch.rand(b, generator=g) * 30
    # Mismatched pairs a little less likely under the reference, so z > 0 and the clamp is inactive.
    kl, ref_kl = -torch.rand(b, generator=g) * 20, -torch.rand(b, generator=g) * 20 - 15
    labels = torch.tensor([True, False, True, True, False, False, True, False])
    ours, metrics = kto_loss(
        logps, ref, labels, kl, ref_kl, beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1]
    )
    assert float(metrics["kl"]) > 0
    trl_mean, trl_metrics = _trl_kto(logps, ref, labels, kl, ref_kl, beta, weights)
    torch.testing.assert_close(ours.mean(), trl_mean)
    names = {"rewards/margin": "rewards/margins"}
    for key, value in metrics.items():
        assert float(value) == pytest.approx(trl_metrics[names.get(key, key)], rel=1e-5, abs=1e-6), key
    # Per example: TRL only returns a mean, so feed it one example at a time (same KL pairs).
    per_example = torch.stack(
        [
            _trl_kto(logps[i : i + 1], ref[i : i + 1], labels[i : i + 1], kl, ref_kl, beta, weights)[0]
            for i in range(b)
        ]
    )
    torch.testing.assert_close(ours, per_example)
    # With the clamp active (policy below the reference on the mismatched pairs) both use z = 0.
    ours0, m0 = kto_loss(logps, ref, labels, ref_kl, kl, beta=beta)
    assert float(m0["kl"]) == 0.0
    torch.testing.assert_close(ours0.mean(), _trl_kto(logps, ref, labels, ref_kl, kl, beta, (1.0, 1.0))[0])


# ---- listwise DPO -------------------------------------------------------------------------------


def test_listwise_worked_example() -> None:
    # beta = 1, reference 0, policy scores s = (2, 1, 0) ranked best first:
    #   k=1: 2 - log(e^2 + e + 1) = -0.4076059;  k=2: 1 - log(e + 1) = -0.3132617;  k=3: 0
    #   loss = 0.7208677
    policy, ref = _t(2.0, 1.0, 0.0).unsqueeze(0), torch.zeros(1, 3, dtype=torch.float64)
    losses, metrics = listwise_dpo_loss(policy, ref, beta=1.0)
    torch.testing.assert_close(losses, _t(0.7208676519626029))
    assert float(metrics["rewards/chosen"]) == 2.0 and float(metrics["rewards/rejected"]) == 0.0
    assert float(metrics["rewards/accuracy"]) == 1.0
    # At pi = ref an untied ranking of K costs log K!.
    same = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(
        listwise_dpo_loss(same, same, beta=0.1)[0], torch.full((2,), math.log(24), dtype=torch.float64)
    )


def test_listwise_ties_are_interchangeable() -> None:
    policy, ref = _t(2.0, 1.0, 0.0).unsqueeze(0), torch.zeros(1, 3, dtype=torch.float64)
    # Ranks (1, 1, 2): both tied winners are scored against all three:
    #   (2 - 2.4076059) + (1 - 2.4076059) = -1.8152119
    tied = listwise_dpo_loss(policy, ref, beta=1.0, ranks=torch.tensor([[1, 1, 2]]))[0]
    torch.testing.assert_close(tied, _t(1.8152119288887603))
    swapped = listwise_dpo_loss(
        _t(1.0, 2.0, 0.0).unsqueeze(0), ref, beta=1.0, ranks=torch.tensor([[1, 1, 2]])
    )[0]
    torch.testing.assert_close(swapped, tied)
    # Ranks (1, 2, 2): only the winner's term; the tied last group adds nothing.
    torch.testing.assert_close(
        listwise_dpo_loss(policy, ref, beta=1.0, ranks=torch.tensor([[1, 2, 2]]))[0], _t(0.40760596444438)
    )
    # All tied: no preference, no loss.
    torch.testing.assert_close(
        listwise_dpo_loss(policy, ref, beta=1.0, ranks=torch.tensor([[3, 3, 3]]))[0], _t(0.0)
    )


def test_listwise_with_two_responses_is_dpo() -> None:
    g = torch.Generator().manual_seed(14)
    pc, pr, rc, rr = (-torch.rand(6, generator=g, dtype=torch.float64) * 20 for _ in range(4))
    for beta in (0.1, 0.7):
        ours, metrics = listwise_dpo_loss(torch.stack([pc, pr], 1), torch.stack([rc, rr], 1), beta=beta)
        expected, expected_metrics = dpo_loss(pc, pr, rc, rr, beta=beta)
        torch.testing.assert_close(ours, expected)
        assert set(metrics) == set(expected_metrics)
        for key, value in expected_metrics.items():
            torch.testing.assert_close(metrics[key], value, msg=key)


def test_listwise_mask_order_and_padding() -> None:
    g = torch.Generator().manual_seed(15)
    policy, ref = torch.randn(1, 3, generator=g), torch.randn(1, 3, generator=g)
    full, _ = listwise_dpo_loss(policy, ref, beta=0.5)
    # The same ranking padded to K = 5 with garbage (even NaN) in the padding.
    padded_policy = torch.cat([policy, torch.tensor([[float("nan"), 3.0]])], 1).requires_grad_()
    padded_ref = torch.cat([ref, torch.tensor([[1.0, float("nan")]])], 1)
    mask = torch.tensor([[True, True, True, False, False]])
    padded, _ = listwise_dpo_loss(padded_policy, padded_ref, beta=0.5, mask=mask)
    torch.testing.assert_close(padded, full)
    padded.sum().backward()
    assert torch.isfinite(padded_policy.grad).all() and (padded_policy.grad[0, 3:] == 0).all()
    # Columns in any order, given their ranks.
    order = torch.tensor([2, 0, 1])
    shuffled, _ = listwise_dpo_loss(
        policy[:, order], ref[:, order], beta=0.5, ranks=torch.tensor([[3, 1, 2]])
    )
    torch.testing.assert_close(shuffled, full)
    with pytest.raises(ValueError, match="at least two"):
        listwise_dpo_loss(policy, ref, beta=0.5, mask=torch.tensor([[True, False, False]]))
    with pytest.raises(ValueError):
        listwise_dpo_loss(policy[0], ref[0], beta=0.5)


# ---- SFT term (RPO) -----------------------------------------------------------------------------


def test_with_sft_loss_worked_example() -> None:
    # dpo_loss on the worked example of test_preference.py is 0.5981389; NLL 0.5 with weight 2 adds 1.
    worked = (_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0))
    losses, metrics = with_sft_loss(dpo_loss(*worked, beta=0.1), _t(0.5), sft_coef=2.0)
    torch.testing.assert_close(losses, _t(1.5981388693815918))
    assert float(metrics["loss/preference"]) == pytest.approx(0.5981388693815918)
    assert float(metrics["nll/chosen"]) == 0.5
    assert "rewards/margin" in metrics
    # Works on any loss of the family, and sft_coef = 0 leaves it unchanged.
    kto = kto_loss(*KTO_WORKED, beta=0.1)
    torch.testing.assert_close(with_sft_loss(kto, _t(1.0, 2.0), sft_coef=0.0)[0], kto[0])
    with pytest.raises(ValueError):
        with_sft_loss(kto, _t(1.0), sft_coef=1.0)
    with pytest.raises(ValueError):
        with_sft_loss(kto, _t(1.0, 2.0), sft_coef=-1.0)
