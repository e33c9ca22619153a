"""`prefalign online-dpo` on configs/tiny.yaml: runs and logs, ln 2 at the start, the pair selection,
micro-batch and process invariance, resume, a step without pairs, learning, bad settings."""

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
from safetensors.torch import load_file

from prefalign.cli import main
from prefalign.recipes.online_dpo import pair_metrics, select_pairs
from prefalign.train import read_metrics

DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen")


def _run(out: Path, *extra: str) -> int:
    return main(["online-dpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def _same(got: list[dict], expected: list[dict], keys: tuple[str, ...], rel: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-7), (key, a["step"])
        # Differences of log-prob sums of ~50 in float32: equal to ~1e-5 in absolute terms.
        for key in ("kl", "rewards/margin"):
            assert a.get(key, 0.0) == pytest.approx(b.get(key, 0.0), abs=1e-4), (key, a["step"])


def test_select_pairs_takes_each_groups_best_and_worst() -> None:
    rewards = torch.tensor(
        [0.1, 0.9, 0.5, 0.9]  # group 0: best 0.9 (first of the tie: sample 1), worst sample 0
        + [0.2, 0.2, 0.2, 0.2]  # group 1: all tied, no pair
        + [-1.0, 3.0, 2.0, 3.0]  # group 2: best sample 9, worst sample 8
    )
    assert select_pairs(rewards, 4).tolist() == [[1, 0], [9, 8]]
    assert select_pairs(rewards, 4, min_margin=0.8).tolist() == [[9, 8]]  # gap 0.8 is a tie within 0.8
    assert select_pairs(rewards, 4, min_margin=4.0).shape == (0, 2)
    assert select_pairs(rewards, 2).tolist() == [[1, 0], [3, 2], [9, 8], [11, 10]]  # groups of 2
    metrics = pair_metrics(rewards, select_pairs(rewards, 4))
    assert metrics == pytest.approx(
        {"pairs": 2.0, "reward/chosen": 1.95, "reward/rejected": -0.45, "margin": (0.8 + 4.0) / 2}
    )
    assert pair_metrics(rewards, select_pairs(rewards, 4, min_margin=10)) == {"pairs": 0.0}


def test_runs_logs_the_metrics_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "odpo"
    assert _run(out) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    keys = ("loss", "reward", "reward/chosen", "reward/rejected", "margin", "pairs", "completion_length")
    for key in (*keys, "eos_rate", "kl", "grad_norm", *DPO_METRICS):
        assert all(math.isfinite(r[key]) for r in rows), key
    for r in rows:
        # 4 prompts x 4 samples of at most 8 tokens; the pairs are each group's best and worst.
        assert 1 <= r["pairs"] <= 4 and r["completion_length"] <= 8
        assert r["reward/chosen"] > r["reward/rejected"]
        assert r["margin"] == pytest.approx(r["reward/chosen"] - r["reward/rejected"])
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as its reference
    assert rows[-1]["kl"] != pytest.approx(0.0, abs=1e-5)
    assert {"eval/reward", "eval/length", "eval/eos_rate"} <= set(json.loads((out / "eval.json").read_text()))
    assert (out / "checkpoints" / "step-2").is_dir()
    assert sum(v.numel() for v in _weights(out).values()) > 0


@pytest.mark.parametrize("lora", [False, True])
def test_first_sigmoid_loss_is_ln_2(lora: bool, tmp_path: Path) -> None:
    extra = [f"model.lora={str(lora).lower()}", "train.max_steps=1", "train.save_every=0"]
    assert _run(tmp_path / "first", *extra) == 0
    (row,) = read_metrics(tmp_path / "first")
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert row["rewards/margin"] == pytest.approx(0.0, abs=1e-6) and row["grad_norm"] > 0


def test_micro_batch_size_changes_nothing(tmp_path: Path) -> None:
    # Up to 4 pairs per step: micro-batches of 1, 3 (3+1) and 4 pairs give the same steps and weights.
    runs = {}
    for size in (1, 3, 4):
        assert _run(tmp_path / str(size), f"train.micro_batch_size={size}", "train.save_every=0") == 0
        runs[size] = read_metrics(tmp_path / str(size))
    assert any(r["pairs"] > 1 for r in runs[4])
    for size in (1, 3):
        _same(runs[size], runs[4], ("loss", "grad_norm", "reward", "pairs"), rel=1e-4)
        expected = _weights(tmp_path / "4")
        for name, value in _weights(tmp_path / str(size)).items():
            torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=name)


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
        ("loss", "grad_norm", "reward", "pairs", "margin"),
        rel=1e-6,
    )


def test_a_step_without_pairs_makes_no_update(tmp_path: Path) -> None:
    # Every reward lies in [-0.5, 1]: no best/worst gap exceeds 2, so no step has a pair.
    common = ["train.save_every=0", "train.max_steps=2"]
    assert _run(tmp_path / "none", *common, "min_margin=2") == 0
    assert _run(tmp_path / "base", *common, "train.learning_rate=1e-12") == 0
    rows = read_metrics(tmp_path / "none")
    assert [r["pairs"] for r in rows] == [0, 0]
    assert all("loss" not in r and r["grad_norm"] == 0 and math.isfinite(r["reward"]) for r in rows)
    before, after = _weights(tmp_path / "base"), _weights(tmp_path / "none")
    for name, value in after.items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=1e-9, msg=name)


def test_reward_rises_on_held_out_prompts(tmp_path: Path) -> None:
    # The rule pays 1 for a completion starting with a-m: the random model does it ~1/4 of the time.
    common = ["train.save_every=0", "reward.missing_eos_penalty=0", "train.learning_rate=3e-2"]
    assert _run(tmp_path / "base", *common, "train.learning_rate=1e-12", "train.max_steps=1") == 0
    assert _run(tmp_path / "trained", *common, "train.max_steps=40") == 0
    rewards = [r["reward"] for r in read_metrics(tmp_path / "trained")]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.25
    base, trained = (
        json.loads((tmp_path / n / "eval.json").read_text())["eval/reward"] for n in ("base", "trained")
    )
    assert trained > base + 0.25


def test_two_processes_give_the_same_run_as_one(tmp_path: Path) -> None:
    # Both processes draw the step's 16 samples with the same seed, pick the same pairs and train
    # on every other pair.
    common = ["train.save_every=0", "train.micro_batch_size=1"]
    assert _run(tmp_path / "one", *common) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(torchrun.with_name("prefalign"))]
    command += ["online-dpo", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path / "two"), *common]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    _same(
        read_metrics(tmp_path / "two"),
        read_metrics(tmp_path / "one"),
        ("loss", "grad_norm", "reward", "pairs"),
        rel=1e-4,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampling.n=1", "sampling.n: online DPO pairs the best and worst completion of each prompt"),
        ("loss=kto", "loss: expected one of sigmoid"),
        ("label_smoothing=0.1 loss=ipo", "label_smoothing: loss 'ipo' has no label smoothing"),
        ("min_margin=-1", "min_margin: must be >= 0, got -1"),
        ("reward.rules=[]", "no reward configured"),
    ],
)
def test_bad_settings_fail_before_anything_loads(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path / "bad", *override.split()) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()
