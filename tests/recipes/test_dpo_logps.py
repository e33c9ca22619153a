"""completion_logps scores only completion positions; it must equal scoring the whole sequence."""

from __future__ import annotations

import torch

from prefalign.models.tiny import build_tiny_causal_lm
from prefalign.ops import sequence_logps, shift_for_causal_lm
from prefalign.recipes.common import TokenizedPair, collate_pairs, completion_logps


def _full_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels, mask = shift_for_causal_lm(logits, batch["input_ids"], batch["loss_mask"])
    return sequence_logps(logits, labels, mask)[0]


def test_completion_logps_with_trimmed_head_equals_full_sequence_scoring() -> None:
    model, _ = build_tiny_causal_lm()
    model.eval()
    # Prompts of different lengths (5 and 9 tokens) and answers of different lengths, so the
    # kept window starts inside the longer prompt and padding sits at the right.
    rows = [
        TokenizedPair([1, 5, 6, 7, 8], [9, 10, 11], [12, 13]),
        TokenizedPair([1, 5, 6, 7, 8, 14, 15, 16, 17], [18], [19, 20, 21, 22, 23]),
    ]
    batch = collate_pairs(rows, pad_id=0)
    with torch.no_grad():
        logps, _ = completion_logps(model, batch)
        chosen, rejected = logps.chunk(2)  # collate_pairs puts chosen rows first
        expected = _full_logps(model, batch)
    torch.testing.assert_close(torch.cat([chosen, rejected]), expected, rtol=1e-5, atol=1e-5)
    assert chosen.shape == rejected.shape == (2,)
