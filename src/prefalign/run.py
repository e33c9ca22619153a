"""A training run on disk: resolved config, metrics JSONL, atomic checkpoints, exact resume.

Layout of ``DIR``::

    config.yaml              the fully resolved config
    metrics.jsonl            one JSON object per optimizer step (``step``, ``loss``, ...)
    checkpoints/step-N/      trainable weights, optimizer, scheduler and RNG state
    final/                   the trained model, loadable with ``from_pretrained``

A checkpoint is written into a hidden temp folder and renamed into place, so a killed run never
leaves a half-written ``step-N``; on resume, metrics logged after the checkpoint are dropped so the
file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import load_file, save_file

from prefalign.config import save_config
from prefalign.utils import atomic_write_text, replace_dir

console = Console(stderr=True)


class RunDirError(RuntimeError):
    """The output folder holds an earlier run that would be overwritten."""


@dataclass
class RunResult:
    """What a recipe returns: where things are and the last numbers it logged."""

    output_dir: Path
    final_dir: Path
    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item() if value.numel() == 1 else value.detach().tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Run:
    """One output folder. Create with :meth:`open`."""

    def __init__(self, output_dir: Path, config: Any) -> None:
        self.output_dir = output_dir
        self.config = config
        self.checkpoint_root = output_dir / "checkpoints"
        self.metrics_path = output_dir / "metrics.jsonl"
        self._started = time.time()

    @classmethod
    def open(
        cls, output_dir: str | Path, config: Any, *, resume: bool = False, overwrite: bool = False
    ) -> Run:
        """Prepare ``output_dir`` and write ``config.yaml``.

        An earlier run in the folder is kept safe: without ``resume`` or ``overwrite`` this refuses
        to start rather than silently clobbering trained weights.
        """
        out = Path(output_dir)
        has_run = (
            (out / "metrics.jsonl").exists() or (out / "checkpoints").exists() or (out / "final").exists()
        )
        if has_run and not (resume or overwrite):
            raise RunDirError(
                f"{out} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        if has_run and overwrite and not resume:
            for name in ("metrics.jsonl", "checkpoints", "final", "eval.json"):
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        return cls(out, config)

    # ---- metrics -------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one JSON line ``{"step": step, **metrics}`` and flush it to disk."""
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        record["elapsed_s"] = round(time.time() - self._started, 3)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        return record

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def _truncate_metrics(self, last_step: int) -> None:
        """Drop lines logged after the checkpoint we resume from (they will be logged again)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first (temp folders of killed writes are ignored)."""
        if not self.checkpoint_root.exists():
            return []
        found = []
        for path in self.checkpoint_root.iterdir():
            if path.is_dir() and path.name.startswith("step-") and (path / "state.json").exists():
                found.append((int(path.name.split("-", 1)[1]), path))
        return sorted(found)

    def save_checkpoint(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``checkpoints/step-N`` atomically: trainable weights, optimizer, scheduler, RNG."""
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_root / f"step-{step}"
        tmp = self.checkpoint_root / f".tmp-step-{step}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        trainable = {
            n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        save_file(trainable, str(tmp / "trainable.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "python": random.getstate(),
                    "numpy": np.random.get_state(),
                },
            },
            tmp / "training_state.pt",
        )
        # state.json last: its presence marks the checkpoint complete even before the rename.
        atomic_write_text(tmp / "state.json", json.dumps({"step": step, **(extra or {})}))
        replace_dir(tmp, final)
        for _, old in self.checkpoints()[: -max(1, self.config.train.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
        """Load the latest checkpoint into the given objects; returns the step to continue from (0 if none)."""
        found = self.checkpoints()
        if not found:
            return 0
        step, path = found[-1]
        weights = load_file(str(path / "trainable.safetensors"))
        params = dict(model.named_parameters())
        missing = [n for n in weights if n not in params]
        if missing:
            raise RunDirError(f"{path}: checkpoint has weights the model lacks, e.g. {missing[:3]}")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        state = torch.load(path / "training_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        self._truncate_metrics(step)
        console.print(f"[green]resumed[/] from {path} (step {step})")
        return step

    # ---- progress and results ------------------------------------------------------------
    def progress(self, start: int, total: int, description: str) -> Iterator[tuple[int, Progress, Any]]:
        """Iterate optimizer steps ``start..total-1`` with a rich progress bar on stderr."""
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(description, total=total, completed=start, info="")
            for step in range(start, total):
                yield step, bar, task
                bar.advance(task)

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.output_dir / name
        atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")
        return path
