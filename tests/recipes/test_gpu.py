"""Every recipe on a CUDA device (bf16 autocast through accelerate): skipped without a GPU.

Each recipe runs two steps of configs/tiny.yaml; the run must finish with finite losses, allocate
its tensors on the GPU (a batch or a cached reference left on the CPU fails at the first forward),
and save a final model that loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch

from prefalign.cli import main
from prefalign.recipes import RECIPES
from prefalign.train import read_metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("command", sorted(RECIPES))
def test_recipe_trains_on_the_gpu(command: str, tmp_path: Path) -> None:
    torch.cuda.reset_peak_memory_stats()
    out = tmp_path / command
    args = [
        "--config",
        "configs/tiny.yaml",
        "--output-dir",
        str(out),
        "train.max_steps=2",
        "train.save_every=1",
    ]
    assert main([command, *args]) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert torch.cuda.max_memory_allocated() > 0
    assert (out / "checkpoints" / "step-2").is_dir() and (out / "final").is_dir()
    if command == "dpo":
        # The policy starts as its reference: log 2, whatever the precision.
        assert rows[0]["loss"] == pytest.approx(math.log(2), abs=2e-2)


def test_killed_run_resumes_on_the_gpu(
    tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    def run(out: Path, *extra: str) -> int:
        return main(
            ["dpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), "train.max_steps=4", *extra]
        )

    assert run(tmp_path / "straight") == 0
    with kill_after_checkpoint(2):
        run(tmp_path / "crashed", "train.save_every=2")
    assert run(tmp_path / "crashed", "train.save_every=2", "--resume") == 0
    straight, resumed = (
        [row["loss"] for row in read_metrics(out)] for out in (tmp_path / "straight", tmp_path / "crashed")
    )
    assert resumed == pytest.approx(straight, rel=1e-3)
