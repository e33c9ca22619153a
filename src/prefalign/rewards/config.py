"""The reward section of an RL recipe's config (``reward:`` in YAML, ``reward.*`` overrides).

Every value is checked when the config is read, before any model loads: model names and folders,
regular expressions, the function spec's form and file, choices, ranges, weights naming
configured components, and that at least one component is configured. Importing the function
and loading the reward models happen in :func:`prefalign.rewards.build_reward`.

Example::

    reward:
      model: [runs/rm]            # or [runs/rm-a, runs/rm-b] for an ensemble of two
      uncertainty_penalty: 0.5
      rules: [{pattern: "(?i)as an ai", weight: -1.0}]
      weights: {model: 1.0, rules: 0.5}
      missing_eos_penalty: 1.0
      normalize: scale
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Annotated, Any

from prefalign.config import AtLeast, Check, ConfigError, Each, ModelName, OneOf, Regexes
from prefalign.feedback.scorers import DEFAULT_BLOCKLIST
from prefalign.rewards.function import spec_problem

COMPONENTS = ("model", "function", "rules", "scorer")
"""Reward components, in the order they are summed; also the keys of ``weights``."""
SCORER_CHOICES = ("none", "blocklist", "vader")
NORMALIZE_CHOICES = ("none", "scale", "standardize")


class FunctionSpec(Check):
    """``package.module:function`` or ``path/to/file.py:function`` (empty: none); nothing is imported."""

    def problem(self, value: Any) -> str | None:
        return spec_problem(value) if value else None


@dataclasses.dataclass
class RuleConfig:
    """One regular-expression rule: ``weight`` is added when ``pattern`` matches the completion."""

    pattern: str = ""
    """A Python regular expression searched anywhere in the completion (``(?i)`` for any case)."""
    weight: float = 1.0
    """Added to the reward once when the pattern matches (negative to penalise)."""


@dataclasses.dataclass
class RewardConfig:
    """Which rewards score each rollout, how they are summed, shaped and normalised.

    ``total = normalize(sum_c weights[c] * r_c - length_penalty * num_tokens
    - missing_eos_penalty * [not finished])`` over the configured components c.
    """

    model: Annotated[list[str], Each(ModelName())] = dataclasses.field(default_factory=list)
    """Reward models: saved ``prefalign reward`` folders or built-in names; several form an
    ensemble (they must share a tokenizer) whose heads are pooled. Empty: no reward model."""
    uncertainty_penalty: Annotated[float, AtLeast(0)] = 0.0
    """k in ``mean - k * std`` over the ensemble's heads (needs at least two heads in all)."""
    function: Annotated[str, FunctionSpec()] = ""
    """A Python reward ``package.module:function`` or ``path/to/file.py:function`` called as
    ``fn(prompts, completions)`` and returning one number per sample. Empty: none."""
    rules: list[RuleConfig] = dataclasses.field(default_factory=list)
    """Regular-expression rules ``{pattern, weight}``; the component is the sum of the weights of
    the rules matching the completion."""
    scorer: Annotated[str, OneOf(*SCORER_CHOICES)] = "none"
    """A text scorer of ``prefalign.feedback.scorers`` on the completion: 'vader' (sentiment in
    [-1, 1]), 'blocklist' (-1 when a ``scorer_patterns`` entry matches, else 0) or 'none'."""
    scorer_patterns: Annotated[list[str], Regexes()] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_BLOCKLIST)
    )
    """Patterns of the 'blocklist' scorer (matched case-insensitively)."""
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    """Weight of each configured component in the sum (``model``, ``function``, ``rules``,
    ``scorer``); a component not listed has weight 1."""
    length_penalty: Annotated[float, AtLeast(0)] = 0.0
    """Subtracted per completion token (EOS included): ``reward -= length_penalty * num_tokens``."""
    missing_eos_penalty: Annotated[float, AtLeast(0)] = 0.0
    """Subtracted from completions that hit the token cap without a stop token or string (as TRL's
    ``missing_eos_penalty``, a non-negative amount)."""
    normalize: Annotated[str, OneOf(*NORMALIZE_CHOICES)] = "none"
    """Running normalisation of the shaped reward over all batches so far: 'standardize'
    ((r - mean) / std), 'scale' (r / std, the sign kept) or 'none'."""
    batch_size: Annotated[int, AtLeast(1)] = 32
    """Texts per reward-model forward pass."""
    max_length: Annotated[int, AtLeast(1)] = 512
    """Tokens of prompt + completion the reward model reads (as ``data.max_length`` in training)."""
    max_prompt_length: Annotated[int, AtLeast(0)] = 256
    """Prompt tokens kept (its end), as ``data.max_prompt_length`` in reward training; 0: up to
    ``max_length - 1`` (one completion token is always kept)."""

    def components(self) -> list[str]:
        """Names of the configured components, in :data:`COMPONENTS` order."""
        on = {
            "model": bool(self.model),
            "function": bool(self.function),
            "rules": bool(self.rules),
            "scorer": self.scorer != "none",
        }
        return [name for name in COMPONENTS if on[name]]

    def validate(self) -> None:
        """Cross-field checks; each message starts with the field it is about."""
        configured = self.components()
        if not configured:
            raise ConfigError("no reward configured: set at least one of model, function, rules or scorer")
        for index, rule in enumerate(self.rules):
            try:
                re.compile(rule.pattern)
            except re.error as err:
                raise ConfigError(
                    f"rules: entry {index}: not a valid regular expression {rule.pattern!r}: {err}"
                ) from None
            if not rule.pattern:
                raise ConfigError(f"rules: entry {index}: pattern is empty (it would match every completion)")
        for key, weight in self.weights.items():
            if key not in configured:
                raise ConfigError(
                    f"weights: {key!r} is not a configured component; configured: {', '.join(configured)}"
                )
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ConfigError(f"weights: {key!r} must be a finite number, got {weight!r}")
        if self.uncertainty_penalty > 0 and not self.model:
            raise ConfigError("uncertainty_penalty: set only with a reward model (model is empty)")

    def weight(self, component: str) -> float:
        return float(self.weights.get(component, 1.0))
