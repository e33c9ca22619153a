"""`prefalign grpo` on configs/tiny.yaml: runs and logs, micro-batch invariance, resume, the KL
term, the loss variants, bad settings."""

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
from transformers import AutoModelForCausalLM

from prefalign.cli import main
from prefalign.train import read_metrics


def _run(out: Path, *extra: str) -> int:
    return main(["grpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _same(got: list[dict], expected: list[dict], keys: tuple[str, ...], rel: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-7), (key, a["step"])


def test_runs_logs_the_rl_metrics_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    assert _run(out) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in (
        "loss",
        "reward",
        "reward_std",
        "entropy",
        "clip_fraction",
        "approx_kl",
        "completion_length",
        "eos_rate",
    ):
        assert all(math.isfinite(r[key]) for r in rows), key
    # 2 prompts x 4 samples of at most 8 tokens, none finished by the random model: -0.5 each.
    assert all(
        r["completion_length"] <= 8 and r["reward/missing_eos_penalty"] == -0.5 * (1 - r["eos_rate"])
        for r in rows
    )
    assert rows[0]["clip_fraction"] == 0 and rows[0]["approx_kl"] == 0  # one update per generation
    assert "kl" not in rows[0]  # beta = 0 loads no reference
    assert {"eval/reward", "eval/length", "eval/eos_rate"} <= set(json.loads((out / "eval.json").read_text()))
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    assert sum(p.numel() for p in final.parameters()) > 0


def test_micro_batch_size_changes_nothing(tmp_path: Path) -> None:
    # 8 completions per step: micro-batches of 1, 3 (3+3+2) and 8 give the same step.
    runs = {}
    for size in (1, 3, 8):
        assert (
            _run(tmp_path / str(size), f"train.micro_batch_size={size}", "train.save_every=0", "loss=dapo")
            == 0
        )
        runs[size] = read_metrics(tmp_path / str(size))
    for size in (1, 3):
        _same(runs[size], runs[8], ("loss", "grad_norm", "reward", "entropy"), rel=1e-4)


def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    extra = ["reward.normalize=standardize"]  # the running statistics must come back too
    assert _run(tmp_path / "straight", *extra) == 0
    with kill_after_checkpoint(2):
        _run(tmp_path / "crashed", *extra)
    assert _run(tmp_path / "crashed", *extra, "--resume") == 0
    _same(
        read_metrics(tmp_path / "crashed"),
        read_metrics(tmp_path / "straight"),
        ("loss", "grad_norm", "reward"),
        rel=1e-6,
    )


@pytest.mark.parametrize("lora", [False, True])
def test_kl_to_the_reference_starts_at_zero_and_grows(lora: bool, tmp_path: Path) -> None:
    extra = ["beta=0.1", "train.learning_rate=5e-2", f"model.lora={str(lora).lower()}", "train.save_every=0"]
    assert _run(tmp_path / "kl", *extra) == 0
    rows = read_metrics(tmp_path / "kl")
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as its reference
    assert rows[-1]["kl"] > 1e-6


@pytest.mark.parametrize(
    "variant",
    [["loss=dr_grpo", "scale_rewards=none"], ["loss=dapo", "clip_high=0.28"], ["importance=sequence"]],
)
def test_variants_run_and_change_the_weights(variant: list[str], tmp_path: Path) -> None:
    assert _run(tmp_path / "v", *variant, "train.save_every=0") == 0
    rows = read_metrics(tmp_path / "v")
    assert all(math.isfinite(r["loss"]) for r in rows) and any(r["grad_norm"] > 0 for r in rows)


def test_grpo_loss_gradient_is_the_group_baseline_policy_gradient() -> None:
    """With one update per generation the GRPO gradient is -(1/N) sum_i A_i * mean_t grad log p."""
    from prefalign.models import load_causal_lm
    from prefalign.recipes.grpo import GRPOConfig, micro_loss

    lm, _ = load_causal_lm("tiny-causal-lm")
    params = [p for p in lm.parameters() if p.requires_grad]
    batch = {
        "input_ids": torch.tensor([[1, 2, 3, 4, 0], [1, 5, 6, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]),
        "loss_mask": torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]]),
    }
    adv = torch.tensor([1.0, -0.5])
    cfg = GRPOConfig()
    loss, _ = micro_loss(lm, batch, adv, cfg, (2, 5))
    grads = torch.autograd.grad(loss, params)
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits, -1)[:, :-1].gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["loss_mask"][:, 1:].float()
    expected = -(adv * (logp * mask).sum(1) / mask.sum(1)).mean()
    for got, want in zip(grads, torch.autograd.grad(expected, params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampling.n=1", "sampling.n: estimator 'group' compares completions within a group: must be >= 2"),
        ("loss=ppo", "loss: expected one of grpo, dr_grpo, dapo"),
        ("reward.rules=[]", "no reward configured"),
    ],
)
def test_bad_settings_fail_before_anything_loads(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path / "bad", override) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_reward_rises_on_held_out_prompts(tmp_path: Path) -> None:
    # The rule pays 1 for a completion starting with a-m: the random model does it ~1/4 of the time.
    common = ["train.save_every=0", "reward.missing_eos_penalty=0"]
    assert _run(tmp_path / "base", *common, "train.learning_rate=1e-12", "train.max_steps=1") == 0
    assert _run(tmp_path / "trained", *common, "train.max_steps=40") == 0
    rewards = [r["reward"] for r in read_metrics(tmp_path / "trained")]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.25
    base, trained = (
        json.loads((tmp_path / n / "eval.json").read_text())["eval/reward"] for n in ("base", "trained")
    )
    assert trained > base + 0.25


def test_two_processes_give_the_same_run_as_one(tmp_path: Path) -> None:
    # Both processes draw the step's 8 samples with the same seed and train on 4 each.
    common = ["train.save_every=0", "train.micro_batch_size=2", "loss=dapo"]
    assert _run(tmp_path / "one", *common) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(torchrun.with_name("prefalign"))]
    command += ["grpo", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path / "two"), *common]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    _same(
        read_metrics(tmp_path / "two"),
        read_metrics(tmp_path / "one"),
        ("loss", "grad_norm", "reward", "entropy"),
        rel=1e-4,
    )


# ---- RLOO, REINFORCE and several updates per generation -----------------------------------------
def test_advantage_estimators_by_hand() -> None:
    from prefalign.recipes.grpo import GRPOConfig, advantages_of

    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])
    rloo = advantages_of(rewards, GRPOConfig(estimator="rloo", sampling=GRPOConfig().sampling), {})
    # n = 4: r_i minus the mean of the other three.
    torch.testing.assert_close(rloo, torch.tensor([1 - 4 / 3, 0 - 5 / 3, 3 - 2 / 3, 1 - 4 / 3]))
    cfg = GRPOConfig(estimator="reinforce", baseline_decay=0.5)
    state: dict = {}
    first = advantages_of(rewards, cfg, state)  # the baseline starts at the first batch's mean
    torch.testing.assert_close(first, rewards - 1.25)
    second = advantages_of(torch.tensor([2.0, 2.0, 2.0, 2.0]), cfg, state)
    torch.testing.assert_close(second, torch.full((4,), 2.0 - 1.25))
    assert state["baseline"] == pytest.approx(0.5 * 1.25 + 0.5 * 2.0)


@pytest.mark.parametrize("command", ["rloo", "reinforce"])
def test_rloo_and_reinforce_pay_the_kl_in_the_reward(command: str, tmp_path: Path) -> None:
    out = tmp_path / command
    assert (
        main([command, "--config", "configs/tiny.yaml", "--output-dir", str(out), "train.save_every=0"]) == 0
    )
    rows = read_metrics(out)
    assert all(math.isfinite(r["loss"]) for r in rows) and any(r["grad_norm"] > 0 for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5) and rows[-1]["kl"] > 1e-4
    config = (out / "config.yaml").read_text()
    assert f"estimator: {command}" in config and "kl_penalty: reward" in config


def test_reinforce_resume_restores_the_baseline(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    def run(out: Path, *extra: str) -> int:
        return main(["reinforce", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])

    assert run(tmp_path / "straight") == 0
    with kill_after_checkpoint(2):
        run(tmp_path / "crashed")
    assert run(tmp_path / "crashed", "--resume") == 0
    _same(
        read_metrics(tmp_path / "crashed"),
        read_metrics(tmp_path / "straight"),
        ("loss", "grad_norm", "reward"),
        rel=1e-6,
    )


def test_several_updates_per_generation_move_the_ratio(tmp_path: Path) -> None:
    extra = ["num_iterations=2", "num_minibatches=2", "train.save_every=0", "beta=0.05"]
    assert _run(tmp_path / "it", *extra) == 0
    rows = read_metrics(tmp_path / "it")
    assert all(r["updates"] == 4 for r in rows)
    assert max(r["clip_fraction"] for r in rows) > 0 and max(r["approx_kl"] for r in rows) > 0
