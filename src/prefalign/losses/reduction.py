"""Reduce per-example or per-token losses to the scalar that ``backward`` is called on.

This is the one place where losses are reduced. Why the denominator is a *global* count:

An optimizer step often covers N items split into micro-batches (gradient accumulation, or
several processes), and gradients of the micro-batches are summed. If each micro-batch is
averaged over its own size n_k, the step's gradient is ``sum_k (1/n_k) sum_{i in k} grad l_i``,
which weights an item by ``1/n_k`` and so depends on how the N items were split (a short last
micro-batch counts extra; with token means, short sequences count extra). Summing each
micro-batch's losses and dividing by the step's total N instead gives

    sum_k (1/N) sum_{i in k} grad l_i = (1/N) sum_i grad l_i,

the gradient of the full-batch mean, for every split. That is what passing
``num_items_in_global_batch`` (or ``total_tokens`` / ``total_sequences``) does. The count must
cover the whole optimizer step, all micro-batches and all processes; under DDP, which averages
gradients over P processes, also multiply the result by P
(``prefalign.recipes.common.loss_scale`` is exactly ``P / N``).
"""

from __future__ import annotations

from typing import Literal

import torch

from prefalign.ops.masked import masked_count, masked_mean, masked_sum

TokenReduction = Literal["token_mean", "sequence_mean", "sum"]
TOKEN_REDUCTION_MODES: tuple[str, ...] = ("token_mean", "sequence_mean", "sum")


def reduce_loss(per_example: torch.Tensor, *, num_items_in_global_batch: int | None = None) -> torch.Tensor:
    """Sum of per-example losses divided by the number of examples in the optimizer step.

    Invariant to micro-batch size and gradient accumulation when ``num_items_in_global_batch``
    is the total example count of the step (see the module docstring): each example's gradient
    is weighted ``1 / N`` whichever micro-batch it landed in, so the accumulated gradient equals
    the full-batch mean's.

    Args:
        per_example: (B,) unreduced losses of this micro-batch.
        num_items_in_global_batch: N, examples in the whole optimizer step (all micro-batches,
            all processes). ``None`` means this micro-batch is the whole step (plain mean).

    Returns:
        () tensor ``per_example.sum() / N``.
    """
    if per_example.dim() != 1:
        raise ValueError(f"expected per-example losses of shape (B,), got {tuple(per_example.shape)}")
    count = per_example.shape[0] if num_items_in_global_batch is None else num_items_in_global_batch
    if count <= 0:
        raise ValueError(f"num_items_in_global_batch must be positive, got {count}")
    return per_example.sum() / count


def reduce_token_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: TokenReduction = "token_mean",
    total_tokens: int | None = None,
    total_sequences: int | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) token loss to a scalar, normalised by step-global counts.

    Modes:
        * ``token_mean``: ``sum of masked token losses / total_tokens``, the mean over every
          masked token of the step (long sequences weigh more; standard SFT cross-entropy).
        * ``sequence_mean``: each sequence's masked token mean, summed and divided by
          ``total_sequences`` (every sequence weighs the same whatever its length).
        * ``sum``: the plain masked sum, no normalisation.

    Invariant to micro-batch size and gradient accumulation when ``total_tokens`` /
    ``total_sequences`` count the whole optimizer step (see the module docstring): the numerator
    is a sum over items, so micro-batch sums add up to the full-batch sum, and the denominator
    is the same constant for every micro-batch. (A per-micro-batch token mean would not be: it
    divides each micro-batch by its own token count.) When a total is ``None`` this micro-batch
    is taken as the whole step.

    Args:
        per_token: (B, T) unreduced token losses (e.g. negative log-likelihoods).
        mask: (B, T) bool or 0/1, the tokens that count.
        mode: one of ``token_mean``, ``sequence_mean``, ``sum``.
        total_tokens: masked tokens in the whole step, for ``token_mean``.
        total_sequences: sequences in the whole step, for ``sequence_mean``.

    Returns:
        () tensor.
    """
    if per_token.dim() != 2:
        raise ValueError(f"expected per-token losses of shape (B, T), got {tuple(per_token.shape)}")
    if mode == "sum":
        return masked_sum(per_token, mask)
    if mode == "token_mean":
        count = total_tokens if total_tokens is not None else masked_count(per_token, mask).clamp(min=1)
        return masked_sum(per_token, mask) / count
    if mode == "sequence_mean":
        count = total_sequences if total_sequences is not None else max(1, per_token.shape[0])
        # masked_mean gives 0 for a sequence with no masked tokens, so it adds nothing to the sum.
        return masked_mean(per_token, mask, dim=-1).sum() / count
    raise ValueError(f"mode must be one of {TOKEN_REDUCTION_MODES}, got {mode!r}")
