"""Importers of external feedback formats: exact records from each fixture, errors naming file/line/field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from prefalign.feedback.formats import DataError, PreferencePair
from prefalign.feedback.importers import (
    ULTRAFEEDBACK_SCALES,
    detect_format,
    import_feedback,
    load_argilla,
    load_hh_rlhf,
    load_label_studio,
    load_shp,
    load_trl,
    load_ultrafeedback,
)
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    RankedResponse,
    Ranking,
    Rating,
    text_id,
)

EXTERNAL = Path(__file__).resolve().parents[1] / "fixtures" / "feedback" / "external"
H, A = "\n\nHuman: ", "\n\nAssistant: "


def fx(name: str) -> str:
    return str(EXTERNAL / name)


# ------------------------------------------------------------------------------------------ HH-RLHF


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


# ------------------------------------------------------------------------------------ UltraFeedback

HAIKU = "Beam across dark waves / a patient eye that turns / ships find their way home"
TALL = "Lighthouses are tall buildings near the sea."


def _uf(prompt, item, response, value, meta, rater="gpt-4") -> Rating:
    return Rating(
        rater_id=rater,
        item_id=item,
        prompt=prompt,
        response_id=text_id(response),
        response=response,
        value=value,
        metadata=meta,
    )


def test_ultrafeedback_raw_overall_scores() -> None:
    ratings = load_ultrafeedback(fx("ultrafeedback.jsonl"))
    haiku = "Write a haiku about a lighthouse."
    km = "Convert 3 kilometres to metres."
    assert list(ratings) == [
        _uf(haiku, "uf-1", HAIKU, 8.5, {"aspect": "overall", "model": "model-a"}),
        _uf(haiku, "uf-1", TALL, 3.0, {"aspect": "overall", "model": "model-b"}),
        _uf(km, text_id(km), "3 kilometres is 3000 metres.", 10.0, {"aspect": "overall", "model": "model-c"}),
    ]


def test_ultrafeedback_aspects_and_not_applicable() -> None:
    honesty = load_ultrafeedback(fx("ultrafeedback.jsonl"), aspect="honesty", rater_id="judge")
    # model-b's honesty is "N/A": no rating for it
    assert [(r.response, r.value, r.rater_id) for r in honesty] == [
        (HAIKU, 4.0, "judge"),
        ("3 kilometres is 3000 metres.", 5.0, "judge"),
    ]
    fine = load_ultrafeedback(fx("ultrafeedback.jsonl"), aspect="fine-grained")
    assert [r.value for r in fine] == [4.5, 2.25, 5.0]
    assert ULTRAFEEDBACK_SCALES["honesty"].span == (1.0, 5.0)
    with pytest.raises(ValueError, match="unknown UltraFeedback aspect"):
        load_ultrafeedback(fx("ultrafeedback.jsonl"), aspect="style")


def test_ultrafeedback_binarized_rows() -> None:
    ratings = load_ultrafeedback(fx("ultrafeedback_binarized.jsonl"))
    user = [{"role": "user", "content": "Give one tip for better sleep."}]
    good = [{"role": "assistant", "content": "Keep the same bedtime every night, weekends included."}]
    bad = [{"role": "assistant", "content": "Drink coffee before bed."}]
    colour = "What colour do you get mixing blue and yellow?"
    assert list(ratings) == [
        _uf(user, "ufb-1", good, 9.0, {"label": "chosen"}),
        _uf(user, "ufb-1", bad, 2.5, {"label": "rejected"}),
        _uf(colour, text_id(colour), "Green.", 10.0, {"label": "chosen"}),
        _uf(colour, text_id(colour), "Purple.", 1.0, {"label": "rejected"}),
    ]


def test_ultrafeedback_from_a_datasets_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in Path(fx("ultrafeedback.jsonl")).read_text().splitlines()]
    dataset = datasets.Dataset.from_list(rows)  # missing keys become None (prompt_id of row 2)
    ratings = load_ultrafeedback(dataset, aspect="helpfulness")
    assert [r.value for r in ratings] == [5.0, 2.0, 5.0]
    assert ratings[2].item_id == text_id("Convert 3 kilometres to metres.")


# ---------------------------------------------------------------------------------------------- SHP


def test_shp_comparisons() -> None:
    comparisons = load_shp(fx("shp.jsonl"))
    assert comparisons[0] == Comparison(
        rater_id="reddit",
        item_id="p1",
        prompt="Why did my bread come out dense?",
        a_id="cA1",
        a="The dough probably needed a longer rise in a warm spot.",
        b_id="cB1",
        b="Bread is always dense.",
        winner="a",
        strength=5.0,
        metadata={"domain": "askbaking_train", "score_A": 40.0, "score_B": 8.0},
    )
    assert (comparisons[1].winner, comparisons[1].strength, comparisons[1].b_id) == ("b", 4.0, "cB2")
    third = comparisons[2]
    assert third.a_id == text_id("Yes, just lower the oven by about 15 degrees.")
    assert third.metadata == {"score_A": 6.0, "score_B": 4.0}
    assert [c.item_id for c in load_shp(fx("shp.jsonl"), min_score_ratio=2)] == ["p1", "p2"]


def test_shp_from_csv(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in Path(fx("shp.jsonl")).read_text().splitlines()]
    path = tmp_path / "shp.csv"
    columns = ["post_id", "history", "human_ref_A", "human_ref_B", "labels", "score_ratio"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    comparisons = load_shp(path)
    assert [(c.winner, c.strength) for c in comparisons] == [("a", 5.0), ("b", 4.0), ("a", 1.5)]


# ------------------------------------------------------------------------------------------ Argilla

LIBRARY = "Summarise: the library opens at nine and closes at five."
OPEN = "The library is open from nine to five."
AUTUMN = "Describe autumn in one sentence."
LEAVES = "Leaves turn amber and drift down in cool air."
SEASON = "Autumn is a season."


def test_argilla_nested_export_keeps_submitted_responses() -> None:
    records = load_argilla(fx("argilla.json"))
    assert list(records) == [
        Rating(
            rater_id="u-1",
            item_id="rec-1",
            prompt=LIBRARY,
            response_id=text_id(OPEN),
            response=OPEN,
            value=4.0,
            metadata={"question": "rating"},
        ),  # u-2's draft rating is ignored
        Edit(
            rater_id="u-1",
            item_id="rec-1",
            prompt=LIBRARY,
            response_id=text_id(OPEN),
            original=OPEN,
            edited="The library is open 9 to 5.",
            metadata={"question": "edit"},
        ),
        Comparison(
            rater_id="u-1",
            item_id="rec-2",
            prompt=AUTUMN,
            a_id=text_id(LEAVES),
            a=LEAVES,
            b_id=text_id(SEASON),
            b=SEASON,
            winner="a",
            metadata={"question": "preference"},
        ),  # u-3's discarded "tie" is ignored
        Ranking(
            rater_id="u-2",
            item_id="rec-2",
            prompt=AUTUMN,
            responses=(RankedResponse(text_id(SEASON), SEASON), RankedResponse(text_id(LEAVES), LEAVES)),
            ranks=(1, 2),
            metadata={"question": "ranking"},
        ),
    ]


def test_argilla_flattened_rows() -> None:
    records = load_argilla(fx("argilla_flat.jsonl"))
    merci = "Merci."
    base = {"item_id": "rec-4", "prompt": "Translate 'thank you' to French.", "response_id": text_id(merci)}
    assert list(records) == [
        Rating(**base, rater_id="u-1", response=merci, value=5.0, metadata={"question": "rating"}),
        Rating(**base, rater_id="u-2", response=merci, value=3.0, metadata={"question": "rating"}),
        Rating(**base, rater_id="u-2", response=merci, value="good", metadata={"question": "label"}),
    ]


def test_argilla_custom_mapping_and_server_ranking_form() -> None:
    row = {
        "id": 7,
        "fields": {"instruction": "Pick the clearer answer.", "answer_x": "Clear.", "answer_y": "Muddled."},
        "responses": {
            "quality_x": [{"value": 5, "user_id": "u-1"}],  # no status: read as submitted
            "order": [
                {
                    "value": [{"value": "answer_y", "rank": 2}, {"value": "answer_x", "rank": 1}],
                    "user_id": "u-2",
                    "status": "submitted",
                }
            ],
            "better": [{"value": "ANSWER_Y", "user_id": "u-3", "status": "submitted"}],
            "rewrite": [{"value": "Very clear.", "user_id": "u-1", "status": "submitted"}],
        },
    }
    mapping = {
        "prompt": "instruction",
        "rating": {"quality_x": "answer_x"},
        "ranking": "order",
        "preference": "better",
        "responses": ["answer_x", "answer_y"],
        "edit": {"rewrite": "answer_x"},
    }
    records = load_argilla([row], mapping=mapping)
    assert [type(r).__name__ for r in records] == ["Rating", "Comparison", "Ranking", "Edit"]
    assert records[0].response == "Clear." and records[0].item_id == "7"
    assert records[1].winner == "b"
    assert [r.text for r in records[2].responses] == ["Muddled.", "Clear."] and records[2].ranks == (2, 1)
    assert (records[3].original, records[3].edited) == ("Clear.", "Very clear.")
    # a TextQuestion on a record without a response to edit is a demonstration
    demo = load_argilla(
        [{"fields": {"prompt": "Say hi."}, "responses": {"edit": [{"value": "Hi!", "user_id": "u"}]}}]
    )
    assert demo == [
        Demonstration(
            rater_id="u",
            item_id=text_id("Say hi."),
            prompt="Say hi.",
            response="Hi!",
            metadata={"question": "edit"},
        )
    ]
    with pytest.raises(ValueError, match="unknown Argilla mapping key"):
        load_argilla([row], mapping={"answer": "x"})


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (
            {
                "fields": {"prompt": "p", "response": "r"},
                "responses": {"rating": [{"value": "many", "user_id": "u"}]},
            },
            "responses.rating[0].value",
        ),
        (
            {"fields": {"prompt": "p", "response": "r"}, "responses": {"rating": [{"value": 3}]}},
            "responses.rating[0].user_id",
        ),
        (
            {
                "fields": {"prompt": "p", "response": "r"},
                "responses": {"rating": [{"value": 3, "user_id": "u", "status": 1}]},
            },
            "responses.rating[0].status",
        ),
        (
            {"fields": {"prompt": "p"}, "responses": {"rating": [{"value": 3, "user_id": "u"}]}},
            "fields.response",
        ),
        ({"fields": {"response": "r"}, "responses": {}}, "fields.prompt"),
        ({"fields": "p"}, "fields"),
        (
            {
                "fields": {"prompt": "p"},
                "responses": {"ranking": [{"value": ["response_1"], "user_id": "u"}]},
            },
            "responses.ranking[0].value",
        ),
        (
            {"prompt": "p", "response": "r", "rating.responses": [1, 2], "rating.responses.users": ["u"]},
            "rating.responses.users",
        ),
        (
            {"prompt": "p", "response": "r", "label.responses": [3], "label.responses.users": ["u"]},
            "label.responses[0]",
        ),
    ],
)
def test_argilla_rejects(row, field) -> None:
    with pytest.raises(DataError) as info:
        load_argilla([row])
    assert (info.value.line, info.value.field) == (1, field)


# ------------------------------------------------------------------------------------- Label Studio

GAME = "Recommend a board game for two players."
TILE = "Try a tile-laying game; rounds take about twenty minutes."
BORING = "Board games are boring."
COMET = "A comet is a ball of ice and dust that orbits the sun."
STORY = "Which opening line is best for a mystery story?"
LINES = [
    "The clock stopped at midnight, and so did the music.",
    "It was a normal day.",
    "Nobody noticed the extra chair at dinner.",
]


def test_label_studio_export() -> None:
    records = load_label_studio(fx("label_studio.json"))
    pair = {
        "item_id": "11",
        "prompt": GAME,
        "a_id": text_id(TILE),
        "a": TILE,
        "b_id": text_id(BORING),
        "b": BORING,
    }
    items = tuple(RankedResponse(text_id(t), t) for t in LINES)
    story = {"item_id": "13", "prompt": STORY, "responses": items}
    assert list(records) == [
        Comparison(
            **pair,
            rater_id="7",
            winner="a",
            timestamp="2026-03-01T10:00:00Z",
            metadata={"annotation_id": 101, "from_name": "comparison"},
        ),
        # annotation 102 was cancelled; 103's annotator is an expanded user object: its id is the
        # rater, the same as annotation 106's plain `completed_by: 9`
        Comparison(
            **pair,
            rater_id="9",
            winner="b",
            timestamp="2026-03-01T10:07:00Z",
            metadata={"annotation_id": 103, "from_name": "comparison"},
        ),
        Rating(
            rater_id="7",
            item_id="12",
            prompt="Explain what a comet is.",
            response_id=text_id(COMET),
            response=COMET,
            value=4.0,
            timestamp="2026-03-02T09:00:00Z",
            metadata={"annotation_id": 104, "from_name": "rating"},
        ),
        Edit(
            rater_id="7",
            item_id="12",
            prompt="Explain what a comet is.",
            response_id=text_id(COMET),
            original=COMET,
            edited="A comet is a ball of ice and dust that orbits the sun and grows a tail near it.",
            timestamp="2026-03-02T09:00:00Z",
            metadata={"annotation_id": 104, "from_name": "edit"},
        ),  # the "choices" result of the same annotation carries no preference: ignored
        Ranking(
            **story,
            rater_id="8",
            ranks=(2, 3, 1),
            timestamp="2026-03-03T12:00:00Z",
            metadata={"annotation_id": 105, "from_name": "rank"},
        ),
        Ranking(
            **story,
            rater_id="9",
            ranks=(1, 2, None),  # buckets good > bad; "_" = left unsorted
            timestamp="2026-03-03T12:30:00Z",
            metadata={"annotation_id": 106, "from_name": "sort"},
        ),
        Demonstration(
            rater_id="7",
            item_id="14",
            prompt="Write a one-line thank-you note to a neighbour.",
            response="Thanks for watering my plants while I was away!",
            timestamp="2026-03-04T08:00:00Z",
            metadata={"annotation_id": 107, "from_name": "answer"},
        ),
    ]


def test_label_studio_mapping_buckets_and_old_ranker_form() -> None:
    task = {
        "data": {
            "question": "Order these.",
            "options": [{"id": 1, "body": "First"}, {"id": 2, "body": "Second"}],
        },
        "annotations": [
            {
                "completed_by": 3,
                "result": [{"type": "ranker", "from_name": "r", "value": {"ranker": [2, 1]}}],
            },
            {
                "completed_by": 4,
                "result": [
                    {"type": "ranker", "from_name": "r", "value": {"ranker": {"bad": [1], "good": [2]}}}
                ],
            },
        ],
    }
    records = load_label_studio(
        [task], mapping={"prompt": "question", "items": "options", "buckets": ["good", "bad"]}
    )
    assert [r.ranks for r in records] == [(2, 1), (2, 1)]
    assert records[0].item_id == text_id("Order these.") and records[0].timestamp is None
    with pytest.raises(DataError) as info:
        load_label_studio([task], mapping={"prompt": "question", "items": "options", "buckets": ["good"]})
    assert info.value.field == "annotations[1].result[0].value.ranker.bad"
    with pytest.raises(ValueError, match="unknown Label Studio mapping key"):
        load_label_studio([task], mapping={"question": "q"})


@pytest.mark.parametrize(
    ("annotation", "field"),
    [
        (
            {"completed_by": 1, "result": [{"type": "rating", "value": {"rating": "high"}}]},
            "annotations[0].result[0].value.rating",
        ),
        ({"completed_by": 1, "result": [{"type": "rating", "value": 4}]}, "annotations[0].result[0].value"),
        ({"result": [{"type": "pairwise", "value": {"selected": "left"}}]}, "annotations[0].completed_by"),
        (
            {"completed_by": 1, "result": [{"type": "pairwise", "value": {"selected": "left"}}]},
            "data.answer1",
        ),
        (
            {"completed_by": 1, "result": [{"type": "textarea", "value": {"text": ["  "]}}]},
            "annotations[0].result[0].value.text",
        ),
        ({"completed_by": 1, "result": [{"type": "ranker", "value": {"ranker": ["x", "y"]}}]}, "data.items"),
        ({"completed_by": 1, "result": "oops"}, "annotations[0].result"),
        ({"completed_by": 1, "was_cancelled": "no", "result": []}, "annotations[0].was_cancelled"),
    ],
)
def test_label_studio_rejects(annotation, field) -> None:
    task = {"id": 1, "data": {"prompt": "p", "response": "r"}, "annotations": [annotation]}
    with pytest.raises(DataError) as info:
        load_label_studio([task])
    assert (info.value.line, info.value.field) == (1, field)


def test_label_studio_skips_cancelled_and_unannotated_tasks() -> None:
    tasks = [
        {
            "id": 1,
            "data": {"prompt": "p"},
            "annotations": [{"was_cancelled": True, "result": [{"type": "rating"}]}],
        },
        {"id": 2, "data": {"prompt": "p"}},
    ]
    records = load_label_studio(tasks)
    assert list(records) == [] and records.errors == []


# ---------------------------------------------------------------------------------------------- TRL


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


# ------------------------------------------------------------------------ bad fixtures, skip, detect

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
