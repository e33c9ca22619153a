"""prefalign.feedback.formats: TRL preference/SFT formats, validation errors, round trips, splits."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from prefalign.feedback import (
    DataError,
    PreferencePair,
    SFTRow,
    load_pairs,
    load_sft_rows,
    save_pairs,
    split_pairs,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feedback"
GOOD = {"prompt": "Say something kind.", "chosen": "You did well today.", "rejected": "Meh."}
USER = {"role": "user", "content": "Hi there"}
ASSISTANT_A = {"role": "assistant", "content": "Hello! How can I help?"}
ASSISTANT_B = {"role": "assistant", "content": "Go away."}


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


# ------------------------------------------------------------------------------- formats that load


def test_text_pairs_from_fixture():
    pairs = load_pairs(FIXTURES / "pairs_text.jsonl")
    assert len(pairs) == 4
    first = pairs[0]
    assert first == PreferencePair(
        prompt="Name a primary colour.",
        chosen="Red is a primary colour.",
        rejected="Green, obviously, and also purple.",
        subset="facts",
        source=f"{FIXTURES / 'pairs_text.jsonl'}:1",
    )
    assert not first.is_conversational
    assert [p.subset for p in pairs] == ["facts", "math", "tone", "math"]


def test_conversational_pairs():
    pairs = load_pairs(str(FIXTURES / "pairs_chat.jsonl"))
    assert [p.is_conversational for p in pairs] == [True, True]
    assert pairs[0].prompt[0] == {"role": "system", "content": "You are a concise assistant."}
    assert pairs[1].prompt[-1]["role"] == "user"
    assert pairs[1].chosen == [{"role": "assistant", "content": "Fourteen."}]
    assert pairs[1].source.endswith("pairs_chat.jsonl:2")


def test_implicit_prompt_is_the_shared_prefix():
    conv, text = load_pairs(FIXTURES / "pairs_implicit.jsonl")
    assert conv.prompt == [{"role": "user", "content": "Is water wet?"}]
    assert conv.chosen == [{"role": "assistant", "content": "It makes other things wet."}]
    assert conv.rejected == [{"role": "assistant", "content": "No idea, ask someone else."}]
    # Text: character prefix, the separating space stays with the answers (as TRL's extract_prompt).
    assert text.prompt == "The capital of Peru is"
    assert (text.chosen, text.rejected) == (" Lima.", " Cusco.")


def test_extra_columns_are_ignored_and_blank_lines_skipped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**GOOD, "id": 7, "score": 0.3}, "", "   ", GOOD])
    pairs = load_pairs(path)
    assert len(pairs) == 2
    assert pairs[1].source == f"{path}:4"  # numbering counts the blank lines


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "chosen": 3}]))
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert (info.value.line, info.value.field) == (2, "chosen")


# ------------------------------------------------------------------------------------ bad rows

BAD_ROWS = [
    pytest.param("{not json", "<json>", "not valid JSON", id="malformed-json"),
    pytest.param('{"prompt": "a", "chosen": "b"', "<json>", "not valid JSON", id="truncated-json"),
    pytest.param([1, 2], "<row>", "got list", id="row-not-object"),
    pytest.param({"prompt": "p", "rejected": "r"}, "chosen", "missing", id="missing-chosen"),
    pytest.param({"prompt": "p", "chosen": "c"}, "rejected", "missing", id="missing-rejected"),
    pytest.param(
        {**GOOD, "chosen": 5},
        "chosen",
        "expected a non-empty string or a list of messages, got int",
        id="int",
    ),
    pytest.param({**GOOD, "rejected": None}, "rejected", "missing", id="null"),
    pytest.param({**GOOD, "prompt": {"text": "x"}}, "prompt", "got dict", id="dict-prompt"),
    pytest.param({**GOOD, "prompt": ""}, "prompt", "empty string", id="empty-prompt"),
    pytest.param({**GOOD, "chosen": "   "}, "chosen", "empty string", id="blank-chosen"),
    pytest.param({**GOOD, "rejected": []}, "rejected", "empty list", id="empty-list"),
    pytest.param({**GOOD, "chosen": GOOD["rejected"]}, "rejected", "identical to 'chosen'", id="identical"),
    pytest.param(
        {"prompt": [USER], "chosen": [{"content": "x"}], "rejected": [ASSISTANT_B]},
        "chosen",
        "message 0 has no 'role'",
        id="message-without-role",
    ),
    pytest.param(
        {"prompt": [{"role": "user"}], "chosen": [ASSISTANT_A], "rejected": [ASSISTANT_B]},
        "prompt",
        "message 0 has no 'content'",
        id="message-without-content",
    ),
    pytest.param(
        {"prompt": [{"role": "robot", "content": "x"}], "chosen": [ASSISTANT_A], "rejected": [ASSISTANT_B]},
        "prompt",
        "role 'robot'",
        id="bad-role",
    ),
    pytest.param(
        {"prompt": [USER], "chosen": [ASSISTANT_A], "rejected": ["just text"]},
        "rejected",
        "message 0 must be an object",
        id="message-not-object",
    ),
    pytest.param(
        {"prompt": [USER], "chosen": [ASSISTANT_A], "rejected": [{"role": "assistant", "content": 3}]},
        "rejected",
        "'content' must be a string, got int",
        id="content-int",
    ),
    pytest.param(
        {"prompt": [USER], "chosen": "plain", "rejected": [ASSISTANT_B]},
        "rejected",
        "'chosen' is a string, so 'rejected' must be too",
        id="mixed-kinds",
    ),
    pytest.param(
        {"prompt": "text prompt", "chosen": [ASSISTANT_A], "rejected": [ASSISTANT_B]},
        "chosen",
        "'prompt' is a string",
        id="text-prompt-chat-answers",
    ),
    pytest.param(
        {"prompt": [USER], "chosen": [USER], "rejected": [ASSISTANT_B]},
        "chosen",
        "no message has role 'assistant'",
        id="no-assistant",
    ),
    pytest.param(
        {"chosen": "Apples.", "rejected": "Pears."}, "prompt", "share no prefix", id="implicit-no-prefix"
    ),
    pytest.param(
        {"chosen": [USER, ASSISTANT_A], "rejected": [USER]},
        "rejected",
        "nothing is left",
        id="implicit-prefix-swallows-answer",
    ),
    pytest.param({**GOOD, "subset": 3}, "subset", "got int", id="subset-int"),
]


@pytest.mark.parametrize(("bad", "field", "fragment"), BAD_ROWS)
def test_each_bad_row_names_file_line_and_field(tmp_path, bad, field, fragment):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 3, field)
    assert fragment in err.message
    assert str(err).startswith(f"{path}, line 3, field '{field}': ")
    assert isinstance(err, ValueError)


def test_error_message_format_matches_the_documented_example(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD] * 11 + [{**GOOD, "chosen": 12}])
    with pytest.raises(
        DataError,
        match=r"pairs\.jsonl, line 12, field 'chosen': expected a non-empty string or a list of messages, got int$",
    ):
        load_pairs(path)


def test_invalid_utf8_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert (info.value.line, info.value.field) == (2, "<json>")
    assert "UTF-8" in info.value.message


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        load_pairs(path)


def test_missing_file_and_bad_on_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="on_error"):
        load_pairs(FIXTURES / "pairs_text.jsonl", on_error="ignore")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- skip mode


def test_skip_keeps_valid_rows_and_writes_the_report(tmp_path, caplog):
    rows = [
        GOOD,
        "{oops",
        {**GOOD, "chosen": 1},
        {**GOOD, "prompt": "Another."},
        {**GOOD, "rejected": GOOD["chosen"]},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    report = tmp_path / "reports" / "rejected.jsonl"
    with caplog.at_level(logging.WARNING, logger="prefalign.feedback"):
        pairs = load_pairs(path, on_error="skip", report_path=report)
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:4"]
    assert [(e.line, e.field) for e in pairs.errors] == [(2, "<json>"), (3, "chosen"), (5, "rejected")]
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in lines] == [(2, "<json>"), (3, "chosen"), (5, "rejected")]
    assert all(r["file"] == str(path) and r["message"] for r in lines)
    assert "skipped 3 of 5 rows" in caplog.text


def test_skip_with_no_errors_writes_an_empty_report(tmp_path):
    report = tmp_path / "r.jsonl"
    pairs = load_pairs(FIXTURES / "pairs_text.jsonl", on_error="skip", report_path=report)
    assert len(pairs) == 4 and pairs.errors == []
    assert report.read_text() == ""


def test_skip_when_every_row_is_bad_raises(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", ["nope", "{}"])
    with pytest.raises(DataError, match="all 2 rows were rejected") as info:
        load_pairs(path, on_error="skip")
    assert info.value.line == 1


# ------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fixture", ["pairs_text.jsonl", "pairs_chat.jsonl", "pairs_implicit.jsonl"])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_file_round_trip(tmp_path, fixture, suffix):
    pairs = load_pairs(FIXTURES / fixture)
    if fixture == "pairs_implicit.jsonl":
        pairs = pairs[:1]  # one file holds one kind (conversational here)
    out = save_pairs(pairs, tmp_path / f"out{suffix}")
    again = load_pairs(out)
    strip = [(p.prompt, p.chosen, p.rejected, p.subset) for p in pairs]
    assert [(p.prompt, p.chosen, p.rejected, p.subset) for p in again] == strip
    assert again[0].source == f"{out}:{2 if suffix == '.csv' else 1}"  # CSV: line 1 is the header


def test_saved_jsonl_is_trl_format(tmp_path):
    out = save_pairs(load_pairs(FIXTURES / "pairs_chat.jsonl"), tmp_path / "trl.jsonl")
    row = json.loads(out.read_text().splitlines()[0])
    assert set(row) == {"prompt", "chosen", "rejected"}
    assert row["chosen"] == [{"role": "assistant", "content": "Bonjour !"}]


def test_save_refuses_a_mix_of_kinds(tmp_path):
    text = load_pairs(FIXTURES / "pairs_text.jsonl")[0]
    chat = load_pairs(FIXTURES / "pairs_chat.jsonl")[0]
    with pytest.raises(ValueError, match="mix"):
        save_pairs([text, chat], tmp_path / "mixed.jsonl")


def test_parquet_row_numbers_and_message_struct_padding(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A message with an extra key makes Arrow pad the others with nulls; those must not count as fields.
    rows = [
        {"prompt": [USER], "chosen": [ASSISTANT_A], "rejected": [{**ASSISTANT_B, "name": "bot"}]},
        {"prompt": [USER], "chosen": [ASSISTANT_A], "rejected": [{"role": "assistant", "content": ""}]},
    ]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert (info.value.line, info.value.field) == (2, "rejected")
    (pair,) = load_pairs(path, on_error="skip")
    assert pair.chosen == [ASSISTANT_A]
    assert pair.rejected == [{**ASSISTANT_B, "name": "bot"}]


def test_csv_errors_name_the_physical_line(tmp_path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerow(["multi\nline prompt", "yes", "no"])  # spans lines 2-3
        writer.writerow(["p", "", "no"])  # line 4
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert (info.value.line, info.value.field) == (4, "chosen")


def test_datasets_objects_and_saved_folders(tmp_path):
    import datasets

    pairs = load_pairs(FIXTURES / "pairs_text.jsonl")
    rows = [p.to_dict() for p in pairs]
    ds = datasets.Dataset.from_list(rows)
    assert [p.prompt for p in load_pairs(ds)] == [p.prompt for p in pairs]

    bad = datasets.Dataset.from_list([*rows, {**rows[0], "chosen": ""}])
    dd = datasets.DatasetDict({"train": ds, "test": bad})
    with pytest.raises(ValueError, match="pass split="):
        load_pairs(dd)
    assert len(load_pairs(dd, split="train")) == 4
    with pytest.raises(DataError) as info:
        load_pairs(dd, split="test")
    assert (info.value.line, info.value.field) == (5, "chosen")
    assert "[test]" in info.value.file

    folder = tmp_path / "saved"
    dd.save_to_disk(str(folder))
    with pytest.raises(DataError) as info:
        load_pairs(folder, split="test")
    assert info.value.file == f"{folder}[test]" and info.value.line == 5
    ds.save_to_disk(str(tmp_path / "single"))
    assert len(load_pairs(tmp_path / "single")) == 4

    chat = datasets.Dataset.from_list([p.to_dict() for p in load_pairs(FIXTURES / "pairs_chat.jsonl")])
    assert load_pairs(chat)[0].chosen == [{"role": "assistant", "content": "Bonjour !"}]


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(ValueError, match="save_to_disk"):
        load_pairs(tmp_path)


# ----------------------------------------------------------------------------------------- split


def _pairs(n_by_subset: dict[str | None, int]) -> list[PreferencePair]:
    return [
        PreferencePair(prompt=f"{s} q{i}", chosen="good", rejected="bad", subset=s)
        for s, n in n_by_subset.items()
        for i in range(n)
    ]


def test_split_is_deterministic_stratified_and_complete():
    pairs = _pairs({"a": 50, "b": 30, "c": 20})
    train, held = split_pairs(pairs, eval_fraction=0.2, seed=3)
    assert (len(train), len(held)) == (80, 20)
    assert sorted(p.prompt for p in train + held) == sorted(p.prompt for p in pairs)
    assert {s: sum(p.subset == s for p in held) for s in "abc"} == {"a": 10, "b": 6, "c": 4}
    assert split_pairs(pairs, eval_fraction=0.2, seed=3) == (train, held)
    assert split_pairs(pairs, eval_fraction=0.2, seed=4)[1] != held
    assert [pairs.index(p) for p in held] == sorted(pairs.index(p) for p in held)  # input order kept


def test_split_edge_cases():
    pairs = _pairs({None: 7})
    assert split_pairs(pairs, eval_fraction=0.0, seed=0) == (pairs, [])
    train, held = split_pairs(pairs[:2], eval_fraction=0.01, seed=0)
    assert (len(train), len(held)) == (1, 1)
    uneven = _pairs({"x": 3, "y": 3, "z": 1})
    assert len(split_pairs(uneven, eval_fraction=0.3, seed=1)[1]) == 2
    with pytest.raises(ValueError):
        split_pairs(pairs, eval_fraction=1.0, seed=0)


# ------------------------------------------------------------------------------------------- SFT


def test_sft_formats():
    rows = load_sft_rows(FIXTURES / "sft_rows.jsonl")
    assert rows[0] == SFTRow("Translate 'cat' to German.", "Katze", source=rows[0].source)
    assert rows[1].prompt == [{"role": "user", "content": "Hello"}]
    assert rows[1].completion == [{"role": "assistant", "content": "Hi! How can I help?"}]
    assert rows[1].is_conversational and not rows[0].is_conversational
    assert (rows[2].prompt, rows[2].completion) == ("", "A plain pretraining-style line of text.")
    assert rows[3].completion == [{"role": "assistant", "content": "Tokyo."}]


@pytest.mark.parametrize(
    ("bad", "field", "fragment"),
    [
        pytest.param({"prompt": "x"}, "completion", "missing", id="no-completion"),
        pytest.param({"completion": "x"}, "prompt", "missing", id="no-prompt"),
        pytest.param({"foo": 1}, "<row>", "found none", id="no-known-fields"),
        pytest.param({"text": ""}, "text", "empty string", id="empty-text"),
        pytest.param({"messages": []}, "messages", "empty list", id="empty-messages"),
        pytest.param(
            {"messages": [USER]}, "messages", "last message must be the assistant", id="ends-with-user"
        ),
        pytest.param(
            {"messages": [USER, {"role": "bot", "content": "x"}]}, "messages", "role 'bot'", id="bad-role"
        ),
        pytest.param({"prompt": "q", "completion": 4}, "completion", "got int", id="completion-int"),
        pytest.param("[1,", "<json>", "not valid JSON", id="bad-json"),
    ],
)
def test_sft_bad_rows(tmp_path, bad, field, fragment):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"text": "fine"}, bad])
    with pytest.raises(DataError) as info:
        load_sft_rows(path)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 2, field)
    assert fragment in info.value.message
    kept = load_sft_rows(path, on_error="skip", report_path=tmp_path / "r.jsonl")
    assert len(kept) == 1 and json.loads((tmp_path / "r.jsonl").read_text())["line"] == 2


@pytest.mark.slow  # importing trl takes several seconds
def test_matches_trl_extract_prompt_and_is_conversational():
    data_utils = pytest.importorskip("trl.data_utils")
    for line in (FIXTURES / "pairs_implicit.jsonl").read_text().splitlines():
        row = json.loads(line)
        (pair,) = load_pairs([row])
        assert data_utils.extract_prompt(row) == {
            "prompt": pair.prompt,
            "chosen": pair.chosen,
            "rejected": pair.rejected,
        }
        assert data_utils.is_conversational(row) == pair.is_conversational
    for pair in load_pairs(FIXTURES / "pairs_chat.jsonl"):
        assert data_utils.is_conversational(pair.to_dict())


# ------------------------------------------------------------------------------------------ margin


def test_margin_column_is_read_as_a_float(tmp_path):
    rows = [{**GOOD, "margin": 2}, {**GOOD, "margin": None}, GOOD, {**GOOD, "margin": "0.25"}]
    pairs = load_pairs(write_jsonl(tmp_path / "m.jsonl", rows))
    assert [p.margin for p in pairs] == [2.0, None, None, 0.25]  # "0.25": CSV cells are strings
    assert isinstance(pairs[0].margin, float)
    assert pairs[0].to_dict() == {**GOOD, "margin": 2.0}
    assert "margin" not in pairs[1].to_dict()


@pytest.mark.parametrize(
    ("margin", "fragment"),
    [
        pytest.param("big", "got 'big'", id="word"),
        pytest.param(float("nan"), "got nan", id="nan"),
        pytest.param("inf", "got inf", id="inf-string"),
        pytest.param(True, "got bool", id="bool"),
        pytest.param([1], "got list", id="list"),
        pytest.param(10**400, "too large", id="huge-int"),
    ],
)
def test_bad_margin_names_the_field(margin, fragment):
    with pytest.raises(DataError) as info:
        load_pairs([GOOD, {**GOOD, "margin": margin}])
    assert (info.value.line, info.value.field) == (2, "margin")
    assert fragment in info.value.message


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_margin_round_trip_with_some_margins_missing(tmp_path, suffix):
    pairs = [
        PreferencePair(prompt="q1", chosen="good", rejected="bad", margin=0.5),
        PreferencePair(prompt="q2", chosen="good", rejected="bad"),
        PreferencePair(prompt="q3", chosen="good", rejected="bad", margin=3.0),
    ]
    again = load_pairs(save_pairs(pairs, tmp_path / f"m{suffix}"))
    assert [p.margin for p in again] == [0.5, None, 3.0]


def test_saved_margin_column_only_when_a_pair_has_one(tmp_path):
    with_margin = [PreferencePair(prompt="q", chosen="a", rejected="b", margin=1.0)]
    out = save_pairs(with_margin, tmp_path / "m.jsonl")
    assert json.loads(out.read_text()) == {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0}
    out = save_pairs([PreferencePair(prompt="q", chosen="a", rejected="b")], tmp_path / "n.jsonl")
    assert "margin" not in json.loads(out.read_text())


def test_csv_round_trip_with_some_subsets_missing(tmp_path):
    pairs = [
        PreferencePair(prompt="q1", chosen="good", rejected="bad", subset="harmless"),
        PreferencePair(prompt="q2", chosen="good", rejected="bad"),
    ]
    again = load_pairs(save_pairs(pairs, tmp_path / "s.csv"))
    assert [p.subset for p in again] == ["harmless", None]
