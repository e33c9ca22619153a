"""Sampling with prefalign.rollout on the tiny random built-in model, through both backends."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from prefalign.models import load_causal_lm
from prefalign.models.scoring import score_completions
from prefalign.rollout import (
    GenerationStats,
    RolloutEngine,
    SamplingConfig,
    generate,
    sample_next,
    stop_token_ids,
)
from prefalign.rollout.hf import _cut_row
from prefalign.rollout.packed import PackedLinear, packing_available
from prefalign.rollout.sampling import Decoded
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
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=8, dtype="float32")
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


def test_cut_row_after_the_stop_token() -> None:
    cfg = SamplingConfig()
    assert _cut_row(None, [5, 6, 3, 0, 0], [0.1] * 5, {3}, cfg) == Decoded([5, 6, 3], [0.1] * 3, "stop_token")
    assert _cut_row(None, [5, 6, 7], [0.1] * 3, {3}, cfg) == Decoded([5, 6, 7], [0.1] * 3, "length")


def test_restores_training_mode(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    model.train()
    generate(model, tokenizer, ["Hi"], max_new_tokens=2)
    assert model.training
    model.eval()


def _eos_at_position(model, tokenizer, position: int, calls: list[int] | None = None):
    """Every row emits EOS once its next position is ``position``: rows with longer prompts finish
    sooner, whatever batch they are in. ``calls`` collects each forward's batch size."""
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def hook(_module, _args, kwargs, output):
        if calls is not None:
            calls.append(kwargs["input_ids"].shape[0])
        at = kwargs["position_ids"][:, -1] + 1 == position
        output.logits[at, -1, eos] += 1e4
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_greedy_backends_agree_and_finished_rows_are_dropped(tiny, backend: str, monkeypatch) -> None:
    model, tokenizer = tiny
    prompts = ["Hi", "Write a short poem about the sea, please.", "Hello there", "Tell me about cats"]
    widths = [len(generate(model, tokenizer, [p], max_new_tokens=1)[0].prompt_ids) for p in prompts]
    stop_at = max(widths) + 3  # the longest prompt finishes after 3 tokens, the shortest much later
    calls: list[int] = []
    handle = _eos_at_position(model, tokenizer, stop_at, calls)
    try:
        cfg = SamplingConfig(temperature=0.0, max_new_tokens=40, backend=backend, dtype="float32")
        samples = generate(model, tokenizer, prompts, cfg)
        monkeypatch.setattr("prefalign.rollout.native.DROP_FRACTION", 2.0)  # never drop
        kept = generate(model, tokenizer, prompts, cfg, backend="native")
    finally:
        handle.remove()
    assert [s.num_tokens for s in samples] == [stop_at - w + 1 for w in widths]  # EOS sits at stop_at
    assert all(s.finished and s.stop_reason == "stop_token" for s in samples)
    assert [s.completion_ids for s in samples] == [s.completion_ids for s in kept]
    if backend == "native":
        first_run = calls[: max(stop_at - w for w in widths)]
        assert first_run[0] == 4 and min(first_run) < 4  # finished rows left the batch


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_logprobs_are_the_scorers_at_the_temperature(tiny, backend: str) -> None:
    model, tokenizer = tiny
    samples = generate(
        model, tokenizer, PROMPTS, n=2, max_new_tokens=6, temperature=0.7, backend=backend, dtype="float32"
    )
    sums, counts = score_completions(
        model,
        [(s.prompt_ids, s.completion_ids) for s in samples],
        tokenizer.pad_token_id,
        batch_size=8,
        temperature=0.7,
    )
    assert all(len(s.logprobs) == s.num_tokens for s in samples)
    assert counts.tolist() == [s.num_tokens for s in samples]
    torch.testing.assert_close(torch.tensor([sum(s.logprobs) for s in samples]), sums, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_min_new_tokens_bans_stop_tokens_until_reached(tiny, backend: str) -> None:
    model, tokenizer = tiny
    handle = _force_eos(model, tokenizer, 1e4)
    try:
        samples = generate(model, tokenizer, PROMPTS, max_new_tokens=8, min_new_tokens=3, backend=backend)
    finally:
        handle.remove()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(
        s.num_tokens == 4 and s.completion_ids[-1] == eos and eos not in s.completion_ids[:3] for s in samples
    )


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_stop_string_ends_the_completion_before_it(tiny, backend: str) -> None:
    model, tokenizer = tiny
    cfg = SamplingConfig(max_new_tokens=12, seed=3, backend=backend)  # same seed: same tokens up to the stop
    free = generate(model, tokenizer, ["Hi"], cfg)[0]
    text = tokenizer.decode(free.completion_ids, skip_special_tokens=True)
    cut = next(
        i for i in range(3, len(text) - 2) if text[i : i + 2].strip() and text.find(text[i : i + 2]) == i
    )
    stopped = generate(model, tokenizer, ["Hi"], cfg, stop=[text[cut : cut + 2]])[0]
    assert stopped.finished and stopped.stop_reason == "stop_string"
    assert stopped.completion == text[:cut].strip()
    assert free.completion_ids[: stopped.num_tokens] == stopped.completion_ids
    assert text[cut : cut + 2] in tokenizer.decode(stopped.completion_ids, skip_special_tokens=True)


def test_top_k_one_is_greedy_and_top_p_keeps_the_nucleus() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    greedy, _ = sample_next(logits, SamplingConfig(temperature=0))
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        top1, logp = sample_next(logits, SamplingConfig(top_k=1), g)
        assert torch.equal(top1, greedy)
        torch.testing.assert_close(logp, torch.log_softmax(logits, -1).gather(-1, greedy[:, None])[:, 0])
    # Row 0's probabilities are about (0.03, 0.64, 0.09, 0.24): top_p=0.7 keeps tokens 1 and 3.
    drawn = {
        int(sample_next(logits, SamplingConfig(top_p=0.7), torch.Generator().manual_seed(s))[0][0])
        for s in range(200)
    }
    assert drawn == {1, 3}


def test_bfloat16_copy_decodes_and_follows_the_policy_after_sync(tiny) -> None:
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    engine = RolloutEngine(
        model, tokenizer, SamplingConfig(temperature=0.0, max_new_tokens=6, dtype="bfloat16")
    )
    assert engine.holds_copy and next(engine.decoder.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the policy itself is untouched
    before = [s.completion_ids for s in engine.generate(PROMPTS)]
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    fresh = RolloutEngine(model, tokenizer, engine.config)
    assert [s.completion_ids for s in engine.generate(PROMPTS)] == before  # not synced yet
    engine.sync()
    after = [s.completion_ids for s in engine.generate(PROMPTS)]
    assert after == [s.completion_ids for s in fresh.generate(PROMPTS)] and after != before


def test_lora_policy_decodes_from_a_merged_copy_that_sync_refreshes(tiny) -> None:
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    frozen = {n: p.clone() for n, p in policy.named_parameters() if not p.requires_grad}
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=6, dtype="bfloat16")
    engine = RolloutEngine(policy, tiny[1], cfg)
    # A plain model, adapters merged in: decoding runs no adapter matmuls.
    assert not any("lora" in n for n, _ in engine.decoder.named_parameters())
    assert {p.dtype for p in engine.decoder.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 0.5)
    engine.sync()
    merged = copy.deepcopy(policy).merge_and_unload()
    linears = {n: m for n, m in merged.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, module in engine.decoder.named_modules():
        if name in linears and linears[name].weight is not merged.get_input_embeddings().weight:
            # On a CPU with oneDNN the copy's linears hold packed weights: read W back as I W^T.
            assert isinstance(module, PackedLinear) == packing_available(engine.decoder)
            dense = module(torch.eye(module.in_features, dtype=torch.bfloat16)).T
            torch.testing.assert_close(dense.float(), linears[name].weight.to(torch.bfloat16).float())
    fresh = RolloutEngine(merged, tiny[1], cfg)
    assert [s.completion_ids for s in engine.generate(PROMPTS)] == [
        s.completion_ids for s in fresh.generate(PROMPTS)
    ]
    for name, param in policy.named_parameters():  # building and syncing the copy left the policy alone
        if name in frozen:
            assert torch.equal(param, frozen[name])


def test_lora_with_trained_token_rows_keeps_an_unmerged_copy(tiny) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["q_proj"], trainable_token_indices=[5])
    policy = get_peft_model(copy.deepcopy(tiny[0]), config)
    engine = RolloutEngine(policy, tiny[1], SamplingConfig(dtype="bfloat16"))
    with torch.no_grad():
        for param in policy.parameters():
            if param.requires_grad:
                param.add_(1.0)
    engine.sync()
    theirs = dict(engine.decoder.named_parameters())
    for name, param in policy.named_parameters():
        if param.requires_grad:  # every trained weight travels, token rows included
            torch.testing.assert_close(theirs[name].float(), param.to(torch.bfloat16).float())


def test_bfloat16_logprobs_are_close_to_the_fp32_scorer(tiny) -> None:
    model, tokenizer = tiny
    samples = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=8, dtype="bfloat16")
    sums, _ = score_completions(
        model, [(s.prompt_ids, s.completion_ids) for s in samples], tokenizer.pad_token_id, batch_size=8
    )
    per_token = (torch.tensor([sum(s.logprobs) for s in samples]) - sums).abs() / 8
    assert per_token.max() < 0.05  # bf16 round-off, not a different distribution


def test_generate_leaves_the_policy_trainable(tiny) -> None:
    model, tokenizer = tiny
    for dtype in ("float32", "bfloat16"):
        generate(model, tokenizer, ["Hi"], max_new_tokens=2, dtype=dtype)
        assert all(p.requires_grad for p in model.parameters())


def test_two_level_draw_follows_the_weights_and_never_picks_a_zero() -> None:
    from prefalign.rollout.sampling import draw

    weights = torch.zeros(1, 600)  # not a multiple of the block size
    weights[0, [3, 255, 256, 511, 599]] = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    picks = draw(weights.expand(40_000, -1).contiguous(), torch.Generator().manual_seed(0))
    counts = torch.bincount(picks, minlength=600).float() / len(picks)
    assert set(picks.unique().tolist()) == {3, 255, 256, 511, 599}
    torch.testing.assert_close(
        counts[[3, 255, 256, 511, 599]], weights[0, [3, 255, 256, 511, 599]] / 20, atol=0.01, rtol=0
    )


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (CPU build)")
def test_packed_linear_matches_a_bf16_linear_and_takes_new_weights() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40).to(torch.bfloat16)
    packed = PackedLinear(linear)
    for shape in [(1, 24), (5, 24), (3, 7, 24)]:  # decoding rows, a prefill, any leading dims
        x = torch.randn(*shape, dtype=torch.bfloat16)
        torch.testing.assert_close(packed(x).float(), linear(x).float(), atol=2e-2, rtol=2e-2)
    new = torch.randn(40, 24)
    packed.set_weight(new)
    x = torch.randn(4, 24)
    expected = torch.nn.functional.linear(x.bfloat16(), new.bfloat16(), linear.bias)
    torch.testing.assert_close(packed(x).float(), expected.float(), atol=2e-2, rtol=2e-2)
