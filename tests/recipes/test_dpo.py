"""``prefalign dpo`` through the CLI on configs/tiny.yaml: every pairwise loss of the registry,
micro-batch invariance, the reference cache, the SFT term and the config's cross-field check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from prefalign.cli import main
from prefalign.config import load_config
from prefalign.losses import PAIRWISE_LOSSES
from prefalign.recipes.dpo import DPOConfig
from prefalign.train import read_metrics

# Options each loss runs with: the smoothed variants with their smoothing on.
LOSS_OPTIONS = {
    "sigmoid": {},
    "cdpo": {"label_smoothing": 0.1},
    "ipo": {},
    "robust": {"label_smoothing": 0.1},
    "hinge": {},
    "simpo": {},
    "orpo": {},
}


def _eval(out: Path) -> dict:
    return json.loads((out / "eval.json").read_text())


def _run(out: Path, *extra: str) -> int:
    return main(["dpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _assert_same_metrics(ours: list[dict], theirs: list[dict], keys: tuple[str, ...]) -> None:
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), (a["step"], key)


def test_every_registered_loss_is_exercised() -> None:
    assert set(LOSS_OPTIONS) == set(PAIRWISE_LOSSES)


@pytest.mark.parametrize("loss", list(LOSS_OPTIONS))
def test_every_pairwise_loss_trains(loss: str, tmp_path: Path) -> None:
    options = LOSS_OPTIONS[loss]
    overrides = [f"loss={loss}", *(f"{k}={v}" for k, v in options.items())]
    overrides += ["train.max_steps=3", "train.save_every=0"]
    out = tmp_path / loss
    assert _run(out, *overrides) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ("loss", "rewards/margin", "rewards/chosen", "logps/chosen", "grad_norm"):
            assert math.isfinite(row[key]), (row["step"], key)
    assert math.isfinite(_eval(out)["eval/loss"])
    assert rows[-1]["loss"] != pytest.approx(rows[0]["loss"], abs=1e-6)  # it trains

    entry = PAIRWISE_LOSSES[loss]
    if entry.reference:
        # At step 0 the policy is the reference: every log-ratio is 0, so the first loss is the
        # loss function's value at a zero gap.
        cfg = load_config(DPOConfig, "configs/tiny.yaml", overrides, section="dpo")
        zeros = torch.zeros(4, dtype=torch.float64)
        at_zero, _ = entry.fn(zeros, zeros, zeros, zeros, beta=cfg.beta, **options)
        assert rows[0]["loss"] == pytest.approx(float(at_zero.mean()), rel=1e-5, abs=1e-5)
        assert rows[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
        assert rows[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("loss", ["sigmoid", "simpo"])
def test_micro_batch_size_does_not_change_the_steps(loss: str, tmp_path: Path) -> None:
    # Five steps of four pairs over 18 training pairs: the fifth step holds only two.
    common = [f"loss={loss}", "train.batch_size=4", "train.max_steps=5", "train.save_every=0"]
    runs = {}
    for micro in (1, 3, 4):
        out = tmp_path / f"micro-{micro}"
        assert _run(out, *common, f"train.micro_batch_size={micro}") == 0
        runs[micro] = out
    full = read_metrics(runs[4])
    assert len(full) == 5
    for micro in (1, 3):
        _assert_same_metrics(
            read_metrics(runs[micro]), full, ("loss", "rewards/margin", "rewards/accuracy", "grad_norm")
        )
        assert _eval(runs[micro])["eval/loss"] == pytest.approx(
            _eval(runs[4])["eval/loss"], rel=1e-5, abs=1e-5
        )


def test_reference_scored_per_step_equals_the_precomputed_cache(tmp_path: Path) -> None:
    common = ["train.max_steps=3", "train.save_every=0"]
    assert _run(tmp_path / "cached", *common, "precompute_reference=true") == 0
    assert _run(tmp_path / "live", *common, "precompute_reference=false") == 0
    cached, live = read_metrics(tmp_path / "cached"), read_metrics(tmp_path / "live")
    _assert_same_metrics(live, cached, ("loss", "rewards/margin", "rewards/chosen", "rewards/rejected"))
    assert live[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert _eval(tmp_path / "live")["eval/loss"] == pytest.approx(
        _eval(tmp_path / "cached")["eval/loss"], rel=1e-5, abs=1e-5
    )


@pytest.mark.parametrize("loss", ["ipo", "simpo"])
def test_sft_coef_adds_half_the_chosen_nll(loss: str, tmp_path: Path) -> None:
    out = tmp_path / loss
    assert _run(out, f"loss={loss}", "sft_coef=0.5", "train.max_steps=2", "train.save_every=0") == 0
    for row in read_metrics(out):
        assert row["nll/chosen"] > 0
        expected = row["loss/preference"] + 0.5 * row["nll/chosen"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert {"eval/loss/preference", "eval/nll/chosen"} <= set(_eval(out))


@pytest.mark.parametrize(
    "loss", [name for name, entry in PAIRWISE_LOSSES.items() if "label_smoothing" not in entry.options]
)
def test_label_smoothing_on_a_loss_without_it_is_refused(
    loss: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / loss
    assert _run(out, f"loss={loss}", "label_smoothing=0.1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "label_smoothing" in err[0] and loss in err[0]
    assert not out.exists()
