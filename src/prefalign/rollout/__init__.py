"""Sampling completions from a policy: :func:`generate` (HF ``model.generate``, batched, KV cache).

Prompts are rendered by :mod:`prefalign.tokens`, the same renderer training and scoring use.
Throughput figures are in docs/BENCHMARKS.md.
"""

from prefalign.rollout.hf import GenerationStats, Sample, SamplingConfig, generate, stop_token_ids

__all__ = ["GenerationStats", "Sample", "SamplingConfig", "generate", "stop_token_ids"]
