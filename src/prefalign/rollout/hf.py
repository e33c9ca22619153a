"""The ``hf`` rollout backend: ``model.generate`` (KV cache, left padding), for comparison and for
models the native loop does not handle.

Sampling uses the global RNG, seeded per batch inside ``torch.random.fork_rng`` (the caller's RNG
is left as it was). Log-probs at the sampling temperature are recorded by a logits processor that
sees each step's raw logits; it keeps one step's worth, so it costs (B, V) memory, not (B, T, V).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from prefalign.rollout.sampling import Decoded, SamplingConfig, cut_at_stop_string
from prefalign.tokens import left_pad


class _RecordLogprobs(LogitsProcessor):
    """Log-prob at temperature T of each sampled token, read one step later from ``input_ids``."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature if temperature > 0 else 1.0
        self.previous: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.take(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float() / self.temperature, -1)
        return scores

    def take(self, tokens: torch.Tensor) -> None:
        if self.previous is not None:
            self.logprobs.append(self.previous.gather(-1, tokens[:, None])[:, 0].cpu())
            self.previous = None


def decode_rows_hf(
    model: Any, tokenizer: Any, rows: list[list[int]], cfg: SamplingConfig, stops: list[int], seed: int | None
) -> list[Decoded]:
    """Decode one batch of encoded prompts with ``model.generate``."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    batch = left_pad(rows, pad_id)
    width = batch["input_ids"].shape[1]
    options: dict[str, Any] = {"do_sample": cfg.temperature > 0}
    if cfg.temperature > 0:
        options.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    if cfg.stop:
        options.update(stop_strings=cfg.stop, tokenizer=tokenizer)
    recorder = _RecordLogprobs(cfg.temperature)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList([recorder]),
            **options,
        )
    generated = out[:, width:].cpu()
    recorder.take(generated[:, -1].to(device))
    logps = torch.stack(recorder.logprobs, 1) if recorder.logprobs else torch.zeros(len(rows), 0)
    return [
        _cut_row(tokenizer, row.tolist(), logps[i].tolist(), set(stops), cfg)
        for i, row in enumerate(generated)
    ]


def _cut_row(
    tokenizer: Any, row: list[int], logps: list[float], stops: set[int], cfg: SamplingConfig
) -> Decoded:
    """Cut a generated row after its stop token or the token that completed a stop string."""
    for i, token in enumerate(row):
        if token in stops:
            return Decoded(row[: i + 1], logps[: i + 1], "stop_token")
        if (
            cfg.stop
            and cut_at_stop_string(tokenizer.decode(row[: i + 1], skip_special_tokens=True), cfg.stop)[1]
        ):
            return Decoded(row[: i + 1], logps[: i + 1], "stop_string")
    return Decoded(row, logps, "length")
