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


class ValueHead(torch.nn.Module):
    """``Linear(hidden_size, 1)`` on each position's hidden state: (B, T, H) -> (B, T) fp32 values.

    Weights start at ``N(0, 1 / (hidden_size + 1))`` and the bias at 0, so the first values are
    small but gradients reach the body from the first step (a zero-initialised head would
    block them).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
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

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm
        embeddings = lm.get_input_embeddings()
        self.value_head = ValueHead(embeddings.embedding_dim).to(embeddings.weight.device)
        disable_dropout(self.lm)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> ValueOutput:
        out = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        return ValueOutput(hidden, self.value_head(hidden))
