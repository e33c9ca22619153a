"""HH-RLHF importer (:mod:`prefalign.feedback.importers.hh_rlhf`): exact records from the fixtures, errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.feedback.formats import PreferencePair
from prefalign.feedback.importers import load_hh_rlhf
from prefalign.feedback.validate import DataError

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "feedback" / "external"
H, A = "\n\nHuman: ", "\n\nAssistant: "


def fx(name: str) -> str:
    return str(EXTERNAL / name)


def test_hh_rlhf_conversational_pairs() -> None:
    pairs = load_hh_rlhf(fx("hh_rlhf.jsonl"))
    assert pairs.errors == []
    assert pairs[0] == PreferencePair(
        prompt=[{"role": "user", "content": "How do I keep basil alive on a windowsill?"}],
        chosen=[
            {
                "role": "assistant",
                "content": "Give it six hours of sun and water when the top of the soil feels dry.",
            }
        ],
        rejected=[{"role": "assistant", "content": "Basil only grows outdoors."}],
        source=f"{fx('hh_rlhf.jsonl')}:1",
    )
    assert pairs[1].prompt == [
        {"role": "user", "content": "Name a quiet hobby."},
        {"role": "assistant", "content": "Knitting."},
        {"role": "user", "content": "Why is it relaxing?"},
    ]
    assert pairs[1].rejected == [{"role": "assistant", "content": "It is not relaxing at all."}]
    assert [p.is_conversational for p in pairs] == [True, True, True]


def test_hh_rlhf_as_text_keeps_the_transcript() -> None:
    rows = [json.loads(line) for line in Path(fx("hh_rlhf.jsonl")).read_text().splitlines()]
    pairs = load_hh_rlhf(fx("hh_rlhf.jsonl"), as_text=True)
    assert (
        pairs[1].prompt
        == H + "Name a quiet hobby." + A + "Knitting." + H + "Why is it relaxing?\n\nAssistant:"
    )
    assert pairs[1].chosen == " The repeated stitches give your hands a steady rhythm."
    for pair, row in zip(pairs, rows, strict=True):
        assert pair.prompt + pair.chosen == row["chosen"]
        assert pair.prompt + pair.rejected == row["rejected"]


def test_hh_rlhf_transcript_without_leading_blank_lines() -> None:
    row = {"chosen": "Human: hi" + A + "hello", "rejected": "Human: hi" + A + "go away"}
    assert load_hh_rlhf([row])[0].prompt == [{"role": "user", "content": "hi"}]
    text = load_hh_rlhf([row], as_text=True)[0]
    assert text.prompt + text.chosen == row["chosen"]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"chosen": H + "a" + A + "b", "rejected": H + "c" + A + "d"}, "rejected", "does not share"),
        ({"chosen": H + "a" + A + "b", "rejected": H + "a" + A + " "}, "rejected", "reply is empty"),
        ({"chosen": H + "a" + A + "b", "rejected": H + "a" + A + "b"}, "rejected", "identical"),
        ({"chosen": "no turns at all", "rejected": "x"}, "chosen", "no '\\n\\nAssistant:' turn"),
        (
            {"chosen": "intro" + H + "a" + A + "b", "rejected": "intro" + H + "a" + A + "c"},
            "chosen",
            "before",
        ),
        ({"rejected": H + "a" + A + "b"}, "chosen", "missing"),
        ({"chosen": 3, "rejected": H + "a" + A + "b"}, "chosen", "transcript string"),
    ],
)
def test_hh_rlhf_rejects(row, field, message) -> None:
    with pytest.raises(DataError) as info:
        load_hh_rlhf([row])
    assert (info.value.file, info.value.line, info.value.field) == ("<rows>", 1, field)
    assert message in info.value.message
