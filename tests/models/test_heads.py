"""Value head and causal LM + value head on the tiny model: shapes, gradients, dropout off."""

from __future__ import annotations

import torch

from prefalign.models import LoraSettings, apply_lora
from prefalign.models.heads import CausalLMWithValueHead, ValueHead
from prefalign.models.tiny import build_tiny_causal_lm

IDS = torch.tensor([[2, 10, 11, 12, 3], [2, 14, 15, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def test_value_head_maps_hidden_states_to_one_value_per_position() -> None:
    head = ValueHead(8)
    hidden = torch.randn(2, 5, 8)
    values = head(hidden)
    assert values.shape == (2, 5) and values.dtype == torch.float32
    torch.testing.assert_close(values, hidden @ head.summary.weight[0] + head.summary.bias)
    assert (
        float(head.summary.bias.detach().abs().max()) == 0
        and float(head.summary.weight.detach().abs().max()) > 0
    )


def test_causal_lm_with_value_head_shapes_and_gradients() -> None:
    lm, _ = build_tiny_causal_lm()
    model = CausalLMWithValueHead(lm).train()
    out = model(IDS, attention_mask=MASK)
    assert out.hidden_states.shape == (2, 5, lm.config.hidden_size)
    assert out.values.shape == (2, 5)
    # The values read the decoder's last hidden state (the one the LM head would read).
    with torch.no_grad():
        want = lm(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(out.hidden_states.detach(), want)
    (out.values * MASK).sum().backward()
    assert model.value_head.summary.weight.grad is not None
    assert float(model.value_head.summary.weight.grad.abs().sum()) > 0
    body = lm.get_input_embeddings().weight.grad
    assert body is not None and float(body.abs().sum()) > 0  # the critic trains its body too
    # Logits-free: the LM head never ran (tied embeddings get gradient only through the input side).
    unused = torch.ones(body.shape[0], dtype=torch.bool)
    unused[IDS.unique()] = False
    assert float(body[unused].abs().max()) == 0


def test_dropout_is_off_so_train_mode_values_are_deterministic() -> None:
    lm, _ = build_tiny_causal_lm()
    for module in lm.modules():  # as if the checkpoint had been trained with attention dropout
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    lm.model.layers[0].mlp.act_fn = torch.nn.Sequential(lm.model.layers[0].mlp.act_fn, torch.nn.Dropout(0.5))
    model = CausalLMWithValueHead(lm).train()
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in model.modules())
    torch.manual_seed(0)
    first = model(IDS, attention_mask=MASK).values
    second = model(IDS, attention_mask=MASK).values
    assert torch.equal(first, second)


def test_value_head_on_a_lora_policy_trains_adapters_and_head_only() -> None:
    lm, _ = build_tiny_causal_lm()
    model = CausalLMWithValueHead(apply_lora(lm, LoraSettings(r=4), "CAUSAL_LM"))
    model.value_head.summary.weight.data.normal_()
    model(IDS, attention_mask=MASK).values.sum().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "value_head.summary.weight" in trained
    assert any("lora_A" in n for n in trained)
    assert all("lora_" in n or n.startswith("value_head") for n in trained)
