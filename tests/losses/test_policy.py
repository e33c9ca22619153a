"""RL losses and advantages (losses/advantages.py, losses/policy.py): hand-worked numbers,
invariances, and cross-checks against TRL (1.16 where it still has the code, else the lines of the
TRL release that had it, reproduced and cited)."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from prefalign.losses import (
    AdaptiveKLController,
    FixedKLController,
    clipped_value_loss,
    gae,
    group_advantages,
    kl_penalty_rewards,
    policy_loss_reduction,
    ppo_policy_loss,
    reinforce_baseline_advantages,
    rloo_advantages,
    token_entropy,
    whiten,
)
from prefalign.ops import kl_k3

F64 = torch.float64
LN = math.log


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def _right_padded(b: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, T) bool mask with random lengths in [1, T] (row 0 full), and a generator for data."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    return torch.arange(t) < lengths.unsqueeze(1), g


def _garbage(x: torch.Tensor, mask: torch.Tensor, fill: float) -> torch.Tensor:
    return torch.where(mask, x, torch.full_like(x, fill))


# ---- GAE ----------------------------------------------------------------------------------------


def test_gae_hand_worked_gamma_1_lambda_095() -> None:
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7], gamma 1, lam 0.95, V after the last token = 0:
    # t=2: delta = 1 + 0 - 0.7 = 0.3;   A2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1; A1 = 0.1 + 0.95 * 0.3 = 0.385
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1; A0 = 0.1 + 0.95 * 0.385 = 0.46575
    # returns = A + V = [0.96575, 0.985, 1.0]
    adv, ret = gae(_t([[0, 0, 1]]), _t([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, _t([[0.46575, 0.385, 0.3]]))
    torch.testing.assert_close(ret, _t([[0.96575, 0.985, 1.0]]))


def test_gae_hand_worked_discounted_with_padding() -> None:
    # Row 0: r [1, 2], V [0.5, 1], gamma 0.5, lam 0.5:
    #   t=1: delta = 2 - 1 = 1; A1 = 1.  t=0: delta = 1 + 0.5 * 1 - 0.5 = 1; A0 = 1 + 0.25 * 1 = 1.25
    #   returns [1.75, 2.0]. Position 2 is padding holding nonsense (nan reward, huge value).
    # Row 1: one token, r 3, V 1: A = 3 - 1 = 2, return 3.
    rewards = _t([[1, 2, math.nan], [3, math.nan, math.nan]])
    values = _t([[0.5, 1, 1e9], [1, -1e9, math.inf]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, _t([[1.25, 1.0, 0.0], [2.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, _t([[1.75, 2.0, 0.0], [3.0, 0.0, 0.0]]))


def test_gae_lambda_one_is_monte_carlo_and_lambda_zero_is_td() -> None:
    mask, g = _right_padded(5, 7, seed=1)
    rewards, values = torch.randn(5, 7, generator=g, dtype=F64), torch.randn(5, 7, generator=g, dtype=F64)
    gamma = 0.9
    _, ret = gae(rewards, values, mask, gamma=gamma, lam=1.0)
    r = rewards * mask
    mc = torch.zeros_like(r)  # discounted reward-to-go, independent of the values
    for t in range(7):
        mc[:, t] = sum(gamma ** (k - t) * r[:, k] for k in range(t, 7))
    torch.testing.assert_close(ret, mc * mask)
    adv0, _ = gae(rewards, values, mask, gamma=gamma, lam=0.0)
    v = values * mask
    next_v = torch.cat([v[:, 1:], torch.zeros(5, 1, dtype=F64)], dim=1)
    torch.testing.assert_close(adv0, (r + gamma * next_v - v) * mask)


def _trl_gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    # TRL v0.12-0.2x trl/trainer/ppo_trainer.py, PPOTrainer.train, "# 6. compute advantages and
    # returns" (removed with PPOTrainer in TRL 1.x); TRL zeroes rewards and values on padding first.
    lastgaelam = 0
    advantages_reversed = []
    gen_length = rewards.shape[1]
    for t in reversed(range(gen_length)):
        nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    return torch.stack(advantages_reversed[::-1], dim=1)


def test_gae_matches_trl_ppo_loop_and_ignores_padding() -> None:
    mask, g = _right_padded(6, 9, seed=2)
    rewards, values = torch.randn(6, 9, generator=g, dtype=F64), torch.randn(6, 9, generator=g, dtype=F64)
    adv, ret = gae(_garbage(rewards, mask, math.nan), _garbage(values, mask, math.inf), mask, lam=0.95)
    expected = _trl_gae(rewards * mask, values * mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)


# ---- whitening ----------------------------------------------------------------------------------


def test_whiten_hand_worked() -> None:
    # Selected [2, 4, 6]: mean 4, unbiased variance ((-2)^2 + 0 + 2^2) / 2 = 4, std 2.
    # shift_mean: [-1, 0, 1]; without shift the mean is added back: [3, 4, 5]; padding -> 0.
    x, mask = _t([[2, 4], [6, 1e6]]), torch.tensor([[1, 1], [1, 0]])
    s = 1 / math.sqrt(1 + 1e-8 / 4)  # eps enters as sqrt(var + eps)
    torch.testing.assert_close(whiten(x, mask), _t([[-s, 0], [s, 0]]))
    torch.testing.assert_close(whiten(x, mask, shift_mean=False), _t([[4 - s, 4], [4 + s, 0]]))


def _trl_masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    # TRL v0.x trl/core.py masked_mean / masked_var(unbiased) / masked_whiten (gone from TRL 1.16).
    def masked_mean(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (v * m).sum() / m.sum()

    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask) * (mask.sum() / (mask.sum() - 1))
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_trl_on_selected_entries_and_standardises(shift_mean: bool) -> None:
    mask, g = _right_padded(5, 8, seed=3)
    x = torch.randn(5, 8, generator=g, dtype=F64) * 3 + 2
    ours = whiten(_garbage(x, mask, 1e12), mask, shift_mean=shift_mean)
    trl = _trl_masked_whiten(x, mask.to(F64), shift_mean=shift_mean)
    torch.testing.assert_close(ours[mask], trl[mask])
    assert (ours[~mask] == 0).all()
    centred = whiten(x, mask)[mask]
    assert abs(float(centred.mean())) < 1e-12
    assert float(centred.var()) == pytest.approx(1.0, rel=1e-6)


# ---- KL-penalised rewards -----------------------------------------------------------------------


def test_kl_penalty_rewards_hand_worked_k1() -> None:
    # kl_coef 0.1, k1 = logp - ref. Row 0 (3 tokens): k1 = [0.5, -0.2, 1.0] -> -0.1 * k1 =
    # [-0.05, 0.02, -0.1], score 2 added at the last token: [-0.05, 0.02, 1.9].
    # Row 1 (2 tokens): k1 = [0.0, 0.3] -> [0, -0.03]; score -1 at t=1: [0, -1.03]; padding 0.
    logps = _t([[-1.0, -2.0, -0.5], [-1.0, -0.7, -math.inf]])
    ref = _t([[-1.5, -1.8, -1.5], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = kl_penalty_rewards(_t([[2.0, -1.0]])[0], logps, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(out, _t([[-0.05, 0.02, 1.9], [0.0, -1.03, 0.0]]))


def test_kl_penalty_rewards_k3_uses_ops_estimator_and_row_sum_is_penalised_score() -> None:
    mask, g = _right_padded(4, 6, seed=4)
    logps, ref = -torch.rand(4, 6, generator=g, dtype=F64) * 3, -torch.rand(4, 6, generator=g, dtype=F64) * 3
    scores = torch.randn(4, generator=g, dtype=F64)
    out = kl_penalty_rewards(
        scores, _garbage(logps, mask, -math.inf), ref, mask, kl_coef=0.05, estimator="k3"
    )
    kl = kl_k3(logps, ref) * mask
    last = mask.sum(-1) - 1
    expected = -0.05 * kl
    expected[torch.arange(4), last] += scores
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.sum(-1), scores - 0.05 * kl.sum(-1))


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_penalty_rewards_match_trl_ppo_construction(estimator: str) -> None:
    # TRL v0.12-0.2x trl/trainer/ppo_trainer.py, "# 4. compute rewards" (removed in TRL 1.x), with
    # one deliberate difference: TRL's actual_end is sequence_lengths + 1 (one past the last real
    # token) when that fits in T; we pay the score at the last real token (Huang et al.'s EOS).
    mask, g = _right_padded(5, 6, seed=14)
    logprobs, ref_logprobs = (-torch.rand(5, 6, generator=g, dtype=F64) * 4 for _ in range(2))
    scores = torch.randn(5, generator=g, dtype=F64)
    # TRL fills padded log-probs with INVALID_LOGPROB = 1.0 in both, so their KL is 0 there.
    logprobs, ref_logprobs = _garbage(logprobs, mask, 1.0), _garbage(ref_logprobs, mask, 1.0)
    logr = ref_logprobs - logprobs
    kl = -logr if estimator == "k1" else (logr.exp() - 1) - logr
    rewards = -0.2 * kl
    sequence_lengths = mask.sum(-1) - 1
    rewards[torch.arange(5), sequence_lengths] += scores
    ours = kl_penalty_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.2, estimator=estimator)
    torch.testing.assert_close(ours, rewards)


def test_kl_penalty_rewards_empty_row_gets_nothing() -> None:
    out = kl_penalty_rewards(
        _t([[5.0, 7.0]])[0], torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64),
        torch.tensor([[1, 1, 0], [0, 0, 0]]), kl_coef=0.1,
    )  # fmt: skip
    torch.testing.assert_close(out, _t([[0, 5, 0], [0, 0, 0]]))


# ---- KL controllers -----------------------------------------------------------------------------


def test_adaptive_kl_controller_hand_worked() -> None:
    # init 0.2, target 6, horizon 10000, n_steps 256:
    # KL 12: e = clip(12/6 - 1 = 1, +-0.2) = 0.2  -> beta = 0.2 * (1 + 0.2 * 256 / 10000) = 0.201024
    # KL 6:  e = 0                                -> unchanged
    # KL 3:  e = clip(-0.5) = -0.2                -> beta = 0.201024 * (1 - 0.00512) = 0.19999477...
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert ctl.update(12.0, 256) == pytest.approx(0.201024, rel=1e-12)
    assert ctl.update(torch.tensor(6.0), 256) == pytest.approx(0.201024, rel=1e-12)
    assert ctl.update(3.0, 256) == pytest.approx(0.201024 * 0.99488, rel=1e-12)
    assert ctl.value == pytest.approx(0.201024 * 0.99488, rel=1e-12)


class _TrlAdaptiveKLController:
    # TRL v0.x trl/trainer/utils.py AdaptiveKLController (from OpenAI lm-human-preferences).
    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current: float, n_steps: int) -> None:
        proportional_error = np.clip(current / self.target - 1, -0.2, 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult


def test_adaptive_kl_controller_matches_trl_and_resumes_exactly() -> None:
    rng = np.random.default_rng(0)
    kls = rng.uniform(0, 20, size=12).tolist()
    ours, trl = AdaptiveKLController(0.1, 6.0, 1000), _TrlAdaptiveKLController(0.1, 6.0, 1000)
    for kl in kls:
        ours.update(kl, 64)
        trl.update(kl, 64)
        assert ours.value == pytest.approx(trl.value, rel=1e-14)
    # Save after 5 updates, restore into a differently configured controller, continue: same floats.
    full = AdaptiveKLController(0.1, 6.0, 1000)
    for kl in kls[:5]:
        full.update(kl, 64)
    resumed = AdaptiveKLController(9.0, 1.0, 1)
    resumed.load_state_dict(full.state_dict())
    for kl in kls[5:]:
        full.update(kl, 64)
        resumed.update(kl, 64)
    assert resumed.value == full.value == ours.value


def test_fixed_kl_controller_and_validation() -> None:
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 512) == 0.05 and ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05
    for bad in [(-1.0, 6.0, 10), (0.1, 0.0, 10), (0.1, 6.0, 0)]:
        with pytest.raises(ValueError):
            AdaptiveKLController(*bad)
    with pytest.raises(ValueError):
        FixedKLController(-0.1)


# ---- group baselines ----------------------------------------------------------------------------


def test_group_advantages_hand_worked() -> None:
    # Group [1, 2, 3]: mean 2, unbiased std 1 -> [-1, 0, 1] / (1 + 1e-4). Group [5, 5, 5]: all 0.
    r = _t([[1, 2, 3, 5, 5, 5]])[0]
    d = 1 + 1e-4
    torch.testing.assert_close(group_advantages(r, 3), _t([[-1 / d, 0, 1 / d, 0, 0, 0]])[0])
    torch.testing.assert_close(group_advantages(r, 3, scale="none"), _t([[-1, 0, 1, 0, 0, 0]])[0])
    # batch std of [1, 2, 3, 5, 5, 5]: mean 3.5, squares 6.25+2.25+0.25+3*2.25 = 15.5, /5 = 3.1
    s = math.sqrt(3.1) + 1e-4
    torch.testing.assert_close(group_advantages(r, 3, scale="batch"), _t([[-1 / s, 0, 1 / s, 0, 0, 0]])[0])
    torch.testing.assert_close(group_advantages(r, 1), torch.zeros(6, dtype=F64))  # a group of one


def _trl_grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    # TRL 1.16 trl/trainer/grpo_trainer.py lines 2765-2787 (sum_then_normalize), inside
    # _generate_and_score_completions; nanstd is TRL's own helper (Bessel-corrected).
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:  # "batch"
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


@pytest.mark.parametrize(("scale", "trl_scale"), [("std", "group"), ("none", "none"), ("batch", "batch")])
def test_group_advantages_match_trl_and_sum_to_zero_per_group(scale: str, trl_scale: str) -> None:
    g = torch.Generator().manual_seed(5)
    r = torch.randn(24, generator=g, dtype=F64) * 2
    ours = group_advantages(r, 4, scale=scale)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, _trl_grpo_advantages(r, 4, trl_scale))
    torch.testing.assert_close(ours.view(-1, 4).sum(1), torch.zeros(6, dtype=F64))


def test_rloo_hand_worked_and_closed_form() -> None:
    # [1, 2, 3]: leave-one-out baselines (2+3)/2 = 2.5, (1+3)/2 = 2, (1+2)/2 = 1.5 -> [-1.5, 0, 1.5]
    torch.testing.assert_close(rloo_advantages(_t([[1, 2, 3]])[0], 3), _t([[-1.5, 0, 1.5]])[0])
    g = torch.Generator().manual_seed(6)
    r = torch.randn(20, generator=g, dtype=F64)
    k = 5
    grouped = r.view(-1, k)
    closed = k / (k - 1) * (grouped - grouped.mean(1, keepdim=True))
    torch.testing.assert_close(rloo_advantages(r, k), closed.reshape(-1))
    torch.testing.assert_close(rloo_advantages(r, k).view(-1, k).sum(1), torch.zeros(4, dtype=F64))


def test_rloo_matches_trl() -> None:
    # TRL 1.16 trl/trainer/rloo_trainer.py lines 1675-1690 (all rewards scorable, no NaN).
    g = torch.Generator().manual_seed(7)
    rewards, num_generations = torch.randn(12, generator=g, dtype=F64), 4
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    torch.testing.assert_close(rloo_advantages(rewards, 4), rewards - baselines.view(-1))


def test_reinforce_baseline_and_group_validation() -> None:
    r = _t([[1.0, 3.0]])[0]
    torch.testing.assert_close(reinforce_baseline_advantages(r, 2.0), _t([[-1.0, 1.0]])[0])
    torch.testing.assert_close(reinforce_baseline_advantages(r, _t([[0.5, 1.0]])[0]), _t([[0.5, 2.0]])[0])
    with pytest.raises(ValueError):
        reinforce_baseline_advantages(r, torch.zeros(3))
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)  # 2 does not divide 5
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 2, scale="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rloo_advantages(torch.zeros(4), 1)  # leave-one-out needs k >= 2


# ---- PPO clipped surrogate ----------------------------------------------------------------------

# Token ratios rho = [1.5, 0.5, 0.5, 1.5] with advantages [+1, +1, -1, -1], eps 0.2, and a fifth,
# padded token holding -inf / nan:
#   t0: min(1.5 * 1, 1.2 * 1)   =  1.2 -> loss -1.2 (clipped high)
#   t1: min(0.5, 0.8)           =  0.5 -> loss -0.5
#   t2: min(-0.5, -0.8)         = -0.8 -> loss  0.8 (clipped low)
#   t3: min(-1.5, -1.2)         = -1.5 -> loss  1.5
# clip fraction 2/4, low 1/4, high 1/4; ratio mean (1.5+0.5+0.5+1.5)/4 = 1, max 1.5;
# approx_kl (k3) = mean((rho-1) - ln rho) = (2(0.5 - ln 1.5) + 2(-0.5 + ln 2)) / 4;
# approx_kl_k2 = mean(0.5 ln^2 rho) = (ln^2 1.5 + ln^2 2) / 4.
OLD = _t([[-1.0, -1.0, -1.0, -1.0, -1.0]])
NEW = _t([[-1 + LN(1.5), -1 + LN(0.5), -1 + LN(0.5), -1 + LN(1.5), -math.inf]])
ADV = _t([[1.0, 1.0, -1.0, -1.0, math.nan]])
MASK = torch.tensor([[1, 1, 1, 1, 0]])


def test_ppo_policy_loss_hand_worked() -> None:
    logps = NEW.clone().requires_grad_(True)
    losses, m = ppo_policy_loss(logps, OLD, ADV, MASK)
    torch.testing.assert_close(losses, _t([[-1.2, -0.5, 0.8, 1.5, 0.0]]))
    assert float(m["clip_fraction"]) == 0.5
    assert float(m["clip_fraction/low"]) == 0.25 and float(m["clip_fraction/high"]) == 0.25
    assert float(m["ratio/mean"]) == pytest.approx(1.0) and float(m["ratio/max"]) == pytest.approx(1.5)
    k3 = (2 * (0.5 - LN(1.5)) + 2 * (-0.5 + LN(2))) / 4
    assert float(m["approx_kl"]) == pytest.approx(k3, rel=1e-12)
    assert float(m["approx_kl_k2"]) == pytest.approx((LN(1.5) ** 2 + LN(2) ** 2) / 4, rel=1e-12)
    # d(-A rho)/d logp = -A rho where unclipped; 0 where clipped and on padding (finite there).
    losses.sum().backward()
    torch.testing.assert_close(logps.grad, _t([[0.0, -0.5, 0.0, 1.5, 0.0]]))


def test_ppo_clip_higher_and_sequence_advantages() -> None:
    losses, m = ppo_policy_loss(NEW, OLD, ADV, MASK, clip_high=0.28)
    # Only t0 changes: min(1.5, 1.28) = 1.28; t2's lower bound stays 0.8.
    torch.testing.assert_close(losses, _t([[-1.28, -0.5, 0.8, 1.5, 0.0]]))
    assert float(m["clip_fraction/high"]) == 0.25
    # A (B,) advantage applies to every token of its row.
    per_row, _ = ppo_policy_loss(NEW, OLD, _t([[2.0]])[0], MASK)
    per_token, _ = ppo_policy_loss(NEW, OLD, _t([[2.0] * 5]), MASK)
    torch.testing.assert_close(per_row, per_token)


def test_gspo_hand_worked_and_gradient() -> None:
    # Row 0: log-ratios [ln 2, 0] -> s = exp(ln 2 / 2) = sqrt 2 = 1.414 > 1.2, A = +1 -> loss -1.2 on
    #   both tokens, clipped, zero gradient. Row 1: log-ratios [ln 0.9] * 3 -> s = 0.9, A = +2 ->
    #   loss -1.8 on each token. grpo reduction: (-1.2 + -1.8) / 2 = -1.5. Gradient of that on row 1:
    #   d/dlogp_t [1/2 * (-A s)] = 1/2 * (-2 * 0.9 / 3) = -0.3 per token.
    old = torch.zeros(2, 3, dtype=F64)
    logps = _t([[LN(2), 0.0, 7.0], [LN(0.9)] * 3]).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    losses, m = ppo_policy_loss(logps, old, _t([[1.0, 2.0]])[0], mask, level="sequence")
    torch.testing.assert_close(losses, _t([[-1.2, -1.2, 0.0], [-1.8, -1.8, -1.8]]))
    assert float(m["clip_fraction"]) == 0.5  # one of two sequences
    assert float(m["ratio/max"]) == pytest.approx(math.sqrt(2))
    loss = policy_loss_reduction(losses, mask, "grpo")
    assert float(loss.detach()) == pytest.approx(-1.5)
    loss.backward()
    torch.testing.assert_close(logps.grad, _t([[0.0, 0.0, 0.0], [-0.3, -0.3, -0.3]]))


def test_gspo_with_one_token_per_row_equals_token_level() -> None:
    g = torch.Generator().manual_seed(8)
    logps, old = (
        torch.randn(6, 1, generator=g, dtype=F64) * 0.3,
        torch.randn(6, 1, generator=g, dtype=F64) * 0.3,
    )
    adv, mask = torch.randn(6, generator=g, dtype=F64), torch.ones(6, 1)
    seq, seq_m = ppo_policy_loss(logps, old, adv, mask, level="sequence", clip_high=0.28)
    tok, tok_m = ppo_policy_loss(logps, old, adv, mask, level="token", clip_high=0.28)
    torch.testing.assert_close(seq, tok)
    assert 0 < float(tok_m["clip_fraction"]) < 1  # the example exercises both branches
    for key in tok_m:
        torch.testing.assert_close(seq_m[key], tok_m[key])


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_ppo_loss_ignores_padding(level: str) -> None:
    mask, g = _right_padded(5, 6, seed=9)
    logps, old = torch.randn(5, 6, generator=g, dtype=F64), torch.randn(5, 6, generator=g, dtype=F64)
    adv = torch.randn(5, generator=g, dtype=F64)
    clean, clean_m = ppo_policy_loss(logps, old, adv, mask, level=level)  # type: ignore[arg-type]
    dirty_logps = _garbage(logps, mask, -math.inf).requires_grad_(True)
    dirty, dirty_m = ppo_policy_loss(dirty_logps, _garbage(old, mask, math.nan), adv, mask, level=level)  # type: ignore[arg-type]
    torch.testing.assert_close(dirty, clean)
    for key in clean_m:
        torch.testing.assert_close(dirty_m[key], clean_m[key])
    policy_loss_reduction(dirty, mask, "dapo").backward()
    assert torch.isfinite(dirty_logps.grad).all() and (dirty_logps.grad[~mask] == 0).all()


# ---- reductions ---------------------------------------------------------------------------------


def test_policy_loss_reductions_hand_worked() -> None:
    # Row 0 has 3 tokens [1, 2, 3], row 1 has 1 token [4]; 9s are padding.
    #   grpo:    (mean(1,2,3) + mean(4)) / 2 = (2 + 4) / 2 = 3
    #   dr_grpo: (1+2+3+4) / (2 sequences * L_max 4) = 10 / 8 = 1.25
    #   dapo:    (1+2+3+4) / 4 tokens = 2.5
    per_token = _t([[1, 2, 3, 9], [4, 9, 9, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert float(policy_loss_reduction(per_token, mask, "grpo")) == 3.0
    assert float(policy_loss_reduction(per_token, mask, "dr_grpo", max_length=4)) == 1.25
    assert float(policy_loss_reduction(per_token, mask, "dapo")) == 2.5
    # Split into the two rows with global counts (2 sequences, 4 tokens), the parts add up.
    for mode, full in [("grpo", 3.0), ("dr_grpo", 1.25), ("dapo", 2.5)]:
        parts = [
            policy_loss_reduction(
                per_token[i : i + 1], mask[i : i + 1], mode, max_length=4, num_items=2, num_tokens=4
            )  # type: ignore[arg-type]
            for i in range(2)
        ]
        assert float(sum(parts)) == full


@pytest.mark.parametrize("mode", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("split", [[3, 4], [1, 5, 1], [7]])
def test_policy_loss_reduction_gradient_is_split_invariant(mode: str, split: list[int]) -> None:
    mask, g = _right_padded(7, 5, seed=10)
    logps = torch.randn(7, 5, generator=g, dtype=F64).requires_grad_(True)
    old, adv = (
        logps.detach() + 0.1 * torch.randn(7, 5, generator=g, dtype=F64),
        torch.randn(7, generator=g, dtype=F64),
    )
    counts = {"max_length": 6, "num_items": 7, "num_tokens": int(mask.sum())}
    full = policy_loss_reduction(ppo_policy_loss(logps, old, adv, mask)[0], mask, mode, **counts)  # type: ignore[arg-type]
    (full_grad,) = torch.autograd.grad(full, logps)
    total, start = torch.zeros((), dtype=F64), 0
    for size in split:
        s = slice(start, start + size)
        total = total + policy_loss_reduction(
            ppo_policy_loss(logps[s], old[s], adv[s], mask[s])[0], mask[s], mode, **counts
        )  # type: ignore[arg-type]
        start += size
    (split_grad,) = torch.autograd.grad(total, logps)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(split_grad, full_grad)


def test_reduction_and_loss_validation() -> None:
    x, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError):
        policy_loss_reduction(x, mask, "dr_grpo")  # needs max_length
    with pytest.raises(ValueError):
        policy_loss_reduction(x, mask, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        policy_loss_reduction(x, torch.ones(2, 4), "dapo")
    with pytest.raises(ValueError):
        ppo_policy_loss(x, x, torch.zeros(2, 3), mask, level="sequence")  # needs (B,) advantages
    with pytest.raises(ValueError):
        ppo_policy_loss(x, x, torch.zeros(3), mask)
    with pytest.raises(ValueError):
        ppo_policy_loss(x, x, torch.zeros(2), mask, clip_low=1.5)


# ---- against TRL 1.16's GRPOTrainer._compute_loss -----------------------------------------------
# The loss arithmetic lives in a method; we call the real method on a stand-in `self` in eval mode
# (no accumulation scaling), beta 0, with a stand-in forward that returns our per-token log-probs.


def _trl_grpo_loss(
    loss_type: str, level: str, logps: torch.Tensor, old: torch.Tensor, adv: torch.Tensor,
    mask: torch.Tensor, eps_low: float, eps_high: float, max_len: int,
) -> tuple[torch.Tensor, dict[str, list[float]]]:  # fmt: skip
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    b, t = logps.shape
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=0.0,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=SimpleNamespace(delta=None, steps_per_generation=1),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=False),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_len,
        accelerator=SimpleNamespace(num_processes=1, gather=lambda x: x, reduce=lambda x, reduction: x),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.ones(b, 1, dtype=torch.long),
        "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.ones(b, t, dtype=torch.long),
        "completion_mask": mask.to(logps.dtype),
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum().to(logps.dtype),
    }
    loss = grpo.GRPOTrainer._compute_loss(trainer, None, inputs)
    return loss, trainer._metrics["eval"]


@pytest.mark.parametrize("mode", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_policy_loss_and_reduction_match_trl_grpo(mode: str, level: str) -> None:
    mask, g = _right_padded(6, 7, seed=11)
    base = torch.randn(6, 7, generator=g, dtype=F64)
    old = base + 0.3 * torch.randn(6, 7, generator=g, dtype=F64)  # wide enough to clip some tokens
    adv = torch.randn(6, generator=g, dtype=F64)
    ours_in, trl_in = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    losses, m = ppo_policy_loss(ours_in, old, adv, mask, clip_low=0.2, clip_high=0.28, level=level)  # type: ignore[arg-type]
    ours = policy_loss_reduction(losses, mask, mode, max_length=10)  # type: ignore[arg-type]
    trl, trl_metrics = _trl_grpo_loss(mode, level, trl_in, old, adv, mask, 0.2, 0.28, max_len=10)
    torch.testing.assert_close(ours, trl)
    (g_ours,) = torch.autograd.grad(ours, ours_in)
    (g_trl,) = torch.autograd.grad(trl, trl_in)
    torch.testing.assert_close(g_ours, g_trl)
    assert 0 < float(m["clip_fraction"]) < 1
    # TRL counts sequences in float32 at the sequence level, hence the tolerance.
    for ours_key, trl_key in [("clip_fraction", "region_mean"), ("clip_fraction/high", "high_mean")]:
        assert float(m[ours_key]) == pytest.approx(trl_metrics[f"clip_ratio/{trl_key}"][-1], rel=1e-6)


# ---- value loss ---------------------------------------------------------------------------------


def test_clipped_value_loss_hand_worked() -> None:
    # v_old = 1 everywhere, c = 0.2 (clip range [0.8, 1.2]):
    #   t0: v 1.5, R 2: (1.5-2)^2 = 0.25 vs (1.2-2)^2 = 0.64 -> 0.5 * 0.64 = 0.32  (clipped)
    #   t1: v 1.1, R 2: 0.81 both                           -> 0.405             grad v-R = -0.9
    #   t2: v 0.5, R 0: 0.25 vs (0.8-0)^2 = 0.64            -> 0.32              (clipped)
    #   t3: v 0.5, R 2: 2.25 vs (0.8-2)^2 = 1.44            -> 1.125             grad v-R = -1.5
    #   t4: padding. clip fraction 2/4; mse = (0.25+0.81+0.25+2.25)/4 = 0.89.
    values = _t([[1.5, 1.1, 0.5, 0.5, math.nan]]).requires_grad_(True)
    old = _t([[1, 1, 1, 1, math.inf]])
    returns = _t([[2, 2, 0, 2, math.nan]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    losses, m = clipped_value_loss(values, old, returns, mask, clip=0.2)
    torch.testing.assert_close(losses, _t([[0.32, 0.405, 0.32, 1.125, 0.0]]))
    assert float(m["clip_fraction"]) == 0.5
    assert float(m["mse"]) == pytest.approx(0.89)
    losses.sum().backward()
    torch.testing.assert_close(values.grad, _t([[0.0, -0.9, 0.0, -1.5, 0.0]]))
    plain, _ = clipped_value_loss(values.detach(), old, returns, mask, clip=None)
    torch.testing.assert_close(plain, _t([[0.125, 0.405, 0.125, 1.125, 0.0]]))


def test_clipped_value_loss_matches_trl_ppo() -> None:
    # TRL v0.12-0.2x trl/trainer/ppo_trainer.py (PPOTrainer.train, removed in 1.x):
    # vpredclipped = clamp(vpred, mb_values - cliprange_value, mb_values + cliprange_value);
    # vf_loss = 0.5 * masked_mean(max((vpred - R)^2, (vpredclipped - R)^2), mask);
    # vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), mask)
    mask, g = _right_padded(5, 6, seed=12)
    v, old, ret = (torch.randn(5, 6, generator=g, dtype=F64) for _ in range(3))
    m = mask.to(F64)
    vf1, vf2 = (v - ret) ** 2, (torch.clamp(v, old - 0.2, old + 0.2) - ret) ** 2
    trl_loss = 0.5 * (torch.max(vf1, vf2) * m).sum() / m.sum()
    trl_clipfrac = ((vf2 > vf1).to(F64) * m).sum() / m.sum()
    losses, metrics = clipped_value_loss(v, old, ret, mask, clip=0.2)
    torch.testing.assert_close(policy_loss_reduction(losses, mask, "dapo"), trl_loss)
    torch.testing.assert_close(metrics["clip_fraction"], trl_clipfrac)
    assert 0 < float(trl_clipfrac) < 1


# ---- entropy ------------------------------------------------------------------------------------


def test_token_entropy_hand_worked_and_masked_vocabulary() -> None:
    # Uniform over 4 -> ln 4; one allowed token (others -inf) -> 0; two equal of four -> ln 2.
    logits = torch.tensor(
        [[[0.0, 0, 0, 0], [5, -math.inf, -math.inf, -math.inf], [1, 1, -math.inf, -math.inf]]]
    )
    logits.requires_grad_(True)
    h = token_entropy(logits)
    torch.testing.assert_close(h, torch.tensor([[LN(4), 0.0, LN(2)]]))
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_token_entropy_matches_trl_and_chunking() -> None:
    utils = pytest.importorskip("trl.trainer.utils")
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(3, 5, 11, generator=g, dtype=F64) * 3
    ours = token_entropy(logits, chunk_size=4)
    torch.testing.assert_close(ours, utils.entropy_from_logits(logits, chunk_size=7))
    torch.testing.assert_close(ours, token_entropy(logits, chunk_size=1000))
    half = token_entropy(logits.to(torch.bfloat16))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, token_entropy(logits.to(torch.bfloat16).float()))
