"""``build_reward(cfg)``: the reward function a :class:`~prefalign.rewards.config.RewardConfig` describes.

One builder per component in :data:`BUILDERS` (a plain dict, as the house's variants are); the
configured ones are summed with their weights and the sum is shaped (:mod:`prefalign.rewards.shaping`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prefalign.feedback.scorers import ScorerConfig, build_scorer
from prefalign.rewards.base import RewardFunction
from prefalign.rewards.config import RewardConfig
from prefalign.rewards.function import FunctionReward
from prefalign.rewards.model import RewardModelReward
from prefalign.rewards.normalize import RunningNormalizer
from prefalign.rewards.rules import RuleReward, ScorerReward
from prefalign.rewards.shaping import ShapedReward, WeightedSum

Device = str | torch.device | None


def _model(cfg: RewardConfig, device: Device) -> RewardFunction:
    return RewardModelReward.load(
        cfg.model,
        device=device,
        uncertainty_penalty=cfg.uncertainty_penalty,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        max_prompt_length=cfg.max_prompt_length,
    )


def _scorer(cfg: RewardConfig, device: Device) -> RewardFunction:
    scorer = build_scorer(ScorerConfig(name=cfg.scorer, patterns=list(cfg.scorer_patterns)))
    assert scorer is not None  # 'precomputed' is not among RewardConfig's scorer choices
    return ScorerReward(scorer, name="scorer")


BUILDERS: dict[str, Callable[[RewardConfig, Device], RewardFunction]] = {
    "model": _model,
    "function": lambda cfg, device: FunctionReward.load(cfg.function),
    "rules": lambda cfg, device: RuleReward([(r.pattern, r.weight) for r in cfg.rules]),
    "scorer": _scorer,
}
"""Component name -> builder; keys are :data:`prefalign.rewards.config.COMPONENTS`."""


def build_reward(
    cfg: RewardConfig,
    *,
    device: Device = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ShapedReward:
    """The reward ``cfg`` describes: reward models loaded (frozen, eval mode, on ``device``), the
    function imported, every configured component summed with its weight, then shaped.

    ``gather`` (e.g. ``accelerator.gather``) lets every process update the running normaliser with
    all processes' rewards. Import or load failures are one-line ConfigErrors naming the key.
    Save ``reward.state_dict()`` with each checkpoint and load it on resume when normalising.
    """
    terms = [(BUILDERS[name](cfg, device), cfg.weight(name)) for name in cfg.components()]
    normalizer = None
    if cfg.normalize != "none":
        normalizer = RunningNormalizer(shift_mean=cfg.normalize == "standardize")
    return ShapedReward(
        WeightedSum(terms),
        length_penalty=cfg.length_penalty,
        missing_eos_penalty=cfg.missing_eos_penalty,
        normalizer=normalizer,
        gather=gather,
    )
