"""Argilla importer (:mod:`prefalign.feedback.importers.argilla`): exact records from the fixtures, errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.feedback.importers import load_argilla
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    RankedResponse,
    Ranking,
    Rating,
    text_id,
)
from prefalign.feedback.validate import DataError

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "feedback" / "external"


def fx(name: str) -> str:
    return str(EXTERNAL / name)


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
