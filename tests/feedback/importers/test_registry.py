"""The importers together (:mod:`prefalign.feedback.importers`): bad fixtures name file, line and
field, skip mode, format detection, :func:`import_feedback`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.feedback.importers import (
    detect_format,
    import_feedback,
    load_argilla,
    load_hh_rlhf,
    load_label_studio,
    load_shp,
    load_trl,
    load_ultrafeedback,
)
from prefalign.feedback.validate import DataError

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "feedback" / "external"


def fx(name: str) -> str:
    return str(EXTERNAL / name)


BAD = [
    ("hh_rlhf_bad.jsonl", load_hh_rlhf, 2, "rejected", 2),
    ("ultrafeedback_bad.jsonl", load_ultrafeedback, 2, "completions[1].overall_score", 1),
    ("shp_bad.jsonl", load_shp, 3, "labels", 2),
    ("argilla_bad.json", load_argilla, 2, "responses.ranking[0].value[1]", 2),
    ("label_studio_bad.json", load_label_studio, 2, "annotations[0].result[1].value.selected", 5),
    ("trl_bad.jsonl", load_trl, 2, "rejected", 2),
]


@pytest.mark.parametrize(("name", "loader", "line", "field", "kept"), BAD)
def test_bad_row_names_file_line_and_field(name, loader, line, field, kept) -> None:
    with pytest.raises(DataError) as info:
        loader(fx(name))
    error = info.value
    assert (error.file, error.line, error.field) == (fx(name), line, field)
    assert str(error).startswith(f"{fx(name)}, line {line}, field '{field}': ")


@pytest.mark.parametrize(("name", "loader", "line", "field", "kept"), BAD)
def test_skip_keeps_valid_rows_and_writes_report(tmp_path: Path, name, loader, line, field, kept) -> None:
    report = tmp_path / "report.jsonl"
    records = import_feedback(fx(name), on_error="skip", report_path=report)
    assert len(records) == kept
    assert [(e.line, e.field) for e in records.errors] == [(line, field)]
    rows = [json.loads(x) for x in report.read_text().splitlines()]
    assert rows == [records.errors[0].to_dict()] and rows[0]["file"] == fx(name)
    # the records kept are those of the valid rows, exactly as when loaded alone
    assert list(records) == list(loader(fx(name), on_error="skip"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hh_rlhf.jsonl", "hh-rlhf"),
        ("hh_rlhf_bad.jsonl", "hh-rlhf"),
        ("ultrafeedback.jsonl", "ultrafeedback"),
        ("ultrafeedback_binarized.jsonl", "ultrafeedback"),
        ("ultrafeedback_bad.jsonl", "ultrafeedback"),
        ("shp.jsonl", "shp"),
        ("shp_bad.jsonl", "shp"),
        ("argilla.json", "argilla"),
        ("argilla_flat.jsonl", "argilla"),
        ("argilla_bad.json", "argilla"),
        ("label_studio.json", "label-studio"),
        ("label_studio_bad.json", "label-studio"),
        ("trl.jsonl", "trl"),
        ("trl_bad.jsonl", "trl"),
        ("prefalign.jsonl", "prefalign"),
    ],
)
def test_detect_format(name, expected) -> None:
    assert detect_format(fx(name)) == expected


def test_import_feedback_entry_point() -> None:
    assert len(import_feedback(fx("prefalign.jsonl"))) == 2
    assert import_feedback(fx("hh_rlhf.jsonl"), as_text=True)[0].prompt.startswith("\n\nHuman:")
    assert import_feedback(fx("shp.jsonl"), "shp", min_score_ratio=4.5)[0].item_id == "p1"
    assert len(import_feedback(fx("label_studio.json"), format="label_studio")) == 7
    ratings = import_feedback(fx("ultrafeedback.jsonl"), aspect="truthfulness")
    assert [r.value for r in ratings] == [4.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="unknown feedback format"):
        import_feedback(fx("trl.jsonl"), format="csv")
    with pytest.raises(DataError, match="cannot tell the feedback format"):
        import_feedback([{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match="on_error"):
        import_feedback(fx("trl.jsonl"), on_error="ignore")
