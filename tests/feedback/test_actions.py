"""The ``prefalign data`` commands as plain functions (no argparse): what they return and write."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from prefalign.feedback.actions import (
    AggregateResult,
    CommandError,
    ConvertResult,
    InspectResult,
    aggregate_data,
    convert_data,
    inspect_data,
    read_inputs,
)
from prefalign.feedback.formats import PreferencePair, load_listwise_rows, load_pairs, load_sft_rows
from prefalign.feedback.privacy import KEY_ENV
from prefalign.feedback.schema import Comparison, RatingScale, load_feedback
from prefalign.feedback.validate import DataError

EXTERNAL = Path(__file__).resolve().parents[1] / "fixtures" / "feedback" / "external"
LS = EXTERNAL / "label_studio.json"
LS_BAD = EXTERNAL / "label_studio_bad.json"
TRL = EXTERNAL / "trl.jsonl"
HH = EXTERNAL / "hh_rlhf.jsonl"
KEY = "a-test-key-of-at-least-16-bytes"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def panel(path: Path) -> Path:
    """Ratings 0-10: 12 items x 2 responses, four careful raters and one who rates at random."""
    rng = random.Random(0)
    rows = []
    for i in range(12):
        for k, truth in enumerate((2 + i % 3, 7 + i % 3)):
            for rater in ("ann", "bob", "cat", "dan", "spam"):
                value = rng.randint(0, 10) if rater == "spam" else truth + rng.choice([-1, 0, 1])
                rows.append(
                    {
                        "kind": "rating",
                        "rater_id": rater,
                        "item_id": f"i{i}",
                        "prompt": f"Question {i}?",
                        "response": f"answer {k} to {i}" + " with more words" * k,
                        "value": value,
                    }
                )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------- inputs


def test_read_inputs_concatenates_files_and_names_their_formats() -> None:
    inputs = read_inputs([LS, TRL])
    assert inputs.sources == {str(LS): "label-studio", str(TRL): "trl"}
    assert inputs.counts == {str(LS): 7, str(TRL): 3}
    assert len(inputs.records) == len(inputs.formats) == 10
    assert all(isinstance(r, Comparison) for r in inputs.records[7:])  # TRL pairs as comparisons
    assert inputs.order_known == [True] * 7 + [False] * 3  # TRL rows do not record display order


def test_read_inputs_privacy_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(CommandError, match=KEY_ENV):
        read_inputs([LS], pseudonymize=True)
    inputs = read_inputs([LS], pseudonym_key=KEY, scrub=True)
    assert all(r.rater_id.startswith("r_") for r in inputs.records)
    assert inputs.privacy == [
        "rater ids replaced by keyed pseudonyms",
        "e-mail addresses and phone numbers scrubbed from the texts",
    ]


def test_bad_rows_raise_or_are_skipped_into_the_report(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        read_inputs([LS_BAD])
    assert (info.value.file, info.value.line) == (str(LS_BAD), 2)
    report = tmp_path / "rejected.jsonl"
    inputs = read_inputs([LS_BAD], on_error="skip", report=report)
    assert [e.to_dict() for e in inputs.errors] == jsonl(report)
    assert jsonl(report)[0]["field"] == "annotations[0].result[1].value.selected"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": "ten"}, "--scale ten"),
        ({"scale": "1-3"}, "rater '7' of item '12', field 'value': 4 is outside the scale [1, 3]"),
        ({"format": "csv"}, "unknown feedback format"),
        ({"on_error": "ignore"}, "on_error must be 'raise' or 'skip'"),
    ],
)
def test_bad_input_options_are_one_line_command_errors(options: dict, message: str) -> None:
    with pytest.raises(CommandError) as info:
        read_inputs([LS], **options)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- inspect


def test_inspect_data_returns_the_report_and_writes_json(tmp_path: Path) -> None:
    lines: list[str] = []
    result = inspect_data([LS], json_path=tmp_path / "r.json", say=lines.append)
    assert isinstance(result, InspectResult)
    report = result.report
    assert (report.n_records, report.n_raters, report.n_items) == (7, 3, 4)
    assert report.scale == "1-5"  # the Label Studio default, since no scale was given
    assert result.json_path == tmp_path / "r.json"
    assert json.loads(result.json_path.read_text()) == report.as_dict()
    assert result.as_dict()["report"] == report.as_dict()
    assert result.plot_path is None and result.as_dict()["plot_path"] is None
    json.dumps(result.as_dict(), allow_nan=False)
    assert (
        lines[0].startswith("7 records from 1 file")
        and lines[-1] == f"\nwrote the report to {tmp_path / 'r.json'}"
    )


def test_inspect_data_is_silent_without_say(capsys: pytest.CaptureFixture[str]) -> None:
    result = inspect_data([str(LS)], scale=RatingScale(1, 5))
    assert result.report.scale == "1-5"
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------- convert


def test_convert_data_to_pairs(tmp_path: Path) -> None:
    out, kept = tmp_path / "pairs.jsonl", tmp_path / "kept.csv"
    result = convert_data([LS], output=out, keep_feedback=kept)
    assert isinstance(result, ConvertResult)
    assert result.to == "pairs" and result.output == out and result.feedback_path == kept
    assert len(result.rows) == 4 and all(isinstance(p, PreferencePair) for p in result.rows)
    assert [p.to_dict() for p in load_pairs(out)] == [p.to_dict() for p in result.rows]
    assert result.counts["records"] == 7 and result.counts["duplicates_merged"] == 1
    assert result.counts["split_dropped"] == 1
    assert len(load_feedback(kept)) == len(result.inputs.records) == 7
    summary = result.as_dict()
    assert summary["rows"] == 4 and summary["output"] == str(out) and summary["feedback_path"] == str(kept)
    assert summary["inputs"]["kinds"] == {
        "comparison": 2,
        "ranking": 2,
        "rating": 1,
        "edit": 1,
        "demonstration": 1,
    }
    json.dumps(summary, allow_nan=False)


def test_convert_data_options_reach_the_conversion(tmp_path: Path) -> None:
    merged = convert_data([LS], output=tmp_path / "a.jsonl")
    per_judgment = convert_data([LS], output=tmp_path / "b.jsonl", dedupe=False)
    assert len(per_judgment.rows) > len(merged.rows)
    assert per_judgment.counts["duplicates_merged"] == 0
    adjacent = convert_data([LS], output=tmp_path / "c.jsonl", ranking_strategy="adjacent")
    assert len(adjacent.rows) == len(merged.rows) - 1  # a ranking of three gives two pairs, not three


def test_convert_data_sft_and_listwise(tmp_path: Path) -> None:
    sft = convert_data([LS], output=tmp_path / "sft.parquet", to="sft")
    assert [r.to_dict() for r in load_sft_rows(tmp_path / "sft.parquet")] == [r.to_dict() for r in sft.rows]
    assert len(sft.rows) == 2
    listwise = convert_data([LS], output=tmp_path / "lw.jsonl", to="listwise")
    assert [r.ranks for r in listwise.rows] == [[1, 2, 3], [1, 2]]
    assert listwise.counts["filtered"] == 5  # the records that are not rankings
    assert [r.ranks for r in load_listwise_rows(tmp_path / "lw.jsonl")] == [[1, 2, 3], [1, 2]]


def test_convert_data_writes_one_kind_of_row(tmp_path: Path) -> None:
    result = convert_data([TRL, HH], output=tmp_path / "pairs.csv")
    assert result.reshaped == 2  # the two text pairs of trl.jsonl became chat messages
    assert all(p.is_conversational for p in result.rows)
    assert len(load_pairs(tmp_path / "pairs.csv")) == len(result.rows) == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output": "pairs.txt"}, "use a .jsonl, .parquet or .csv file name"),
        ({"output": "p.jsonl", "keep_feedback": "kept.txt"}, "--keep-feedback kept.txt"),
        ({"output": "p.jsonl", "to": "dpo"}, "--to 'dpo': choose one of pairs, sft, listwise"),
        ({"output": "p.jsonl", "strategy": "best"}, "cannot convert"),
    ],
)
def test_convert_data_refuses_bad_options(
    options: dict, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match=message):
        convert_data([LS], **options)
    assert list(tmp_path.iterdir()) == []


def test_convert_data_with_no_rows_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no listwise rows came out"):
        convert_data([TRL], output=tmp_path / "lw.jsonl", to="listwise")
    assert not (tmp_path / "lw.jsonl").exists()


# ----------------------------------------------------------------------------------------- aggregate


def test_aggregate_data_drops_the_spammer(tmp_path: Path) -> None:
    out, scores, kept = tmp_path / "c.jsonl", tmp_path / "scores.csv", tmp_path / "kept.jsonl"
    lines: list[str] = []
    result = aggregate_data(
        [panel(tmp_path / "f.jsonl")],
        output=out,
        scale="0-10",
        drop_spammers=True,
        scores=scores,
        keep_feedback=kept,
        say=lines.append,
    )
    assert isinstance(result, AggregateResult)
    assert result.methods == {"rating": "weighted"}
    assert result.dropped == {"rating": ["spam"]}
    assert result.counts["rating"] == {"items": 12, "pairs": 12, "ties": 0, "unpaired": 0, "self_pairs": 0}
    assert len(result.pairs) == 12 and all("more words" in p.chosen for p in result.pairs)
    assert [p.to_dict() for p in load_pairs(out)] == [p.to_dict() for p in result.pairs]
    spam = next(r for r in result.raters if r["rater_id"] == "spam")
    assert spam["spammer"] is True and spam["action"] == "dropped"
    assert {r["rater_id"] for r in result.raters if not r["action"]} == {"ann", "bob", "cat", "dan"}
    assert len(result.scores) == 24 and result.scores_path == scores
    assert scores.read_text().splitlines()[0] == "kind,item_id,response_id,score,n,response"
    assert {r.rater_id for r in load_feedback(kept)} == {"ann", "bob", "cat", "dan"}
    assert "dropped the ratings of 1 suspected spammer(s): spam" in lines
    json.dumps(result.as_dict(), allow_nan=False)


def test_aggregate_data_methods_and_kinds(tmp_path: Path) -> None:
    result = aggregate_data([LS], output=tmp_path / "c.jsonl", method="mean")
    assert result.methods == {"rating": "mean", "comparison": "bt", "ranking": "plackett_luce"}
    assert result.counts["comparison"]["ties"] == 1  # one vote each way
    assert result.counts["ranking"]["pairs"] == 1
    assert {r["kind"] for r in result.scores} == {"rating", "comparison", "ranking"}
    json.dumps(result.as_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "vote"}, "--method 'vote': choose one of"),
        ({"calibrate": "minmax"}, "--calibrate 'minmax': choose one of none, zscore, ordinal"),
        ({"scores": "scores.txt"}, "--scores scores.txt"),
        ({"method": "dawid_skene", "calibrate": "zscore"}, "calibrate"),
    ],
)
def test_aggregate_data_refuses_bad_options(
    options: dict, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = panel(tmp_path / "f.jsonl")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match=message):
        aggregate_data([source], output="c.jsonl", scale="0-10", **options)
    assert not (tmp_path / "c.jsonl").exists()


def test_aggregate_data_needs_something_to_aggregate(tmp_path: Path) -> None:
    demo = tmp_path / "demo.jsonl"
    demo.write_text(
        json.dumps({"kind": "demonstration", "rater_id": "r", "item_id": "i", "prompt": "q", "response": "a"})
        + "\n"
    )
    with pytest.raises(CommandError, match="no ratings, comparisons or rankings to aggregate"):
        aggregate_data([demo], output=tmp_path / "c.jsonl")
