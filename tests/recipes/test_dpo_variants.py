"""The rest of the DPO family through the CLI on configs/tiny.yaml: SimPO, ORPO, SFT term, KTO, listwise."""

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
from prefalign.recipes import common, dpo, kto, listwise, scoring
from prefalign.recipes.common import (
    collate_pairs,
    completion_logps,
    load_pair_splits,
    step_plan,
    tokenize_pair,
)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _run(command: str, out: Path, *extra: str) -> int:
    return main([command, "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _check_run_contract(out: Path, steps: int) -> list[dict]:
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert (out / "config.yaml").exists() and (out / "eval.json").exists()
    assert math.isfinite(json.loads((out / "eval.json").read_text())["eval/loss"])
    AutoModelForCausalLM.from_pretrained(out / "final")
    return rows


# ---- dpo loss=simpo|orpo, sft_coef ----------------------------------------------------------------


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_reference_free_losses_load_no_reference(
    loss: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []

    def counting_load(name: str, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(name)
        return load_causal_lm(name, **kwargs)

    def no_reference(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a reference-free loss scored something under the reference")

    # The policy is loaded in recipes.common, a reference in recipes.scoring: count both.
    monkeypatch.setattr(common, "load_causal_lm", counting_load)
    monkeypatch.setattr(scoring, "load_causal_lm", counting_load)
    monkeypatch.setattr(dpo, "reference_pair_logps", no_reference)
    out = tmp_path / loss
    overrides = [f"loss={loss}", "train.max_steps=3", "train.save_every=0"]
    assert _run("dpo", out, *overrides) == 0
    assert loads == ["tiny-causal-lm"]  # the policy only
    rows = _check_run_contract(out, 3)

    # Step 0's loss, recomputed from the untouched model on the same rows.
    cfg = load_config(dpo.DPOConfig, "configs/tiny.yaml", overrides, section="dpo")
    model, tokenizer = load_causal_lm(cfg.model.name)
    train_pairs, _ = load_pair_splits(cfg.data, cfg.train.seed)
    first = [
        tokenize_pair(tokenizer, train_pairs[i], cfg.data) for i in step_plan(len(train_pairs), cfg.train)[0]
    ]
    batch = collate_pairs(first, tokenizer.pad_token_id)
    with torch.no_grad():
        logps, counts = completion_logps(model.eval(), batch)
        variant = dpo.LOSS_VARIANTS[loss]
        expected, metrics = dpo.pair_loss(variant.fn, variant, cfg, logps, counts, None)
    assert rows[0]["loss"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert rows[0]["logps/chosen"] == pytest.approx(float(metrics["logps/chosen"]), abs=1e-4)
    assert rows[-1]["loss"] != pytest.approx(rows[0]["loss"], abs=1e-6)


def test_sft_coef_adds_the_chosen_nll(tmp_path: Path) -> None:
    out = tmp_path / "rpo"
    assert _run("dpo", out, "sft_coef=0.5", "train.max_steps=2", "train.save_every=0") == 0
    first = _metrics(out)[0]
    assert first["loss/preference"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    assert first["nll/chosen"] > 0
    assert first["loss"] == pytest.approx(math.log(2) + 0.5 * first["nll/chosen"], abs=1e-5)
    assert "eval/nll/chosen" in json.loads((out / "eval.json").read_text())


def test_dpo_rejects_unknown_and_mismatched_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("dpo", tmp_path / "a", "loss=listwise") == 2
    assert "prefalign listwise" in capsys.readouterr().err
    assert _run("dpo", tmp_path / "b", "loss=orpo", "label_smoothing=0.1") == 2
    assert "label_smoothing" in capsys.readouterr().err


# ---- kto --------------------------------------------------------------------------------------------


def test_kto_runs_end_to_end_and_starts_at_half(tmp_path: Path) -> None:
    out = tmp_path / "kto"
    assert _run("kto", out) == 0
    rows = _check_run_contract(out, 6)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    # Policy == reference at step 0: r = z = 0, so every loss is lambda / 2.
    assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-5)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert {"rewards/chosen", "rewards/rejected", "rewards/margin"} <= set(rows[0])
    assert rows[-1]["loss"] != pytest.approx(0.5, abs=1e-6)


def test_kto_trains_on_pairs_with_class_weights(tmp_path: Path) -> None:
    out = tmp_path / "kto-pairs"
    overrides = ["data.train=configs/data/tiny_pairs.jsonl", "undesirable_weight=3.0", "train.max_steps=2"]
    assert _run("kto", out, *overrides, "train.save_every=0") == 0
    cfg = load_config(kto.KTOConfig, "configs/tiny.yaml", overrides, section="kto")
    train_rows, eval_rows = kto.load_unpaired_splits(cfg.data, cfg.train.seed)
    assert len(train_rows) + len(eval_rows) == 48  # 24 pairs, two rows each
    # Both halves of a pair stay on one side of the split.
    assert not {r.source for r in train_rows} & {r.source for r in eval_rows}
    labels = [train_rows[i].label for i in step_plan(len(train_rows), cfg.train)[0]]
    expected = sum(0.5 if label else 1.5 for label in labels) / len(labels)
    assert _metrics(out)[0]["loss"] == pytest.approx(expected, abs=1e-5)


def test_kto_resume_reproduces_the_uninterrupted_losses(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    straight = tmp_path / "straight"
    assert _run("kto", straight) == 0
    expected = [r["loss"] for r in _metrics(straight)]

    crashed = tmp_path / "crashed"
    with kill_after_checkpoint(4):
        _run("kto", crashed)
    assert len(_metrics(crashed)) == 4
    assert _run("kto", crashed, "--resume") == 0
    resumed = [r["loss"] for r in _metrics(crashed)]
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(expected), rtol=0, atol=1e-6)


def test_kto_bad_row_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "unpaired.jsonl"
    bad.write_text(
        '{"prompt": "p", "completion": "a", "label": true}\n'
        '{"prompt": "p", "completion": "b", "label": "maybe"}\n'
    )
    assert _run("kto", tmp_path / "out", f"data.train={bad}", "data.eval_fraction=0") == 2
    err = capsys.readouterr().err
    assert "unpaired.jsonl" in err and "line 2" in err and "label" in err


# ---- listwise ---------------------------------------------------------------------------------------


def test_listwise_runs_end_to_end_and_starts_at_log_factorials(tmp_path: Path) -> None:
    out = tmp_path / "listwise"
    assert _run("listwise", out) == 0
    rows = _check_run_contract(out, 6)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
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


def test_listwise_on_pairs_follows_dpo(tmp_path: Path) -> None:
    # A pair is a ranking of two and the Plackett-Luce loss is then DPO's: same split, same plan, so
    # the two recipes take the same steps.
    common = ["data.train=configs/data/tiny_pairs.jsonl", "train.max_steps=3", "train.save_every=0"]
    assert _run("listwise", tmp_path / "listwise", *common) == 0
    assert _run("dpo", tmp_path / "dpo", *common) == 0
    ours, theirs = _metrics(tmp_path / "listwise"), _metrics(tmp_path / "dpo")
    assert ours[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    for a, b in zip(ours, theirs, strict=True):
        for key in ("loss", "rewards/margin", "rewards/accuracy", "logps/chosen"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key


def test_listwise_with_sft_coef(tmp_path: Path) -> None:
    out = tmp_path / "listwise-rpo"
    assert _run("listwise", out, "sft_coef=1.0", "train.max_steps=1", "train.save_every=0") == 0
    first = _metrics(out)[0]
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
