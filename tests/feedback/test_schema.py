"""Feedback records: parsing, validation errors with file/line/field, and round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.feedback.formats import DataError
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    Ranking,
    Rating,
    RatingScale,
    load_feedback,
    save_feedback,
    text_id,
    to_dict,
)

BASE = {"rater_id": "r1", "item_id": "i1", "prompt": "Review the movie Up."}
ROWS = [
    {**BASE, "kind": "rating", "response": "Lovely film.", "value": 7},
    {**BASE, "kind": "rating", "response_id": "x", "response": "Dull.", "value": "bad", "metadata": {"s": 1}},
    {
        **BASE,
        "kind": "ranking",
        "prompt": [{"role": "user", "content": "Review Up."}],
        "responses": [{"text": "Great."}, {"id": "z", "text": "Fine."}, "Poor."],
        "ranks": [1, 1, None],
    },
    {**BASE, "kind": "comparison", "a": "Great.", "b": "Poor.", "winner": "a", "strength": 2},
    {**BASE, "kind": "edit", "original": "Its good.", "edited": "It's good.", "reason": "typo"},
    {**BASE, "kind": "demonstration", "response": "A warm, funny film.", "timestamp": "2026-01-01T00:00:00Z"},
]


def test_every_kind_parses_into_its_record_type() -> None:
    records = load_feedback(ROWS)
    assert [type(r) for r in records] == [Rating, Rating, Ranking, Comparison, Edit, Demonstration]
    rating = records[0]
    assert rating.value == 7.0 and rating.response_id == text_id("Lovely film.")
    assert records[1].response_id == "x" and records[1].metadata == {"s": 1}
    ranking = records[2]
    assert [r.id for r in ranking.responses] == [text_id("Great."), "z", text_id("Poor.")]
    assert [[r.text for r in group] for group in ranking.ordered()] == [["Great.", "Fine."]]
    assert records[3].a_id == text_id("Great.") and records[3].strength == 2.0
    assert records[5].timestamp == "2026-01-01T00:00:00Z"


def test_text_id_is_stable_and_content_based() -> None:
    assert text_id("abc") == text_id("abc") != text_id("abd")
    assert len(text_id([{"role": "assistant", "content": "x"}])) == 16


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_save_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    records = load_feedback(ROWS)
    path = save_feedback(records, tmp_path / f"feedback.{suffix}")
    assert list(load_feedback(path)) == list(records)


def test_to_dict_is_the_inverse_of_parsing() -> None:
    records = load_feedback(ROWS)
    assert list(load_feedback([to_dict(r) for r in records])) == list(records)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"kind": "vote"}, "kind", "expected one of"),
        ({"rater_id": None}, "rater_id", "missing"),
        ({"item_id": 1.5}, "item_id", "expected a string or integer id"),
        ({"prompt": ""}, "prompt", "empty string"),
        ({"value": None}, "value", "missing"),
        ({"value": float("nan")}, "value", "finite number"),
        ({"value": 11}, "value", "outside the scale"),
        ({"metadata": [1]}, "metadata", "expected an object"),
        ({"timestamp": 5}, "timestamp", "expected a string"),
    ],
)
def test_bad_rating_rows_name_line_and_field(tmp_path: Path, change: dict, field: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = {**BASE, "kind": "rating", "response": "ok", "value": 5}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **change}) + "\n")
    with pytest.raises(DataError) as info:
        load_feedback(path, scale="0-10")
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 2, field)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({**BASE, "kind": "ranking", "responses": ["a"], "ranks": [1]}, "responses"),
        ({**BASE, "kind": "ranking", "responses": ["a", "b"], "ranks": [1]}, "ranks"),
        ({**BASE, "kind": "ranking", "responses": ["a", "b"], "ranks": [1, 0]}, "ranks"),
        ({**BASE, "kind": "ranking", "responses": ["a", "b"], "ranks": [1, None]}, "ranks"),
        ({**BASE, "kind": "ranking", "responses": ["a", "a"], "ranks": [1, 2]}, "responses"),
        ({**BASE, "kind": "comparison", "a": "x", "b": "y", "winner": "left"}, "winner"),
        ({**BASE, "kind": "comparison", "a": "x", "b": "y", "winner": "a", "strength": -1}, "strength"),
        ({**BASE, "kind": "comparison", "a": "x", "b": "y", "winner": "a", "strength": 10**400}, "strength"),
        ({**BASE, "kind": "rating", "response": "x", "value": -(10**400)}, "value"),
        ({**BASE, "kind": "comparison", "a": "x", "winner": "a"}, "b"),
        ({**BASE, "kind": "edit", "original": "x"}, "edited"),
        ({**BASE, "kind": "demonstration", "response": [{"role": "bot", "content": "x"}]}, "response"),
        ("not an object", "<row>"),
    ],
)
def test_bad_rows_of_other_kinds_name_their_field(row: object, field: str) -> None:
    with pytest.raises(DataError) as info:
        load_feedback([row])
    assert (info.value.line, info.value.field) == (1, field)


def test_skip_mode_keeps_valid_rows_and_reports_rejected(tmp_path: Path) -> None:
    bad = {**BASE, "kind": "comparison", "a": "x", "b": "y", "winner": "?"}
    report = tmp_path / "rejected.jsonl"
    records = load_feedback([ROWS[0], bad, ROWS[3]], on_error="skip", report_path=report)
    assert len(records) == 2 and [e.line for e in records.errors] == [2]
    assert json.loads(report.read_text())["field"] == "winner"


def test_label_scale() -> None:
    scale = RatingScale.parse("bad,medium,good")
    assert scale.is_ordinal and scale.span == (0.0, 2.0)
    assert [scale.to_number(v) for v in ("bad", "Medium", " good ")] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="not one of the labels"):
        scale.to_number("great")
    rows = [{**BASE, "kind": "rating", "response": "ok", "value": "great"}]
    with pytest.raises(DataError, match="not one of the labels"):
        load_feedback(rows, scale=scale)


def test_numeric_scale_parsing() -> None:
    assert RatingScale.parse("1-5").span == (1.0, 5.0)
    assert RatingScale.parse({"low": 0, "high": 1}).span == (0.0, 1.0)
    assert RatingScale.parse(["no", "yes"]).labels == ("no", "yes")
    for bad in ("5-1", "ten", "a,a"):
        with pytest.raises(ValueError):
            RatingScale.parse(bad)


def test_csv_prompt_that_looks_like_a_bracket_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text('kind,rater_id,item_id,prompt,response,value\nrating,r1,i1,"[Spoilers] Review it",ok,3\n')
    (record,) = load_feedback(path)
    assert record.prompt == "[Spoilers] Review it" and record.value == 3.0
