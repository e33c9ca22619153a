"""Each recipe end-to-end through the CLI on configs/tiny.yaml (a random model built in-process)."""

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
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from prefalign.cli import main
from prefalign.train import read_metrics


def _run(command: str, out: Path, *extra: str) -> int:
    return main([command, "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


@pytest.mark.parametrize("command", ["sft", "reward", "dpo"])
def test_recipe_runs_end_to_end(command: str, tmp_path: Path) -> None:
    out = tmp_path / command
    assert _run(command, out) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert (out / "config.yaml").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    loader = AutoModelForSequenceClassification if command == "reward" else AutoModelForCausalLM
    final = loader.from_pretrained(out / "final")
    assert sum(p.numel() for p in final.parameters()) > 0
    if command == "reward":
        assert {"accuracy"} <= set(rows[0])
        report = json.loads((out / "eval.json").read_text())
        assert {"accuracy", "length_baseline_accuracy", "subsets"} <= set(report)
    if command == "dpo":
        for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin"):
            assert key in rows[0]


def test_dpo_first_loss_is_ln2_and_parameters_change(tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    assert _run("dpo", out, "train.max_steps=2", "train.save_every=0") == 0
    rows = read_metrics(out)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[1]["loss"] != pytest.approx(math.log(2), abs=1e-6)


def test_dpo_with_lora_starts_at_ln2_and_saves_merged_model(tmp_path: Path) -> None:
    out = tmp_path / "dpo-lora"
    assert (
        _run("dpo", out, "model.lora=true", "model.lora_r=4", "train.max_steps=2", "train.learning_rate=1e-2")
        == 0
    )
    rows = read_metrics(out)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("lora" in name for name, _ in merged.named_parameters())


@pytest.mark.parametrize("command", ["sft", "reward", "dpo"])
def test_resume_reproduces_the_uninterrupted_losses(
    command: str, tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    straight = tmp_path / "straight"
    assert _run(command, straight) == 0
    expected = [r["loss"] for r in read_metrics(straight)]

    crashed = tmp_path / "crashed"
    with kill_after_checkpoint(4):
        _run(command, crashed)
    assert len(read_metrics(crashed)) == 4
    assert _run(command, crashed, "--resume") == 0
    resumed = [r["loss"] for r in read_metrics(crashed)]
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(expected), rtol=0, atol=1e-6)


def test_existing_run_is_not_clobbered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sft"
    assert _run("sft", out, "train.max_steps=1") == 0
    assert _run("sft", out, "train.max_steps=1") == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_row_is_reported_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 3, "rejected": "b"}\n'
    )
    code = _run("dpo", tmp_path / "out", f"data.train={bad}", "data.eval_fraction=0")
    assert code == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl" in err and "line 2" in err and "chosen" in err


def test_unknown_config_key_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("dpo", tmp_path / "o", "train.nope=1") == 2
    assert "nope" in capsys.readouterr().err


def test_console_script_help_lists_commands() -> None:
    exe = Path(sys.executable).with_name("prefalign")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("sft", "reward", "dpo", "demo", "models"):
        assert command in out
