"""prefalign's decode loop for Hugging Face causal LMs: the ``native`` rollout backend.

One prefill of the left-padded batch into a preallocated (static) KV cache, then one forward per
new token with nothing per token in Python beyond the sample and a stop check. Rows that finish
stop costing compute: once enough of the batch has finished (a quarter of it, or every row) the
finished rows are dropped from the batch and from the cache, so the forwards that follow run on
the rows still writing. Why not ``model.generate``: its per-step mask building, logits processors
and growing cache cost more than the model's own matmuls at these sizes (docs/BENCHMARKS.md has
the figures and the profile).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StaticCache

from prefalign.rollout.sampling import Decoded, SamplingConfig, cut_at_stop_string, sample_next
from prefalign.tokens import left_pad

DROP_FRACTION = 0.25
"""Drop finished rows from the batch once at least this share of it has finished."""


def decode_rows(
    model: Any,
    tokenizer: Any,
    rows: list[list[int]],
    cfg: SamplingConfig,
    stops: list[int],
    generator: torch.Generator | None,
) -> list[Decoded]:
    """Decode one batch of encoded prompts (``rows``, each a list of token ids) to completions."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    batch = left_pad(rows, pad_id)
    prompt_ids, prompt_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    size, width = prompt_ids.shape
    steps = cfg.max_new_tokens
    cache = StaticCache(config=model.config, max_cache_len=width + steps)
    mask = torch.zeros(size, width + steps, dtype=torch.long, device=device)
    mask[:, :width] = prompt_mask
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=prompt_ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        # An index tensor, not the int 1: the int slices a non-contiguous (B, 1, d) view, which a
        # bf16 LM head on the CPU multiplies through bmm with the weight expanded B times (seconds).
        logits_to_keep=torch.tensor([width - 1], device=device),
    ).logits[:, -1]
    position = positions[:, -1]
    tokens = torch.full((size, steps), pad_id, dtype=torch.long)
    logps = torch.zeros(size, steps)
    lengths = torch.zeros(size, dtype=torch.long)
    reasons = ["length"] * size
    stop_ids = torch.tensor(stops, device=device)
    order = torch.arange(size)  # original row of each row in the (shrinking) batch
    live = torch.ones(size, dtype=torch.bool)  # rows of the batch still writing
    for t in range(steps):
        if t < cfg.min_new_tokens:
            logits[:, stop_ids] = float("-inf")
        token, logp = sample_next(logits, cfg, generator)
        token, logp = token.cpu(), logp.cpu()
        tokens[order[live], t] = token[live]
        logps[order[live], t] = logp[live]
        lengths[order[live]] = t + 1
        ended = live & torch.isin(token, stop_ids.cpu())
        for row in ended.nonzero()[:, 0].tolist():
            reasons[int(order[row])] = "stop_token"
        if cfg.stop:
            for row in (live & ~ended).nonzero()[:, 0].tolist():
                if _ends_in_stop_string(tokenizer, tokens[order[row], : t + 1], cfg.stop):
                    reasons[int(order[row])] = "stop_string"
                    ended[row] = True
        live &= ~ended
        if t == steps - 1 or not live.any():
            break
        if (~live).sum() >= max(1, DROP_FRACTION * len(live)):
            keep = live.nonzero()[:, 0]
            _keep_rows(cache, keep.to(device))
            mask, position, token, order = (
                mask[keep.to(device)],
                position[keep.to(device)],
                token[keep],
                order[keep],
            )
            live = live[keep]
        mask[:, width + t] = 1
        position = position + 1
        logits = model(
            input_ids=token[:, None].to(device),
            attention_mask=mask,
            position_ids=position[:, None],
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
    return [
        Decoded(tokens[i, : lengths[i]].tolist(), logps[i, : lengths[i]].tolist(), reasons[i])
        for i in range(size)
    ]


def _ends_in_stop_string(tokenizer: Any, ids: torch.Tensor, stops: list[str]) -> bool:
    """Whether the newest token completed a stop string (earlier tokens were checked before)."""
    tail = max(len(s) for s in stops) + 1  # every token is at least one character
    return cut_at_stop_string(tokenizer.decode(ids[-tail:].tolist(), skip_special_tokens=True), stops)[1]


def _keep_rows(cache: StaticCache, rows: torch.Tensor) -> None:
    """Keep only ``rows`` of the batch in every layer of the cache (their keys and values)."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)
            layer.batch_size = len(rows)
