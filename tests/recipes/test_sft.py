"""SFT through the CLI on configs/tiny.yaml: runs, token-mean loss, micro-batch invariance, resume,
held-out NLL, and documents (rows without a prompt)."""

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
from prefalign.config import load_config
from prefalign.feedback.formats import load_sft_rows
from prefalign.models import load_causal_lm
from prefalign.models.scoring import completion_logps
from prefalign.recipes.common import load_splits
from prefalign.recipes.sft import SFTConfig, encode_row
from prefalign.tokens import encode_document, right_pad
from prefalign.train import read_metrics, step_plan


def _lines(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(out)]


def _run(out: Path, *extra: str) -> int:
    return main(["sft", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _assert_same_lines(got: list[dict], expected: list[dict], rel: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys(), a["step"]
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-7), (a["step"], key)


def _step_nll(
    model: torch.nn.Module, rows: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[float, int]:
    """Summed NLL and count of the tokens the scorer trains on in ``rows``."""
    batch = right_pad([p for p, _ in rows], [c for _, c in rows], pad_id)
    with torch.no_grad():
        out = completion_logps(model.eval(), batch)
    return float(-(out.token_logps * out.mask).sum()), int(out.mask.sum())


def test_sft_runs_end_to_end_and_parameters_change(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    assert _run(out) == 0
    rows = _lines(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) and r["tokens"] > 0 for r in rows)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    start, _ = load_causal_lm("tiny-causal-lm")
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    before, after = start.state_dict(), final.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_loss_is_the_token_mean_nll_of_the_step(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    assert _run(out, "train.max_steps=1", "train.save_every=0") == 0
    first = _lines(out)[0]
    cfg = load_config(SFTConfig, "configs/tiny.yaml", [], section="sft")
    model, tokenizer = load_causal_lm(cfg.model.name)
    rows, _ = load_splits(load_sft_rows, cfg.data, cfg.train.seed)
    step = [encode_row(tokenizer, rows[i], cfg.data) for i in step_plan(len(rows), cfg.train)[0]]
    nll, tokens = _step_nll(model, step, tokenizer.pad_token_id)
    assert first["tokens"] == tokens == sum(len(c) for _, c in step)
    assert first["loss"] == pytest.approx(nll / tokens, rel=1e-5)


def test_sft_micro_batch_invariance(tmp_path: Path) -> None:
    # batch_size 4: micro-batches of 3 split each step 3 + 1; the token mean is the whole step's.
    common = ["train.batch_size=4", "train.save_every=0"]
    assert _run(tmp_path / "full", *common, "train.micro_batch_size=4") == 0
    full = _lines(tmp_path / "full")
    for size in (1, 3):
        assert _run(tmp_path / f"micro-{size}", *common, f"train.micro_batch_size={size}") == 0
        _assert_same_lines(_lines(tmp_path / f"micro-{size}"), full, rel=1e-5)


def test_sft_two_processes_log_the_same_steps(tmp_path: Path) -> None:
    # 15 rows in steps of 7, 7 and 1: the processes hold different token counts, and in step 3 the
    # second one has only a placeholder; the token mean is still the whole step's.
    common = ["train.batch_size=7", "train.micro_batch_size=2", "train.max_steps=3", "train.save_every=0"]
    assert _run(tmp_path / "one", *common) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(sys.executable).with_name("prefalign")),
    ]
    command += ["sft", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path / "two"), *common]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    _assert_same_lines(_lines(tmp_path / "two"), _lines(tmp_path / "one"), rel=1e-5)


def test_sft_resume_gives_the_uninterrupted_metrics(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert _run(straight) == 0
    with kill_after_checkpoint(4):
        _run(crashed)
    assert [r["step"] for r in _lines(crashed)] == [1, 2, 3, 4]
    assert _run(crashed, "--resume") == 0
    _assert_same_lines(_lines(crashed), _lines(straight), rel=1e-6)


def test_sft_eval_fraction_reports_held_out_nll_and_perplexity(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    overrides = ["data.eval_fraction=0.25", "train.eval_every=3"]
    assert _run(out, *overrides, "train.save_every=0") == 0
    lines = _lines(out)
    assert [r["step"] for r in lines if "eval/loss" in r] == [3, 6]
    report = json.loads((out / "eval.json").read_text())
    assert report["eval/perplexity"] == pytest.approx(math.exp(report["eval/loss"]))
    assert report["eval/loss"] == pytest.approx(lines[-1]["eval/loss"])

    # The held-out rows' token-mean NLL under the final model is the report's.
    cfg = load_config(SFTConfig, "configs/tiny.yaml", overrides, section="sft")
    train_rows, eval_rows = load_splits(load_sft_rows, cfg.data, cfg.train.seed)
    assert len(eval_rows) == round(0.25 * (len(train_rows) + len(eval_rows))) and train_rows
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    _, tokenizer = load_causal_lm(cfg.model.name)
    nll, tokens = _step_nll(
        final, [encode_row(tokenizer, r, cfg.data) for r in eval_rows], tokenizer.pad_token_id
    )
    assert report["eval/loss"] == pytest.approx(nll / tokens, rel=1e-4)


def test_document_rows_train_on_every_token_after_the_first(tmp_path: Path) -> None:
    cfg = load_config(SFTConfig, "configs/tiny.yaml", [], section="sft")
    _, tokenizer = load_causal_lm(cfg.model.name)
    rows = load_sft_rows(_documents(tmp_path))
    context, trained = encode_row(tokenizer, rows[0], cfg.data)
    ids = encode_document(tokenizer, rows[0].completion, max_length=cfg.data.max_length)
    assert context == ids[:1] and trained == ids[1:]


def test_logged_tokens_are_the_tokens_trained_on(tmp_path: Path) -> None:
    # Documents and prompted rows mixed: each step's logged count is what the scorer's mask trains on.
    data = _documents(tmp_path)
    out = tmp_path / "sft"
    overrides = [f"data.train={data}", "train.max_steps=3"]
    assert _run(out, *overrides, "train.save_every=0") == 0
    cfg = load_config(SFTConfig, "configs/tiny.yaml", overrides, section="sft")
    model, tokenizer = load_causal_lm(cfg.model.name)
    rows = load_sft_rows(data)
    plan = step_plan(len(rows), cfg.train)
    lines = _lines(out)
    for line, indices in zip(lines, plan, strict=True):
        step = [encode_row(tokenizer, rows[i], cfg.data) for i in indices]
        nll, tokens = _step_nll(model, step, tokenizer.pad_token_id)
        assert line["tokens"] == tokens
        if line["step"] == 1:  # the untrained model: the loss is its token mean
            assert line["loss"] == pytest.approx(nll / tokens, rel=1e-5)


def _documents(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    texts = [
        "The weather is wonderful today and I am grateful for it.",
        "A new book arrived; it is dull.",
        "Gardens grow slowly, then all at once.",
        "Short.",
        "Rain again, and the streets shine like glass under the lamps.",
    ]
    rows = [{"text": t} for t in texts] + [
        {"prompt": "Say something about tea.\n", "completion": "Tea is lovely."},
        {"prompt": "Say something about rain.\n", "completion": "Rain is refreshing."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_log_every_prints_every_nth_step_and_the_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path / "sft", "train.max_steps=5", "train.log_every=2", "train.save_every=0") == 0
    printed = [
        line.split("  ")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("step ")
    ]
    assert printed == ["step 2", "step 4", "step 5"]
    assert len(_lines(tmp_path / "sft")) == 5  # metrics.jsonl still has every step
