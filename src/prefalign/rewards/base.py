"""The reward interface: what a reward reads of a sample, what it returns, and how it is logged.

A reward function maps N samples to a float tensor (N,) of sequence rewards on the CPU;
:meth:`RewardFunction.score` also returns every component's (N,) values for the metrics log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from prefalign.tokens import Text


class SampleLike(Protocol):
    """What a reward reads of a rollout sample (``prefalign.rollout.Sample`` fits; rewards may not
    import rollout, a sibling layer, so this protocol names only the fields used)."""

    @property
    def prompt(self) -> Text: ...
    @property
    def completion(self) -> str: ...
    @property
    def finished(self) -> bool:
        """True when the completion ended with a stop token or string (not cut at the length cap)."""
        ...

    @property
    def num_tokens(self) -> int:
        """Generated tokens of the completion, its stop token included."""
        ...


@dataclass(frozen=True)
class RewardBreakdown:
    """Rewards of N samples and the (N,) parts they were made of, for logging.

    ``total`` (N,) float32 on the CPU is what the RL algorithm receives; ``parts`` maps a name
    (a component such as ``"model"``, a shaping term such as ``"length_penalty"``) to (N,) values.
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def metrics(self, prefix: str = "reward") -> dict[str, float]:
        """Batch mean of every part as ``{"reward/<name>": mean}`` (0.0 for an empty batch)."""
        return {
            f"{prefix}/{k}": float(v.double().mean()) if v.numel() else 0.0 for k, v in self.parts.items()
        }


@runtime_checkable
class RewardFunction(Protocol):
    """Sequence rewards of samples. ``name`` keys the reward in ``parts`` and in the metrics."""

    name: str

    def __call__(self, samples: Sequence[SampleLike]) -> torch.Tensor:
        """(N,) float32 rewards on the CPU."""
        ...

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        """The (N,) rewards and their parts, ``parts[name]`` among them."""
        ...


class Reward:
    """Base of the reward functions here: a subclass implements :meth:`score`; calling one
    returns ``score(samples).total``."""

    name: str = "reward"

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        raise NotImplementedError

    def __call__(self, samples: Sequence[SampleLike]) -> torch.Tensor:
        return self.score(samples).total


def single(name: str, values: torch.Tensor) -> RewardBreakdown:
    """The breakdown of a one-part reward: ``total`` is ``parts[name]``."""
    return RewardBreakdown(values, {name: values})


def as_rewards(values: Any, n: int, who: str) -> torch.Tensor:
    """``values`` (a sequence, array or tensor of N numbers; booleans count as 1/0) as (N,) float32
    on the CPU, or a one-line :class:`ValueError` starting with ``who`` saying what is wrong."""
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise ValueError(f"{who}: expected a sequence of {n} numbers, got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"{who}: returned {len(values)} values for {n} samples")
    try:
        out = torch.as_tensor(values.detach().cpu() if isinstance(values, torch.Tensor) else list(values))
        out = out.to(torch.float32)
    except (TypeError, ValueError, RuntimeError):
        kinds = sorted({type(v).__name__ for v in values})
        raise ValueError(f"{who}: expected {n} numbers, got values of type {', '.join(kinds)}") from None
    if out.shape != (n,):
        raise ValueError(f"{who}: expected {n} numbers, got shape {tuple(out.shape)}")
    bad = (~torch.isfinite(out)).nonzero().flatten()
    if bad.numel():
        first = int(bad[0])
        raise ValueError(f"{who}: value {first} is {float(out[first])}; rewards must be finite")
    return out
