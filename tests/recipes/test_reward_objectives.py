"""``prefalign reward`` objectives (pairs, rankings, ratings), ensembles and the eval.json contract."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from prefalign.cli import main
from prefalign.feedback.convert import ListwiseRow
from prefalign.feedback.formats import PreferencePair
from prefalign.recipes.reward import RatedResponse, implied_pairs, score_texts_with_uncertainty

RATINGS = "configs/data/tiny_ratings.jsonl"


def _reward(out: Path, *extra: str) -> int:
    return main(["reward", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _check_run(out: Path, n_heads: int = 1) -> dict:
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) for r in rows)
    report = json.loads((out / "eval.json").read_text())
    assert {"accuracy", "length_baseline_accuracy", "subsets", "calibration_error", "split"} <= set(report)
    assert 0.0 <= report["accuracy"] <= 1.0 and report["num_pairs"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert model.config.num_labels == n_heads
    return report


@pytest.mark.parametrize(
    ("objective", "extra"),
    [
        ("bradley_terry", ["use_margins=true", "center_coef=0.01"]),
        ("mse", [f"data.train={RATINGS}", "rating_scale=1-5"]),
        ("mse", [f"data.train={RATINGS}", "rating_consensus=weighted"]),
        ("ordinal", [f"data.train={RATINGS}", "rating_scale=1-5", "rating_consensus=none"]),
    ],
)
def test_objectives_run_end_to_end(objective: str, extra: list[str], tmp_path: Path) -> None:
    out = tmp_path / objective
    assert _reward(out, f"objective={objective}", *extra) == 0
    _check_run(out)
    if objective == "ordinal":
        cuts = json.loads((out / "final" / "rating_thresholds.json").read_text())
        assert cuts["levels"] == ["1", "2", "3", "4", "5"]
        assert len(cuts["thresholds"]) == 1 and len(cuts["thresholds"][0]) == 4
        assert cuts["thresholds"][0] == sorted(cuts["thresholds"][0])


def test_plackett_luce_on_rankings(tmp_path: Path) -> None:
    out = tmp_path / "pl"
    assert _reward(out, "objective=plackett_luce", "data.train=configs/data/tiny_listwise.jsonl") == 0
    report = _check_run(out)
    # Held-out rankings are read as every pair of different rank.
    assert report["num_pairs"] >= report["split"]["num_rows"]


def test_plackett_luce_first_loss_on_pairs_is_bradley_terry(tmp_path: Path) -> None:
    # Pair files load as rankings of two, where Plackett-Luce is Bradley-Terry: same first step.
    bt, pl = tmp_path / "bt", tmp_path / "pl"
    assert _reward(bt, "train.max_steps=1") == 0
    assert _reward(pl, "train.max_steps=1", "objective=plackett_luce") == 0
    assert _metrics(pl)[0]["loss"] == pytest.approx(_metrics(bt)[0]["loss"], rel=1e-5)


def test_ensemble_heads_report_uncertainty(tmp_path: Path) -> None:
    out = tmp_path / "ens"
    assert _reward(out, "ensemble_size=3", "model.name=tiny-causal-lm") == 0
    report = _check_run(out, n_heads=3)
    assert report["mean_uncertainty"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    prompts, answers = ["Say hi.\n"] * 2, ["Hello, lovely day!", "Go away."]
    mean, std = score_texts_with_uncertainty(model, tokenizer, prompts, answers)
    heads = model(
        **tokenizer([p + a for p, a in zip(prompts, answers)], return_tensors="pt", padding=True)
    ).logits
    assert mean.shape == std.shape == (2,) and bool((std > 0).all())
    # k separately loaded models are an ensemble too: two copies agree with one, spread unchanged.
    mean2, std2 = score_texts_with_uncertainty([model, model], tokenizer, prompts, answers)
    torch.testing.assert_close(mean2, mean)
    assert heads.shape == (2, 3)


def test_ordinal_ensemble_resume_matches_uninterrupted(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    # The ordinal cut points live beside the model and must be checkpointed and restored too.
    extra = ["objective=ordinal", f"data.train={RATINGS}", "rating_scale=1-5", "ensemble_size=2"]
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    assert _reward(full, *extra) == 0
    with kill_after_checkpoint(4):
        _reward(crashed, *extra)
    assert _reward(crashed, *extra, "--resume") == 0
    expected = torch.tensor([r["loss"] for r in _metrics(full)])
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in _metrics(crashed)]), expected, rtol=0, atol=1e-6
    )
    a = json.loads((full / "final" / "rating_thresholds.json").read_text())["thresholds"]
    b = json.loads((crashed / "final" / "rating_thresholds.json").read_text())["thresholds"]
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=0, atol=1e-6)


def test_bad_rating_row_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "ratings.jsonl"
    lines = Path(RATINGS).read_text().splitlines()
    row = json.loads(lines[4])
    row["value"] = 9
    lines[4] = json.dumps(row)
    bad.write_text("\n".join(lines) + "\n")
    code = _reward(tmp_path / "run", "objective=mse", f"data.train={bad}", "rating_scale=1-5")
    assert code == 2
    err = capsys.readouterr().err
    assert "ratings.jsonl" in err and "line 5" in err and "value" in err


def test_bad_settings_fail_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _reward(tmp_path / "a", "objective=ordinal", f"data.train={RATINGS}") == 2
    assert "rating_scale" in capsys.readouterr().err
    assert _reward(tmp_path / "b", "objective=nope") == 2
    assert "objective" in capsys.readouterr().err
    assert _reward(tmp_path / "c", "objective=mse") == 2  # a pair file holds no ratings
    assert "rating" in capsys.readouterr().err


def test_benchmark_is_scored_into_eval_json(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert _reward(out, "train.max_steps=1", "benchmark=configs/data/tiny_pairs.jsonl") == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["benchmark"]["name"] == "configs/data/tiny_pairs.jsonl"
    assert report["benchmark"]["num_pairs"] == 24


def test_implied_pairs_of_rankings_and_ratings() -> None:
    ranking = ListwiseRow("p", ["a", "b", "c"], [2, 1, 2])
    assert [(p.chosen, p.rejected) for p in implied_pairs([ranking])] == [("b", "a"), ("b", "c")]
    rated = [
        RatedResponse("i", "p", "x", 1.0, 4),
        RatedResponse("i", "p", "x", 0.5, 2),  # x averages 0.75
        RatedResponse("i", "p", "y", 0.75, 3),  # tie with x: no pair
        RatedResponse("i", "p", "z", 0.0, 0),
        RatedResponse("j", "q", "w", 0.1, 0),  # another item: never paired with i's answers
    ]
    got = sorted((p.chosen, p.rejected) for p in implied_pairs(rated))
    assert got == [("x", "z"), ("y", "z")]
    pair = PreferencePair("p", "u", "v")
    assert implied_pairs([pair]) == [pair]
