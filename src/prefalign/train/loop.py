"""The step machinery every recipe shares: setup, micro-batches, backward, optimizer step, save.

A recipe keeps only its algorithm::

    loop = TrainLoop.open(cfg, "dpo")                       # run folder, seeds, accelerator
    policy = loop.prepare("policy", policy, total_steps)     # optimizer, schedule, devices, DDP
    for step in loop.steps(len(plan)):                       # resumes where a checkpoint left off
        for micro in loop.micro_batches(plan[step]):         # this process's share, cut small
            losses, metrics = ...                            # (B,) per-example losses
            loop.backward(losses, micro, metrics)
        loop.optimizer_step(step)                            # clip, step, reduce and log metrics
    return loop.finish(policy, tokenizer, eval_metrics)

The plan may be fixed in advance (:func:`prefalign.train.plan.step_plan`) or produced as training
goes (RL: ``loop.steps(total)`` and the rollouts of each step are made inside the loop).

Why the loss weight is ``P / N`` (P processes, N examples of the whole optimizer step): each
example's gradient is then weighted ``1 / N`` whichever micro-batch or process it landed in, and
DDP's average over P processes is undone, so the accumulated gradient equals the full-batch
mean's for every split (see :mod:`prefalign.losses.reduction`). Gradients are all-reduced once
per optimizer step: every micro-batch but a process's last runs under ``no_sync``. A process
with no example in a step runs one example with weight 0, so it still joins the all-reduce.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object

from prefalign.config import TrainConfig
from prefalign.train.optim import build_optimizer
from prefalign.train.run import Ranks, Run, RunResult
from prefalign.utils import cpu_native_bf16, seed_everything


@dataclass
class MicroBatch:
    """One forward/backward of this process within an optimizer step."""

    indices: list[int]
    """Rows of the step's data this micro-batch holds."""
    weight: float
    """Multiplier of the summed per-example losses: ``P / N``, or 0 for a placeholder."""
    sync: bool
    """This process's last micro-batch of the step: its backward all-reduces the gradients."""

    @property
    def count(self) -> int:
        """Examples that count (0 for a placeholder)."""
        return len(self.indices) if self.weight else 0


def native_bf16() -> bool:
    """Whether bf16 matmuls run natively here: a CUDA GPU that supports them, or a CPU with
    AVX512-BF16 or AMX (where bf16 training is ~2.4x faster than fp32, docs/BENCHMARKS.md)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_native_bf16()


def mixed_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` for ``TrainConfig.precision``: 'bf16' or 'no'."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if precision == "native":
        return "bf16" if native_bf16() else "no"
    return "bf16" if precision == "bf16" else "no"


def make_accelerator(precision: str = "auto") -> Accelerator:
    """CUDA when a GPU is there, else the CPU (gloo for several processes); bf16 autocast per
    ``precision`` (see ``TrainConfig.precision``)."""
    mixed = mixed_precision(precision)
    if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        # accelerate keeps one precision per process; runs in one process (the demo, tests) may
        # each ask for another. The process group (PartialState) is kept.
        AcceleratorState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed)


def _frozen_linears_to_bf16(module: torch.nn.Module) -> None:
    """Store the frozen weights of linear layers in bf16 (a LoRA base, a reference model): bf16
    autocast would cast them on every forward anyway, and they then take half the memory.
    Embeddings (and a head tied to them) and norms stay fp32, so the residual stream does too."""
    embeddings = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    tied = id(embeddings.weight) if embeddings is not None else None
    cast = set()
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear) and not layer.weight.requires_grad and id(layer.weight) != tied:
            cast |= {id(p) for p in (layer.weight, layer.bias) if p is not None and not p.requires_grad}
    for param in module.parameters():
        # The rest is copied too: weights loaded from safetensors are views of the file's memory
        # map, which stays resident while any tensor still points into it.
        if not param.requires_grad:
            param.data = param.data.to(torch.bfloat16) if id(param) in cast else param.data.clone()


def _eager_attention(module: torch.nn.Module) -> None:
    """Switch a transformers model to eager attention: on the CPU in bf16 the SDPA kernel's
    backward is slower than eager's plain matmuls (docs/BENCHMARKS.md)."""
    model = module.get_base_model() if hasattr(module, "get_base_model") else module
    if getattr(getattr(model, "config", None), "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")


class TrainLoop:
    """One recipe's training: the run folder, the accelerator and the modules being trained."""

    def __init__(self, run: Run, accelerator: Accelerator, train: TrainConfig, name: str) -> None:
        self.run = run
        self.accelerator = accelerator
        self.train = train
        self.name = name
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.start_step = 0
        self.state: dict[str, Any] = {}
        self.last: dict[str, float] = {}
        self._parts: list[tuple[int, dict[str, torch.Tensor]]] = []
        self._norms: list[dict[str, float]] = []
        self._bar: Any = None

    @classmethod
    def open(cls, cfg: Any, name: str) -> TrainLoop:
        """Open ``cfg.output_dir`` (``cfg.resume`` / ``cfg.overwrite``) and seed every RNG."""
        accelerator = make_accelerator(cfg.train.precision)
        ranks = Ranks(accelerator.process_index, accelerator.num_processes, accelerator.wait_for_everyone)
        run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite, ranks=ranks)
        seed_everything(cfg.train.seed)
        return cls(run, accelerator, cfg.train, name)

    # ---- setup -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def prepare(
        self, name: str, module: torch.nn.Module, total_steps: int, *, learning_rate: float | None = None
    ) -> torch.nn.Module:
        """Move ``module`` to the device, give it an AdamW optimizer and schedule, wrap it for DDP.

        Returns the wrapped module to call in training; checkpoints hold it under ``name``.
        """
        module.to(self.device)
        self._adapt(module)
        optimizer, scheduler = build_optimizer(module, self.train, total_steps, learning_rate=learning_rate)
        # The schedule is stepped by us once per optimizer step; accelerate's wrapper would step it
        # once per process, so the same global batch would get another schedule on 2 processes.
        wrapped, optimizer = self.accelerator.prepare(module, optimizer)
        self.modules[name] = wrapped
        self.optimizers[name] = optimizer
        self.schedulers[name] = scheduler
        return wrapped

    def frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        """A module that is only evaluated (a reference model): on the device, in eval mode, its
        forward in the run's precision like the trained modules'."""
        module.requires_grad_(False).eval().to(self.device)
        self._adapt(module)
        return self.accelerator.prepare_model(module, evaluation_mode=True)

    @property
    def bf16(self) -> bool:
        return self.accelerator.mixed_precision == "bf16"

    def _adapt(self, module: torch.nn.Module) -> None:
        """Fit a module to the run's precision before it is wrapped."""
        if not self.bf16:
            return
        _frozen_linears_to_bf16(module)
        if self.device.type == "cpu":
            _eager_attention(module)

    def unwrap(self, name: str = "policy") -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.modules[name])

    def restore(self) -> int:
        """Load the latest checkpoint (when resuming); returns the step to start from."""
        unwrapped = {n: self.unwrap(n) for n in self.modules}
        self.start_step, self.state = self.run.restore(unwrapped, self.optimizers, self.schedulers)
        return self.start_step

    def share(self, count: int, compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        """``compute`` on this process's share of ``range(count)`` (every P-th index), the results
        of all processes gathered back in index order: each process then holds all ``count``.

        For work every process needs whole but need not do whole (scoring a step's rollouts).
        """
        rank, size = self.accelerator.process_index, self.accelerator.num_processes
        mine = compute(list(range(rank, count, size)))
        if size == 1:
            return mine
        merged: list[Any] = [None] * count
        for owner, results in enumerate(gather_object([mine])):
            for index, value in zip(range(owner, count, size), results, strict=True):
                merged[index] = value
        return merged

    # ---- the loop ----------------------------------------------------------------------------
    def steps(self, total: int) -> Iterator[int]:
        """Optimizer steps from the resume point to ``total - 1``, with a progress bar."""
        self.total_steps = total
        for step, bar, task in self.run.progress(self.start_step, total, self.name):
            self._bar = (bar, task)
            yield step

    def micro_batches(
        self, indices: list[int], *, size: int | None = None, total: float | None = None
    ) -> Iterator[MicroBatch]:
        """This process's share of one optimizer step's ``indices``, cut into micro-batches.

        Iterate it with ``for``: the body (forward and :meth:`backward`) of every micro-batch but
        the last runs inside DDP's ``no_sync``, which must cover the forward too.

        ``total`` is the step's global normaliser N (default: ``len(indices)``; a token-level loss
        passes the step's token count instead).
        """
        size = size or self.train.micro_batch_size
        rank, count = self.accelerator.process_index, self.accelerator.num_processes
        weight = count / max(1.0, float(total if total is not None else len(indices)))
        # Every process runs the same number of forwards (DDP's collectives must pair up); one
        # that runs out of rows repeats the step's first row with weight 0.
        rounds = max(1, math.ceil(len(indices[0::count]) / size))
        mine = indices[rank::count]
        cuts = [mine[i * size : (i + 1) * size] for i in range(rounds)]
        for i, cut in enumerate(cuts):
            last = i == rounds - 1
            micro = MicroBatch(cut, weight, sync=last) if cut else MicroBatch(indices[:1], 0.0, sync=last)
            with self._sync_context(micro):
                yield micro

    def _sync_context(self, micro: MicroBatch) -> contextlib.AbstractContextManager[Any]:
        if micro.sync or self.accelerator.num_processes == 1:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for module in self.modules.values():
            stack.enter_context(self.accelerator.no_sync(module))
        return stack

    def backward(
        self, losses: torch.Tensor, micro: MicroBatch, metrics: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Backward of ``losses.sum() * micro.weight``; records ``metrics`` (means over the micro-batch)."""
        self.accelerator.backward(losses.sum() * micro.weight)
        self.record(micro.count, {"loss": losses.detach().float().mean(), **(metrics or {})})

    def record(self, count: int, metrics: dict[str, torch.Tensor | float]) -> None:
        """Add one micro-batch's metric means, weighted by its example count, to this step's."""
        self._parts.append(
            (count, {k: torch.as_tensor(v, dtype=torch.float64).detach().cpu() for k, v in metrics.items()})
        )

    def reduced_metrics(self) -> dict[str, float]:
        """Example-weighted means of this step's recorded metrics over every process."""
        keys = sorted({k for _, m in self._parts for k in m})
        if self.accelerator.num_processes > 1:
            gathered = gather_object([keys])
            keys = sorted({k for part in gathered for k in part})
        sums = torch.zeros(len(keys) + 1, dtype=torch.float64)
        for count, metrics in self._parts:
            sums[0] += count
            for i, key in enumerate(keys):
                if key in metrics:
                    sums[i + 1] += count * metrics[key]
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums.to(self.device), reduction="sum").cpu()
        self._parts = []
        total = float(sums[0]) or 1.0
        return {k: float(sums[i + 1]) / total for i, k in enumerate(keys)}

    def optimizer_step(
        self,
        step: int,
        extra: dict[str, float] | None = None,
        *,
        evaluate: Callable[[], dict[str, float]] | None = None,
        state: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Finish step ``step``: an :meth:`update` (unless the recipe made its own), one schedule step,
        the step's metrics logged, a checkpoint when due.

        ``evaluate`` runs every ``train.eval_every`` steps and its metrics join the line;
        ``state`` (JSON-able recipe state) is saved with checkpoints.
        """
        if not self._norms:
            self.update()
        updates, self._norms = self._norms, []
        for scheduler in self.schedulers.values():
            scheduler.step()
        metrics = self.reduced_metrics()
        first, *others = updates[0]  # the first prepared module (the policy) gives grad_norm
        metrics["grad_norm"] = sum(u[first] for u in updates) / len(updates)
        metrics.update({f"grad_norm/{n}": sum(u[n] for u in updates) / len(updates) for n in others})
        if len(updates) > 1:
            metrics["updates"] = float(len(updates))
        metrics["learning_rate"] = next(iter(self.schedulers.values())).get_last_lr()[0]
        metrics.update(extra or {})
        done = step + 1
        if evaluate is not None and self.train.eval_every and done % self.train.eval_every == 0:
            metrics.update(evaluate())
        self.run.log(done, metrics)
        self.last = metrics
        if self._bar is not None and self.is_main:
            bar, task = self._bar
            bar.update(task, info=f"loss {metrics.get('loss', float('nan')):.4f}")
            if done % self.train.log_every == 0 or done == self.total_steps:
                bar.console.print(metrics_line(done, metrics))
        every = self.train.save_every
        if every and done % every == 0 and done < self.total_steps:
            self.save_checkpoint(done, state)
        return metrics

    def update(self) -> dict[str, float]:
        """Clip and step every optimizer (not the schedules): one parameter update.

        A recipe that makes several updates per step (PPO's epochs over minibatches of one
        rollout) calls this after each; :meth:`optimizer_step` then only logs and schedules, and
        ``grad_norm`` is the mean over the step's updates.
        """
        norms = {name: self._clip_and_step(name, module) for name, module in self.modules.items()}
        self._norms.append(norms)
        return norms

    def _clip_and_step(self, name: str, module: torch.nn.Module) -> float:
        params = [p for p in module.parameters() if p.requires_grad]
        if self.train.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(params, self.train.max_grad_norm)
        else:
            grads = [p.grad.norm() for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.zeros(())
        self.optimizers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)
        return float(norm)

    def save_checkpoint(self, step: int, state: dict[str, Any] | None = None) -> None:
        unwrapped = {n: self.unwrap(n) for n in self.modules}
        self.run.save_checkpoint(step, unwrapped, self.optimizers, self.schedulers, state)

    # ---- the end -----------------------------------------------------------------------------
    def finish(
        self,
        save: Callable[[Any], Any],
        *,
        eval_metrics: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> RunResult:
        """Last checkpoint, ``eval.json``, then ``save(final_dir)`` on the main process only."""
        total = getattr(self, "total_steps", self.start_step)
        if total > self.start_step:
            self.save_checkpoint(total, state)
        if eval_metrics:
            self.run.write_json("eval.json", eval_metrics)
        final_dir = self.run.output_dir / "final"
        if self.is_main:
            save(final_dir)
        self.accelerator.wait_for_everyone()
        return RunResult(self.run.output_dir, final_dir, total, self.last, eval_metrics or {})


def metrics_line(step: int, metrics: dict[str, float]) -> str:
    """``step 10  loss 0.6931  grad_norm 1.204 ...``: one step's metrics, four significant digits."""
    parts = [f"{key} {value:.4g}" for key, value in metrics.items() if isinstance(value, (int, float))]
    return "  ".join([f"step {step}", *parts])
