"""Label Studio importer (:mod:`prefalign.feedback.importers.label_studio`): exact records from the fixtures, errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.feedback.importers import load_label_studio
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
