"""Automatic segment scorers for pretraining with human feedback (``prefalign phf``).

A scorer maps texts to rewards, higher is better: ``scorer(["a", "b"]) -> [0.0, -1.0]``. Korbak et
al. 2023 (arXiv 2302.08582, section 3) score segments with classifiers or rules standing in for
human judgement (Detoxify toxicity, scrubadub PII counts, pycodestyle PEP8 violations); here the
built-in scorers run offline:

* ``blocklist``: -1 when the text matches any of the configured regular expressions
  (case-insensitive), else 0. A cheap, exact "undesirable content" detector, used by the tests.
* ``vader``: the VADER sentiment compound score in [-1, 1] (package ``vaderSentiment``, a
  dependency of prefalign); negative text counts as undesirable with the default threshold 0.
* ``precomputed``: no scorer; every segment of the corpus must carry its own score, and
  generations cannot be scored.

A segment is *good* when its score is at least the recipe's threshold (default 0, so the
blocklist flags matches and VADER flags negative sentiment). Add a scorer by adding an entry to
:data:`SCORERS`: a function from :class:`ScorerConfig` to a scorer (or None).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Annotated

from prefalign.config import OneOf, Regexes

Scorer = Callable[[Sequence[str]], list[float]]

DEFAULT_BLOCKLIST = [r"\bstupid\b", r"\bidiots?\b", r"\bhate\b", r"\bdamn\b", r"\bshut up\b"]


@dataclasses.dataclass
class ScorerConfig:
    """Which automatic scorer rates segments and generations."""

    name: Annotated[str, OneOf(*SCORERS)] = "blocklist"
    """'blocklist' (-1 if a pattern matches, else 0), 'vader' (sentiment compound in [-1, 1]) or
    'precomputed' (scores come with the corpus; generations are not scored)."""
    patterns: Annotated[list[str], Regexes()] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_BLOCKLIST)
    )
    """Regular expressions for 'blocklist', matched case-insensitively anywhere in the text."""


def blocklist_scorer(patterns: Sequence[str]) -> Scorer:
    """-1.0 for texts matching any pattern (case-insensitive ``re.search``), 0.0 otherwise."""
    if not patterns:
        raise ValueError("scorer.patterns is empty: the blocklist scorer needs at least one pattern")
    try:
        regex = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error as err:
        raise ValueError(f"scorer.patterns: not a valid regular expression: {err}") from err

    def score(texts: Sequence[str]) -> list[float]:
        return [-1.0 if regex.search(t) else 0.0 for t in texts]

    return score


def vader_scorer() -> Scorer:
    """VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ModuleNotFoundError(
            "scorer 'vader' needs the package vaderSentiment (pip install vaderSentiment)"
        ) from err
    analyzer = SentimentIntensityAnalyzer()

    def score(texts: Sequence[str]) -> list[float]:
        return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]

    return score


SCORERS: dict[str, Callable[[ScorerConfig], Scorer | None]] = {
    "blocklist": lambda cfg: blocklist_scorer(cfg.patterns),
    "vader": lambda cfg: vader_scorer(),
    "precomputed": lambda cfg: None,
}


def build_scorer(cfg: ScorerConfig) -> Scorer | None:
    """The scorer ``cfg`` names (None for 'precomputed')."""
    if cfg.name not in SCORERS:
        raise ValueError(f"scorer.name: unknown scorer {cfg.name!r}; choose one of {sorted(SCORERS)}")
    return SCORERS[cfg.name](cfg)
