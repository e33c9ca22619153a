"""Sampling completions from a policy: :func:`generate` (HF ``model.generate``, batched, KV cache).

Throughput of SmolLM2-135M-Instruct (fp32, torch 2.13 CPU, 2 cores), 48 new tokens per row with
EOS suppressed, prompts of ~45 tokens:

=====  =====  =====  =====  =====  =====  =====
batch  1      4      8      16     32     64     96
tok/s  28     66     100    155    200    235    252
=====  =====  =====  =====  =====  =====  =====

With EOS allowed a batch runs until its longest row stops, so rows that finished early still
cost steps; at batch 32 the demo's real rate is ~115 tok/s (400 samples of ~40 tokens in 141 s).
Batch 64 would save only ~10% more there, so :class:`SamplingConfig` defaults to 32.
"""

from prefalign.rollout.hf import (
    GenerationStats,
    Sample,
    SamplingConfig,
    generate,
    prompt_token_ids,
    render_prompt,
    stop_token_ids,
)

__all__ = [
    "GenerationStats",
    "Sample",
    "SamplingConfig",
    "generate",
    "prompt_token_ids",
    "render_prompt",
    "stop_token_ids",
]
