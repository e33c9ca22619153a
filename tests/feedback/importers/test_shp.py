"""Stanford SHP importer (:mod:`prefalign.feedback.importers.shp`): exact records from the fixtures, errors naming file, line and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from prefalign.feedback.importers import load_shp
from prefalign.feedback.schema import Comparison, text_id

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "feedback" / "external"


def fx(name: str) -> str:
    return str(EXTERNAL / name)


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
