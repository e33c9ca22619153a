"""Batched sampling from a Hugging Face causal LM with ``model.generate`` (KV cache, left padding).

Every prompt is rendered and encoded by :mod:`prefalign.tokens` (the same rule as training and
scoring: a chat template when the tokenizer has one, a plain string then being one user message,
optionally after a system message) and left-padded by its generation collator. Prompts are
repeated ``n`` times and generated in batches of ``batch_size`` rows. Generation stops at the
tokenizer's EOS, the model's generation-config EOS ids and, when the vocabulary has it, the ChatML
end-of-turn token ``<|im_end|>`` (SmolLM2's EOS). A sample is ``finished`` when it emitted one of
those stop tokens before ``max_new_tokens``; its ``completion_ids`` then end with that token.

The default is pure ancestral sampling (temperature 1, ``top_k=0``, ``top_p=1``), so the samples
come from the model's own distribution, which the KL estimate in :mod:`prefalign.eval` assumes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from prefalign.models.loading import unwrap_model
from prefalign.tokens import Text, encode_prompt, left_pad

Prompt = Text
CHAT_END_TOKENS = ("<|im_end|>",)


@dataclass
class SamplingConfig:
    """How to sample completions."""

    n: int = 1
    """Samples per prompt."""
    max_new_tokens: int = 96
    """Cap on generated tokens; a sample that hits it is not ``finished``."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 disables)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 disables)."""
    batch_size: int = 32
    """Rows (prompt x sample) per ``generate`` call; see the throughput table in :mod:`prefalign.rollout`."""
    seed: int | None = 0
    """Seed for sampling (each batch reseeds from ``seed + batch index``); None uses the global RNG."""
    system_prompt: str | None = None
    """System message for chat templates (None keeps the template's default, if any)."""
    response_prefix: str = ""
    """Text appended to every rendered prompt, which the reply then continues: e.g. the
    ``<|good|>`` control token of a model from conditional training (``prefalign phf``). Its
    tokens are part of ``Sample.prompt_ids``, not of the completion."""


@dataclass
class Sample:
    """One generated completion."""

    prompt: Prompt
    """The prompt as given (string or chat messages)."""
    prompt_index: int
    """Index of the prompt in the input list."""
    sample_index: int
    """Which of the ``n`` samples of that prompt this is."""
    completion: str
    """Decoded completion without special tokens, stripped of surrounding whitespace."""
    completion_ids: list[int]
    """Generated token ids, padding removed, including the stop token when ``finished``."""
    prompt_ids: list[int]
    """Token ids of the rendered prompt (no padding): ``prompt_ids + completion_ids`` is what was scored."""
    finished: bool
    """True when the model emitted a stop token (EOS) within ``max_new_tokens``."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass
class GenerationStats:
    """Timing of one :func:`generate` call."""

    rows: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids of the tokenizer and generation config, plus the chat end token when it exists."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    vocab = tokenizer.get_vocab()
    candidates += [vocab.get(t) for t in CHAT_END_TOKENS]
    for token_id in candidates:
        if token_id is not None and token_id not in ids and token_id != tokenizer.pad_token_id:
            ids.append(int(token_id))
    if not ids and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _split_completion(row: list[int], stops: set[int]) -> tuple[list[int], bool]:
    """Cut a generated row after its first stop token (the rest is padding)."""
    for i, token in enumerate(row):
        if token in stops:
            return row[: i + 1], True
    return row, False


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    config: SamplingConfig | None = None,
    *,
    stats: GenerationStats | None = None,
    **overrides: Any,
) -> list[Sample]:
    """Sample ``config.n`` completions for every prompt; returns them prompt-major (all of prompt 0 first).

    Keyword ``overrides`` replace fields of ``config`` (e.g. ``n=4, max_new_tokens=64``). The model
    is put in eval mode (dropout off) for the call and restored afterwards; runs under
    ``torch.inference_mode``. Pass a :class:`GenerationStats` to collect tokens/s.
    """
    cfg = config or SamplingConfig()
    if overrides:
        cfg = SamplingConfig(**{**cfg.__dict__, **overrides})
    stops = stop_token_ids(model, tokenizer)
    stop_set = set(stops)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = [
        encode_prompt(tokenizer, p, system_prompt=cfg.system_prompt, suffix=cfg.response_prefix)
        for p in prompts
    ]
    jobs = [(i, s) for i in range(len(prompts)) for s in range(cfg.n)]
    device = next(unwrap_model(model).parameters()).device
    sampling: dict[str, Any] = {"do_sample": cfg.temperature > 0}
    if cfg.temperature > 0:
        sampling.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    samples: list[Sample] = []
    started = time.perf_counter()
    with _eval_mode(model), torch.inference_mode():
        for b, start in enumerate(range(0, len(jobs), cfg.batch_size)):
            chunk = jobs[start : start + cfg.batch_size]
            rows = [encoded[i] for i, _ in chunk]
            batch = left_pad(rows, pad_id)
            width = batch["input_ids"].shape[1]
            rng = torch.random.fork_rng(devices=[]) if cfg.seed is not None else contextlib.nullcontext()
            with rng:
                if cfg.seed is not None:
                    torch.manual_seed(cfg.seed + b)
                out = model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    max_new_tokens=cfg.max_new_tokens,
                    eos_token_id=stops,
                    pad_token_id=pad_id,
                    **sampling,
                )
            generated = out[:, width:].tolist()
            for (i, s), row in zip(chunk, generated, strict=True):
                ids, finished = _split_completion(row, stop_set)
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                samples.append(Sample(prompts[i], i, s, text, ids, encoded[i], finished))
                if stats is not None:
                    stats.generated_tokens += len(ids)
    if stats is not None:
        stats.rows += len(jobs)
        stats.seconds += time.perf_counter() - started
    return samples
