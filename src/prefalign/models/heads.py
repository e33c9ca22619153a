"""Scalar heads on a transformer's hidden states: the value head of a PPO critic.

:class:`ValueHead` maps each position's last hidden state to one number, ``V(s_t)`` (B, T).
:class:`CausalLMWithValueHead` puts it on a causal LM's decoder: its forward runs the decoder only
(no LM head, so no vocabulary-sized logits) and returns the hidden states and the values. Log-probs
of the same model come from :func:`prefalign.models.scoring.completion_logps`.

Dropout is switched off in the wrapped model (``nn.Dropout`` modules and the attention-dropout
probability attention layers keep as a float), so values in train mode are deterministic, as
PPO's ratio of new to old values needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prefalign.models.loading import disable_dropout

VALUE_HEAD_INITS = ("zero", "normal")


class ValueHead(torch.nn.Module):
    """``Linear(hidden_size, 1)`` on each position's hidden state: (B, T, H) -> (B, T) fp32 values.

    ``init='zero'`` starts weights and bias at 0, so every first value is 0 (the value-head
    init of Huang et al. 2024; the body gets value gradients from the second update on, once the
    head has moved); ``init='normal'`` draws weights from ``N(0, 1 / (hidden_size + 1))`` (their
    reward-head init), bias 0.
    """

    def __init__(self, hidden_size: int, init: str = "normal") -> None:
        super().__init__()
        if init not in VALUE_HEAD_INITS:
            raise ValueError(f"init must be one of {VALUE_HEAD_INITS}, got {init!r}")
        self.summary = torch.nn.Linear(hidden_size, 1)
        if init == "zero":
            torch.nn.init.zeros_(self.summary.weight)
        else:
            torch.nn.init.normal_(self.summary.weight, std=1 / math.sqrt(hidden_size + 1))
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden_states.to(self.summary.weight.dtype)).squeeze(-1).float()


@dataclass
class ValueOutput:
    """``hidden_states`` (B, T, H): the decoder's last hidden states; ``values`` (B, T) fp32."""

    hidden_states: torch.Tensor
    values: torch.Tensor


class CausalLMWithValueHead(torch.nn.Module):
    """A causal LM (optionally a peft model) and a :class:`ValueHead` on its decoder's output."""

    def __init__(self, lm: torch.nn.Module, init: str = "normal") -> None:
        super().__init__()
        self.lm = lm
        embeddings = lm.get_input_embeddings()
        self.value_head = ValueHead(embeddings.embedding_dim, init).to(embeddings.weight.device)
        disable_dropout(self.lm)
        head = lm.get_output_embeddings()
        if head is not None and head.weight is not embeddings.weight:
            # The forward never runs the LM head: an untied head would sit in the optimizer (and
            # in DDP's reducer, which fails on parameters that get no gradient) for nothing.
            head.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> ValueOutput:
        out = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        return ValueOutput(hidden, self.value_head(hidden))
