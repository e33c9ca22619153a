"""Scored corpora for PHF: formats, segmentation, scorers, thresholds, errors naming file/line/field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.feedback.corpus import SEGMENTERS, load_corpus, score_threshold
from prefalign.feedback.formats import DataError
from prefalign.feedback.scorers import ScorerConfig, blocklist_scorer, build_scorer

BLOCK = blocklist_scorer([r"\bstupid\b"])


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_every_row_form_is_read_and_scored(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "c.jsonl",
        [
            {"text": "A fine day. What a stupid bus! Home now?"},
            {"text": "Stupid or not, one piece.", "score": 0.5},
            {"segments": ["ok then", "stupid thing"]},
            {"segments": ["x", "y"], "scores": [1, -2.5]},
        ],
    )
    docs = load_corpus(path, scorer=BLOCK)
    assert [d.segments for d in docs] == [
        ("A fine day.", "What a stupid bus!", "Home now?"),
        ("Stupid or not, one piece.",),
        ("ok then", "stupid thing"),
        ("x", "y"),
    ]
    assert [d.scores for d in docs] == [(0.0, -1.0, 0.0), (0.5,), (0.0, -1.0), (1.0, -2.5)]
    assert docs[0].source.endswith("c.jsonl:1")
    assert docs[3].mean_score == pytest.approx(-0.75)


def test_prompt_is_context_not_a_segment(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "Review Alien."}]
    path = _jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": chat, "text": "Great film. Stupid ending.", "score": 0.5},
            {"prompt": "Say hi.", "text": "Hi. You stupid bot."},
            {"segments": ["plain"]},
        ],
    )
    docs = load_corpus(path, scorer=BLOCK)
    assert docs[0].prompt == chat and docs[0].segments == ("Great film. Stupid ending.",)
    assert docs[1].prompt == "Say hi." and docs[1].scores == (0.0, -1.0)  # the prompt is never scored
    assert docs[2].prompt is None


def test_txt_is_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("One. Two stupid.\n\nThree\n")
    docs = load_corpus(path, scorer=BLOCK)
    assert [(d.segments, d.scores) for d in docs] == [
        (("One.", "Two stupid."), (0.0, -1.0)),
        (("Three",), (0.0,)),
    ]


def test_segmentations() -> None:
    assert SEGMENTERS["sentence"]("Hi there.  Is it? Yes!No") == ["Hi there.", "Is it?", "Yes!No"]
    assert SEGMENTERS["line"]("a\n\n b \n") == ["a", "b"]
    assert SEGMENTERS["document"](" a. b. ") == ["a. b."]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("{not json", "<json>"),
        ([1, 2], "<row>"),
        ({"txt": "typo"}, "text"),
        ({"text": ""}, "text"),
        ({"text": "a", "segments": ["b"]}, "segments"),
        ({"segments": []}, "segments"),
        ({"segments": ["a", 3]}, "segments[1]"),
        ({"segments": ["a", "b"], "scores": [1]}, "scores"),
        ({"segments": ["a"], "scores": ["high"]}, "scores[0]"),
        ({"segments": ["a"], "score": 1}, "score"),
        ({"text": "a", "score": float("nan")}, "score"),
        ({"text": "a", "score": True}, "score"),
        ({"text": "a", "scores": [1]}, "scores"),
        ({"text": "a", "prompt": ""}, "prompt"),
        ({"text": "a", "prompt": [{"role": "user"}]}, "prompt"),
        ({"text": "a", "prompt": 3}, "prompt"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, row: object, field: str) -> None:
    path = tmp_path / "c.jsonl"
    good = json.dumps({"text": "fine."})
    path.write_text(good + "\n" + (row if isinstance(row, str) else json.dumps(row)) + "\n")
    with pytest.raises(DataError) as info:
        load_corpus(path, scorer=BLOCK)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 2, field)
    assert "c.jsonl, line 2, field" in str(info.value)


def test_precomputed_scorer_needs_scores_in_every_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [{"text": "a", "score": 0}, {"text": "b. c."}])
    with pytest.raises(DataError) as info:
        load_corpus(path, scorer=build_scorer(ScorerConfig(name="precomputed")))
    assert (info.value.line, info.value.field) == (2, "scores")


def test_skip_mode_keeps_good_rows_and_writes_a_report(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [{"text": "a."}, {"text": 3}, {"segments": ["b"]}])
    report = tmp_path / "rejected.jsonl"
    docs = load_corpus(path, scorer=BLOCK, on_error="skip", report_path=report)
    assert [d.segments for d in docs] == [("a.",), ("b",)]
    assert [json.loads(line)["line"] for line in report.read_text().splitlines()] == [2]


def test_other_file_types_and_missing_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("text\na\n")
    with pytest.raises(DataError, match="jsonl"):
        load_corpus(tmp_path / "c.csv", scorer=BLOCK)
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "nope.jsonl", scorer=BLOCK)


def test_threshold_is_fixed_or_a_percentile() -> None:
    scores = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert score_threshold(scores, 0.7, 0) == 0.7
    assert score_threshold(scores, 0.7, 50) == 2.0
    assert score_threshold(scores, 0.7, 10) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        score_threshold(scores, 0.0, 100)


def test_scorers() -> None:
    assert BLOCK(["so STUPID", "stupidity", "fine"]) == [-1.0, 0.0, 0.0]
    default = build_scorer(ScorerConfig())
    assert default is not None and default(["I hate this", "I like this"]) == [-1.0, 0.0]
    vader = build_scorer(ScorerConfig(name="vader"))
    assert vader is not None
    bad, good = vader(["This is awful and I hate it.", "This is wonderful and I love it."])
    assert bad < 0 < good
    assert build_scorer(ScorerConfig(name="precomputed")) is None
    with pytest.raises(ValueError, match="unknown scorer"):
        build_scorer(ScorerConfig(name="nope"))
    with pytest.raises(ValueError, match="regular expression"):
        blocklist_scorer(["("])
