"""What every rollout backend shares: the sampling settings, a sample, stop rules, the token sampler.

A sample's ``logprobs`` are the log-probabilities of its tokens under the model's distribution at
the sampling temperature, ``log_softmax(logits / T)`` (raw logits for greedy decoding), before
top-k / top-p truncation: the same quantity :func:`prefalign.models.scoring.completion_logps`
computes at that temperature. They are diagnostics (e.g. how far an engine drifts from the
trainer); the log-probs used for training always come from the training model's scorer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import torch

from prefalign.config import AtLeast, InRange, OneOf
from prefalign.tokens import Text

Prompt = Text
CHAT_END_TOKENS = ("<|im_end|>",)
BACKENDS = ("native", "hf")
STOP_REASONS = ("stop_token", "stop_string", "length")


@dataclass
class SamplingConfig:
    """How to sample completions."""

    n: Annotated[int, AtLeast(1)] = 1
    """Samples per prompt."""
    max_new_tokens: Annotated[int, AtLeast(1)] = 96
    """Cap on generated tokens; a sample that hits it is not ``finished``."""
    min_new_tokens: Annotated[int, AtLeast(0)] = 0
    """Stop tokens are banned before this many tokens (benchmarks set it to ``max_new_tokens``)."""
    temperature: Annotated[float, AtLeast(0)] = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: Annotated[float, InRange(0, 1, lo_open=True)] = 1.0
    """Nucleus sampling mass (1 disables)."""
    top_k: Annotated[int, AtLeast(0)] = 0
    """Keep only the k most likely tokens (0 disables)."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion; the completion's text stops before the string, its tokens
    run through the token that completed it."""
    batch_size: Annotated[int, AtLeast(1)] = 64
    """Rows (prompt x sample) decoded together; throughput figures are in docs/BENCHMARKS.md."""
    seed: Annotated[int, AtLeast(0)] | None = 0
    """Seed for sampling (batch b draws from a generator seeded ``seed + b``); None uses the global RNG."""
    backend: Annotated[str, OneOf(*BACKENDS)] = "native"
    """'native' (prefalign's decode loop: static KV cache, finished rows dropped) or 'hf'
    (``model.generate``)."""
    dtype: Annotated[str, OneOf("auto", "float32", "bfloat16")] = "auto"
    """Decoding precision: 'auto' is bfloat16 on CUDA and on CPUs with native bf16 matmuls
    (AVX512-BF16, AMX), else the model's own; a different dtype decodes with a copy of the model
    (:class:`prefalign.rollout.RolloutEngine`)."""
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
    """Decoded completion without special tokens, cut before a stop string, stripped of
    surrounding whitespace."""
    completion_ids: list[int]
    """Generated token ids, padding removed, including the stop token when ``finished``."""
    prompt_ids: list[int]
    """Token ids of the rendered prompt (no padding): ``prompt_ids + completion_ids`` is what was scored."""
    finished: bool
    """True when the model emitted a stop token or a stop string within ``max_new_tokens``."""
    logprobs: list[float] = field(default_factory=list)
    """Per completion token: log-probability at the sampling temperature (module docstring)."""
    stop_reason: str = "length"
    """'stop_token', 'stop_string' or 'length' (hit ``max_new_tokens``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass
class GenerationStats:
    """Timing of one or more :func:`prefalign.rollout.generate` calls."""

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


def sample_next(
    logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row. ``logits`` (B, V) -> (tokens (B,), log-probs (B,) at temperature)."""
    logits = logits.float()
    if cfg.temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0]
    if cfg.temperature != 1:
        logits = logits / cfg.temperature
    probs = torch.softmax(logits, -1)
    weights = probs
    if cfg.top_k > 0 or cfg.top_p < 1:
        weights = _truncate(torch.log_softmax(logits, -1), cfg.top_k, cfg.top_p).exp()
    tokens = draw(weights, generator)
    return tokens, probs.gather(-1, tokens[:, None])[:, 0].log()


BLOCK = 256


def draw(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of (B, V) non-negative ``weights``, with probability proportional to them.

    Inverse-CDF sampling with one uniform per row, in two levels (blocks of 256, then within the
    chosen block) so that no cumulative sum runs over the whole vocabulary: on a CPU that scan
    and ``torch.multinomial`` (an exponential draw per entry) each cost more than the softmax.
    """
    rows, width = weights.shape
    if width % BLOCK:
        weights = torch.nn.functional.pad(weights, (0, BLOCK - width % BLOCK))
    blocks = weights.view(rows, -1, BLOCK)
    block_mass = blocks.sum(-1)  # (B, nb)
    cdf = block_mass.cumsum(-1)
    u = torch.rand(rows, 1, generator=generator, device=weights.device) * cdf[:, -1:]
    block = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[1] - 1)  # (B, 1)
    before = (cdf - block_mass).gather(-1, block)
    inner = blocks[torch.arange(rows, device=weights.device), block[:, 0]].cumsum(-1) + before
    # Round-off can leave u just past the block's last partial sum: stay on its last positive entry.
    offset = torch.searchsorted(inner, u, right=True).clamp(max=BLOCK - 1)
    chosen = block[:, 0] * BLOCK + offset[:, 0]
    return chosen.clamp(max=width - 1)


def _truncate(logps: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus truncation of (B, V) log-probs (dropped tokens get -inf)."""
    if 0 < top_k < logps.shape[-1]:
        kth = logps.topk(top_k, -1).values[:, -1:]
        logps = logps.masked_fill(logps < kth, float("-inf"))
    if top_p < 1:
        sorted_logps, order = logps.sort(-1, descending=True)
        mass_before = sorted_logps.exp().cumsum(-1) - sorted_logps.exp()
        drop = torch.zeros_like(logps, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)
        logps = logps.masked_fill(drop, float("-inf"))
    return logps


def cut_at_stop_string(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def finish_sample(
    tokenizer: Any,
    prompt: Prompt,
    index: tuple[int, int],
    prompt_ids: list[int],
    decoded: Decoded,
    stops: list[str],
) -> Sample:
    """A :class:`Sample` from one decoded row: text decoded, cut at a stop string, stripped."""
    text = tokenizer.decode(decoded.ids, skip_special_tokens=True)
    text, _ = cut_at_stop_string(text, stops)
    finished = decoded.stop_reason != "length"
    i, s = index
    return Sample(
        prompt, i, s, text.strip(), decoded.ids, prompt_ids, finished, decoded.logprobs, decoded.stop_reason
    )


@dataclass
class Decoded:
    """A backend's raw output for one row: token ids (through the stop token), their log-probs,
    and why decoding stopped."""

    ids: list[int]
    logprobs: list[float]
    stop_reason: str
