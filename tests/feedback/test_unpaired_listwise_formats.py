"""load_unpaired_rows / load_listwise_rows: formats, pair files as input, and file/line/field errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.feedback.convert import ListwiseRow
from prefalign.feedback.formats import DataError, UnpairedRow, load_listwise_rows, load_unpaired_rows


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MESSAGES = [{"role": "user", "content": "Hi?"}]


def test_unpaired_rows_text_conversational_and_pairs(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "u.jsonl",
        [
            {"prompt": "p", "completion": "good", "label": True},
            {"prompt": MESSAGES, "completion": [{"role": "assistant", "content": "no"}], "label": False},
            {"prompt": "q", "chosen": "a", "rejected": "b"},  # a pair: two rows
        ],
    )
    rows = load_unpaired_rows(path)
    assert [r.label for r in rows] == [True, False, True, False]
    assert rows[2] == UnpairedRow("q", "a", True, f"{path}:3") and rows[3].completion == "b"
    assert rows[2].source == rows[3].source
    assert rows[1].is_conversational and rows[0].to_dict() == {
        "prompt": "p",
        "completion": "good",
        "label": True,
    }


def test_unpaired_csv_labels(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("prompt,completion,label\np,good,true\np,bad,FALSE\n")
    assert [r.label for r in load_unpaired_rows(path)] == [True, False]


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"prompt": "p", "completion": "c", "label": "yes"}, "label", "true"),
        ({"prompt": "p", "completion": "c", "label": 1}, "label", "int"),
        ({"prompt": "p", "completion": "c"}, "label", "missing"),
        ({"completion": "c", "label": True}, "prompt", "missing"),
        ({"prompt": "p", "completion": "", "label": True}, "completion", "empty"),
        ({"prompt": MESSAGES, "completion": "c", "label": True}, "completion", "list of messages"),
        ({"prompt": "p"}, "<row>", "neither"),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, "rejected", "identical"),
    ],
)
def test_unpaired_errors_name_file_line_and_field(tmp_path: Path, row: dict, field: str, words: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "ok", "label": True}, row])
    with pytest.raises(DataError) as info:
        load_unpaired_rows(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 2, field)
    assert words in err.message
    # Skip mode keeps the good row and reports the bad one.
    kept = load_unpaired_rows(path, on_error="skip", report_path=tmp_path / "report.jsonl")
    assert len(kept) == 1 and kept.errors[0].line == 2
    assert json.loads((tmp_path / "report.jsonl").read_text())["field"] == field


def test_listwise_rows_sorted_best_first_and_pairs(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "l.jsonl",
        [
            {"prompt": "p", "responses": ["worst", "best", "mid"], "ranks": [5, 1, 3]},
            {"prompt": "p", "responses": ["b", "a", "c"], "ranks": [2, 2, 7]},
            {"prompt": "q", "chosen": "yes", "rejected": "no"},
            {
                "prompt": MESSAGES,
                "responses": [
                    [{"role": "assistant", "content": "x"}],
                    [{"role": "assistant", "content": "y"}],
                ],
                "ranks": [2, 1],
            },
        ],
    )
    rows = load_listwise_rows(path)
    assert rows[0] == ListwiseRow("p", ["best", "mid", "worst"], [1, 2, 3], f"{path}:1")
    assert rows[1].responses == ["b", "a", "c"] and rows[1].ranks == [1, 1, 2]  # ties keep their order
    assert rows[2].responses == ["yes", "no"] and rows[2].ranks == [1, 2]
    assert rows[3].responses[0][0]["content"] == "y"
    # All tied is kept (as data convert may write it): ranks 1, 1.
    tied = load_listwise_rows([{"prompt": "p", "responses": ["a", "b"], "ranks": [4, 4]}])
    assert tied[0].ranks == [1, 1]


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"prompt": "p", "responses": ["a"], "ranks": [1]}, "responses", "at least two"),
        ({"prompt": "p", "responses": "a", "ranks": [1]}, "responses", "at least two"),
        ({"prompt": "p", "responses": ["a", 3], "ranks": [1, 2]}, "responses", "response 1"),
        ({"prompt": "p", "responses": ["a", "a"], "ranks": [1, 2]}, "responses", "identical"),
        ({"prompt": "p", "responses": ["a", "b"]}, "ranks", "missing"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [1]}, "ranks", "one rank per response"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 0]}, "ranks", "rank 1"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, True]}, "ranks", "rank 1"),
        ({"responses": ["a", "b"], "ranks": [1, 2]}, "prompt", "missing"),
        ({"prompt": "p"}, "<row>", "neither"),
    ],
)
def test_listwise_errors_name_file_line_and_field(tmp_path: Path, row: dict, field: str, words: str) -> None:
    good = {"prompt": "p", "responses": ["a", "b"], "ranks": [1, 2]}
    path = _write(tmp_path / "bad.jsonl", [good, good, row])
    with pytest.raises(DataError) as info:
        load_listwise_rows(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 3, field)
    assert words in err.message


def test_tiny_fixtures_load() -> None:
    assert len(load_listwise_rows("configs/data/tiny_listwise.jsonl")) == 8
    rows = load_unpaired_rows("configs/data/tiny_unpaired.jsonl")
    assert len(rows) == 12 and sum(r.label for r in rows) == 6
