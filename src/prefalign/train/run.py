"""A training run on disk: resolved config, metrics JSONL, atomic checkpoints, exact resume.

Layout of ``DIR``::

    config.yaml              the fully resolved config
    metrics.jsonl            one JSON object per optimizer step (``step``, ``loss``, ...)
    checkpoints/step-N/      per module: trainable weights; optimizers, schedulers, each rank's
                             RNG state, the data position and recipe state
    final/                   the trained model, loadable with ``from_pretrained``

Several processes may run one recipe (``torchrun``): only the main process writes files, every
process reads them on resume, and each process restores its own RNG state. A checkpoint is
written into a hidden temp folder and renamed into place, so a killed run never leaves a
half-written ``step-N``; on resume, metrics logged after the checkpoint are dropped so the file
reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
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
    """The output folder holds an earlier run that would be overwritten, or a bad checkpoint."""


@dataclass
class RunResult:
    """What a recipe returns: where things are and the last numbers it logged."""

    output_dir: Path
    final_dir: Path
    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ranks:
    """Which process this is and how to wait for the others (one process: index 0 of 1)."""

    index: int = 0
    count: int = 1
    barrier: Callable[[], None] = lambda: None

    @property
    def is_main(self) -> bool:
        return self.index == 0


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, one per logged optimizer step, in order."""
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item() if value.numel() == 1 else value.detach().tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (all of a full fine-tune, the adapters of a LoRA model), on CPU."""
    return {n: p.detach().cpu().contiguous().clone() for n, p in module.named_parameters() if p.requires_grad}


class Run:
    """One output folder. Create with :meth:`open`."""

    def __init__(self, output_dir: Path, config: Any, ranks: Ranks) -> None:
        self.output_dir = output_dir
        self.config = config
        self.ranks = ranks
        self.checkpoint_root = output_dir / "checkpoints"
        self.metrics_path = output_dir / "metrics.jsonl"
        self._started = time.time()

    @classmethod
    def open(
        cls,
        output_dir: str | Path,
        config: Any,
        *,
        resume: bool = False,
        overwrite: bool = False,
        ranks: Ranks | None = None,
    ) -> Run:
        """Prepare ``output_dir`` and write ``config.yaml`` (main process only).

        An earlier run in the folder is kept safe: without ``resume`` or ``overwrite`` this refuses
        to start rather than silently clobbering trained weights.
        """
        ranks = ranks or Ranks()
        out = Path(output_dir)
        has_run = any((out / n).exists() for n in ("metrics.jsonl", "checkpoints", "final"))
        if has_run and not (resume or overwrite):
            raise RunDirError(
                f"{out} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        ranks.barrier()  # every process has looked before the main process changes anything
        if ranks.is_main:
            if has_run and overwrite and not resume:
                for name in ("metrics.jsonl", "checkpoints", "final", "eval.json"):
                    target = out / name
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            out.mkdir(parents=True, exist_ok=True)
            save_config(config, out / "config.yaml")
        ranks.barrier()
        return cls(out, config, ranks)

    # ---- metrics -------------------------------------------------------------------------
    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl (main process) and return it."""
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        record["elapsed_s"] = round(time.time() - self._started, 3)
        if self.ranks.is_main:
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
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        schedulers: Mapping[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``checkpoints/step-N`` atomically; every process calls this (collective).

        ``modules`` are unwrapped modules whose trainable parameters are saved by name;
        ``optimizers``/``schedulers`` their optimizer and schedule states; ``state`` a JSON-able
        dict of recipe state (data position, running statistics) returned by :meth:`restore`.
        """
        final = self.checkpoint_root / f"step-{step}"
        tmp = self.checkpoint_root / f".tmp-step-{step}"
        if self.ranks.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.ranks.barrier()
        torch.save(_rng_state(), tmp / f"rng-{self.ranks.index}.pt")
        self.ranks.barrier()
        if self.ranks.is_main:
            for name, module in modules.items():
                save_file(trainable_state(module), str(tmp / f"{name}.safetensors"))
            torch.save(
                {
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
                },
                tmp / "training_state.pt",
            )
            # state.json last: its presence marks the checkpoint complete even before the rename.
            atomic_write_text(tmp / "state.json", json.dumps({"step": step, "state": state or {}}))
            replace_dir(tmp, final)
            for _, old in self.checkpoints()[: -max(1, self.config.train.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        self.ranks.barrier()
        return final

    def restore(
        self,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        schedulers: Mapping[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Load the latest checkpoint into the given (unwrapped) objects on every process.

        Returns (the step to continue from, the recipe state saved with it); (0, {}) if none.
        """
        found = self.checkpoints()
        if not found:
            return 0, {}
        step, path = found[-1]
        for name, module in modules.items():
            if not (path / f"{name}.safetensors").is_file():
                raise RunDirError(
                    f"{path}: no weights for module {name!r}; was this run made by another recipe?"
                )
            _load_trainable(module, path / f"{name}.safetensors")
        training = torch.load(path / "training_state.pt", weights_only=False)
        for kind, objects in (("optimizers", optimizers), ("schedulers", schedulers or {})):
            for name, obj in objects.items():
                if name not in training[kind]:
                    raise RunDirError(f"{path}: no {kind[:-1]} state for module {name!r}")
                obj.load_state_dict(training[kind][name])
        rng = path / f"rng-{self.ranks.index}.pt"
        _set_rng_state(torch.load(rng if rng.exists() else path / "rng-0.pt", weights_only=False))
        if self.ranks.is_main:
            self._truncate_metrics(step)
            console.print(f"[green]resumed[/] from {path} (step {step})")
        self.ranks.barrier()
        return step, json.loads((path / "state.json").read_text())["state"]

    # ---- progress and results ------------------------------------------------------------
    def progress(self, start: int, total: int, description: str) -> Iterator[tuple[int, Progress, Any]]:
        """Iterate optimizer steps ``start..total-1`` with a rich progress bar (main process)."""
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, console=console, transient=False, disable=not self.ranks.is_main) as bar:
            task = bar.add_task(description, total=total, completed=start, info="")
            for step in range(start, total):
                yield step, bar, task
                bar.advance(task)

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.output_dir / name
        if self.ranks.is_main:
            atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")
        return path


def _load_trainable(module: torch.nn.Module, path: Path) -> None:
    weights = load_file(str(path))
    params = dict(module.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise RunDirError(f"{path}: checkpoint has weights the model lacks, e.g. {missing[:3]}")
    # A trainable weight the checkpoint lacks would resume from its initial value, silently.
    unsaved = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if unsaved:
        raise RunDirError(f"{path}: checkpoint lacks trainable weights of the model, e.g. {unsaved[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
