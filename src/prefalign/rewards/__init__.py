"""Rewards for reinforcement learning: what an RL recipe calls on each batch of rollouts.

A reward function maps N samples (anything with ``prompt``, ``completion``, ``finished`` and
``num_tokens``, such as ``prefalign.rollout.Sample``) to (N,) float32 sequence rewards on the CPU,
and ``score(samples)`` also returns the parts they were made of for the metrics log
(``RewardBreakdown.metrics()`` -> ``{"reward/<part>": batch mean}``).

Components (each a reward function; :mod:`prefalign.rewards.build` sums the configured ones):

* :class:`RewardModelReward`: a reward model or ensemble, ``mean - k * std`` over its heads;
* :class:`FunctionReward`: a Python function ``fn(prompts, completions)``;
* :class:`RuleReward`: regular-expression rules; :class:`ScorerReward`: a feedback text scorer.

Shaping (:class:`ShapedReward`): weighted sum, length penalty, missing-EOS penalty, then
:class:`RunningNormalizer`. :func:`rewards_at_eos` lays sequence rewards out per token.

An RL recipe embeds :class:`RewardConfig` as its ``reward`` field and calls
``reward_fn = build_reward(cfg.reward)``; ``reward_fn.state_dict()`` goes into its checkpoints.
"""

from prefalign.rewards.base import RewardBreakdown, RewardFunction, SampleLike
from prefalign.rewards.build import BUILDERS, build_reward
from prefalign.rewards.config import COMPONENTS, RewardConfig, RuleConfig
from prefalign.rewards.function import FunctionReward, load_function
from prefalign.rewards.model import RewardModelReward
from prefalign.rewards.normalize import RunningNormalizer
from prefalign.rewards.rules import RuleReward, ScorerReward
from prefalign.rewards.shaping import (
    ShapedReward,
    WeightedSum,
    length_penalty,
    missing_eos_penalty,
    rewards_at_eos,
)

__all__ = [
    "BUILDERS",
    "COMPONENTS",
    "FunctionReward",
    "RewardBreakdown",
    "RewardConfig",
    "RewardFunction",
    "RewardModelReward",
    "RuleConfig",
    "RuleReward",
    "RunningNormalizer",
    "SampleLike",
    "ScorerReward",
    "ShapedReward",
    "WeightedSum",
    "build_reward",
    "length_penalty",
    "load_function",
    "missing_eos_penalty",
    "rewards_at_eos",
]
