"""The frozen reference of the DPO family (kto, listwise): loading it and scoring completions under it.

With LoRA the reference is the policy with its adapters disabled (no second copy in memory);
without LoRA it is a frozen copy of the starting weights (or ``reference_model``).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from prefalign.models import is_peft_model, load_causal_lm, reference_logits_context
from prefalign.recipes.common import completion_logps, disable_dropout, pad_sequences

TokenIds = tuple[list[int], list[int]]
"""(prompt_ids, completion_ids) of one sequence to score."""


def load_reference(
    policy: torch.nn.Module, model_name: str, reference_model: str = ""
) -> torch.nn.Module | None:
    """A frozen, dropout-free reference model, or None when the policy is a LoRA model (adapters off)."""
    if is_peft_model(policy):
        return None
    reference, _ = load_causal_lm(reference_model or model_name)
    reference.requires_grad_(False).eval()
    disable_dropout(reference)
    return reference


@torch.no_grad()
def score_logps(model: torch.nn.Module, items: list[TokenIds], pad_id: int, batch_size: int) -> torch.Tensor:
    """(N,) summed completion log-probs of ``items`` under ``model`` as it is now, without gradients."""
    step = max(1, batch_size)
    out = []
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        logps, _ = completion_logps(
            model, pad_sequences([p for p, _ in chunk], [c for _, c in chunk], pad_id)
        )
        out.append(logps)
    return torch.cat(out) if out else torch.zeros(0)


def reference_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    items: list[TokenIds],
    pad_id: int,
    batch_size: int,
) -> torch.Tensor:
    """(N,) summed completion log-probs of ``items`` under the reference (``reference``, or adapters off)."""
    context = reference_logits_context(policy) if reference is None else nullcontext()
    with context:
        return score_logps(reference if reference is not None else policy, items, pad_id, batch_size)
