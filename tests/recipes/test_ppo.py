"""`prefalign ppo` on configs/tiny.yaml: the run contract, and one test per implementation detail
of Huang et al. (docs/PPO.md maps each detail to its config field and the test here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch

from prefalign.cli import main
from prefalign.config import load_config
from prefalign.recipes.ppo import PPOConfig, Rollouts, advantages_of, build_value_model, value_positions
from prefalign.recipes.rollouts import minibatches, padded_rows, rollout_batch
from prefalign.train import read_metrics


def _run(out: Path, *extra: str) -> int:
    return main(["ppo", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _same(got: list[dict], expected: list[dict], keys: tuple[str, ...], rel: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-6), (key, a["step"])


def _cfg(*overrides: str) -> PPOConfig:
    return load_config(PPOConfig, "configs/tiny.yaml", list(overrides), section="ppo")


def _rollouts(
    scores: list[float], logps: list[list[float]], refs: list[list[float]], values: list[list[float]]
) -> Rollouts:
    rows = [[torch.tensor(v) for v in column] for column in (logps, refs, values)]
    return Rollouts([], torch.tensor(scores), *rows)


MONITORED = (
    "loss", "policy_loss", "value_loss", "value_error", "value_clip_fraction", "reward", "kl", "kl_coef",
    "non_score_reward", "entropy", "clip_fraction", "approx_kl", "completion_length", "eos_rate",
    "learning_rate", "grad_norm", "grad_norm/value",
)  # fmt: skip


# ---- the run contract --------------------------------------------------------------------------
def test_runs_logs_what_ppo_monitors_and_saves(tmp_path: Path) -> None:
    """Detail: monitor approx-KL, clip fraction, value error, entropy, length and the EOS rate."""
    out = tmp_path / "ppo"
    assert _run(out) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in MONITORED:
        assert all(math.isfinite(r[key]) for r in rows), key
    assert all(r["updates"] == 4 for r in rows)  # 2 epochs x 2 minibatches
    # Detail: several updates per rollout: from the second one the ratio moves off 1, the clip binds.
    assert max(r["clip_fraction"] for r in rows) > 0
    # Detail: a fixed penalty for responses without EOS (reward.missing_eos_penalty 0.5 here).
    assert all(r["reward/missing_eos_penalty"] == pytest.approx(-0.5 * (1 - r["eos_rate"])) for r in rows)
    # Detail: the learning rate anneals (linearly by default), once per rollout step.
    rates = [r["learning_rate"] for r in rows]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]
    assert {r["kl_coef"] for r in rows} == {0.05}  # the fixed controller
    assert {"eval/reward", "eval/length", "eval/eos_rate"} <= set(json.loads((out / "eval.json").read_text()))
    assert (out / "final" / "config.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step-4"


def test_micro_batch_size_changes_nothing(tmp_path: Path) -> None:
    # Three steps: by the fourth, float noise in the weights (Adam magnifies the tiny gradients'
    # differences) can flip a sampled token, and the runs' samples part ways.
    runs = {}
    for size in (2, 8):  # minibatches of 4 rollouts: two micro-batches each, or one
        extra = [f"train.micro_batch_size={size}", "train.save_every=0", "train.max_steps=3"]
        assert _run(tmp_path / str(size), *extra) == 0
        runs[size] = read_metrics(tmp_path / str(size))
    _same(runs[2], runs[8], ("loss", "value_loss", "grad_norm", "grad_norm/value", "reward", "kl"), rel=1e-4)


def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    # The adaptive KL coefficient, the reward statistics and the value model must all come back.
    extra = ["kl_controller=adaptive", "kl_horizon=10", "target_kl=0.1", "reward.normalize=standardize"]
    assert _run(tmp_path / "straight", *extra) == 0
    with kill_after_checkpoint(2):
        _run(tmp_path / "crashed", *extra)
    assert _run(tmp_path / "crashed", *extra, "--resume") == 0
    keys = ("loss", "value_loss", "grad_norm", "reward", "kl_coef")
    _same(read_metrics(tmp_path / "crashed"), read_metrics(tmp_path / "straight"), keys, rel=1e-6)


def test_two_processes_give_the_same_run_as_one(tmp_path: Path) -> None:
    common = ["train.save_every=0", "train.micro_batch_size=2"]
    assert _run(tmp_path / "one", *common) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(torchrun.with_name("prefalign"))]
    command += ["ppo", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path / "two"), *common]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    keys = ("loss", "value_loss", "grad_norm", "grad_norm/value", "reward", "kl")
    _same(read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one"), keys, rel=1e-4)


def test_reward_rises_on_held_out_prompts(tmp_path: Path) -> None:
    # The rule pays 1 for a completion starting with a-m: the random model does it ~1/4 of the time.
    common = [
        "train.save_every=0",
        "reward.missing_eos_penalty=0",
        "kl_coef=0.01",
        "train.learning_rate=3e-2",
    ]
    assert _run(tmp_path / "base", *common, "train.learning_rate=1e-12", "train.max_steps=1") == 0
    assert _run(tmp_path / "trained", *common, "train.max_steps=30") == 0
    rewards = [r["reward"] for r in read_metrics(tmp_path / "trained")]
    assert sum(rewards[-8:]) / 8 > sum(rewards[:8]) / 8 + 0.25
    base, trained = (
        json.loads((tmp_path / n / "eval.json").read_text())["eval/reward"] for n in ("base", "trained")
    )
    assert trained > base + 0.25


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("normalize_on_reference=8", "normalize_on_reference: needs reward.normalize"),
        ("num_minibatches=9", "num_minibatches: 9 minibatches of 8 rollouts"),
        ("kl_controller=pid", "kl_controller: expected one of fixed, adaptive"),
        ("lam=1.5", "lam:"),
        ("value_model=no-such-model", "value_model:"),
    ],
)
def test_bad_settings_fail_before_anything_loads(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path / "bad", override) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ---- the implementation details, one by one ------------------------------------------------------
def test_value_reads_prompt_and_response() -> None:
    """Detail: reward and value are computed on query + response (the value of the first response
    token depends on the prompt), at the position that predicts each response token."""
    from prefalign.models import load_causal_lm

    _, tokenizer = load_causal_lm("tiny-causal-lm")
    critic = build_value_model(_cfg("value_head_init=normal"), tokenizer)
    batch = rollout_batch_of([[5, 6, 7], [8, 6]], [[9, 10], [9, 10]])
    values, mask = value_positions(critic(batch["input_ids"], batch["attention_mask"]).values, batch)
    first = values[mask].view(2, 2)[:, 0]
    assert not torch.allclose(first[0], first[1])  # same response, different prompts
    assert mask.sum(1).tolist() == [2, 2]


def rollout_batch_of(prompts: list[list[int]], completions: list[list[int]], pad_id: int = 0) -> dict:
    class _S:
        def __init__(self, p: list[int], c: list[int]) -> None:
            self.prompt_ids, self.completion_ids = p, c

    return rollout_batch([_S(p, c) for p, c in zip(prompts, completions, strict=True)], pad_id)  # type: ignore[misc]


def test_scoring_batch_keeps_eos_when_pad_is_eos() -> None:
    """Detail: a pad token distinct from EOS. Scoring reads the loss mask, never ``!= pad``, so even
    a tokenizer whose pad is its EOS keeps the EOS token in the scored tokens (and the reward
    at it); the packaged tokenizers have a pad distinct from EOS."""
    from prefalign.models import load_causal_lm

    eos = 2
    batch = rollout_batch_of([[5, 6], [7]], [[9, eos], [eos]], pad_id=eos)
    assert batch["loss_mask"].sum(1).tolist() == [2, 1]
    _, tokenizer = load_causal_lm("tiny-causal-lm")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_first_update_ratio_is_one_at_any_temperature(tmp_path: Path) -> None:
    """Details: left padding for generation, right padding for scoring with positions from the
    attention mask, logits divided by the temperature: at the first update (1 epoch, 1 minibatch)
    the policy that scores is the one that sampled, so every ratio is 1 and nothing is clipped."""
    extra = ["ppo_epochs=1", "num_minibatches=1", "sampling.temperature=0.7", "train.max_steps=1"]
    assert _run(tmp_path / "t", *extra) == 0
    row = read_metrics(tmp_path / "t")[0]
    assert row["ratio/max"] == pytest.approx(1.0, abs=1e-5) and row["clip_fraction"] == 0
    assert row["approx_kl"] == pytest.approx(0.0, abs=1e-6)


def test_sampling_is_pure_by_default() -> None:
    """Detail: pure sampling (top_k 0, top_p 1, temperature 1) unless configured."""
    sampling = PPOConfig().sampling
    assert (sampling.top_k, sampling.top_p, sampling.temperature) == (0, 1.0, 1.0)


def test_score_paid_at_the_eos_token_and_kl_per_token() -> None:
    """Details: reward at the last (EOS) token; per-token KL penalty added to the reward; gamma 1,
    lambda 0.95 (GAE checked by hand)."""
    cfg = _cfg("whiten_advantages=false")
    assert (cfg.gamma, cfg.lam) == (1.0, 0.95)
    rollouts = _rollouts([2.0], [[-1.0, -2.0, -0.5]], [[-1.5, -2.0, -1.0]], [[0.1, 0.2, 0.3]])
    metrics = advantages_of(rollouts, 0.1, cfg)
    # r = -0.1 * (logp - ref) + [last] * 2 = [-0.05, 0, 1.95]
    r, v, lam = [-0.05, 0.0, 1.95], [0.1, 0.2, 0.3, 0.0], 0.95
    delta = [r[t] + v[t + 1] - v[t] for t in range(3)]
    a2 = delta[2]
    a1 = delta[1] + lam * a2
    a0 = delta[0] + lam * a1
    torch.testing.assert_close(rollouts.advantages[0], torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(rollouts.returns[0], torch.tensor([a0 + 0.1, a1 + 0.2, a2 + 0.3]))
    assert metrics["kl"] == pytest.approx(1.0) and metrics["non_score_reward"] == pytest.approx(-0.1)


@pytest.mark.parametrize("init", ["zero", "normal"])
def test_value_head_init(init: str) -> None:
    """Detail: value head initialised to 0 (every first value 0); 'normal' is N(0, 1/(d+1))."""
    from prefalign.models import load_causal_lm

    _, tokenizer = load_causal_lm("tiny-causal-lm")
    critic = build_value_model(_cfg(f"value_head_init={init}"), tokenizer)
    values = critic(torch.tensor([[5, 6, 7, 8]])).values
    weight = critic.value_head.summary.weight
    if init == "zero":
        assert values.abs().max() == 0 and weight.abs().max() == 0
    else:
        std = 1 / math.sqrt(weight.shape[1] + 1)
        assert values.abs().max() > 0 and weight.std().item() == pytest.approx(std, rel=0.5)


def test_reward_normalised_on_reference_samples_then_fixed(tmp_path: Path) -> None:
    """Detail: reward normalisation on samples of the reference (the starting policy), fixed after."""
    extra = ["reward.normalize=standardize", "normalize_on_reference=16", "train.save_every=1"]
    assert _run(tmp_path / "n", *extra) == 0
    states = [
        json.loads((tmp_path / "n" / "checkpoints" / f"step-{k}" / "state.json").read_text())["state"]
        for k in (3, 4)
    ]
    assert states[0]["reward"] == states[1]["reward"]
    assert states[0]["reward"]["count"] == 16


def test_dropout_is_off_in_policy_reference_and_value_models() -> None:
    """Detail: dropout off in policy, reference and value models (reward models score in eval mode)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from prefalign.models.heads import CausalLMWithValueHead

    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5))  # fmt: skip
    critic = CausalLMWithValueHead(lm, init="normal").train()
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(critic(ids).values, critic(ids).values)
    assert all(m.p == 0 for m in critic.modules() if isinstance(m, torch.nn.Dropout))


def test_whitening_of_advantages_and_rewards() -> None:
    """Details: advantages whitened (mean 0, variance 1 over the step's tokens); rewards, when
    whiten_rewards, scaled to unit variance without a mean shift."""
    logps = [[-1.0, -2.0, -0.5], [-0.3, -0.2]]
    refs = [[-1.5, -2.0, -1.0], [-0.3, -0.4]]
    values = [[0.1, 0.2, 0.3], [0.0, -0.1]]
    rollouts = _rollouts([2.0, -1.0], logps, refs, values)
    advantages_of(rollouts, 0.1, _cfg())
    flat = torch.cat(rollouts.advantages)
    assert flat.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert flat.var().item() == pytest.approx(1.0, rel=1e-4)
    plain, scaled = _rollouts([2.0, -1.0], logps, refs, values), _rollouts([2.0, -1.0], logps, refs, values)
    cfg = _cfg("whiten_advantages=false", "lam=1.0")
    advantages_of(plain, 0.1, cfg)
    advantages_of(scaled, 0.1, _cfg("whiten_advantages=false", "lam=1.0", "whiten_rewards=true"))
    # With lambda 1 and gamma 1 the return at a row's first token is the sum of its token rewards:
    # r = [-0.05, 0, 1.95] and [0, -1.02]; whitened without mean shift: (r - m) / s + m.
    raw = torch.tensor([-0.05, 0.0, 1.95, 0.0, -1.02])
    white = (raw - raw.mean()) / raw.std() + raw.mean()
    got = torch.stack([scaled.returns[0][0], scaled.returns[1][0]])
    torch.testing.assert_close(got, torch.stack([white[:3].sum(), white[3:].sum()]), rtol=1e-4, atol=1e-5)
    assert plain.returns[0][0].item() == pytest.approx(1.9, abs=1e-5)


def test_value_loss_is_clipped_or_not(tmp_path: Path) -> None:
    """Detail: clipped value loss (value_clip; null turns clipping off)."""
    assert _run(tmp_path / "c", "train.max_steps=2", "value_clip=0.01", "train.learning_rate=0.05") == 0
    assert max(r["value_clip_fraction"] for r in read_metrics(tmp_path / "c")) > 0
    assert _run(tmp_path / "u", "train.max_steps=2", "value_clip=null") == 0
    assert all(r["value_clip_fraction"] == 0 for r in read_metrics(tmp_path / "u"))


def test_kl_controllers_fixed_and_adaptive(tmp_path: Path) -> None:
    """Detail: a fixed or an adaptive KL coefficient (Ziegler et al. 2019)."""
    extra = ["kl_controller=adaptive", "target_kl=100", "kl_horizon=8", "train.save_every=0"]
    assert _run(tmp_path / "adaptive", *extra) == 0
    coefs = [r["kl_coef"] for r in read_metrics(tmp_path / "adaptive")]
    # KL far below the target: beta shrinks by 1 - 0.2 * 8 / 8 = 0.8 per step (8 samples a step).
    assert coefs == pytest.approx([0.05 * 0.8**k for k in range(4)])


def test_epochs_over_shuffled_minibatches() -> None:
    """Detail: several PPO epochs over shuffled minibatches (each sample once per epoch)."""
    plan = minibatches(10, 3, 4, seed=0)
    assert len(plan) == 12 and all(len(m) in (2, 3) for m in plan)
    epochs = [sorted(i for m in plan[e * 4 : (e + 1) * 4] for i in m) for e in range(3)]
    assert all(e == list(range(10)) for e in epochs)
    assert plan[:4] != plan[4:8]  # reshuffled each epoch
    assert minibatches(10, 3, 4, seed=0) == plan  # seeded: a resumed run repeats it


def test_padded_rows_round_trip() -> None:
    rows = [torch.tensor([1.0, 2.0]), torch.tensor([3.0]), torch.tensor([])]
    values, mask = padded_rows(rows)
    assert values.tolist() == [[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]] and mask.sum(1).tolist() == [2, 1, 0]
