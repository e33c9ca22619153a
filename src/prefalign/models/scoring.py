"""THE completion scorer: per-token log-probs of completions under a causal LM.

Every recipe, evaluation and sampler gets log-probs here. Only positions that score a completion
token go through the LM head (``logits_to_keep`` from the first completion token on). When the
kept logits would exceed ``max_logit_elements`` (e.g. a 49k vocabulary over many long rows), the
head runs instead on the completion positions' final hidden states in chunks, each under
activation checkpointing, so full-vocabulary fp32 logits are never held for all positions at once
(in backward each chunk's logits are recomputed).

The reference model is the frozen copy, or the LoRA policy with its adapters off
(:func:`reference_scope`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from prefalign.models.loading import is_peft_model, reference_logits_context, unwrap_model
from prefalign.ops import masked_count, masked_sum, shift_for_causal_lm, token_logps
from prefalign.tokens import right_pad

DEFAULT_MAX_LOGIT_ELEMENTS = 2**28
"""Above this many kept logits (1 GiB in fp32) the LM head runs in checkpointed chunks."""


@dataclass
class CompletionLogps:
    """Per-token log-probs of one right-padded batch.

    ``token_logps`` (B, L): log-prob of each predicted token, 0 outside ``mask``; ``mask`` (B, L)
    bool, True on completion tokens. L covers the positions from the batch's first completion
    token on.
    """

    token_logps: torch.Tensor
    mask: torch.Tensor

    @property
    def sums(self) -> torch.Tensor:
        """(B,) summed completion log-probs, ``log pi(y | x)``."""
        return masked_sum(self.token_logps, self.mask, dim=-1)

    @property
    def counts(self) -> torch.Tensor:
        """(B,) completion token counts (float)."""
        return masked_count(self.token_logps, self.mask, dim=-1)


def _uses_plain_head(model: torch.nn.Module) -> bool:
    """False for models whose logits are not ``lm_head(hidden)`` (soft-capping or scaling)."""
    config = getattr(unwrap_model(model), "config", None)
    return not any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale"))


def _head_logps(
    head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    logits = head(hidden).float().unsqueeze(0)
    return token_logps(logits, labels.unsqueeze(0), temperature=temperature).squeeze(0)


def completion_logps(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    temperature: float = 1.0,
    max_logit_elements: int = DEFAULT_MAX_LOGIT_ELEMENTS,
    share_prompts: bool = False,
) -> CompletionLogps:
    """Log-probs of ``batch``'s completion tokens (a :func:`prefalign.tokens.right_pad` batch).

    ``temperature`` divides the logits first, so sampled tokens are scored under the distribution
    they were drawn from. Gradients flow when called with grad enabled. ``share_prompts``: rows
    with the same prompt (a group of samples) run it through the model once (see
    :func:`_shared_prompt_logps`); the result is the same, in the same layout.
    """
    input_ids, loss_mask = batch["input_ids"], batch["loss_mask"]
    length = input_ids.shape[1]
    has_completion = loss_mask.any(dim=1)
    first = int(loss_mask.float().argmax(dim=1)[has_completion].min()) if has_completion.any() else 1
    # Logits at position t score token t + 1, so the first scored completion token needs t = first - 1.
    keep = length - max(first - 1, 0)
    vocab = unwrap_model(model).get_output_embeddings().weight.shape[0]
    attention = batch["attention_mask"]
    fits = input_ids.shape[0] * keep * vocab <= max_logit_elements
    groups = _prompt_groups(batch) if share_prompts and fits and _uses_plain_head(model) else None
    if groups is not None:
        return _shared_prompt_logps(model, batch, groups, first, temperature)
    if fits or not _uses_plain_head(model):
        # An index tensor, not the int: the int slices a non-contiguous view of the hidden states,
        # which the LM head on the CPU multiplies through bmm with its weight expanded per row
        # (seconds and a weight-sized copy per row); indexing copies the rows, and the head is one mm.
        positions = torch.arange(length - keep, length, device=input_ids.device)
        logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions).logits
        offset = length - logits.shape[1]  # 0 when the model ignores logits_to_keep
        logits, labels, mask = shift_for_causal_lm(logits, input_ids[:, offset:], loss_mask[:, offset:])
        mask = mask.bool()
        return CompletionLogps(token_logps(logits.float(), labels, temperature).masked_fill(~mask, 0.0), mask)
    return _chunked_logps(model, batch, keep, temperature, max(1, max_logit_elements // vocab))


def _prompt_groups(batch: dict[str, torch.Tensor]) -> tuple[list[list[int]], torch.Tensor] | None:
    """``(prompts, group)``: the batch's distinct prompts and each row's index among them (B,);
    None when no prompt repeats, a row has no completion or an empty prompt, or rows are not
    contiguous (prompt + completion from column 0, as :func:`right_pad` lays them out)."""
    loss_mask, attention = batch["loss_mask"].bool(), batch["attention_mask"].bool()
    starts = loss_mask.float().argmax(dim=1)
    if not loss_mask.any(dim=1).all() or bool((starts == 0).any()):
        return None
    ends = starts + loss_mask.sum(dim=1)
    columns = torch.arange(loss_mask.shape[1], device=loss_mask.device)
    if not torch.equal(attention, columns[None] < ends[:, None]):
        return None
    rows = [tuple(ids[:n].tolist()) for ids, n in zip(batch["input_ids"], starts.tolist(), strict=True)]
    index: dict[tuple[int, ...], int] = {}
    group = [index.setdefault(r, len(index)) for r in rows]
    if len(index) == len(rows):
        return None
    return [list(r) for r in index], torch.tensor(group, device=loss_mask.device)


def _shared_prompt_logps(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    groups: tuple[list[list[int]], torch.Tensor],
    first: int,
    temperature: float,
) -> CompletionLogps:
    """Completion log-probs with each distinct prompt run once: the prompts (left-padded) go
    through the model, their KV cache is repeated per row (an index_select, so gradients reach
    the prompt pass), then the completions run on top of it. The work of a group of n samples
    drops from n (prompt + completion) to one prompt + n completions. Same values and layout
    as the one-pass scorer (``first``: the batch's first completion column)."""
    prompts, group = groups
    input_ids, loss_mask = batch["input_ids"], batch["loss_mask"].bool()
    device = input_ids.device
    starts, counts = loss_mask.float().argmax(dim=1), loss_mask.sum(dim=1)
    width = max(len(p) for p in prompts)
    prompt_ids = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    prompt_mask = torch.zeros_like(prompt_ids)
    for i, p in enumerate(prompts):
        prompt_ids[i, width - len(p) :] = torch.tensor(p, device=device)
        prompt_mask[i, width - len(p) :] = 1
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.cache
    cache.reorder_cache(group)  # (P, ...) -> (B, ...)
    longest = int(counts.max())
    steps = torch.arange(longest, device=device)
    columns = (starts[:, None] + steps[None]).clamp(max=input_ids.shape[1] - 1)
    completion_mask = steps[None] < counts[:, None]
    completion = input_ids.gather(1, columns).masked_fill(~completion_mask, 0)
    rest = model(
        input_ids=completion,
        attention_mask=torch.cat([prompt_mask[group], completion_mask.long()], dim=1),
        position_ids=starts[:, None] + steps[None],
        cache=cache,
        logits_to_keep=torch.arange(longest - 1, device=device),
    ).logits
    # The prompt's last logits score completion token 0; completion position k scores token k + 1.
    logits = torch.cat([out.logits[:, -1:][group], rest], dim=1).float()
    token = token_logps(logits, completion, temperature).masked_fill(~completion_mask, 0.0)
    # Back into the one-pass layout: row i's token k sits at column starts_i + k - first.
    layout = torch.zeros((input_ids.shape[0], input_ids.shape[1] - first), dtype=token.dtype, device=device)
    rows = torch.arange(input_ids.shape[0], device=device)[:, None].expand_as(columns)
    at = (rows[completion_mask], (columns - first)[completion_mask])
    layout = layout.index_put(at, token[completion_mask])
    mask = torch.zeros(layout.shape, dtype=torch.bool, device=device).index_put(at, torch.tensor(True))
    return CompletionLogps(layout, mask)


def _chunked_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: int, temperature: float, chunk: int
) -> CompletionLogps:
    input_ids, loss_mask = batch["input_ids"], batch["loss_mask"]
    # The forward goes through the (possibly DDP-wrapped) model so gradient hooks fire; its own
    # head computes one position only, ours the completion positions.
    out = model(
        input_ids=input_ids,
        attention_mask=batch["attention_mask"],
        logits_to_keep=1,
        output_hidden_states=True,
    )
    hidden = out.hidden_states[-1][:, :-1][:, -(keep - 1) :] if keep > 1 else out.hidden_states[-1][:, :0]
    labels = input_ids[:, 1:][:, -(keep - 1) :] if keep > 1 else input_ids[:, :0]
    mask = loss_mask[:, 1:][:, -(keep - 1) :].bool() if keep > 1 else loss_mask[:, :0].bool()
    head = unwrap_model(model).get_output_embeddings()
    picked_hidden, picked_labels = hidden[mask], labels[mask]
    parts = []
    for start in range(0, picked_labels.shape[0], chunk):
        h, y = picked_hidden[start : start + chunk], picked_labels[start : start + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_head_logps, head, h, y, temperature, use_reentrant=False))
        else:
            parts.append(_head_logps(head, h, y, temperature))
    flat = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    token = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device).masked_scatter(mask, flat)
    return CompletionLogps(token, mask)


@contextlib.contextmanager
def reference_scope(policy: torch.nn.Module, reference: torch.nn.Module | None) -> Iterator[torch.nn.Module]:
    """Yields the model that plays the reference, under ``no_grad``: ``reference`` itself, or,
    when it is None, the LoRA ``policy`` (unwrapped) with its adapters off."""
    if reference is not None:
        with torch.no_grad():
            yield reference
        return
    if not is_peft_model(policy):
        raise TypeError("no reference model: full fine-tuning needs a frozen copy (LoRA uses adapters off)")
    with reference_logits_context(policy) as base:
        yield base


def model_device(model: torch.nn.Module) -> torch.device:
    return next(unwrap_model(model).parameters()).device


@torch.no_grad()
def score_completions(
    model: torch.nn.Module,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    *,
    batch_size: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) summed completion log-probs and (N,) token counts of ``(prompt_ids, completion_ids)``
    rows under ``model`` as it is now, without gradients, on the model's device; results on CPU."""
    device = model_device(model)
    sums, counts = [], []
    for start in range(0, len(rows), max(1, batch_size)):
        chunk = rows[start : start + max(1, batch_size)]
        batch = right_pad([p for p, _ in chunk], [c for _, c in chunk], pad_id)
        out = completion_logps(model, {k: v.to(device) for k, v in batch.items()}, temperature=temperature)
        sums.append(out.sums.cpu())
        counts.append(out.counts.cpu())
    if not sums:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(sums), torch.cat(counts)


def reference_completion_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    *,
    batch_size: int,
) -> torch.Tensor:
    """(N,) summed completion log-probs of ``rows`` under the reference (see :func:`reference_scope`)."""
    with reference_scope(policy, reference) as model:
        return score_completions(model, rows, pad_id, batch_size=batch_size)[0]
