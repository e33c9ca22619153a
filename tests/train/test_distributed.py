"""Two processes (torchrun, gloo on the CPU) against one: same losses, same weights, one metrics
line per step, one gradient all-reduce per optimizer step, a process with no rows, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prefalign.train import read_metrics

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> list[str]:
    return [
        str(BIN / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29400 + os.getpid() % 500),
        *args,
    ]


# Step 2 has a single row: the second process has none and runs a weight-0 placeholder.
PLAN = [[0, 1, 2, 3, 4, 5, 6, 7], [8], [9, 10, 11, 12, 13]]


def _worker(out: Path, processes: int, micro: int) -> dict:
    args = [str(WORKER), str(out), json.dumps(PLAN), str(micro)]
    cmd = [sys.executable, *args] if processes == 1 else _torchrun(*args)
    subprocess.run(cmd, check=True, env=ENV, cwd=REPO, capture_output=True, timeout=300)
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_and_sync_once_per_step(tmp_path: Path) -> None:
    one = _worker(tmp_path / "one", 1, micro=8)
    two = _worker(tmp_path / "two", 2, micro=2)  # 4 rows a process: 2 micro-batches, accumulation
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(two["weight"]), torch.tensor(one["weight"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(two["bias"]), torch.tensor(one["bias"]), rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in read_metrics(tmp_path / "two")] == [1, 2, 3]
    for rank in (0, 1):  # one bucket: exactly one all-reduce per optimizer step on every process
        assert json.loads((tmp_path / "two" / f"reduces-{rank}.json").read_text()) == len(PLAN)


def _dpo(out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    args = ["dpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), "train.batch_size=5", *extra]
    prefalign = str(BIN / "prefalign")
    cmd = [prefalign, *args] if processes == 1 else _torchrun(prefalign, *args)
    return subprocess.run(cmd, check=True, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dpo_on_two_processes_gives_the_losses_and_weights_of_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    steps = ["train.max_steps=4", "train.save_every=0"]
    _dpo(tmp_path / "one", 1, "train.micro_batch_size=5", *steps)
    _dpo(tmp_path / "two", 2, "train.micro_batch_size=2", *steps)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    assert two[0]["loss"] == pytest.approx(0.6931471805599453, abs=1e-6)
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
        assert b["rewards/margin"] == pytest.approx(a["rewards/margin"], rel=1e-4, abs=1e-6)
    w1 = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    # Adam divides by sqrt(v): for a weight whose gradient is ~0, summing the same numbers in another
    # order (two processes) can move it by a fraction of one step's lr (1e-3); everything else agrees.
    for name, value in w1.items():
        torch.testing.assert_close(w2[name], value, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_two_process_run_killed_after_a_checkpoint_resumes_to_the_same_losses(tmp_path: Path) -> None:
    steps = ["train.max_steps=8", "train.save_every=2", "train.micro_batch_size=2"]
    _dpo(tmp_path / "whole", 2, *steps)
    out = tmp_path / "killed"
    prefalign = str(BIN / "prefalign")
    args = ["dpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), "train.batch_size=5", *steps]
    job = subprocess.Popen(
        _torchrun(prefalign, *args),
        env=ENV,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-2" / "state.json").exists() and job.poll() is None:
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (out / "final").exists(), "the run finished before it could be killed"
    _dpo(out, 2, *steps, "--resume")
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(out)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(whole, resumed, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
