"""Combining and shaping rewards: the weighted sum, the length and missing-EOS penalties, running
normalisation, and the per-token layout (reward at the EOS token).

The order is fixed and documented because it changes the numbers:
``total = normalize(sum_i w_i * r_i - length_penalty * num_tokens - missing_eos_penalty * [not finished])``.
Normalising last (as TRL whitens the reward after its missing-EOS penalty) gives the RL algorithm
rewards of a steady scale whatever the components; the penalties are in the units of the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prefalign.rewards.base import Reward, RewardBreakdown, RewardFunction, SampleLike
from prefalign.rewards.normalize import RunningNormalizer


class WeightedSum(Reward):
    """``sum_i w_i * r_i`` of component rewards; ``score`` keeps every component's parts
    (unweighted) and adds its own total under ``name``."""

    def __init__(self, terms: Sequence[tuple[RewardFunction, float]], *, name: str = "sum") -> None:
        if not terms:
            raise ValueError("WeightedSum needs at least one component")
        names = [fn.name for fn, _ in terms]
        if len(set(names)) != len(names) or name in names:
            raise ValueError(f"component names must be distinct and differ from {name!r}: {names}")
        self.terms = [(fn, float(w)) for fn, w in terms]
        self.name = name

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        total = torch.zeros(len(samples), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        for fn, weight in self.terms:
            result = fn.score(samples)
            total = total + weight * result.total
            parts |= result.parts
        parts[self.name] = total
        return RewardBreakdown(total, parts)


def length_penalty(num_tokens: torch.Tensor, coef: float) -> torch.Tensor:
    """(N,) ``-coef * num_tokens``: a cost per generated token (EOS included), from the first token
    on, so shorter answers score higher at equal quality (the bias a reward model's preference for
    length needs countering with)."""
    return -coef * num_tokens.to(torch.float32)


def missing_eos_penalty(finished: torch.Tensor, penalty: float) -> torch.Tensor:
    """(N,) ``-penalty`` where the completion did not finish (no stop token or string before the
    length cap), 0 elsewhere. ``penalty >= 0`` is subtracted, as TRL's ``missing_eos_penalty``;
    Huang et al. ("The N Implementation Details of RLHF with PPO", detail on truncated responses)
    give such responses a fixed low score so the policy learns to end its answers."""
    return torch.where(finished.to(torch.bool), 0.0, -float(penalty)).to(torch.float32)


class ShapedReward(Reward):
    """A reward with the length and missing-EOS penalties added and, optionally, running normalisation.

    Args:
        inner: the reward to shape (usually a :class:`WeightedSum`).
        normalizer: running statistics to normalise the shaped reward with (None: no normalisation).
        gather: with several processes, maps this process's (N,) shaped rewards to all processes'
            rewards (e.g. ``accelerator.gather``), so every process updates the same statistics.

    ``score`` parts: those of ``inner``, ``length_penalty`` and ``missing_eos_penalty`` (the amounts
    added, when configured), ``unnormalized`` (when normalising) and ``name`` (the total).
    """

    def __init__(
        self,
        inner: RewardFunction,
        *,
        length_penalty: float = 0.0,
        missing_eos_penalty: float = 0.0,
        normalizer: RunningNormalizer | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "total",
    ) -> None:
        self.inner = inner
        self.length_coef = float(length_penalty)
        self.eos_penalty = float(missing_eos_penalty)
        self.normalizer = normalizer
        self.gather = gather
        self.name = name

    def score(self, samples: Sequence[SampleLike], *, update: bool = True) -> RewardBreakdown:
        """Shaped rewards; ``update=False`` normalises without adding the batch to the statistics
        (for evaluation samples, which should not move the training scale)."""
        result = self.inner.score(samples)
        parts = dict(result.parts)
        total = result.total
        if self.length_coef:
            parts["length_penalty"] = length_penalty(
                torch.tensor([s.num_tokens for s in samples]), self.length_coef
            )
            total = total + parts["length_penalty"]
        if self.eos_penalty:
            finished = torch.tensor([bool(s.finished) for s in samples], dtype=torch.bool)
            parts["missing_eos_penalty"] = missing_eos_penalty(finished, self.eos_penalty)
            total = total + parts["missing_eos_penalty"]
        if self.normalizer is not None:
            parts["unnormalized"] = total
            if update:
                self.normalizer.update(self.gather(total) if self.gather is not None else total)
            total = self.normalizer.normalize(total)
        parts[self.name] = total
        return RewardBreakdown(total, parts)

    def state_dict(self) -> dict[str, float | int]:
        """The normaliser's statistics ({} without one): save them with each checkpoint."""
        return self.normalizer.state_dict() if self.normalizer is not None else {}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state)


def rewards_at_eos(sequence_rewards: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) per-token rewards: each sample's reward at its last completion token, 0 elsewhere.

    Per-token RL (PPO with a per-token KL penalty) adds the sequence reward at the final token
    (Huang et al., "The N Implementation Details of RLHF with PPO": the score is read at EOS, never
    at a padding position after it). Completion tokens sit at positions ``0 .. length-1`` of each
    row, right-padded to ``width``, as in completion-only tensors.

    Args:
        sequence_rewards: (N,) rewards.
        lengths: (N,) completion lengths in tokens, each in ``1 .. width``.
        width: columns of the output (the padded completion length).
    """
    lengths = lengths.to(device=sequence_rewards.device, dtype=torch.long)
    if lengths.shape != sequence_rewards.shape or sequence_rewards.dim() != 1:
        raise ValueError(
            f"rewards {tuple(sequence_rewards.shape)} and lengths {tuple(lengths.shape)}: expected (N,)"
        )
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > width):
        raise ValueError(f"lengths must be in 1..{width}, got {lengths.min().item()}..{lengths.max().item()}")
    out = torch.zeros(
        len(sequence_rewards), width, dtype=sequence_rewards.dtype, device=sequence_rewards.device
    )
    return out.scatter_(1, (lengths - 1).unsqueeze(1), sequence_rewards.unsqueeze(1))
