"""Log-probabilities of labels under a causal LM's logits.

Convention: ``logits[:, t]`` scores ``labels[:, t]``. A causal LM's logits at position t predict
the token at t + 1, so callers align them first with :func:`shift_for_causal_lm`.
"""

from __future__ import annotations

import torch

from prefalign.ops.masked import masked_count, masked_sum

IGNORE_INDEX = -100
"""Label value that marks a position to skip (the Hugging Face / PyTorch cross-entropy convention)."""


def shift_for_causal_lm(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align next-token logits with the tokens they predict.

    Args:
        logits: (B, T, V) model output for ``input_ids``.
        input_ids: (B, T) token ids.
        loss_mask: (B, T), 1 where the token at that position counts (e.g. completion tokens).

    Returns:
        ``(logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:])``, shapes (B, T-1, V), (B, T-1),
        (B, T-1): position t of the result scores token t + 1 of the input, and the mask is the
        mask of the *predicted* token.
    """
    return logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:]


def token_logps(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each label under a softmax over ``logits / temperature``.

    ``log p(y_t) = z_t[y_t] - logsumexp(z_t)``. In float32/float64 this is computed as a gather
    minus a logsumexp, which never materialises a second (B, T, V) tensor of log-probs. Half
    precision logsumexp loses too much accuracy, so bf16/fp16 logits are upcast one sequence at a
    time instead, keeping the extra memory to one (T, V) float32 slab.

    Args:
        logits: (B, T, V) unnormalised scores; ``logits[:, t]`` scores ``labels[:, t]``.
        labels: (B, T) integer ids. Entries equal to -100 (or any negative id) are allowed: their
            index is clamped to 0 for the gather and their log-prob is returned as 0.
        temperature: the sampling temperature the scores should reflect (1.0 leaves them as is).

    Returns:
        (B, T) float tensor of log-probs, in float32 for half-precision input, else ``logits.dtype``.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature != 1.0:
        logits = logits / temperature
    ignored = labels < 0
    # Clamping keeps the gather in range for ignore_index / padding labels; the result there is
    # overwritten with 0 below.
    index = labels.clamp(min=0).unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, index).squeeze(-1)
        logps = picked - torch.logsumexp(logits, dim=-1)
    else:
        rows = [
            torch.log_softmax(row.float(), dim=-1).gather(-1, idx).squeeze(-1)
            for row, idx in zip(logits, index)
        ]
        logps = torch.stack(rows) if rows else logits.new_zeros(labels.shape, dtype=torch.float32)
    return logps.masked_fill(ignored, 0.0)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's masked tokens, and how many tokens were summed.

    This is ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` over the completion tokens, the
    sequence log-likelihood that DPO (Rafailov et al. 2023, eq. 7) and IPO compare between policy
    and reference. Averages (e.g. IPO's length-normalised variant) are ``sums / counts``.

    Args:
        logits: (B, T, V), already shifted so ``logits[:, t]`` scores ``labels[:, t]``.
        labels: (B, T) token ids (-100 allowed; such positions should also be masked out).
        mask: (B, T) bool or 0/1, which positions to sum.
        temperature: see :func:`token_logps`.

    Returns:
        ``(logps, counts)``: (B,) summed log-probs over the mask and (B,) number of masked
        tokens, both float.
    """
    per_token = token_logps(logits, labels, temperature=temperature)
    return masked_sum(per_token, mask, dim=-1), masked_count(per_token, mask, dim=-1)
