"""``generate`` and :class:`RolloutEngine`: prompts in; token ids, texts, per-token log-probs and
stop reasons out.

Prompts are rendered and encoded by :mod:`prefalign.tokens` (the rule training and scoring use:
a chat template when the tokenizer has one, a plain string then being one user message),
repeated ``n`` times and decoded in batches of ``batch_size`` rows by the configured backend.
Generation stops at the tokenizer's EOS, the model's generation-config EOS ids and, when the
vocabulary has it, the ChatML end-of-turn token ``<|im_end|>`` (SmolLM2's EOS), or at a stop
string. A sample is ``finished`` when it stopped before ``max_new_tokens``.

The engine decodes with a copy of the policy in ``SamplingConfig.dtype`` when that differs from
the policy's own (bf16 on CPUs with native bf16 matmuls and on CUDA: the matmuls that dominate
decoding run several times faster). For a LoRA policy the copy is the plain model with the
adapters merged in, so decoding pays no adapter matmuls (on this CPU they cost a third of the
decoding time), and on the CPU its bf16 linears hold their weights pre-packed for oneDNN
(:mod:`prefalign.rollout.packed`). :meth:`RolloutEngine.sync` refreshes it after an update: the
merged weights of the LoRA linears, or the trainable weights of any other policy. Training
never uses the engine's log-probs: they come from the training model's scorer.

The default is pure ancestral sampling (temperature 1, ``top_k=0``, ``top_p=1``), so the samples
come from the model's own distribution, which the KL estimate in :mod:`prefalign.eval` assumes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from prefalign.models.loading import mergeable_lora_layers, merged_copy, merged_weight, unwrap_model
from prefalign.rollout.hf import decode_rows_hf
from prefalign.rollout.native import decode_rows
from prefalign.rollout.packed import PackedLinear, pack_linears, packing_available
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
from prefalign.utils import cpu_native_bf16

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def decode_dtype(cfg: SamplingConfig, model: torch.nn.Module) -> torch.dtype:
    """The dtype decoding runs in: ``cfg.dtype``, where 'auto' is bf16 on CUDA (when supported)
    and on CPUs with native bf16 matmuls (AVX512-BF16 or AMX), the model's own dtype elsewhere."""
    if cfg.dtype != "auto":
        return DTYPES[cfg.dtype]
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else next(model.parameters()).dtype
    if device.type == "cpu" and cpu_native_bf16():
        return torch.bfloat16
    return next(model.parameters()).dtype


def _sdpa_attention(model: Any) -> None:
    """Decode with SDPA attention (on the CPU ~20% faster per token than eager, which a policy may
    train with in bf16), where the model supports it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "_attn_implementation", "sdpa") == "sdpa":
        return
    with contextlib.suppress(ValueError, ImportError):
        base.set_attn_implementation("sdpa")


class RolloutEngine:
    """Samples from a policy; keeps a decoding copy in the decode dtype when it differs."""

    def __init__(self, model: Any, tokenizer: Any, config: SamplingConfig | None = None) -> None:
        self.policy = unwrap_model(model)
        self.tokenizer = tokenizer
        self.config = config or SamplingConfig()
        dtype = decode_dtype(self.config, self.policy)
        own = next(self.policy.parameters()).dtype
        self.decoder = self.policy
        self._merged: dict[str, Any] = {}
        if dtype != own and mergeable_lora_layers(self.policy) is not None:
            self.decoder, self._merged = merged_copy(self.policy, dtype)
            if packing_available(self.decoder):
                pack_linears(self.decoder)
        elif dtype != own:
            self.decoder = copy.deepcopy(self.policy).to(dtype).requires_grad_(False)
        if self.holds_copy:
            _sdpa_attention(self.decoder)
        self.stops = stop_token_ids(self.policy, tokenizer)

    @property
    def holds_copy(self) -> bool:
        return self.decoder is not self.policy

    @torch.no_grad()
    def sync(self) -> None:
        """Bring the decoding copy up to the policy's weights (no-op without a copy): merged LoRA
        weights, or else the trainable weights themselves."""
        if not self.holds_copy:
            return
        if self._merged:
            for name, layer in self._merged.items():
                target = self.decoder.get_submodule(name)
                if isinstance(target, PackedLinear):
                    target.set_weight(merged_weight(layer))
                else:
                    target.weight.copy_(merged_weight(layer))
            return
        theirs = dict(self.decoder.named_parameters())
        for name, param in self.policy.named_parameters():
            if param.requires_grad:
                theirs[name].copy_(param)

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        stats: GenerationStats | None = None,
        on_batch: Callable[[list[Sample]], None] | None = None,
        **overrides: Any,
    ) -> list[Sample]:
        """``n`` samples per prompt, prompt-major; ``overrides`` replace config fields for this call."""
        cfg = dataclasses.replace(self.config, **overrides)
        encoded = [
            encode_prompt(self.tokenizer, p, system_prompt=cfg.system_prompt, suffix=cfg.response_prefix)
            for p in prompts
        ]
        jobs = [(i, s) for i in range(len(prompts)) for s in range(cfg.n)]
        samples: list[Sample] = []
        started = time.perf_counter()
        with _eval_mode(self.decoder), torch.inference_mode():
            for b, start in enumerate(range(0, len(jobs), cfg.batch_size)):
                chunk = jobs[start : start + cfg.batch_size]
                seed = None if cfg.seed is None else cfg.seed + b
                decoded = self._decode([encoded[i] for i, _ in chunk], cfg, seed)
                done = [
                    finish_sample(self.tokenizer, prompts[i], (i, s), encoded[i], row, cfg.stop)
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

    def _decode(self, rows: list[list[int]], cfg: SamplingConfig, seed: int | None) -> list[Decoded]:
        if cfg.backend == "hf":
            return decode_rows_hf(self.decoder, self.tokenizer, rows, cfg, self.stops, seed)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=next(self.decoder.parameters()).device).manual_seed(seed)
        return decode_rows(self.decoder, self.tokenizer, rows, cfg, self.stops, generator)


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
    to see each batch's samples as soon as they are done (progress, streaming to a file). A loop
    that samples after every update keeps a :class:`RolloutEngine` instead (no copy per call).
    """
    cfg = dataclasses.replace(config or SamplingConfig(), **overrides)
    return RolloutEngine(model, tokenizer, cfg).generate(prompts, stats=stats, on_batch=on_batch)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
