"""AdamW with a learning-rate schedule for the trainable parameters of a module."""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_scheduler

from prefalign.config import TrainConfig


def build_optimizer(
    module: torch.nn.Module, train: TrainConfig, total_steps: int, *, learning_rate: float | None = None
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over ``module``'s trainable parameters and the schedule ``train.lr_scheduler``."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    # The fused kernel updates all tensors in one pass (about a fifth of a CPU step on small
    # models, docs/BENCHMARKS.md); it needs every parameter floating-point on a CPU or CUDA device.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    lr = train.learning_rate if learning_rate is None else learning_rate
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=train.weight_decay, fused=fused)
    name = "constant_with_warmup" if train.lr_scheduler == "constant" else train.lr_scheduler
    scheduler = get_scheduler(
        name, optimizer=optimizer, num_warmup_steps=train.warmup_steps, num_training_steps=total_steps
    )
    return optimizer, scheduler
