"""The frozen reference of the DPO family (dpo, kto, listwise, contrastive): loading it with the
policy, and scoring completions under it.

With LoRA the reference is the policy with its adapters disabled (no second copy in memory);
without LoRA it is a frozen copy of the starting weights (or ``reference_model``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from prefalign.config import ModelConfig
from prefalign.models import is_peft_model, load_causal_lm, reference_logits_context
from prefalign.recipes.common import completion_logps, disable_dropout, load_policy, pad_sequences

TokenIds = tuple[list[int], list[int]]
"""(prompt_ids, completion_ids) of one sequence to score."""


def load_policy_and_reference(
    model: ModelConfig, reference_model: str = "", *, need_reference: bool = True
) -> tuple[Any, torch.nn.Module | None, Any]:
    """(policy, reference, tokenizer): the policy to train (:func:`load_policy`) and its reference.

    ``reference`` is None when ``need_reference`` is false (a reference-free loss), and when the
    policy is a LoRA model: its reference is then itself with the adapters off (:func:`reference_scope`).
    """
    policy, tokenizer = load_policy(model)
    reference = load_reference(policy, model.name, reference_model) if need_reference else None
    return policy, reference, tokenizer


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


def reference_scope(
    policy: torch.nn.Module, reference: torch.nn.Module | None
) -> tuple[torch.nn.Module, AbstractContextManager[Any]]:
    """The model that plays the reference and the context to call it in (without gradients):
    ``reference`` itself, or, when it is None, the LoRA ``policy`` with its adapters off."""
    if reference is not None:
        return reference, torch.no_grad()
    return policy, reference_logits_context(policy)


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
    model, context = reference_scope(policy, reference)
    with context:
        return score_logps(model, items, pad_id, batch_size)
