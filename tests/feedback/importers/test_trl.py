"""TRL importer (:mod:`prefalign.feedback.importers.trl`): exact records from the fixtures, errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.feedback.importers import load_trl
from prefalign.feedback.schema import Comparison, text_id
from prefalign.feedback.validate import DataError

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "feedback" / "external"


def fx(name: str) -> str:
    return str(EXTERNAL / name)


def test_trl_rows_become_comparisons() -> None:
    records = load_trl(fx("trl.jsonl"))
    assert records[0] == Comparison(
        rater_id="trl",
        item_id=text_id("Name a fruit that is yellow."),
        prompt="Name a fruit that is yellow.",
        a_id=text_id("A banana."),
        a="A banana.",
        b_id=text_id("A cucumber."),
        b="A cucumber.",
        winner="a",
        strength=2.0,
    )
    hello = [{"role": "assistant", "content": "Hello, nice to meet you."}]
    assert (records[1].a, records[1].a_id) == (hello, text_id(hello))
    assert (records[2].prompt, records[2].a, records[2].metadata) == (
        "The capital of Italy is",
        " Rome.",
        {"subset": "facts"},
    )
    with pytest.raises(DataError) as info:
        load_trl([{"prompt": "q", "chosen": "a", "rejected": "b", "margin": -1}])
    assert info.value.field == "margin"
