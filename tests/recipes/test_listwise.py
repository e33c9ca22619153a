"""Listwise DPO through the CLI on configs/tiny.yaml: runs, starts at log K!, micro-batch
invariance, resume, pairs follow DPO, the SFT term, bad rows."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.cli import main
from prefalign.config import load_config
from prefalign.losses import listwise_dpo_loss
from prefalign.models import load_causal_lm
from prefalign.recipes import listwise
from prefalign.recipes.common import weighted_means
from prefalign.train import read_metrics, step_plan


def _lines(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(out)]


def _run(command: str, out: Path, *extra: str) -> int:
    return main([command, "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _assert_same_lines(got: list[dict], expected: list[dict], rel: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys(), a["step"]
        for key in a:
            if key == "rewards/accuracy" and a["step"] == 1:
                continue  # policy == reference: every reward is rounding noise, and so is its order
            # Rewards are differences of fp32 log-probs of ~150 nats: ~1e-6 absolute rounding.
            tiny = 1e-5 if key.startswith("rewards/") else 1e-7
            assert a[key] == pytest.approx(b[key], rel=rel, abs=tiny), (a["step"], key)


def test_listwise_runs_end_to_end_and_starts_at_log_factorials(tmp_path: Path) -> None:
    out = tmp_path / "listwise"
    assert _run("listwise", out) == 0
    rows = _lines(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    assert math.isfinite(json.loads((out / "eval.json").read_text())["eval/loss"])
    # Policy == reference at step 0: the Plackett-Luce loss of each ranking is a sum of log
    # risk-set sizes (log K! without ties); computed here by the loss on zero rewards.
    cfg = load_config(listwise.ListwiseConfig, "configs/tiny.yaml", [], section="listwise")
    train_rows, _ = listwise.load_listwise_splits(cfg.data, cfg.train.seed)
    first = [train_rows[i] for i in step_plan(len(train_rows), cfg.train)[0]]
    width = max(len(r.ranks) for r in first)
    ranks = torch.tensor([r.ranks + [0] * (width - len(r.ranks)) for r in first])
    mask = torch.tensor([[k < len(r.ranks) for k in range(width)] for r in first])
    zeros = torch.zeros(len(first), width, dtype=torch.float64)
    expected, _ = listwise_dpo_loss(zeros, zeros, beta=cfg.beta, ranks=ranks, mask=mask)
    assert rows[0]["loss"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert rows[-1]["loss"] < rows[0]["loss"]
    start, _ = load_causal_lm("tiny-causal-lm")
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    before, after = start.state_dict(), final.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_listwise_micro_batch_invariance(tmp_path: Path) -> None:
    # batch_size 4: micro-batches of 3 split each step 3 + 1 (rankings of 2 to 4 answers).
    common = ["train.batch_size=4", "train.save_every=0"]
    assert _run("listwise", tmp_path / "full", *common, "train.micro_batch_size=4") == 0
    full = _lines(tmp_path / "full")
    for size in (1, 3):
        assert _run("listwise", tmp_path / f"micro-{size}", *common, f"train.micro_batch_size={size}") == 0
        _assert_same_lines(_lines(tmp_path / f"micro-{size}"), full, rel=1e-5)


def test_listwise_without_precomputed_reference_takes_the_same_steps(tmp_path: Path) -> None:
    common = ["train.max_steps=3", "train.save_every=0"]
    assert _run("listwise", tmp_path / "cached", *common) == 0
    assert _run("listwise", tmp_path / "live", *common, "precompute_reference=false") == 0
    _assert_same_lines(_lines(tmp_path / "live"), _lines(tmp_path / "cached"), rel=1e-5)


def test_listwise_resume_gives_the_uninterrupted_metrics(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert _run("listwise", straight) == 0
    with kill_after_checkpoint(4):
        _run("listwise", crashed)
    assert [r["step"] for r in _lines(crashed)] == [1, 2, 3, 4]
    assert _run("listwise", crashed, "--resume") == 0
    _assert_same_lines(_lines(crashed), _lines(straight), rel=1e-6)


def test_listwise_on_pairs_follows_dpo(tmp_path: Path) -> None:
    # A pair is a ranking of two and the Plackett-Luce loss is then DPO's: same split, same plan, so
    # the two recipes take the same steps.
    common = ["data.train=configs/data/tiny_pairs.jsonl", "train.max_steps=3", "train.save_every=0"]
    assert _run("listwise", tmp_path / "listwise", *common) == 0
    assert _run("dpo", tmp_path / "dpo", *common) == 0
    ours, theirs = _lines(tmp_path / "listwise"), _lines(tmp_path / "dpo")
    assert ours[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    for a, b in zip(ours, theirs, strict=True):
        for key in ("loss", "rewards/margin", "rewards/accuracy", "logps/chosen"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key


def test_listwise_with_sft_coef(tmp_path: Path) -> None:
    out = tmp_path / "listwise-rpo"
    assert _run("listwise", out, "sft_coef=1.0", "train.max_steps=1", "train.save_every=0") == 0
    first = _lines(out)[0]
    assert first["loss"] == pytest.approx(first["loss/preference"] + first["nll/chosen"], abs=1e-5)


def test_listwise_bad_row_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "lists.jsonl"
    bad.write_text(
        '{"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 2, 3]}\n'
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
        '{"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 2]}\n'
    )
    assert _run("listwise", tmp_path / "out", f"data.train={bad}", "data.eval_fraction=0") == 2
    err = capsys.readouterr().err
    assert "lists.jsonl" in err and "line 3" in err and "ranks" in err


def test_accuracy_is_the_steps_fraction_of_ordered_pairs_for_any_split() -> None:
    # Rankings of 2 to 4 answers with ties: accuracy is a fraction of ordered pairs, so recording
    # each micro-batch's plain accuracy would weight rankings, not pairs.
    rows = [
        listwise.EncodedRanking([1], [[2]] * 4, [1, 2, 3, 4]),
        listwise.EncodedRanking([1], [[2]] * 2, [1, 2]),
        listwise.EncodedRanking([1], [[2]] * 3, [1, 1, 2]),
        listwise.EncodedRanking([1], [[2]] * 4, [2, 1, 2, 3]),
        listwise.EncodedRanking([1], [[2]] * 3, [3, 2, 1]),
    ]
    assert [r.ordered_pairs for r in rows] == [6, 1, 2, 5, 3]
    generator = torch.Generator().manual_seed(0)
    logps = [torch.randn(len(r.answers), generator=generator) for r in rows]

    def metrics_of(chunk: list[int]) -> dict[str, torch.Tensor]:
        _, ranks, mask = listwise.ranking_batch([rows[i] for i in chunk], pad_id=0)
        flat = torch.cat([logps[i] for i in chunk])
        losses, metrics = listwise.ranking_loss(
            listwise_dpo_loss, listwise.ListwiseConfig(), flat, flat, torch.zeros_like(flat), ranks, mask
        )
        return {"loss": losses.mean(), **metrics}

    whole = metrics_of(list(range(5)))
    pairs = sum(r.ordered_pairs for r in rows)
    for cuts in ([[0, 1, 2, 3, 4]], [[0], [1], [2], [3], [4]], [[0, 1, 2], [3, 4]], [[4, 2], [0, 1, 3]]):
        parts = []
        for chunk in cuts:
            recorded = listwise.pair_weighted_accuracy(
                metrics_of(chunk), [rows[i] for i in chunk], len(chunk), 5, pairs
            )
            parts.append((len(chunk), recorded))
        combined = weighted_means(parts)
        for key, value in whole.items():
            assert combined[key] == pytest.approx(float(value), rel=1e-6, abs=1e-7), (cuts, key)
