"""KTO through the CLI on configs/tiny.yaml: runs, starts at half the weight, micro-batch
invariance (the reference point covers the whole step), resume, pairs as data, bad rows."""

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
from prefalign.losses.preference import kto_loss
from prefalign.models import load_causal_lm
from prefalign.recipes import kto
from prefalign.train import MicroBatch, read_metrics, step_plan


def _lines(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(out)]


def _run(out: Path, *extra: str) -> int:
    return main(["kto", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _assert_same_lines(got: list[dict], expected: list[dict], rel: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys(), a["step"]
        for key in a:
            # Rewards and kl are differences of fp32 log-probs of ~150 nats (fp32 resolution ~1e-5
            # there), summed in another order on two processes: absolute rounding up to a few 1e-5.
            tiny = 1e-4 if key.startswith(("rewards/", "kl")) else 1e-7
            assert a[key] == pytest.approx(b[key], rel=rel, abs=tiny), (a["step"], key)


def test_kto_runs_end_to_end_and_starts_at_half(tmp_path: Path) -> None:
    out = tmp_path / "kto"
    assert _run(out) == 0
    rows = _lines(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    assert math.isfinite(json.loads((out / "eval.json").read_text())["eval/loss"])
    # Policy == reference at step 0: r = z = 0, so every loss is lambda / 2.
    assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-5)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert {"rewards/chosen", "rewards/rejected", "rewards/margin"} <= set(rows[0])
    assert rows[-1]["loss"] != pytest.approx(0.5, abs=1e-6)
    start, _ = load_causal_lm("tiny-causal-lm")
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    before, after = start.state_dict(), final.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _sharper_reference(folder: Path) -> Path:
    """The tiny model with its LM head scaled by 3: a reference unlike the policy, so z_ref > 0."""
    model, tokenizer = load_causal_lm("tiny-causal-lm")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_kto_micro_batch_invariance(tmp_path: Path) -> None:
    # batch_size 4: micro-batches of 3 split each step 3 + 1. The reference point (non-zero with this
    # reference), the loss and the per-class reward means are those of the whole step for every split.
    reference = _sharper_reference(tmp_path / "reference")
    common = ["train.batch_size=4", "train.save_every=0", f"reference_model={reference}"]
    assert _run(tmp_path / "full", *common, "train.micro_batch_size=4") == 0
    full = _lines(tmp_path / "full")
    assert full[0]["kl"] > 0.1
    for size in (1, 3):
        assert _run(tmp_path / f"micro-{size}", *common, f"train.micro_batch_size={size}") == 0
        _assert_same_lines(_lines(tmp_path / f"micro-{size}"), full, rel=1e-5)


def test_kto_two_processes_log_the_same_steps(tmp_path: Path) -> None:
    # 9 training rows in steps of 4, 4 and 1 (a placeholder on the second process in step 3): both
    # processes use the whole step's reference point, so the run matches one process.
    reference = _sharper_reference(tmp_path / "reference")
    common = [
        "train.micro_batch_size=1",
        "train.max_steps=3",
        "train.save_every=0",
        f"reference_model={reference}",
    ]
    assert _run(tmp_path / "one", *common) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(sys.executable).with_name("prefalign")),
    ]
    command += ["kto", "--config", "configs/tiny.yaml", "--output-dir", str(tmp_path / "two"), *common]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    one = _lines(tmp_path / "one")
    assert one[0]["kl"] > 0.1
    _assert_same_lines(_lines(tmp_path / "two"), one, rel=1e-5)


def test_kto_without_precomputed_reference_takes_the_same_steps(tmp_path: Path) -> None:
    common = ["train.max_steps=3", "train.save_every=0"]
    assert _run(tmp_path / "cached", *common) == 0
    assert _run(tmp_path / "live", *common, "precompute_reference=false") == 0
    _assert_same_lines(_lines(tmp_path / "live"), _lines(tmp_path / "cached"), rel=1e-5)


def test_kto_resume_gives_the_uninterrupted_metrics(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert _run(straight) == 0
    with kill_after_checkpoint(4):
        _run(crashed)
    assert [r["step"] for r in _lines(crashed)] == [1, 2, 3, 4]
    assert _run(crashed, "--resume") == 0
    _assert_same_lines(_lines(crashed), _lines(straight), rel=1e-6)


def test_kto_trains_on_pairs_with_class_weights(tmp_path: Path) -> None:
    out = tmp_path / "kto-pairs"
    overrides = ["data.train=configs/data/tiny_pairs.jsonl", "undesirable_weight=3.0", "train.max_steps=2"]
    assert _run(out, *overrides, "train.save_every=0") == 0
    cfg = load_config(kto.KTOConfig, "configs/tiny.yaml", overrides, section="kto")
    train_rows, eval_rows = kto.load_unpaired_splits(cfg.data, cfg.train.seed)
    assert len(train_rows) + len(eval_rows) == 48  # 24 pairs, two rows each
    # Both halves of a pair stay on one side of the split.
    assert not {r.source for r in train_rows} & {r.source for r in eval_rows}
    labels = [train_rows[i].label for i in step_plan(len(train_rows), cfg.train)[0]]
    expected = sum(0.5 if label else 1.5 for label in labels) / len(labels)
    assert _lines(out)[0]["loss"] == pytest.approx(expected, abs=1e-5)


def test_kto_bad_row_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "unpaired.jsonl"
    bad.write_text(
        '{"prompt": "p", "completion": "a", "label": true}\n'
        '{"prompt": "p", "completion": "b", "label": "maybe"}\n'
    )
    assert _run(tmp_path / "out", f"data.train={bad}", "data.eval_fraction=0") == 2
    err = capsys.readouterr().err
    assert "unpaired.jsonl" in err and "line 2" in err and "label" in err


def test_kto_config_needs_two_examples_per_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path / "out", "train.batch_size=1", "train.micro_batch_size=1") == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mismatched_pairs_shift_completions_by_one() -> None:
    encoded = [([1, 2], [10, 11, 12]), ([3], [20]), ([4, 5, 6], [30, 31])]
    assert kto.mismatched_pairs(encoded, [0, 1, 2], max_length=5) == [
        ([1, 2], [30, 31]),
        ([3], [10, 11, 12]),
        ([4, 5, 6], [20]),
    ]
    assert kto.mismatched_pairs(encoded, [2, 0], max_length=4) == [([4, 5, 6], [10]), ([1, 2], [30, 31])]


def test_step_class_means_are_the_whole_steps_for_any_split() -> None:
    generator = torch.Generator().manual_seed(0)
    logps, ref = torch.randn(7, generator=generator), torch.randn(7, generator=generator)
    labels = torch.tensor([True, True, False, True, False, False, True])
    kl = torch.zeros(0)
    _, whole = kto_loss(logps, ref, labels, kl, kl, beta=0.3)
    for cuts in ([7], [1] * 7, [3, 3, 1], [2, 5]):
        # The loop's example-weighted mean over the micro-batches' recorded values.
        total: dict[str, float] = {}
        start = 0
        for size in cuts:
            part = slice(start, start + size)
            _, metrics = kto_loss(logps[part], ref[part], labels[part], kl, kl, beta=0.3)
            recorded = kto.step_class_means(metrics, labels[part], size, labels)
            for key, value in recorded.items():
                total[key] = total.get(key, 0.0) + size * float(value) / 7
            start += size
        assert total.keys() == whole.keys()
        for key, value in whole.items():
            assert total[key] == pytest.approx(float(value), rel=1e-6, abs=1e-7), (cuts, key)
    placeholder = MicroBatch([0], 0.0, sync=True)
    _, metrics = kto_loss(logps[:1], ref[:1], labels[:1], kl, kl, beta=0.3)
    recorded = kto.step_class_means(metrics, labels[:1], placeholder.count, labels)
    assert all(float(v) == 0.0 for k, v in recorded.items() if k != "kl")
