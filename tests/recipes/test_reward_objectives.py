"""``prefalign reward`` objectives (pairs, rankings, ratings), ensembles, micro-batch invariance,
resume and the eval.json contract, all through the CLI on configs/tiny.yaml."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from prefalign.cli import main
from prefalign.config import DataConfig
from prefalign.feedback.formats import ListwiseRow, PreferencePair
from prefalign.models import load_reward_model
from prefalign.models.reward import evaluate_pairs, head_count, read_rating_thresholds, with_reward_heads
from prefalign.recipes import reward as reward_recipe
from prefalign.recipes._reward_rows import RatedResponse, implied_pairs
from prefalign.recipes.common import load_pair_splits
from prefalign.train import read_metrics

RATINGS = "configs/data/tiny_ratings.jsonl"


def _reward(out: Path, *extra: str) -> int:
    return main(["reward", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _check_run(out: Path, n_heads: int = 1) -> dict:
    rows = read_metrics(out)
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
    assert read_metrics(pl)[0]["loss"] == pytest.approx(read_metrics(bt)[0]["loss"], rel=1e-5)


def _same_metrics(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want, strict=True):
        keys = set(b) - {"elapsed_s"}
        assert set(a) - {"elapsed_s"} == keys
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


@pytest.mark.parametrize("extra", [[], ["ensemble_size=2"]], ids=["single", "bootstrap-ensemble"])
def test_micro_batch_size_does_not_change_the_step_metrics(extra: list[str], tmp_path: Path) -> None:
    # batch_size 4: micro-batches of 1 (4 backwards), 3 (3 + 1) and 4 (one) give the same steps.
    # Three steps: a wrong weighting shows at step 1 (grad_norm is before clipping), while later
    # steps let Adam amplify float rounding along directions the loss hardly sees (BT ignores a
    # shift of all rewards), which would only test the arithmetic's noise.
    runs = {}
    for size in (1, 3, 4):
        out = tmp_path / f"micro{size}"
        assert _reward(out, f"train.micro_batch_size={size}", "train.max_steps=3", *extra) == 0
        runs[size] = read_metrics(out)
    _same_metrics(runs[1], runs[4])
    _same_metrics(runs[3], runs[4])


def _identical_heads(model: torch.nn.Module, n_heads: int) -> torch.nn.Module:
    """The recipe's head setup, then every head a copy of the first."""
    model = with_reward_heads(model, n_heads)
    with torch.no_grad():
        model.score.weight.copy_(model.score.weight[:1].clone().expand_as(model.score.weight))
    return model


@pytest.mark.parametrize("bootstrap", [True, False])
def test_bootstrap_is_what_makes_identical_heads_disagree(
    bootstrap: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Heads that start equal get equal gradients on a shared batch unless each one weights the
    # examples by its own bootstrap draw: only then does the ensemble spread become non-zero.
    monkeypatch.setattr(reward_recipe, "with_reward_heads", _identical_heads)
    out = tmp_path / "ens"
    assert _reward(out, "ensemble_size=3", f"bootstrap={str(bootstrap).lower()}") == 0
    report = _check_run(out, n_heads=3)
    heads = AutoModelForSequenceClassification.from_pretrained(out / "final").score.weight.detach()
    spread = float((heads - heads[:1]).abs().max())
    if bootstrap:
        assert report["mean_uncertainty"] > 1e-4 and spread > 1e-4
    else:
        assert report["mean_uncertainty"] < 1e-6 and spread < 1e-6


def test_saved_ensemble_scores_as_training_reported(tmp_path: Path) -> None:
    # A causal-LM backbone with 3 heads: the saved folder loads as a 3-head reward model, and
    # inference on the held-out pairs reproduces eval.json.
    out = tmp_path / "ens"
    assert _reward(out, "ensemble_size=3", "model.name=tiny-causal-lm") == 0
    report = _check_run(out, n_heads=3)
    model, tokenizer = load_reward_model(out / "final")
    assert head_count(model) == 3
    data = DataConfig(train="configs/data/tiny_pairs.jsonl", eval_fraction=0.25, max_length=64)
    _, held_out = load_pair_splits(data, seed=0)
    again = evaluate_pairs(
        model, tokenizer, held_out, max_length=64, max_prompt_length=data.max_prompt_length
    )
    for key in ("accuracy", "mean_margin", "mean_uncertainty", "calibration_error"):
        assert again[key] == pytest.approx(report[key], abs=1e-5), key


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
    assert len(read_metrics(crashed)) == 6
    _same_metrics(read_metrics(crashed), read_metrics(full))
    levels, a = read_rating_thresholds(full / "final")
    assert read_rating_thresholds(crashed / "final")[0] == levels == ["1", "2", "3", "4", "5"]
    torch.testing.assert_close(read_rating_thresholds(crashed / "final")[1], a, rtol=0, atol=1e-6)


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
