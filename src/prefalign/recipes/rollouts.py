"""What the online recipes share (grpo, online-dpo): prompts, sampling a step's rollouts from the
current policy, scoring them under the training model or the reference, held-out reward.

This is not a recipe: recipes import it and never each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from prefalign.config import ConfigError, DataConfig
from prefalign.feedback.formats import load_prompts, split_rows
from prefalign.models.scoring import CompletionLogps, completion_logps, reference_scope
from prefalign.rewards import RewardBreakdown
from prefalign.rollout import RolloutEngine, Sample
from prefalign.tokens import Text, right_pad


def load_prompt_splits(data: DataConfig, seed: int) -> tuple[list[Text], list[Text]]:
    """Training and held-out prompts: ``data.eval``, else a seeded ``data.eval_fraction`` split."""
    prompts = load_prompts(data.train)
    eval_prompts = load_prompts(data.eval) if data.eval else []
    if not data.eval and data.eval_fraction > 0:
        prompts, eval_prompts = split_rows(prompts, eval_fraction=data.eval_fraction, seed=seed)
    return prompts, eval_prompts


def rollout_batch(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (prompt, completion) batch of samples for the scorer."""
    return right_pad([s.prompt_ids for s in samples], [s.completion_ids for s in samples], pad_id)


@torch.no_grad()
def reference_logps(
    policy: Any,
    reference: Any,
    batch: dict[str, torch.Tensor],
    temperature: float = 1.0,
    *,
    share_prompts: bool = False,
) -> CompletionLogps:
    """Log-probs of ``batch`` under the reference (adapters off for LoRA), at the sampling
    ``temperature`` like the policy's, so a KL compares the two distributions sampling uses."""
    with reference_scope(policy, reference) as model:
        return completion_logps(model, batch, temperature=temperature, share_prompts=share_prompts)


def reward_metrics(scored: RewardBreakdown) -> dict[str, float]:
    """``reward`` (mean total), ``reward_std`` and ``reward/<part>`` means of one step's scores."""
    metrics = {
        f"reward/{k}" if not k.startswith("reward") else k: float(v.mean()) for k, v in scored.parts.items()
    }
    metrics["reward"] = float(scored.total.mean())
    metrics["reward_std"] = float(scored.total.std()) if scored.total.numel() > 1 else 0.0
    return metrics


# ---- per-sample token values -------------------------------------------------------------------
# Values computed once per rollout (old log-probs, reference log-probs, values, advantages) are
# kept per sample as (n_i,) tensors, one entry per completion token, because later batches put the
# same sample in other company (PPO's shuffled minibatches), hence in another (B, T) layout.
def per_row(values: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each row's entries at ``mask`` (B, T), in order: B tensors (n_i,) on the CPU."""
    return [row[keep].detach().cpu() for row, keep in zip(values, mask.bool(), strict=True)]


def as_rows(rows: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """(B, T) tensor with ``rows[i]`` at row i's ``mask`` positions and 0 elsewhere (inverse of
    :func:`per_row`); ``rows[i]`` must have as many entries as row i has true positions."""
    keep = mask.bool()
    flat = torch.cat([r.to(mask.device) for r in rows]) if rows else torch.zeros(0, device=mask.device)
    if flat.numel() != int(keep.sum()):
        raise ValueError(f"{flat.numel()} values for {int(keep.sum())} masked positions")
    return torch.zeros(keep.shape, dtype=flat.dtype, device=mask.device).masked_scatter(keep, flat)


def padded_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, mask)`` (N, T_max): each sample's values left-aligned, the completion-only layout
    the advantage functions read."""
    width = max((len(r) for r in rows), default=0)
    mask = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    return as_rows(rows, mask), mask


@torch.no_grad()
def token_values(
    forward: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
    samples: list[Sample],
    indices: list[int],
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """``forward(batch) -> (values, mask)`` over ``samples[indices]`` in batches; per-sample (n_i,)."""
    out: list[torch.Tensor] = []
    for start in range(0, len(indices), batch_size):
        chunk = [samples[i] for i in indices[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in rollout_batch(chunk, pad_id).items()}
        out += per_row(*forward(batch))
    return out


def sample_step(engine: RolloutEngine, prompts: list[Text], seed: int) -> list[Sample]:
    """The step's groups: ``n`` completions of each prompt from the current policy, prompt-major."""
    engine.sync()
    return engine.generate(prompts, seed=seed)


def evaluate(
    engine: RolloutEngine, reward: Any, prompts: list[Text], count: int, seed: int
) -> dict[str, float]:
    """Mean reward, length and EOS rate of ``count`` held-out samples (the reward's scale untouched)."""
    if not prompts or not count:
        return {}
    chosen = [prompts[i % len(prompts)] for i in range(count)]
    samples = sample_step(engine, chosen, seed)[:count]
    scores = reward.score(samples, update=False).total
    return {
        "eval/reward": float(scores.mean()),
        "eval/length": sum(s.num_tokens for s in samples) / len(samples),
        "eval/eos_rate": sum(s.finished for s in samples) / len(samples),
    }


def rollout_metrics(samples: list[Sample]) -> dict[str, float]:
    """Mean completion length (tokens, stop token included) and EOS rate of a step's samples."""
    count = max(1, len(samples))
    return {
        "completion_length": sum(s.num_tokens for s in samples) / count,
        "eos_rate": sum(s.finished for s in samples) / count,
    }


def check_minibatches(num_minibatches: int, rollouts: int) -> None:
    """A ConfigError when a step's ``rollouts`` cannot fill ``num_minibatches`` minibatches."""
    if num_minibatches > rollouts:
        raise ConfigError(
            f"num_minibatches: {num_minibatches} minibatches of {rollouts} rollouts per step "
            "(train.batch_size x sampling.n) would leave some empty"
        )


def minibatches(count: int, epochs: int, parts: int, seed: int) -> list[list[int]]:
    """The updates of one step: ``epochs`` seeded permutations of ``range(count)``, each cut into
    ``parts`` minibatches (sizes differ by at most one); one pass in one part keeps the order."""
    if epochs == 1 and parts == 1:
        return [list(range(count))]
    generator = torch.Generator().manual_seed(seed)
    plan = []
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        plan += [chunk.tolist() for chunk in order.tensor_split(parts)]
    return plan
