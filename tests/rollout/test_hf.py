"""Sampling with prefalign.rollout on the tiny random built-in model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefalign.models import load_causal_lm
from prefalign.rollout import GenerationStats, SamplingConfig, generate, stop_token_ids
from prefalign.rollout.hf import _split_completion
from prefalign.tokens import render_prompt

PROMPTS = ["Hello there", "Write a short poem about the sea, please.", "Hi"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield load_causal_lm("tiny-causal-lm")
    finally:
        mp.undo()


def _force_eos(model, tokenizer, bonus: float):
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def hook(_module, _inputs, output):
        output = output.clone()
        output[..., eos] += bonus
        return output

    return model.lm_head.register_forward_hook(hook)


def test_counts_order_and_fields(tiny) -> None:
    model, tokenizer = tiny
    stats = GenerationStats()
    samples = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=5, batch_size=4, stats=stats)
    assert [(s.prompt_index, s.sample_index) for s in samples] == [(i, j) for i in range(3) for j in range(2)]
    for s in samples:
        assert s.prompt == PROMPTS[s.prompt_index]
        assert 1 <= len(s.completion_ids) <= 5
        assert s.finished == (s.completion_ids[-1] in stop_token_ids(model, tokenizer))
        assert tokenizer.pad_token_id not in s.prompt_ids
    assert stats.rows == 6 and stats.generated_tokens == sum(s.num_tokens for s in samples)
    assert stats.tokens_per_second > 0


def test_chat_template_and_stop_tokens(tiny) -> None:
    model, tokenizer = tiny
    text = render_prompt(tokenizer, "Hi", system_prompt="Be kind.")
    assert text.startswith("<|im_start|>system\nBe kind.<|im_end|>") and text.endswith(
        "<|im_start|>assistant\n"
    )
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(model, tokenizer)
    assert tokenizer.pad_token_id not in stop_token_ids(model, tokenizer)
    sample = generate(model, tokenizer, ["Hi"], max_new_tokens=2)[0]
    assert tokenizer.decode(sample.prompt_ids).endswith("<|im_start|>assistant\n")


def test_response_prefix_opens_every_reply(tiny) -> None:
    model, tokenizer = tiny
    bare = generate(model, tokenizer, ["Hi"], max_new_tokens=2)[0]
    prefixed = generate(model, tokenizer, ["Hi"], max_new_tokens=2, response_prefix="Sure")[0]
    suffix = tokenizer("Sure", add_special_tokens=False)["input_ids"]
    assert prefixed.prompt_ids == bare.prompt_ids + suffix  # the prefix is prompt, not completion
    assert tokenizer.decode(prefixed.prompt_ids).endswith("<|im_start|>assistant\nSure")


def test_seeded_sampling_is_deterministic_and_leaves_global_rng(tiny) -> None:
    model, tokenizer = tiny
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=6, seed=7)
    b = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=6, seed=7)
    c = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=6, seed=8)
    assert [s.completion_ids for s in a] == [s.completion_ids for s in b]
    assert [s.completion_ids for s in a] != [s.completion_ids for s in c]
    assert torch.equal(torch.random.get_rng_state(), state)


def test_left_padding_matches_unbatched_greedy(tiny) -> None:
    model, tokenizer = tiny
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=8)
    batched = generate(model, tokenizer, PROMPTS, cfg)
    single = [generate(model, tokenizer, [p], cfg)[0] for p in PROMPTS]
    assert [s.completion_ids for s in batched] == [s.completion_ids for s in single]


def test_finished_flag_and_eos_cut(tiny) -> None:
    model, tokenizer = tiny
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    handle = _force_eos(model, tokenizer, 1e4)
    try:
        samples = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=8)
    finally:
        handle.remove()
    assert all(s.finished and s.completion_ids == [eos] and s.completion == "" for s in samples)
    handle = _force_eos(model, tokenizer, -1e4)
    try:
        samples = generate(model, tokenizer, PROMPTS, max_new_tokens=7)
    finally:
        handle.remove()
    assert all(not s.finished and len(s.completion_ids) == 7 for s in samples)


def test_split_completion() -> None:
    assert _split_completion([5, 6, 3, 0, 0], {3}) == ([5, 6, 3], True)
    assert _split_completion([5, 6, 7], {3}) == ([5, 6, 7], False)


def test_restores_training_mode(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    model.train()
    generate(model, tokenizer, ["Hi"], max_new_tokens=2)
    assert model.training
    model.eval()
