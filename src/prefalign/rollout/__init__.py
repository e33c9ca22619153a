"""Sampling completions from a policy: :func:`generate`, with backends behind one interface.

``native`` (default) is prefalign's decode loop (:mod:`prefalign.rollout.native`); ``hf`` wraps
``model.generate`` (:mod:`prefalign.rollout.hf`). Prompts are rendered by :mod:`prefalign.tokens`,
the same renderer training and scoring use. Throughput figures are in docs/BENCHMARKS.md.
"""

from prefalign.rollout.engine import RolloutEngine, generate
from prefalign.rollout.sampling import (
    BACKENDS,
    GenerationStats,
    Sample,
    SamplingConfig,
    sample_next,
    stop_token_ids,
)

__all__ = [
    "BACKENDS",
    "GenerationStats",
    "RolloutEngine",
    "Sample",
    "SamplingConfig",
    "generate",
    "sample_next",
    "stop_token_ids",
]
