"""`prefalign generate` end to end on the tiny random model: prompt files in, sample JSONL out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.cli import main


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("backend", ["native", "hf"])
def test_writes_n_samples_per_prompt(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Write a haiku about rain.\n\nTell me a joke.\n")
    out = tmp_path / "samples" / "out.jsonl"
    argv = ["generate", "--model", "tiny-causal-lm", "--prompts", str(prompts), "--output", str(out)]
    assert main([*argv, "--n", "3", "--max-new-tokens", "5", "--batch-size", "4", "--backend", backend]) == 0
    rows = _lines(out)
    assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [
        (i, j) for i in range(2) for j in range(3)
    ]
    assert {r["prompt"] for r in rows} == {"Write a haiku about rain.", "Tell me a joke."}
    for row in rows:
        assert 1 <= row["num_tokens"] <= 5 and row["logprob"] < 0
        assert row["stop_reason"] in ("stop_token", "length") and row["finished"] == (
            row["stop_reason"] != "length"
        )
    assert "tokens/s" in capsys.readouterr().out
    assert not out.with_name("out.jsonl.partial").exists()


def test_chat_prompts_from_jsonl_and_same_seed_same_samples(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompts.write_text(json.dumps({"prompt": chat}) + "\n" + json.dumps({"prompt": "Hello", "id": 7}) + "\n")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        argv = ["generate", "--model", "tiny-causal-lm", "--prompts", str(prompts), "--output", str(out)]
        assert main([*argv, "--n", "2", "--max-new-tokens", "4", "--seed", "5"]) == 0
        runs.append(_lines(out))
    assert runs[0] == runs[1]
    assert runs[0][0]["prompt"] == chat and len(runs[0]) == 4
