"""prefalign.feedback.inspect: the data-quality report on small hand-built batches with known answers."""

from __future__ import annotations

import json
import random

import pytest
from scipy.stats import binomtest

from prefalign.feedback.inspect import (
    binomial_share,
    infer_scale,
    inspect_feedback,
    render_report,
    shared_judgments,
    text_length,
)
from prefalign.feedback.schema import Comparison, Rating, RatingScale, text_id


def comparison(rater: str, item: str, a: str, b: str, winner: str = "a") -> Comparison:
    return Comparison(
        rater, item, f"prompt {item}", a_id=text_id(a), a=a, b_id=text_id(b), b=b, winner=winner
    )


def rating(rater: str, item: str, response: str, value: float | str) -> Rating:
    return Rating(rater, item, f"prompt {item}", text_id(response), response, value)


def panel_with_spammer() -> list[Rating]:
    """30 responses rated 0-10 by four careful raters (truth +- 1) and one rater answering at random."""
    rng = random.Random(0)
    records = []
    for i in range(30):
        truth = i % 11
        for rater in ("ann", "bob", "cat", "dan"):
            value = min(10, max(0, truth + rng.choice([-1, 0, 0, 1])))
            records.append(rating(rater, f"i{i}", f"answer {i}", value))
        records.append(rating("spam", f"i{i}", f"answer {i}", rng.randint(0, 10)))
    return records


def panel_with_lefty() -> list[Comparison]:
    """20 pairs, order shuffled; three raters pick the good answer, "lefty" always picks the first shown."""
    rng = random.Random(1)
    records = []
    for i in range(20):
        good, bad = f"good answer {i} with detail", f"bad {i}"
        for rater in ("ann", "bob", "cat", "lefty"):
            swap = rng.random() < 0.5
            a, b = (bad, good) if swap else (good, bad)
            winner = "a" if rater == "lefty" or not swap else "b"
            records.append(comparison(rater, f"c{i}", a, b, winner))
    return records


# -------------------------------------------------------------------------------------------- helpers


def test_binomial_share_matches_scipy() -> None:
    s = binomial_share(8, 10)
    assert (s.k, s.n, s.share) == (8, 10, 0.8)
    assert s.p_value == pytest.approx(0.109375)  # 2 * (1 + 10 + 45) / 1024
    ci = binomtest(8, 10, 0.5).proportion_ci(method="wilson")
    assert (s.low, s.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert s.p_value == pytest.approx(binomtest(8, 10, 0.5).pvalue)
    empty = binomial_share(0, 0)
    assert empty.share is None and empty.p_value is None


def test_text_length_counts_characters_and_whitespace_tokens() -> None:
    assert text_length("two words") == (9, 2)
    chat = [
        {"role": "assistant", "content": "a b"},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]
    assert text_length(chat) == (len("a b\nc"), 3)


def test_infer_scale() -> None:
    assert infer_scale([rating("r", "i", "x", 2), rating("r", "i", "y", 7)]) == RatingScale(2, 7)
    assert infer_scale([rating("r", "i", "x", "good")]) is None
    assert infer_scale([rating("r", "i", "x", 3)]) == RatingScale(3, 4)  # one value: still a valid scale


# ------------------------------------------------------------------------------------- position bias


def test_position_share_eight_of_ten() -> None:
    records = [
        comparison("r", f"i{k}", f"first {k}", f"second {k}", "a" if k < 8 else "b") for k in range(10)
    ]
    records += [
        comparison("r", "t1", "tie x", "tie y", "tie"),
        comparison("r", "t2", "tie z", "tie w", "tie"),
    ]
    report = inspect_feedback(records)
    assert report.position is not None
    first = report.position.first
    assert (first.k, first.n, first.share) == (8, 10, 0.8)
    assert first.p_value == pytest.approx(0.109375)
    assert report.position.ties == 2
    assert report.position.flagged == []  # 80% of 10 is not significant after the correction
    assert not report.position.noisy_bt  # 12 < 50 comparisons
    assert "first shown won 8 of 10 (80.0%" in render_report(report)


def test_a_rater_who_always_picks_the_first_answer_is_flagged() -> None:
    report = inspect_feedback(panel_with_lefty())
    position = report.position
    assert position is not None and position.noisy_bt
    assert position.flagged == ["lefty"]
    rows = {r.rater_id: r for r in position.per_rater}
    assert rows["lefty"].first.share == 1.0 and rows["lefty"].first.n == 20
    assert rows["lefty"].bias_logit == max(r.bias_logit for r in rows.values())
    assert rows["lefty"].bias_logit > 2 and rows["lefty"].skill < 0.5 < rows["ann"].skill
    # The careful raters' choices match the consensus; lefty's agree only by chance.
    assert [r.rater_id for r in report.spammers] == ["lefty"]
    assert {r.rater_id: r.spammer for r in report.raters} == {
        "ann": False,
        "bob": False,
        "cat": False,
        "lefty": True,
    }


def test_comparisons_without_a_known_order_are_left_out_of_position_bias() -> None:
    records = [comparison("trl", f"i{k}", f"chosen {k}", f"rejected {k}") for k in range(6)]
    report = inspect_feedback(records, order_known=[False] * 6)
    assert report.position is None
    assert any("6 comparison(s) left out" in n for n in report.notes)
    with pytest.raises(ValueError, match="order_known"):
        inspect_feedback(records, order_known=[True])


# --------------------------------------------------------------------------------------- length bias


def test_chosen_longer_in_three_of_four_pairs() -> None:
    records = [
        comparison("r", "i1", "a long and careful answer", "short", "a"),  # chosen 25 chars / 5 tokens
        comparison("r", "i2", "tiny", "a much longer answer", "b"),  # chosen 20 / 4
        comparison("r", "i3", "short", "a somewhat longer one", "b"),  # chosen 21 / 4
        comparison("r", "i4", "the longest answer of all", "brief", "b"),  # chosen 5 / 1: shorter
    ]
    length = inspect_feedback(records).length
    assert length is not None
    assert length.n_pairs == 4 and length.sources == {"comparison": 4}
    assert (length.chars.k, length.chars.n, length.chars.share) == (3, 4, 0.75)
    assert (length.tokens.k, length.tokens.n, length.tokens.share) == (3, 4, 0.75)
    assert length.mean_chosen_chars == pytest.approx((25 + 20 + 21 + 5) / 4)
    assert length.mean_rejected_chars == pytest.approx((5 + 4 + 5 + 25) / 4)
    assert length.mean_chosen_tokens == pytest.approx((5 + 4 + 4 + 1) / 4)


def test_rating_length_correlation_and_pairs_from_ratings() -> None:
    texts = ["a", "a b", "a b c", "a b c d"]
    records = [rating("r", "item", t, v) for t, v in zip(texts, [1, 2, 3, 4])]
    length = inspect_feedback(records, scale="1-5").length
    assert length is not None
    assert length.rating_length_spearman == pytest.approx(1.0)
    assert length.n_pairs == 6 and length.sources == {"rating": 6}  # every pair of the 4 responses
    assert length.chars.share == 1.0


# ------------------------------------------------------------------------------------------ spammers


def test_spammer_planted_among_consistent_raters_is_flagged() -> None:
    report = inspect_feedback(panel_with_spammer(), scale="0-10")
    assert [(r.rater_id, r.kind) for r in report.spammers] == [("spam", "rating")]
    rows = {r.rater_id: r for r in report.raters}
    assert rows["spam"].weight == 0.0 and rows["spam"].reason
    assert all(rows[r].spammer is False and rows[r].agreement > 0.9 for r in ("ann", "bob", "cat", "dan"))
    assert rows["ann"].shared == 30
    agreement = report.agreement[0]
    assert agreement.kind == "rating" and agreement.level == "interval"
    assert agreement.units_multi == 30 and 0.5 < agreement.alpha < 0.9


def test_too_little_overlap_is_not_a_spammer_call() -> None:
    records = [rating("a", "i1", "x", 3), rating("a", "i2", "y", 4), rating("b", "i3", "z", 5)]
    report = inspect_feedback(records, scale="1-5")
    assert report.spammers == []
    assert {r.rater_id: (r.spammer, r.shared, r.agreement) for r in report.raters} == {
        "a": (None, 0, None),
        "b": (None, 0, None),
    }
    assert "cannot tell" in (report.raters[0].reason or "")
    assert shared_judgments(records) == {"a": 0, "b": 0}


# ----------------------------------------------------------------------------------------- agreement


def test_perfect_agreement_on_a_label_scale_is_ordinal_alpha_one() -> None:
    labels = ["bad", "medium", "good"]
    records = [rating(r, "i", f"answer {k}", lab) for r in ("x", "y") for k, lab in enumerate(labels)]
    report = inspect_feedback(records, scale="bad,medium,good")
    (agreement,) = report.agreement
    assert agreement.level == "ordinal" and agreement.alpha == pytest.approx(1.0)
    assert agreement.fleiss_kappa == pytest.approx(1.0)
    assert agreement.mean_pairwise_kappa == pytest.approx(1.0)
    assert report.scale == "bad,medium,good"


def test_labels_without_a_scale_get_nominal_agreement_and_a_note() -> None:
    records = [rating(r, "i", f"answer {k}", lab) for r in ("x", "y") for k, lab in enumerate(["ok", "no"])]
    report = inspect_feedback(records)
    assert report.agreement[0].level == "nominal" and report.agreement[0].alpha == pytest.approx(1.0)
    assert report.raters == []  # no spammer call without the order of the labels
    assert any("--scale" in note for note in report.notes)


def test_repeated_judgments_count_once_in_agreement() -> None:
    # Rater x rates the same response twice; agreement functions reject that, so the last one counts.
    records = [
        rating("x", "i", "a", 1),
        rating("x", "i", "a", 2),
        rating("y", "i", "a", 2),
        rating("x", "i", "b", 5),
    ]
    records.append(rating("y", "i", "b", 5))
    report = inspect_feedback(records, scale="1-5")
    assert report.agreement[0].alpha == pytest.approx(1.0)
    assert report.duplicates.contradictions == 1


# ---------------------------------------------------------------------------------------- duplicates


def test_duplicates_contradictions_and_self_pairs() -> None:
    records = [
        rating("r1", "i1", "x", 3),
        rating("r1", "i1", "x", 3),  # exact repeat
        rating("r1", "i1", "y", 3),
        rating("r1", "i1", "y", 5),  # same rater, same response, another value
        comparison("r2", "i2", "left", "right", "a"),
        comparison("r2", "i2", "right", "left", "b"),  # same preference with the order swapped: consistent
        comparison("r3", "i2", "left", "right", "a"),
        comparison("r3", "i2", "right", "left", "a"),  # r3 flips: a contradiction
        comparison("r4", "i3", "same", "same", "a"),  # a self-pair
    ]
    report = inspect_feedback(records, scale="1-5")
    d = report.duplicates
    assert (d.exact, d.contradictions, d.self_pairs) == (1, 2, 1)
    assert any("rater r3" in e for e in d.examples)
    assert d.conversion is not None and d.conversion["self_pairs"] == 1
    assert report.kinds == {"comparison": 5, "rating": 4}
    assert report.n_raters == 4 and report.n_items == 3
    assert report.records_per_rater == {"min": 1, "median": 2.0, "max": 4}
    assert report.items_multi_rater == 1  # i2 (r2, r3)


def test_report_is_strict_json_and_renders() -> None:
    report = inspect_feedback(
        panel_with_lefty() + panel_with_spammer(), scale="0-10", sources={"f.jsonl": "prefalign"}
    )
    data = report.as_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["n_records"] == 230
    assert "chosen_chars" not in data["length"]
    assert data["sources"] == {"f.jsonl": "prefalign"}
    rendered = render_report(report)
    for heading in ("Records", "Agreement", "Raters", "Suspected spammers", "Position bias", "Length bias"):
        assert heading in rendered
    assert "230 records from 1 file" in rendered
