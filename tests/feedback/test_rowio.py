"""Row files in and out (:mod:`prefalign.feedback.rowio`) and the row errors (:mod:`~prefalign.feedback.validate`)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from prefalign.feedback.rowio import load_records, load_rows, open_source, write_report, write_rows
from prefalign.feedback.validate import DataError, FieldError, check_number, check_text, optional_id

ROWS = [
    {"prompt": "q", "answer": [{"role": "assistant", "content": "a"}], "score": 1.5},
    {"prompt": "r", "answer": [{"role": "assistant", "content": "b"}], "score": None, "extra": {"k": 1}},
]


def _read(path: Path) -> list[dict]:
    rows, _ = open_source(path, None)
    return [row for _, row in rows]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_write_rows_round_trips_through_the_readers(tmp_path: Path, suffix: str) -> None:
    path = write_rows(ROWS, tmp_path / f"rows{suffix}")
    assert path == tmp_path / f"rows{suffix}" and oct(path.stat().st_mode & 0o777) == "0o644"
    back = _read(path)
    assert [r["prompt"] for r in back] == ["q", "r"]
    assert [r["answer"] for r in back] == [row["answer"] for row in ROWS]  # messages survive CSV cells
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp file left


def test_write_rows_as_text_and_empty_files(tmp_path: Path) -> None:
    write_rows(ROWS, tmp_path / "t.parquet", as_text=True)
    back = _read(tmp_path / "t.parquet")
    assert back[0]["score"] == "1.5" and back[1]["extra"] == '{"k": 1}'  # every cell stored as text
    write_rows([], tmp_path / "e.csv", columns=("prompt", "chosen"))
    assert (tmp_path / "e.csv").read_text().splitlines() == ["prompt,chosen"]
    write_rows([], tmp_path / "e.jsonl")
    assert (tmp_path / "e.jsonl").read_text() == ""


def test_load_rows_places_field_errors_in_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": ""}\nnot json\n')

    def parse(row: dict, where: str) -> str:
        return check_text("text", row.get("text")) + f"@{where}"

    with pytest.raises(DataError) as info:
        load_rows(path, parse)
    assert (info.value.line, info.value.field) == (3, "text")
    report = tmp_path / "rejected.jsonl"
    kept = load_rows(path, parse, on_error="skip", report_path=report)
    assert kept == [f"ok@{path}:1"]
    assert [(e.line, e.field) for e in kept.errors] == [(3, "text"), (4, "<json>")]
    assert [json.loads(line) for line in report.read_text().splitlines()] == [
        e.to_dict() for e in kept.errors
    ]
    many = load_records(path, lambda row, where: [row, row] if row.get("text") else [], on_error="skip")
    assert len(many) == 2 and len(many.errors) == 1  # an empty list is no error; bad JSON is


def test_write_report_and_errors(tmp_path: Path) -> None:
    error = FieldError("score", "expected a number, got 'x'")
    placed = error.at("f.jsonl", 7)
    assert str(placed) == "f.jsonl, line 7, field 'score': expected a number, got 'x'"
    assert pickle.loads(pickle.dumps(placed)).to_dict() == placed.to_dict()
    assert pickle.loads(pickle.dumps(error)).field == "score"
    write_report(tmp_path / "r.jsonl", [placed])
    assert json.loads((tmp_path / "r.jsonl").read_text()) == placed.to_dict()


def test_field_checks() -> None:
    assert check_number("n", " 2.5 ", low=0, high=5) == 2.5
    with pytest.raises(FieldError, match=r"7 is outside the range \[0, 5\]"):
        check_number("n", 7, low=0, high=5)
    assert optional_id({"id": 12}, "id") == "12" and optional_id({"id": ""}, "id") is None
    with pytest.raises(FieldError, match="has role 'robot'"):
        check_text("prompt", [{"role": "robot", "content": "hi"}])
