"""Step plans fixed in advance: which examples every optimizer step trains on."""

from __future__ import annotations

import math

import torch

from prefalign.config import TrainConfig


def step_plan(num_examples: int, train: TrainConfig) -> list[list[int]]:
    """Example indices for every optimizer step, fixed by the seed.

    Each epoch is a fresh permutation drawn from ``seed + epoch``; because the whole plan is a pure
    function of (num_examples, config), a resumed run picks up exactly where it stopped, and every
    process computes the same plan.
    """
    if num_examples == 0:
        raise ValueError("no training examples")
    per_epoch = math.ceil(num_examples / train.batch_size)
    total = train.max_steps if train.max_steps > 0 else max(1, math.ceil(per_epoch * train.epochs))
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < total:
        generator = torch.Generator().manual_seed(train.seed + epoch)
        order = torch.randperm(num_examples, generator=generator).tolist()
        for start in range(0, num_examples, train.batch_size):
            plan.append(order[start : start + train.batch_size])
            if len(plan) == total:
                break
        epoch += 1
    return plan
