"""THE completion scorer: trimmed head = full-sequence scoring, chunked head = one-shot head
(values and gradients), temperature, reference = adapters off."""

from __future__ import annotations

import torch

from prefalign.models import LoraSettings, apply_lora
from prefalign.models.scoring import completion_logps, reference_completion_logps, score_completions
from prefalign.models.tiny import build_tiny_causal_lm
from prefalign.ops import sequence_logps, shift_for_causal_lm
from prefalign.tokens import right_pad

# Prompts of 5 and 9 tokens, answers of 3 and 5: the kept window starts inside the longer prompt.
PROMPTS = [[1, 5, 6, 7, 8], [1, 5, 6, 7, 8, 14, 15, 16, 17]]
ANSWERS = [[9, 10, 11], [19, 20, 21, 22, 23]]


def _full_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels, mask = shift_for_causal_lm(logits, batch["input_ids"], batch["loss_mask"])
    return sequence_logps(logits, labels, mask, temperature=temperature)[0]


def test_trimmed_head_equals_full_sequence_scoring_at_any_temperature() -> None:
    model, _ = build_tiny_causal_lm()
    batch = right_pad(PROMPTS, ANSWERS, pad_id=0)
    with torch.no_grad():
        for temperature in (1.0, 0.7):
            out = completion_logps(model.eval(), batch, temperature=temperature)
            torch.testing.assert_close(out.sums, _full_logps(model, batch, temperature), rtol=1e-5, atol=1e-5)
    assert out.counts.tolist() == [3.0, 5.0]
    assert out.token_logps.shape == out.mask.shape


def test_chunked_head_gives_the_same_values_and_gradients() -> None:
    model, _ = build_tiny_causal_lm()
    batch = right_pad(PROMPTS, ANSWERS, pad_id=0)
    whole = completion_logps(model, batch)
    whole.sums.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    vocab = model.get_output_embeddings().weight.shape[0]
    chunked = completion_logps(model, batch, max_logit_elements=3 * vocab)  # 3 positions a chunk
    torch.testing.assert_close(chunked.sums, whole.sums.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked.token_logps, whole.token_logps.detach(), rtol=1e-5, atol=1e-5)
    chunked.sums.sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_reference_is_the_base_model_with_adapters_off() -> None:
    base, _ = build_tiny_causal_lm()
    rows = list(zip(PROMPTS, ANSWERS, strict=True))
    before, _ = score_completions(base, rows, 0, batch_size=1)
    policy = apply_lora(base, LoraSettings(r=2), task_type="CAUSAL_LM")
    with torch.no_grad():  # move the adapters off zero so the policy differs from its base
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    now, _ = score_completions(policy, rows, 0, batch_size=2)
    reference = reference_completion_logps(policy, None, rows, 0, batch_size=2)
    torch.testing.assert_close(reference, before, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(now, before, atol=1e-3)


def _grads_of(model: torch.nn.Module, batch: dict[str, torch.Tensor], **kwargs) -> tuple:
    model.zero_grad()
    out = completion_logps(model, batch, temperature=0.7, **kwargs)
    (out.token_logps * torch.arange(1, out.token_logps.shape[1] + 1)).sum().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_shared_prompts_give_the_same_values_layout_and_gradients() -> None:
    torch.manual_seed(0)
    model, _ = build_tiny_causal_lm()
    model = apply_lora(model, LoraSettings(r=4), "CAUSAL_LM")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)  # adapters that change the output, so their gradients matter
    # Groups of samples: prompts repeat (in any order), with completions of 1 to 4 tokens, and
    # prompts of other lengths (the shared pass left-pads them).
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], [1, 12], PROMPTS[1], PROMPTS[0]]
    answers = [[9, 10], [19, 20, 21, 22], [11], [13, 14, 15], [23, 24], [25, 26, 27]]
    batch = right_pad(prompts, answers, pad_id=0)
    one_pass, one_grads = _grads_of(model, batch)
    shared, shared_grads = _grads_of(model, batch, share_prompts=True)
    assert torch.equal(shared.mask, one_pass.mask)
    torch.testing.assert_close(shared.token_logps, one_pass.token_logps, rtol=1e-5, atol=1e-5)
    assert one_grads.keys() == shared_grads.keys()
    for name, grad in one_grads.items():  # the prompt pass gets the gradient through the cache
        # fp32 round-off of gradients up to ~80 (seeds 0-19: within half of this tolerance)
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-4, msg=name)


def test_shared_prompts_fall_back_when_nothing_repeats_or_a_completion_is_empty() -> None:
    from prefalign.models.scoring import _prompt_groups

    assert _prompt_groups(right_pad(PROMPTS, ANSWERS, pad_id=0)) is None
    assert _prompt_groups(right_pad([PROMPTS[0]] * 2, [[9], []], pad_id=0)) is None
    prompts, group = _prompt_groups(right_pad([PROMPTS[0], [1, 2], PROMPTS[0]], [[9], [3], [4]], pad_id=0))
    assert prompts == [PROMPTS[0], [1, 2]] and group.tolist() == [0, 1, 0]
