"""Tiny built-ins, the registry, loading, LoRA, reference logits and merged export."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from prefalign.models import (
    BUILTIN_MODELS,
    LoraSettings,
    count_parameters,
    ensure_pad_token,
    is_peft_model,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    merge_and_save,
    reference_logits_context,
    resolve_model_path,
)
from prefalign.models._atomic import MARKER
from prefalign.models.tiny import build_tiny_causal_lm, build_tiny_reward, build_tiny_tokenizer

MESSAGES = [{"role": "user", "content": "Hello, how are you today?"}]


def _ids(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(texts, return_tensors="pt", padding=True)


def _perturb_lora(model, seed: int = 0) -> None:
    """LoRA B starts at zero (a no-op adapter); give every adapter weight a random value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)


# ---- tiny builds ------------------------------------------------------------------------------
def test_tiny_tokenizer_is_deterministic_with_distinct_pad() -> None:
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert (a.pad_token, a.unk_token, a.bos_token, a.eos_token) == (
        "<|pad|>",
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    )
    assert a.pad_token_id != a.eos_token_id
    text = a.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nHello, how are you today?<|im_end|>\n<|im_start|>assistant\n"
    ids = a(text).input_ids
    assert ids[0] == a.bos_token_id and a.eos_token_id in ids
    assert a.decode(a("Hello world!").input_ids) == "Hello world!"  # byte-level round trip


def test_tiny_models_are_deterministic_and_leave_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    m1, _ = build_tiny_causal_lm()
    m2, _ = build_tiny_causal_lm()
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    m3, _ = build_tiny_causal_lm(seed=99)
    assert not torch.equal(m1.model.embed_tokens.weight, m3.model.embed_tokens.weight)
    r1, tok = build_tiny_reward()
    r2, _ = build_tiny_reward()
    assert torch.equal(r1.score.weight, r2.score.weight)
    assert r1.config.num_labels == 1 and r1.config.vocab_size == len(tok)


def test_tiny_build_is_fast() -> None:
    build_tiny_causal_lm()  # warm imports
    start = time.perf_counter()
    build_tiny_causal_lm()
    build_tiny_reward()
    assert time.perf_counter() - start < 4.0  # ~0.1 s alone; generous for a shared CPU


# ---- registry ---------------------------------------------------------------------------------
def test_builtin_registry() -> None:
    assert set(BUILTIN_MODELS) >= {"smollm2-135m-instruct", "minilm-l6", "tiny-causal-lm", "tiny-reward"}
    assert BUILTIN_MODELS["tiny-causal-lm"].kind == "causal"
    assert BUILTIN_MODELS["smollm2-135m-instruct"].kind == "causal"
    assert BUILTIN_MODELS["tiny-reward"].kind == "reward"
    assert BUILTIN_MODELS["minilm-l6"].kind == "reward"
    assert all(m.description for m in BUILTIN_MODELS.values())


def test_resolve_passes_through_unknown_names_and_local_folders(tmp_path: Path, tiny_cache: Path) -> None:
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"
    missing = str(tmp_path / "does-not-exist")
    assert resolve_model_path(missing) == missing
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path(tmp_path) == str(tmp_path)


def test_tiny_builtins_materialise_into_the_cache_and_load_by_path(tiny_cache: Path) -> None:
    path = resolve_model_path("tiny-causal-lm")
    assert Path(path) == tiny_cache / "models" / "tiny-causal-lm"
    marker = (Path(path) / MARKER).stat().st_mtime_ns
    assert resolve_model_path("tiny-causal-lm") == path
    assert (Path(path) / MARKER).stat().st_mtime_ns == marker  # not rebuilt

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    fresh, fresh_tok = build_tiny_causal_lm()
    assert tokenizer.backend_tokenizer.to_str() == fresh_tok.backend_tokenizer.to_str()
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.chat_template == fresh_tok.chat_template
    batch = _ids(tokenizer, ["Hello world", "The sea is wide"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, fresh(**batch).logits)

    reward_path = resolve_model_path("tiny-reward")
    reward = AutoModelForSequenceClassification.from_pretrained(reward_path)
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == tokenizer.pad_token_id


# ---- loading ----------------------------------------------------------------------------------
def test_load_tokenizer_pad_and_padding_side(tiny_cache: Path) -> None:
    tok = load_tokenizer("tiny-causal-lm", padding_side="left")
    assert tok.padding_side == "left" and tok.pad_token == "<|pad|>"
    tok.padding_side = "right"
    assert _ids(tok, ["a", "a b c d"]).input_ids[0, -1].item() == tok.pad_token_id


def test_ensure_pad_token_rules() -> None:
    tok = build_tiny_tokenizer()
    tok.pad_token = None
    assert ensure_pad_token(tok) is False and tok.pad_token == "<|endoftext|>"  # unk, distinct from eos
    tok.pad_token = tok.eos_token
    ensure_pad_token(tok)
    assert tok.pad_token == "<|endoftext|>"
    tok.pad_token = None
    tok.unk_token = tok.eos_token  # GPT-2 style: nothing usable
    assert ensure_pad_token(tok) is True  # adds <|pad|> (already in this vocab, so no growth here)
    assert tok.pad_token == "<|pad|>"
    assert tok.pad_token_id != tok.eos_token_id


def test_load_causal_lm_sets_pad_and_counts_parameters(tiny_cache: Path) -> None:
    model, tok = load_causal_lm("tiny-causal-lm")
    assert model.config.pad_token_id == tok.pad_token_id == model.generation_config.pad_token_id
    assert model.dtype == torch.float32
    n = count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters())
    assert n == count_parameters(model, trainable_only=True)
    assert not is_peft_model(model)
    with pytest.raises(TypeError), reference_logits_context(model):
        pass


def test_reward_model_scores_last_non_pad_token(tiny_cache: Path) -> None:
    model, tok = load_reward_model("tiny-reward")
    model.eval()
    texts = ["Hello world", "The quick brown fox jumps over the lazy dog."]
    with torch.no_grad():
        batch = model(**_ids(tok, texts)).logits
        alone = torch.cat([model(**_ids(tok, [t])).logits for t in texts])
    assert batch.shape == (2, 1)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)


# ---- LoRA -------------------------------------------------------------------------------------
def test_lora_reference_context_and_merge_and_save(tiny_cache: Path, tmp_path: Path) -> None:
    base, tok = load_causal_lm("tiny-causal-lm")
    policy, _ = load_causal_lm("tiny-causal-lm", lora=LoraSettings(r=4, alpha=8))
    assert is_peft_model(policy)
    assert count_parameters(policy, trainable_only=True) < count_parameters(policy)
    _perturb_lora(policy)
    base.eval()
    policy.eval()
    batch = _ids(tok, ["Hello world", "What is two plus two? It is four."])
    with torch.no_grad():
        base_logits = base(**batch).logits
        policy_logits = policy(**batch).logits
    assert not torch.allclose(base_logits, policy_logits, atol=1e-3)

    with reference_logits_context(policy) as ref:
        ref_logits = policy(**batch).logits
        assert ref is not None and not torch.is_grad_enabled()
    torch.testing.assert_close(ref_logits, base_logits, atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # adapters are back on afterwards
        torch.testing.assert_close(policy(**batch).logits, policy_logits)

    out = merge_and_save(policy, tok, tmp_path / "final")
    assert is_peft_model(policy)  # merged a copy; training can continue
    merged = AutoModelForCausalLM.from_pretrained(out)
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    assert reloaded_tok.pad_token_id == tok.pad_token_id and reloaded_tok.chat_template
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, policy_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(policy(**batch).logits, policy_logits)

    # saving again replaces the folder atomically
    assert merge_and_save(policy, tok, out) == out
    assert not list(tmp_path.glob(".final.tmp-*"))


def test_lora_trains_only_the_named_token_rows_and_merges_them(tiny_cache: Path, tmp_path: Path) -> None:
    """``trainable_token_ids``: those embedding rows learn beside the adapters; no other row moves,
    and ``final/`` carries the trained rows (tied, so the output rows match)."""
    from prefalign.models import apply_lora

    model, tok = load_causal_lm("tiny-causal-lm")
    before = model.get_input_embeddings().weight.detach().clone()
    new_ids = [5, 9]
    policy = apply_lora(model, LoraSettings(r=2, alpha=4), "CAUSAL_LM", trainable_token_ids=new_ids)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1.0)
    batch = {
        "input_ids": torch.tensor([[5, 9, 11, 12, 13]]),
        "attention_mask": torch.ones(1, 5, dtype=torch.long),
    }
    for _ in range(3):
        loss = policy(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = merge_and_save(policy, tok, tmp_path / "final")
    merged = AutoModelForCausalLM.from_pretrained(out)
    after = merged.get_input_embeddings().weight.detach()
    moved = (after - before).abs().amax(dim=1) > 1e-6
    assert moved.nonzero().flatten().tolist() == new_ids
    torch.testing.assert_close(merged.get_output_embeddings().weight, after)


def test_lora_reward_model_merge_keeps_trained_head(tiny_cache: Path, tmp_path: Path) -> None:
    model, tok = load_reward_model(
        "tiny-reward", lora=LoraSettings(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
    )
    _perturb_lora(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "score" in name and param.requires_grad:  # the trained head copy (modules_to_save)
                param.add_(0.5)
    model.eval()
    batch = _ids(tok, ["Hello world", "Be polite, be safe."])
    with torch.no_grad():
        expected = model(**batch).logits
    out = merge_and_save(model, tok, tmp_path / "rm")
    reloaded, _ = load_reward_model(out)
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-5, rtol=1e-5)


def test_full_model_merge_and_save(tiny_cache: Path, tmp_path: Path) -> None:
    model, tok = load_causal_lm("tiny-causal-lm")
    out = merge_and_save(model, tok, tmp_path / "plain")
    reloaded, reloaded_tok = load_causal_lm(out)
    assert count_parameters(reloaded) == count_parameters(model)
    assert reloaded_tok.pad_token_id == tok.pad_token_id
