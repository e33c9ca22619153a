"""RewardBench-style reward evaluation: hand-worked accuracy, subsets, length baseline, calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from prefalign.cli import main
from prefalign.eval.reward import format_report
from prefalign.feedback.formats import PreferencePair
from prefalign.models.reward import expected_calibration_error, pairwise_report


def test_calibration_error_worked_example() -> None:
    # p = 0.95 (right, confidence 0.95, bin 9), 0.2 (wrong, confidence 0.8, bin 6), 0.5 (wrong,
    # confidence 0.5, bin 0), 0.9 (right, confidence 0.9, bin 8):
    # ECE = (|1 - 0.95| + |0 - 0.8| + |0 - 0.5| + |1 - 0.9|) / 4 = (0.05 + 0.8 + 0.5 + 0.1) / 4 = 0.3625
    p = torch.tensor([0.95, 0.2, 0.5, 0.9])
    assert expected_calibration_error(p) == pytest.approx(0.3625)
    # Two pairs in one bin pool before the gap is taken: p = 0.96 (right) and 0.04 (wrong) both have
    # confidence 0.96 (bin 9), so |0.5 - 0.96| * 2 / 2 = 0.46 (not the per-pair mean 0.5).
    assert expected_calibration_error(torch.tensor([0.96, 0.04])) == pytest.approx(0.46)
    assert expected_calibration_error(torch.tensor([])) == 0.0


def test_pairwise_report_worked_example() -> None:
    pairs = [
        PreferencePair("p", "a long good answer", "bad", subset="helpful"),
        PreferencePair("p", "ok", "a long wrong answer", subset="helpful"),
        PreferencePair("p", "fine answer", "no", subset="harmless"),
    ]
    chosen = torch.tensor([1.0, 0.0, 2.0])
    rejected = torch.tensor([0.0, 0.0, 3.0])  # right, tie (counts as wrong), wrong
    report = pairwise_report(pairs, chosen, rejected)
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert report["subsets"] == {"harmless": 0.0, "helpful": 0.5}
    assert report["subset_mean_accuracy"] == pytest.approx(0.25)
    assert report["length_baseline_accuracy"] == pytest.approx(2 / 3)
    assert report["length_baseline_subsets"] == {"harmless": 1.0, "helpful": 0.5}
    assert report["subset_sizes"] == {"harmless": 1, "helpful": 2}
    assert report["mean_margin"] == pytest.approx(0.0)
    s = torch.sigmoid(torch.tensor(1.0)).item()
    # Pairs 1 (right) and 3 (wrong, p = sigmoid(-1)) share confidence s, bin 4; the tie is bin 0.
    expected = (2 * abs(0.5 - s) + abs(0 - 0.5)) / 3
    assert report["calibration_error"] == pytest.approx(expected)
    assert "mean_uncertainty" not in report
    text = format_report(report)
    assert "accuracy 0.333" in text and "helpful" in text
    with pytest.raises(ValueError):
        pairwise_report(pairs, chosen[:2], rejected[:2])


def test_reward_eval_command_scores_an_ensemble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "rm"
    args = ["reward", "--config", "configs/tiny.yaml", "--output-dir", str(run), "train.max_steps=2"]
    assert main([*args, "ensemble_size=2"]) == 0
    capsys.readouterr()
    out = tmp_path / "report.json"
    data = "configs/data/tiny_pairs.jsonl"
    model = str(run / "final")
    assert main(["reward-eval", "--model", model, "--model", model, "--data", data, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "24 pairs: accuracy" in printed
    report = json.loads(out.read_text())
    assert report["num_pairs"] == 24 and math.isfinite(report["mean_uncertainty"])
    assert {"accuracy", "length_baseline_accuracy", "subsets", "calibration_error"} <= set(report)
