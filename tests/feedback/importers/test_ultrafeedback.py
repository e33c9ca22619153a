"""UltraFeedback importer (:mod:`prefalign.feedback.importers.ultrafeedback`): exact records from the fixtures, errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.feedback.importers import ULTRAFEEDBACK_SCALES, load_ultrafeedback
from prefalign.feedback.schema import Rating, text_id

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "feedback" / "external"


def fx(name: str) -> str:
    return str(EXTERNAL / name)


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
