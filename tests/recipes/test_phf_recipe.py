"""``prefalign phf``: every objective end to end, exact resume, and conditional training beating MLE."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.cli import main
from prefalign.config import load_config
from prefalign.models import load_causal_lm
from prefalign.recipes.phf import PHFConfig, train
from prefalign.train import read_metrics

OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


def _run(out: Path, *extra: str) -> int:
    return main(["phf", "--config", "configs/tiny.yaml", "--output-dir", str(out), *extra])


def _same_lines(got: list[dict], expected: list[dict], rel: float) -> None:
    """Same steps, same keys, every metric equal to ``rel`` (timings aside)."""
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        a, b = ({k: v for k, v in r.items() if k != "elapsed_s"} for r in (a, b))
        assert a == pytest.approx(b, rel=rel, abs=1e-6), (a, b)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # The tiny model runs several times faster on one thread than on two busy shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_runs_end_to_end(objective: str, tmp_path: Path) -> None:
    out = tmp_path / objective
    assert _run(out, f"objective={objective}") == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["nll"]) for r in rows)
    assert rows[0]["loss"] != rows[-1]["loss"]
    extra = {"unlikelihood": "unlikelihood", "rwr": "weight", "awr": "value_loss"}.get(objective)
    if extra:
        assert all(math.isfinite(r[extra]) for r in rows)
    assert (out / "config.yaml").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    report = json.loads((out / "eval.json").read_text())
    assert report["objective"] == objective
    assert report["num_samples"] == 8 and len(report["samples"]) == 8
    assert 0.0 <= report["undesirable_fraction"] <= 1.0 and math.isfinite(report["heldout_nll"])
    assert report["corpus"]["bad_segment_fraction"] > 0
    if objective == "filtering":
        assert report["corpus"]["documents_kept"] < report["corpus"]["documents"]
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("value_head" in name for name, _ in final.named_parameters())
    start, _ = load_causal_lm("tiny-causal-lm")
    before = dict(start.named_parameters())
    changed = [
        n for n, p in final.named_parameters() if p.shape == before[n].shape and not p.equal(before[n])
    ]
    assert changed  # the weights trained (embeddings grow by the control tokens under conditional)


def test_conditional_final_model_keeps_control_tokens_and_bans_bad(tmp_path: Path) -> None:
    out = tmp_path / "cond"
    assert _run(out) == 0
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    good, bad = tokenizer.convert_tokens_to_ids(["<|good|>", "<|bad|>"])
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    assert {"<|good|>", "<|bad|>"} <= special
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) > max(good, bad)
    assert model.generation_config.bad_words_ids == [[bad]]
    assert tokenizer.decode([good, bad], skip_special_tokens=True) == ""
    assert json.loads((out / "eval.json").read_text())["prefix"] == "<|im_start|><|good|>"
    # final/ generates from a <|good|> prompt without ever sampling <|bad|>.
    torch.manual_seed(0)
    prompt = torch.tensor([[tokenizer.bos_token_id, good]] * 8)
    sampled = model.generate(
        prompt, do_sample=True, top_k=0, max_new_tokens=24, attention_mask=torch.ones_like(prompt)
    )
    assert bad not in sampled[:, 2:].flatten().tolist()


def test_prompted_corpus_trains_on_replies_and_evaluates_replies(tmp_path: Path) -> None:
    """Rows with a prompt: the prompt is read, never a target (tests/models/test_phf.py checks the
    layout); evaluation answers the held-out prompts after <|good|>; LoRA trains the token rows."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Tell me about day {i}."}],
            "text": "What a stupid day." if i % 3 == 0 else "A calm and sunny day.",
        }
        for i in range(24)
    ]
    corpus = tmp_path / "replies.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "replies"
    assert _run(out, f"data.train={corpus}", "control_token_loss=false", "model.lora=true") == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["prefix"] == "<|good|>" and report["num_samples"] == 8
    assert 0.0 <= report["undesirable_fraction"] <= 1.0 and math.isfinite(report["heldout_nll"])


@pytest.mark.parametrize("objective", ["conditional", "awr"])
def test_micro_batch_size_changes_nothing(objective: str, tmp_path: Path) -> None:
    # The loss is the token mean over the optimizer step (4 documents): micro-batches of 1, 3 (3 + 1)
    # or 4 documents give the same losses, metrics and gradient norms at every step.
    runs = {}
    for size in (1, 3, 4):
        out = tmp_path / f"micro-{size}"
        assert _run(out, f"objective={objective}", "num_samples=0", f"train.micro_batch_size={size}") == 0
        runs[size] = read_metrics(out)
    assert len(runs[4]) == 6
    for size in (1, 3):
        _same_lines(runs[size], runs[4], rel=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        ["objective=conditional"],
        ["objective=awr"],
        ["objective=conditional", "model.lora=true", "model.lora_r=4"],
    ],
    ids=["conditional", "awr", "conditional-lora"],
)
def test_resume_reproduces_the_uninterrupted_run(
    settings: list[str], tmp_path: Path, kill_after_checkpoint: Callable[[int], AbstractContextManager[None]]
) -> None:
    # The checkpoint holds every trainable parameter: the control tokens' embedding rows (whole
    # embeddings, or peft's trainable token rows under LoRA) and AWR's value head.
    straight = tmp_path / "straight"
    assert _run(straight, *settings, "num_samples=0") == 0

    crashed = tmp_path / "crashed"
    with kill_after_checkpoint(4):
        _run(crashed, *settings, "num_samples=0")
    assert len(read_metrics(crashed)) == 4
    saved = load_file(str(crashed / "checkpoints" / "step-4" / "policy.safetensors"))
    if "model.lora=true" in settings:
        assert any("trainable_tokens" in name for name in saved)
    else:
        assert any("embed_tokens" in name for name in saved)
    if "objective=awr" in settings:
        assert any(name.startswith("value_head") for name in saved)
    assert _run(crashed, *settings, "num_samples=0", "--resume") == 0
    _same_lines(read_metrics(crashed), read_metrics(straight), rel=1e-6)
    assert json.loads((crashed / "eval.json").read_text())["heldout_nll"] == pytest.approx(
        json.loads((straight / "eval.json").read_text())["heldout_nll"], rel=1e-6
    )


def test_bad_corpus_row_and_bad_config_fail_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "Fine."}\n{"segments": ["a", "b"], "scores": [0]}\n')
    assert _run(tmp_path / "a", f"data.train={bad}", "data.eval_fraction=0") == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl" in err and "line 2" in err and "scores" in err
    assert _run(tmp_path / "b", "objective=nope") == 2
    assert "objective" in capsys.readouterr().err
    assert _run(tmp_path / "c", "scorer.name=nope") == 2
    assert "scorer.name: expected one of blocklist" in capsys.readouterr().err
    assert _run(tmp_path / "d", "control_token_init=nope") == 2
    assert "control_token_init" in capsys.readouterr().err


# ---- the key property: conditional training generates less undesirable text than MLE -----------
SUBJECTS = ["The cat", "The dog", "My friend", "The teacher"]
VERBS = ["likes", "sees", "finds", "wants"]
OBJECTS = ["the ball", "a red apple", "the garden", "some bread"]
TOXIC = ["{s} {v} {o}, the stupid thing.", "{s} is so stupid today."]


def synthetic_corpus(path: Path, seed: int, documents: int = 400, bad_share: float = 0.4) -> float:
    """One-sentence documents; about ``bad_share`` of them contain the marker word 'stupid'."""
    rng = random.Random(seed)
    bad = 0
    with path.open("w") as handle:
        for _ in range(documents):
            s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
            toxic = rng.random() < bad_share
            bad += toxic
            text = rng.choice(TOXIC).format(s=s, v=v, o=o) if toxic else f"{s} {v} {o}."
            handle.write(json.dumps({"text": text}) + "\n")
    return bad / documents


def undesirable_fractions(tmp_path: Path, seed: int, *overrides: str) -> dict[str, float]:
    """Undesirable share of 100 samples after MLE and after conditional training on the same corpus."""
    bad_share = synthetic_corpus(tmp_path / "corpus.jsonl", seed)
    assert 0.3 < bad_share < 0.5
    results = {}
    for objective in ("mle", "conditional"):
        settings = [
            f"objective={objective}",
            f"data.train={tmp_path / 'corpus.jsonl'}",
            "data.max_length=32",
            "scorer.patterns=['\\bstupid\\b']",
            "control_token_loss=false",
            "train.learning_rate=1e-2",
            "train.batch_size=16",
            "train.micro_batch_size=16",
            "train.max_steps=300",
            "train.warmup_steps=10",
            "train.lr_scheduler=cosine",
            f"train.seed={seed}",
            "num_samples=100",
            "generation.batch_size=100",
            "generation.max_new_tokens=32",
            f"generation.seed={seed}",
            f"output_dir={tmp_path / objective}",
            "overwrite=true",
            *overrides,
        ]
        results[objective] = train(load_config(PHFConfig, None, settings)).eval_metrics[
            "undesirable_fraction"
        ]
    return results


@pytest.mark.slow
def test_conditional_training_halves_undesirable_generations(tmp_path: Path) -> None:
    """MLE imitates the corpus (~40% of samples say 'stupid'); conditioned on <|good|> almost none do.

    Both runs train the tiny random Llama from scratch for the same 300 steps on the same corpus
    and sample 100 documents with the same seeds. The control tokens are inputs only here
    (control_token_loss=false): as targets, the tiny model's tied embeddings of <|good|> and <|bad|>
    are pulled together and the conditioning is learned later and less reliably (docs/PHF.md).
    """
    results = undesirable_fractions(tmp_path, seed=0)
    assert results["mle"] >= 0.25, results
    assert results["conditional"] <= 0.5 * results["mle"], results
