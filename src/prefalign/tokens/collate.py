"""The two collators: right padding for scoring and training, left padding for generation."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def right_pad(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad prompt + completion rows into one batch for scoring.

    Returns ``input_ids``, ``attention_mask`` and ``loss_mask``, each (B, T); ``loss_mask`` is 1
    exactly on completion tokens (the tokens whose log-probs a loss uses). A prompt may be empty
    (a document scored from its first token on; its first token then has no prediction).
    """
    if not prompts:
        raise ValueError("right_pad needs at least one row")
    width = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    loss_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor([*p, *c], dtype=torch.long)
        attention[i, :n] = 1
        loss_mask[i, len(p) : n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompts for generation, so every row's last prompt token is the last column.

    Returns ``input_ids`` and ``attention_mask``, each (B, T).
    """
    if not rows:
        raise ValueError("left_pad needs at least one row")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            attention[i, width - len(row) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention}
