"""The rest of the DPO family through the CLI on configs/tiny.yaml: SimPO, ORPO, the SFT term.

Every ``loss=`` of the registry, micro-batch invariance and the config checks are in test_dpo.py;
KTO and listwise DPO have their own files (test_kto.py, test_listwise.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.cli import main
from prefalign.config import load_config
from prefalign.losses import PAIRWISE_LOSSES
from prefalign.models import load_causal_lm
from prefalign.models.scoring import completion_logps
from prefalign.recipes import common, dpo
from prefalign.recipes.common import encode_pair, load_pair_splits, pair_batch
from prefalign.train import read_metrics, step_plan


def _run(command: str, out: Path, *extra: str) -> int:
    return main([command, "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _check_run_contract(out: Path, steps: int) -> list[dict]:
    rows = read_metrics(out)
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

    # recipes.common loads both the policy and a frozen reference: count every load there.
    monkeypatch.setattr(common, "load_causal_lm", counting_load)
    monkeypatch.setattr(dpo, "reference_pair_logps", no_reference)
    monkeypatch.setattr(dpo, "reference_completion_logps", no_reference)
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
        encode_pair(tokenizer, train_pairs[i], cfg.data) for i in step_plan(len(train_pairs), cfg.train)[0]
    ]
    batch = pair_batch(first, tokenizer.pad_token_id)
    with torch.no_grad():
        out_logps = completion_logps(model.eval(), batch)
        expected, metrics = dpo.pair_loss(PAIRWISE_LOSSES[loss], cfg, out_logps.sums, out_logps.counts, None)
    assert rows[0]["loss"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert rows[0]["logps/chosen"] == pytest.approx(float(metrics["logps/chosen"]), abs=1e-4)
    assert rows[-1]["loss"] != pytest.approx(rows[0]["loss"], abs=1e-6)


def test_simpo_gamma_zero_reaches_the_loss() -> None:
    cfg = load_config(dpo.DPOConfig, "configs/tiny.yaml", ["loss=simpo", "gamma=0"], section="dpo")
    logps, counts = torch.tensor([-4.0, -4.0]), torch.tensor([2.0, 2.0])  # equal chosen/rejected
    losses, _ = dpo.pair_loss(PAIRWISE_LOSSES["simpo"], cfg, logps, counts, None)
    assert float(losses[0]) == pytest.approx(math.log(2))  # -log sigmoid(0 - gamma) with gamma = 0


def test_sft_coef_adds_the_chosen_nll(tmp_path: Path) -> None:
    out = tmp_path / "rpo"
    assert _run("dpo", out, "sft_coef=0.5", "train.max_steps=2", "train.save_every=0") == 0
    first = read_metrics(out)[0]
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
