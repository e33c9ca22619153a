"""`prefalign contrastive` end-to-end on configs/tiny.yaml (a random model built in-process)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.cli import build_parser, main
from prefalign.models import load_causal_lm
from prefalign.train import read_metrics

VARIANTS = {
    "likelihood-reference": ["score=likelihood", "reference=true"],
    "likelihood": ["score=likelihood", "reference=false"],
    "representation": ["score=representation", "reference=false", "temperature=0.1"],
}
EVAL_KEYS = {
    "eval/loss",
    "eval/accuracy",
    "eval/pair_accuracy",
    "eval/scores/positive",
    "eval/scores/negative",
    "eval/negatives",
}


def _run(command: str, out: Path, *extra: str) -> int:
    return main([command, "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _same_lines(got: list[dict], expected: list[dict], rel: float) -> None:
    """Same steps, same keys, every metric equal to ``rel`` (timings aside)."""
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        a, b = ({k: v for k, v in r.items() if k != "elapsed_s"} for r in (a, b))
        assert a == pytest.approx(b, rel=rel, abs=1e-6), (a, b)


def _distinct_prompts(tmp_path: Path, n: int = 6) -> Path:
    """Pairs whose prompts all differ, so no in-batch negative is masked as a same-prompt row."""
    topics = ["the sea", "a cat", "the moon", "a bicycle", "winter", "a song", "tea", "a map"][:n]
    path = tmp_path / "distinct.jsonl"
    rows = [
        {"prompt": f"Tell me about {t}.\n", "chosen": f"I love {t}.", "rejected": f"I hate {t}."}
        for t in topics
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_score_runs_end_to_end_and_changes_the_weights(variant: str, tmp_path: Path) -> None:
    out = tmp_path / variant
    assert _run("contrastive", out, *VARIANTS[variant], "train.max_steps=3") == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert {"accuracy", "pair_accuracy", "scores/positive", "scores/negative", "negatives"} <= set(rows[0])
    assert (out / "config.yaml").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
    report = json.loads((out / "eval.json").read_text())
    assert set(report) == EVAL_KEYS and all(math.isfinite(v) for v in report.values())
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    start, _ = load_causal_lm("tiny-causal-lm")
    before = dict(start.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in final.named_parameters())


@pytest.mark.parametrize(
    ("in_batch", "negatives", "lora"), [("true", 3, "false"), ("false", 1, "false"), ("true", 3, "true")]
)
def test_first_loss_with_reference_is_log_one_plus_n(
    in_batch: str, negatives: int, lora: str, tmp_path: Path
) -> None:
    # At step 0 the policy is the reference, so every log-ratio score is 0 and the loss is log(1 + N):
    # N = the step's size (own rejected + the 2 other pairs' chosen) with in-batch negatives, else 1,
    # although each micro-batch holds a single pair. With LoRA the reference is the policy with its
    # adapters off (no second copy).
    data = _distinct_prompts(tmp_path)
    out = tmp_path / "out"
    extra = [f"data.train={data}", "data.eval_fraction=0", "train.batch_size=3", "train.micro_batch_size=1"]
    lora_args = [f"model.lora={lora}", "model.lora_r=4", "train.learning_rate=1e-2"]
    assert (
        _run("contrastive", out, *extra, *lora_args, f"in_batch_negatives={in_batch}", "train.max_steps=2")
        == 0
    )
    rows = read_metrics(out)
    assert rows[0]["loss"] == pytest.approx(math.log(1 + negatives), abs=1e-6)
    assert rows[0]["negatives"] == negatives and rows[0]["scores/positive"] == 0.0
    assert rows[1]["loss"] != pytest.approx(math.log(1 + negatives), abs=1e-6)  # parameters changed
    assert not (out / "eval.json").exists()  # nothing held out


def test_same_prompt_rows_are_not_negatives(tmp_path: Path) -> None:
    data = tmp_path / "same.jsonl"
    rows = [{"prompt": "Hi.\n", "chosen": f"Hello {i}.", "rejected": f"Go away {i}."} for i in range(2)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    extra = ["data.eval_fraction=0", "train.batch_size=2", "train.max_steps=1"]
    assert _run("contrastive", out, f"data.train={data}", *extra) == 0
    first = read_metrics(out)[0]
    assert first["negatives"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("variant", ["likelihood-reference", "representation"])
def test_micro_batch_size_changes_nothing(variant: str, tmp_path: Path) -> None:
    # The negatives are the optimizer step's (4 pairs in configs/tiny.yaml), and the representation
    # gradient is cached over the step: micro-batches of 1, 3 (3 + 1) or 4 pairs give the same
    # losses, metrics and gradient norms at every step, and the same held-out metrics.
    runs = {}
    for size in (1, 3, 4):
        out = tmp_path / f"micro-{size}"
        assert _run("contrastive", out, *VARIANTS[variant], f"train.micro_batch_size={size}") == 0
        runs[size] = (read_metrics(out), json.loads((out / "eval.json").read_text()))
    full, full_eval = runs[4]
    assert len(full) == 6 and full[0]["negatives"] > 1
    for size in (1, 3):
        _same_lines(runs[size][0], full, rel=1e-5)
        assert runs[size][1] == pytest.approx(full_eval, rel=1e-5, abs=1e-6)


def test_two_processes_give_the_same_run_as_one(tmp_path: Path) -> None:
    # The cached representation gradient is all-reduced like any other: two processes (gloo on the
    # CPU), each with micro-batches of one pair, train exactly as one process with the full batch.
    args = ["--config", "configs/tiny.yaml", *VARIANTS["representation"], "train.max_steps=3"]
    assert _run("contrastive", tmp_path / "one", *args[2:]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(torchrun.with_name("prefalign"))]
    command += ["contrastive", *args, "train.micro_batch_size=1", "--output-dir", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_lines(read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one"), rel=1e-5)


def test_matches_dpo_with_one_negative_and_summed_log_ratios(tmp_path: Path) -> None:
    # InfoNCE with only the rejected answer, summed log-ratio scores and tau = 1 / beta is DPO.
    steps = "train.max_steps=3"
    assert _run("dpo", tmp_path / "dpo", "beta=0.1", steps) == 0
    assert (
        _run(
            "contrastive",
            tmp_path / "nce",
            "score=likelihood",
            "reference=true",
            "length_normalize=false",
            "in_batch_negatives=false",
            "temperature=10",
            steps,
        )
        == 0
    )
    dpo, nce = read_metrics(tmp_path / "dpo"), read_metrics(tmp_path / "nce")
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in nce]), torch.tensor([r["loss"] for r in dpo]), rtol=0, atol=1e-5
    )
    assert [r["pair_accuracy"] for r in nce] == [r["rewards/accuracy"] for r in dpo]
    dpo_eval = json.loads((tmp_path / "dpo" / "eval.json").read_text())
    nce_eval = json.loads((tmp_path / "nce" / "eval.json").read_text())
    assert nce_eval["eval/loss"] == pytest.approx(dpo_eval["eval/loss"], abs=1e-5)


@pytest.mark.parametrize("variant", ["likelihood-reference", "representation"])
def test_resume_reproduces_the_uninterrupted_run(
    variant: str, tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    straight = tmp_path / "straight"
    assert _run("contrastive", straight, *VARIANTS[variant]) == 0

    crashed = tmp_path / "crashed"
    with kill_after_checkpoint(4):
        _run("contrastive", crashed, *VARIANTS[variant])
    assert len(read_metrics(crashed)) == 4
    assert _run("contrastive", crashed, *VARIANTS[variant], "--resume") == 0
    _same_lines(read_metrics(crashed), read_metrics(straight), rel=1e-6)
    assert json.loads((crashed / "eval.json").read_text()) == pytest.approx(
        json.loads((straight / "eval.json").read_text()), abs=1e-6
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["score=representation", "reference=true"], "likelihood"),
        (["score=nope"], "representation"),
        (["temperature=0"], "temperature"),
    ],
)
def test_bad_settings_fail_cleanly(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("contrastive", tmp_path / "o", *overrides) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the run folder is made


def test_cli_lists_the_command() -> None:
    assert "contrastive" in build_parser().format_help()
