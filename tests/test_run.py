from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefalign.config import load_config
from prefalign.recipes.dpo import DPOConfig
from prefalign.train.run import Run, RunDirError


def _cfg(out: Path) -> DPOConfig:
    return load_config(
        DPOConfig,
        None,
        [f"output_dir={out}", "train.keep_checkpoints=2", "data.train=configs/data/tiny_pairs.jsonl"],
    )


def test_refuses_to_clobber_an_earlier_run(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = Run.open(tmp_path, cfg)
    run.log(1, {"loss": 1.0})
    with pytest.raises(RunDirError, match="--resume"):
        Run.open(tmp_path, cfg)
    Run.open(tmp_path, cfg, overwrite=True)
    assert not (tmp_path / "metrics.jsonl").exists()
    assert (tmp_path / "config.yaml").exists()


def test_checkpoint_is_atomic_kept_and_restores_exactly(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = Run.open(tmp_path, cfg)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (1, 2, 3):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        run.log(step, {"loss": float(step)})
        run.save_checkpoint(step, model, opt, sched)
    # only the last two are kept; a stale temp folder from a killed write is ignored
    (tmp_path / "checkpoints" / ".tmp-step-9").mkdir()
    assert [s for s, _ in run.checkpoints()] == [2, 3]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    run.log(4, {"loss": 4.0})  # logged after the last checkpoint: dropped on resume
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    resumed = Run.open(tmp_path, cfg, resume=True)
    assert resumed.restore(fresh, fresh_opt, torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda s: 1.0)) == 3
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert [r["step"] for r in resumed.read_metrics()] == [1, 2, 3]
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
