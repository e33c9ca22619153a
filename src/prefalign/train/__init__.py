"""Training machinery: the run folder (:class:`Run`), the step loop (:class:`TrainLoop`), step
plans and the optimizer. Recipes use it; it knows nothing of any algorithm."""

from prefalign.train.loop import MicroBatch, TrainLoop, make_accelerator, native_bf16
from prefalign.train.optim import build_optimizer
from prefalign.train.plan import step_plan
from prefalign.train.run import Ranks, Run, RunDirError, RunResult, console, read_metrics, trainable_state

__all__ = [
    "MicroBatch",
    "Ranks",
    "Run",
    "RunDirError",
    "RunResult",
    "TrainLoop",
    "build_optimizer",
    "console",
    "make_accelerator",
    "native_bf16",
    "read_metrics",
    "step_plan",
    "trainable_state",
]
