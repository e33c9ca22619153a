"""prefalign.models.phf: control tokens, the value-head policy and the scored-document layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefalign.models import LoraSettings, load_causal_lm
from prefalign.models.phf import (
    PHFPolicy,
    add_control_tokens,
    document_batch,
    document_prompt,
    encode_scored_document,
    load_phf_policy,
)
from prefalign.models.scoring import completion_logps
from prefalign.rollout import generate
from prefalign.tokens import encode
from prefalign.train import trainable_state


def test_words_init_starts_each_control_token_at_its_words(tiny_cache: Path) -> None:
    model, tok = load_causal_lm("tiny-causal-lm")
    words = {w: tok(" " + w, add_special_tokens=False)["input_ids"] for w in ("good", "very bad")}
    good, bad = add_control_tokens(model, tok, "<|good|>", "<|very_bad|>", init="words")
    emb = model.get_input_embeddings().weight
    assert model.get_input_embeddings().num_embeddings == len(tok)
    torch.testing.assert_close(emb[good], emb[words["good"]].mean(dim=0))
    torch.testing.assert_close(emb[bad], emb[words["very bad"]].mean(dim=0))
    assert model.get_output_embeddings().weight[good].equal(emb[good])  # tied: one table
    with pytest.raises(ValueError, match="no word"):
        add_control_tokens(model, tok, "<|+|>", "<|-|>", init="words")


def test_random_init_is_seeded_by_the_global_rng(tiny_cache: Path) -> None:
    rows = []
    for _ in range(2):
        torch.manual_seed(3)
        model, tok = load_causal_lm("tiny-causal-lm")
        good, bad = add_control_tokens(model, tok, "<|good|>", "<|bad|>")
        rows.append(model.get_input_embeddings().weight[[good, bad]].detach().clone())
    torch.testing.assert_close(rows[0], rows[1], rtol=0, atol=0)


def test_lora_policy_trains_and_checkpoints_the_control_token_rows(tiny_cache: Path) -> None:
    policy, tok, ids = load_phf_policy(
        "tiny-causal-lm", lora=LoraSettings(r=4), control_tokens=("<|good|>", "<|bad|>")
    )
    assert ids is not None and policy.lm.generation_config.bad_words_ids == [[ids[1]]]
    state = trainable_state(policy)
    token_rows = [name for name in state if "trainable_tokens" in name]
    assert token_rows and any("lora_" in name for name in state)
    assert all(state[name].shape[0] == 2 for name in token_rows)  # exactly the two new rows


def test_policy_scores_like_its_lm_and_gives_values_of_each_prefix(tiny_cache: Path) -> None:
    lm, tok = load_causal_lm("tiny-causal-lm")
    plain, valued = PHFPolicy(lm, value_head=False), PHFPolicy(lm, value_head=True)
    batch = document_batch(
        [encode_scored_document(tok, None, ["A cat.", "A dog."], [0.0, -1.0], threshold=0.0)],
        tok.pad_token_id,
    )
    reference = completion_logps(lm, batch)
    for policy in (plain, valued):
        out = completion_logps(policy, batch)
        torch.testing.assert_close(out.token_logps, reference.token_logps)
    assert plain.values is None
    assert valued.values is not None and valued.values.shape == batch["input_ids"].shape
    assert valued.values.abs().max() == 0  # the value head starts at zero
    with torch.no_grad():
        valued.value_head.bias.fill_(0.5)
    valued(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.allclose(valued.values, torch.full_like(valued.values, 0.5))


def test_plain_document_layout_and_its_sampling_prompt(tiny_cache: Path) -> None:
    _, tok = load_causal_lm("tiny-causal-lm")
    reader, start = document_prompt(tok)
    assert start == tok.bos_token and not reader.chat_template and tok.chat_template  # the view only
    good, bad = 900, 901
    doc = encode_scored_document(
        tok, None, ["Nice film.", "I hate it."], [0.0, -1.0], threshold=0.0, control_ids=(good, bad)
    )
    first, second = (
        encode(tok, "Nice film.", special_tokens=False),
        encode(tok, " I hate it.", special_tokens=False),
    )
    assert doc.head == [tok.bos_token_id]
    assert doc.body == [good, *first, bad, *second, tok.eos_token_id]
    assert doc.targets == [1] * len(doc.body)
    assert doc.scores == [0.0] * (1 + len(first)) + [-1.0] * (2 + len(second))
    assert doc.good == [True] * (1 + len(first)) + [False] * (2 + len(second))
    model, _ = load_causal_lm("tiny-causal-lm")
    sample = generate(model, reader, [start], max_new_tokens=1, response_prefix="<|im_end|>")[0]
    assert sample.prompt_ids == [tok.bos_token_id, tok.eos_token_id]  # what training reads, + prefix
    cut = encode_scored_document(
        tok, None, ["Nice film.", "I hate it."], [0.0, -1.0], threshold=0.0, max_length=4
    )
    assert len(cut.head) + len(cut.body) == 4 and len(cut.targets) == len(cut.scores) == 3


def test_prompted_document_reads_the_prompt_as_generate_does(tiny_cache: Path) -> None:
    model, tok = load_causal_lm("tiny-causal-lm")
    chat = [{"role": "user", "content": "Review the film."}]
    doc = encode_scored_document(
        tok, chat, ["Nice film."], [0.0], threshold=0.0, control_ids=(900, 901), control_token_loss=False
    )
    assert doc.head == generate(model, tok, [chat], max_new_tokens=1)[0].prompt_ids
    assert doc.body[0] == 900 and doc.targets[0] == 0 and sum(doc.targets) == len(doc.body) - 1


def test_document_batch_aligns_scores_with_the_scored_targets(tiny_cache: Path) -> None:
    lm, tok = load_causal_lm("tiny-causal-lm")
    docs = [
        encode_scored_document(tok, None, ["Short."], [1.0], threshold=0.0),
        encode_scored_document(
            tok, "A prompt.", ["A much longer reply here.", "Bad."], [0.5, -2.0], threshold=0.0
        ),
    ]
    batch = document_batch(docs, tok.pad_token_id)
    assert batch["scores"].shape == batch["input_ids"].shape == batch["good"].shape
    out = completion_logps(lm, batch)
    width = out.token_logps.shape[1]
    for row, doc in enumerate(docs):
        scores = batch["scores"][row, -width:][out.mask[row]].tolist()
        assert scores == doc.scores and int(out.mask[row].sum()) == sum(doc.targets)
