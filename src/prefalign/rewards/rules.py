"""Rewards read off the completion's text: regular-expression rules and the feedback scorers.

* :class:`RuleReward`: ``reward = sum of weight over the rules whose pattern matches`` the
  completion (``re.search``, case-sensitive unless the pattern says ``(?i)``). Each rule counts
  once, however often it matches, so a reward cannot be farmed by repeating a phrase.
* :class:`ScorerReward`: a torch-free text scorer of :mod:`prefalign.feedback.scorers`
  (``vader`` sentiment, ``blocklist``) applied to the completions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from prefalign.feedback.scorers import Scorer
from prefalign.rewards.base import Reward, RewardBreakdown, SampleLike, as_rewards, single


class RuleReward(Reward):
    """Sum of the weights of the rules that match each completion; ``score`` has the one part ``name``.

    Args:
        rules: (pattern, weight) pairs; patterns must compile (a ``ValueError`` names the bad one).
    """

    def __init__(self, rules: Sequence[tuple[str, float]], *, name: str = "rules") -> None:
        self.name = name
        compiled = []
        for index, (pattern, weight) in enumerate(rules):
            try:
                compiled.append((re.compile(pattern), float(weight)))
            except re.error as err:
                raise ValueError(
                    f"rules[{index}].pattern: not a valid regular expression {pattern!r}: {err}"
                ) from None
        self.rules = compiled

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        values = torch.tensor(
            [sum(w for regex, w in self.rules if regex.search(s.completion)) for s in samples],
            dtype=torch.float32,
        )
        return single(self.name, values)


class ScorerReward(Reward):
    """A text scorer (``texts -> list of floats``) applied to the completions."""

    def __init__(self, scorer: Scorer, *, name: str = "scorer") -> None:
        self.scorer = scorer
        self.name = name

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        values = as_rewards(self.scorer([s.completion for s in samples]), len(samples), self.name)
        return single(self.name, values)
