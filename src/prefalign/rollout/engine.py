"""``generate``: prompts in; token ids, texts, per-token log-probs and stop reasons out.

Prompts are rendered and encoded by :mod:`prefalign.tokens` (the rule training and scoring use:
a chat template when the tokenizer has one, a plain string then being one user message),
repeated ``n`` times and decoded in batches of ``batch_size`` rows by the configured backend.
Generation stops at the tokenizer's EOS, the model's generation-config EOS ids and, when the
vocabulary has it, the ChatML end-of-turn token ``<|im_end|>`` (SmolLM2's EOS), or at a stop
string. A sample is ``finished`` when it stopped before ``max_new_tokens``.

The default is pure ancestral sampling (temperature 1, ``top_k=0``, ``top_p=1``), so the samples
come from the model's own distribution, which the KL estimate in :mod:`prefalign.eval` assumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from prefalign.models.loading import unwrap_model
from prefalign.rollout.hf import decode_rows_hf
from prefalign.rollout.native import decode_rows
from prefalign.rollout.sampling import (
    Decoded,
    GenerationStats,
    Prompt,
    Sample,
    SamplingConfig,
    finish_sample,
    stop_token_ids,
)
from prefalign.tokens import encode_prompt


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    config: SamplingConfig | None = None,
    *,
    stats: GenerationStats | None = None,
    on_batch: Callable[[list[Sample]], None] | None = None,
    **overrides: Any,
) -> list[Sample]:
    """Sample ``config.n`` completions for every prompt; returns them prompt-major (all of prompt 0 first).

    Keyword ``overrides`` replace fields of ``config`` (e.g. ``n=4, max_new_tokens=64``). The model
    is put in eval mode (dropout off) for the call and restored afterwards; runs under
    ``torch.inference_mode``. Pass a :class:`GenerationStats` to collect tokens/s, and ``on_batch``
    to see each batch's samples as soon as they are done (progress, streaming to a file).
    """
    cfg = dataclasses.replace(config or SamplingConfig(), **overrides)
    model = unwrap_model(model)
    stops = stop_token_ids(model, tokenizer)
    encoded = [
        encode_prompt(tokenizer, p, system_prompt=cfg.system_prompt, suffix=cfg.response_prefix)
        for p in prompts
    ]
    jobs = [(i, s) for i in range(len(prompts)) for s in range(cfg.n)]
    samples: list[Sample] = []
    started = time.perf_counter()
    with _eval_mode(model), torch.inference_mode():
        for b, start in enumerate(range(0, len(jobs), cfg.batch_size)):
            chunk = jobs[start : start + cfg.batch_size]
            seed = None if cfg.seed is None else cfg.seed + b
            decoded = _decode(model, tokenizer, [encoded[i] for i, _ in chunk], cfg, stops, seed)
            done = [
                finish_sample(tokenizer, prompts[i], (i, s), encoded[i], row, cfg.stop)
                for (i, s), row in zip(chunk, decoded, strict=True)
            ]
            samples += done
            if on_batch is not None:
                on_batch(done)
    if stats is not None:
        stats.rows += len(jobs)
        stats.generated_tokens += sum(s.num_tokens for s in samples)
        stats.seconds += time.perf_counter() - started
    return samples


def _decode(
    model: Any, tokenizer: Any, rows: list[list[int]], cfg: SamplingConfig, stops: list[int], seed: int | None
) -> list[Decoded]:
    if cfg.backend == "hf":
        return decode_rows_hf(model, tokenizer, rows, cfg, stops, seed)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return decode_rows(model, tokenizer, rows, cfg, stops, generator)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
