"""prefalign.feedback.convert: raw feedback -> pairs / listwise / SFT rows, on hand-worked cases."""

from __future__ import annotations

import json

import pytest

from prefalign.feedback.convert import (
    ConversionConfig,
    ConversionReport,
    ListwiseRow,
    comparisons_to_pairs,
    demonstrations_to_pairs,
    demonstrations_to_sft,
    edits_to_pairs,
    edits_to_sft,
    feedback_to_pairs,
    feedback_to_sft,
    rankings_to_listwise,
    rankings_to_pairs,
    ratings_to_pairs,
)
from prefalign.feedback.formats import PreferencePair, SFTRow, load_pairs, save_pairs
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    RankedResponse,
    Ranking,
    Rating,
    RatingScale,
    load_feedback,
    text_id,
)

P = "Describe the sea."
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe the sea."}]


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def rating(
    item: str, rater: str, rid: str, value: float | str, *, text: str | None = None, prompt=P
) -> Rating:
    return Rating(rater, item, prompt, response_id=rid, response=text or f"answer {rid}", value=value)


def ranking(item: str, rater: str, ranks: list[int | None], *, names: str = "ABCDE", prompt=P) -> Ranking:
    responses = tuple(RankedResponse(n, f"answer {n}") for n in names[: len(ranks)])
    return Ranking(rater, item, prompt, responses=responses, ranks=tuple(ranks))


def comparison(item: str, rater: str, winner: str, strength: float | None = None, *, a="A", b="B", prompt=P):
    return Comparison(
        rater,
        item,
        prompt,
        a_id=a,
        a=f"answer {a}",
        b_id=b,
        b=f"answer {b}",
        winner=winner,
        strength=strength,
    )


def triples(pairs: list[PreferencePair]) -> list[tuple]:
    return [(p.chosen, p.rejected, p.margin) for p in pairs]


# --------------------------------------------------------------------------------------------- ratings

# Item q1 on a 1-5 scale: A = mean(5, 4) = 4.5, C = 3, B = 2. Span 4, so gaps /4.
Q1 = [
    rating("q1", "r1", "A", 5),
    rating("q1", "r2", "A", 4),
    rating("q1", "r1", "B", 2),
    rating("q1", "r1", "C", 3),
    rating("q1", "r2", "C", 3),
]
A, B, C = "answer A", "answer B", "answer C"


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("best_vs_worst", [(A, B, 2.5 / 4)]),
        ("all", [(A, C, 1.5 / 4), (A, B, 2.5 / 4), (C, B, 1.0 / 4)]),
        ("adjacent", [(A, C, 1.5 / 4), (C, B, 1.0 / 4)]),
        ("outside_in", [(A, B, 2.5 / 4)]),
    ],
)
def test_rating_strategies(strategy, expected):
    pairs, report = ratings_to_pairs(Q1, scale="1-5", strategy=strategy)
    assert triples(pairs) == expected
    assert all(p.prompt == P and p.source == "rating:q1 votes=1" for p in pairs)
    assert (report.records, report.rows, report.ties) == (5, len(expected), 0)


def test_outside_in_pairs_each_response_once():
    scores = {"A": 5, "B": 4, "C": 3, "D": 2, "E": 1}
    records = [rating("q", "r", rid, v) for rid, v in scores.items()]
    pairs, _ = ratings_to_pairs(records, scale="1-5", strategy="outside_in", normalize_margin=False)
    assert triples(pairs) == [("answer A", "answer E", 4.0), ("answer B", "answer D", 2.0)]


def test_rating_margin_options_ties_and_cap():
    raw, _ = ratings_to_pairs(Q1, scale="1-5", strategy="all", normalize_margin=False)
    assert [p.margin for p in raw] == [1.5, 2.5, 1.0]
    strict, report = ratings_to_pairs(Q1, scale="1-5", strategy="all", min_margin=1.5)
    assert triples(strict) == [(A, C, 1.5 / 4), (A, B, 2.5 / 4)]  # C>B's gap of 1 is a tie
    assert report.ties == 1
    capped, report = ratings_to_pairs(Q1, scale="1-5", strategy="all", max_pairs_per_item=2)
    assert triples(capped) == [(A, C, 1.5 / 4), (A, B, 2.5 / 4)]  # widest gaps, strategy order
    assert report.filtered == 1


def test_rating_ties_single_responses_and_self_pairs():
    records = [
        rating("tied", "r1", "X", 3),
        rating("tied", "r1", "Y", 3),
        rating("alone", "r1", "Z", 5),
        rating("same", "r1", "S1", 5, text="identical"),
        rating("same", "r1", "S2", 1, text="identical"),
    ]
    pairs, report = ratings_to_pairs(records, scale="1-5", strategy="all")
    assert pairs == []
    assert (report.ties, report.unpaired, report.self_pairs) == (1, 1, 1)


def test_label_scale_bad_medium_good():
    scale = RatingScale(labels=("bad", "medium", "good"))
    records = [
        rating("q", "r1", "X", "good"),
        rating("q", "r2", "X", "Good"),  # labels match case-insensitively
        rating("q", "r1", "Y", "medium"),
        rating("q", "r2", "Y", "bad"),
        rating("q", "r1", "Z", "bad"),
    ]
    # X = 2, Y = 0.5, Z = 0; span 2.
    pairs, _ = ratings_to_pairs(records, scale=scale, strategy="all")
    assert triples(pairs) == [
        ("answer X", "answer Y", 0.75),
        ("answer X", "answer Z", 1.0),
        ("answer Y", "answer Z", 0.25),
    ]
    unscaled, _ = ratings_to_pairs(records, scale="bad,medium,good", normalize_margin=False)
    assert triples(unscaled) == [("answer X", "answer Z", 2.0)]
    with pytest.raises(ValueError, match=r"item 'q': rating 0 \(rater 'r1'\): 'great' is not one of"):
        ratings_to_pairs([rating("q", "r1", "X", "great"), *records[1:]], scale=scale)


def test_consensus_scores_override_rater_means():
    # Aggregation says B is best; C has no consensus score and falls back to its raters' mean (3).
    pairs, _ = ratings_to_pairs(Q1, scale="1-5", scores={"A": 1.0, "B": 5.0}, strategy="all")
    assert triples(pairs) == [(B, C, 0.5), (B, A, 1.0), (C, A, 0.5)]


def test_rating_input_errors():
    with pytest.raises(ValueError, match="unknown rating strategy 'best'"):
        ratings_to_pairs(Q1, scale="1-5", strategy="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different prompt"):
        ratings_to_pairs([*Q1, rating("q1", "r3", "B", 1, prompt="Other")], scale="1-5")
    with pytest.raises(ValueError, match="different text"):
        ratings_to_pairs([*Q1, rating("q1", "r3", "B", 1, text="changed")], scale="1-5")
    with pytest.raises(TypeError, match="record 1 is Comparison"):
        ratings_to_pairs([Q1[0], comparison("q", "r", "a")], scale="1-5")  # type: ignore[list-item]


def test_same_prompt_in_two_items_merges_votes():
    second = [rating("q2", r.rater_id, r.response_id, r.value) for r in Q1]
    pairs, report = ratings_to_pairs(Q1 + second, scale="1-5")
    assert triples(pairs) == [(A, B, 2.5 / 4)]
    assert pairs[0].source == "rating:q1,rating:q2 votes=2"
    assert report.duplicates_merged == 1


# -------------------------------------------------------------------------------------------- rankings


def test_partial_ranking_with_ties_all_and_adjacent():
    # A first, B and C tied second, D unranked, E third.
    record = ranking("q", "r1", [1, 2, 2, None, 3])
    a, b, c, e = "answer A", "answer B", "answer C", "answer E"
    pairs, report = rankings_to_pairs([record])
    assert triples(pairs) == [(a, b, 1.0), (a, c, 1.0), (a, e, 2.0), (b, e, 1.0), (c, e, 1.0)]
    assert (report.ties, report.rows) == (1, 5)
    adjacent, report = rankings_to_pairs([record], strategy="adjacent")
    assert triples(adjacent) == [(a, b, 1.0), (a, c, 1.0), (b, e, 1.0), (c, e, 1.0)]
    assert report.ties == 1


def test_rank_margin_counts_levels_not_rater_numbers():
    pairs, _ = rankings_to_pairs([ranking("q", "r1", [1, 1, 3])])
    assert triples(pairs) == [("answer A", "answer C", 1.0), ("answer B", "answer C", 1.0)]


def test_rankings_majority_and_exact_split():
    records = [
        ranking("q", "r1", [1, 2]),
        ranking("q", "r2", [2, 1]),
        ranking("q", "r3", [1, 2]),
    ]
    pairs, report = rankings_to_pairs(records)
    assert triples(pairs) == [("answer A", "answer B", 1.0)]
    assert pairs[0].source == "ranking:q votes=2 against=1"
    assert (report.contradictions, report.minority_votes, report.duplicates_merged) == (1, 1, 1)
    pairs, report = rankings_to_pairs(records[:2])
    assert pairs == []
    assert (report.contradictions, report.split_dropped) == (1, 1)
    with pytest.raises(ValueError, match="unknown ranking strategy"):
        rankings_to_pairs(records, strategy="pairs")  # type: ignore[arg-type]


def test_listwise_rows():
    rows, report = rankings_to_listwise(
        [ranking("q", "r1", [2, 1, None, 2]), ranking("c", "r2", [3, 1], prompt=CHAT)]
    )
    assert rows[0] == ListwiseRow(
        prompt=P,
        responses=["answer B", "answer A", "answer D"],
        ranks=[1, 2, 2],
        source="ranking:q votes=1",
    )
    assert rows[0].to_dict() == {
        "prompt": P,
        "responses": ["answer B", "answer A", "answer D"],
        "ranks": [1, 2, 2],
    }
    assert rows[1].is_conversational and rows[1].prompt == CHAT
    assert rows[1].responses == [said("answer B"), said("answer A")] and rows[1].ranks == [1, 2]
    assert (report.records, report.rows) == (2, 2)


def test_listwise_drops_repeated_texts():
    record = Ranking(
        "r1",
        "q",
        P,
        responses=(RankedResponse("1", "same"), RankedResponse("2", "other"), RankedResponse("3", "same")),
        ranks=(2, 3, 1),
    )
    (row,), report = rankings_to_listwise([record])
    assert (row.responses, row.ranks) == (["same", "other"], [1, 2])  # rank levels renumbered
    assert report.self_pairs == 1
    lone = Ranking("r1", "q", P, responses=record.responses[::2], ranks=(1, 2))
    rows, report = rankings_to_listwise([lone])
    assert rows == [] and report.unpaired == 1


# ----------------------------------------------------------------------------------------- comparisons


def test_comparisons_winner_tie_strength():
    records = [
        comparison("q1", "r1", "a", 2.0),
        comparison("q2", "r1", "b", a="C", b="D"),
        comparison("q3", "r1", "tie", a="E", b="F"),
    ]
    pairs, report = comparisons_to_pairs(records)
    assert triples(pairs) == [("answer A", "answer B", 2.0), ("answer D", "answer C", None)]
    assert [p.source for p in pairs] == ["comparison:q1 votes=1", "comparison:q2 votes=1"]
    assert (report.records, report.rows, report.ties) == (3, 2, 1)


def test_comparison_raters_duplicates_contradictions():
    records = [
        comparison("q", "r1", "a", 1.0),
        comparison("q", "r2", "b", 5.0),
        comparison("q", "r3", "a", 3.0),
        comparison("p", "r1", "a", a="C", b="D"),
        comparison("p", "r2", "b", a="C", b="D"),
    ]
    pairs, report = comparisons_to_pairs(records)
    assert triples(pairs) == [("answer A", "answer B", 2.0)]  # mean of the majority's strengths
    assert pairs[0].source == "comparison:q votes=2 against=1"
    assert report.as_dict() == {
        "records": 5,
        "rows": 1,
        "ties": 0,
        "self_pairs": 0,
        "duplicates_merged": 1,
        "contradictions": 2,
        "split_dropped": 1,
        "minority_votes": 1,
        "unpaired": 0,
        "filtered": 0,
    }
    # The same data without dedupe: one row per judgment, contradictions only counted.
    raw, report = comparisons_to_pairs(records, dedupe=False)
    assert len(raw) == 5 and report.contradictions == 2 and report.split_dropped == 0
    assert raw[1].chosen == "answer B" and raw[1].source == "comparison:q votes=1"


def test_comparison_ties_included_and_min_strength():
    records = [
        comparison("q", "r1", "tie"),
        comparison("q", "r2", "tie"),
        comparison("p", "r1", "a", 0.5, a="C", b="D"),
        comparison("p", "r2", "a", None, a="C", b="D"),
    ]
    pairs, report = comparisons_to_pairs(records, include_ties=True, min_strength=1.0)
    assert triples(pairs) == [
        ("answer A", "answer B", 0.0),
        ("answer B", "answer A", 0.0),
        ("answer C", "answer D", None),  # the 0.5-strength vote was filtered; the unrated one stays
    ]
    assert [p.source for p in pairs[:2]] == ["comparison:q votes=2"] * 2
    assert (report.filtered, report.duplicates_merged, report.contradictions, report.ties) == (1, 2, 0, 0)


def test_comparison_self_pairs():
    same_id = Comparison("r", "q", P, a_id="X", a="one", b_id="X", b="two", winner="a")
    same_text = Comparison("r", "q", P, a_id="X", a="one", b_id="Y", b="one", winner="b")
    pairs, report = comparisons_to_pairs([same_id, same_text])
    assert pairs == [] and report.self_pairs == 2


# --------------------------------------------------------------------------------- edits and demos


def test_edits():
    records = [
        Edit("r1", "q1", P, response_id="o", original="The sea is wet", edited="The sea is vast and blue."),
        Edit("r2", "q2", P, response_id="o2", original="Fine as is.", edited="Fine as is."),
        Edit("r1", "q3", CHAT, response_id="o3", original="Water.", edited="Salt water, mostly."),
    ]
    pairs, report = edits_to_pairs(records)
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs] == [
        (P, "The sea is vast and blue.", "The sea is wet", None),
        (CHAT, said("Salt water, mostly."), said("Water."), None),
    ]
    assert report.self_pairs == 1
    rows, report = edits_to_sft(records)
    assert [(r.prompt, r.completion) for r in rows] == [
        (P, "The sea is vast and blue."),
        (P, "Fine as is."),  # an approved-as-is response is still a good SFT target
        (CHAT, said("Salt water, mostly.")),
    ]
    assert rows[0].source == "edit:q1 votes=1" and report.rows == 3


def test_demonstrations_to_sft_dedupes():
    records = [Demonstration("r1", "q", P, "Vast."), Demonstration("r2", "q", P, "Vast.")]
    rows, report = demonstrations_to_sft(records)
    assert rows == [SFTRow(P, "Vast.", source="demonstration:q votes=2")]
    assert report.duplicates_merged == 1
    rows, _ = demonstrations_to_sft(records, dedupe=False)
    assert len(rows) == 2


def test_demonstrations_to_pairs_with_a_mapping():
    records = [
        Demonstration("r1", "q1", P, "Vast and blue."),
        Demonstration("r1", "q2", "Name a fish.", "Cod."),
        Demonstration("r1", "q3", CHAT, "Deep."),
    ]
    samples = {"q1": ["Wet.", "Vast and blue."], "q3": "Big."}  # a bare string is one sample
    pairs, report = demonstrations_to_pairs(records, samples)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        (P, "Vast and blue.", "Wet."),
        (CHAT, said("Deep."), said("Big.")),
    ]
    assert (report.self_pairs, report.unpaired) == (1, 1)
    with pytest.raises(ValueError, match="model sample for item 'q1'.*empty string"):
        demonstrations_to_pairs(records, {"q1": ["  "]})


def test_demonstrations_to_pairs_with_a_sampler():
    calls = []

    def sampler(prompt):
        calls.append(prompt)
        return f"sampled for {len(calls)}"

    records = [
        Demonstration("r1", "q1", P, "Vast."),
        Demonstration("r2", "q1", P, "Blue."),
        Demonstration("r1", "q2", "Name a fish.", "Cod."),
    ]
    pairs, _ = demonstrations_to_pairs(records, sampler)
    assert calls == [P, "Name a fish."]  # one sample per distinct prompt
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("Vast.", "sampled for 1"),
        ("Blue.", "sampled for 1"),
        ("Cod.", "sampled for 2"),
    ]


# ------------------------------------------------------------------------------------------ dispatch


def test_feedback_to_pairs_mixed_batch():
    records = [
        comparison("q", "r1", "a", 1.0),
        *Q1,
        ranking("q", "r2", [1, 2]),  # agrees with the comparison: one pair, two votes
        Edit("r1", "e", P, response_id="o", original="Meh.", edited="Blue and vast."),
        Demonstration("r1", "d", P, "Wavy."),
    ]
    cfg = ConversionConfig(scale="1-5", rating_strategy="adjacent")
    pairs, report = feedback_to_pairs(records, cfg)
    assert [(p.chosen, p.rejected, p.margin, p.source) for p in pairs] == [
        (A, B, 1.0, "comparison:q,ranking:q votes=2"),  # mean of strength 1 and rank margin 1
        (A, C, 1.5 / 4, "rating:q1 votes=1"),
        (C, B, 1.0 / 4, "rating:q1 votes=1"),
        ("Blue and vast.", "Meh.", None, "edit:e votes=1"),
    ]
    assert (report.records, report.rows, report.unpaired, report.duplicates_merged) == (9, 4, 1, 1)
    with_demo, _ = feedback_to_pairs(records, ConversionConfig(scale="1-5", samples={"d": ["Wet."]}))
    assert (with_demo[-1].chosen, with_demo[-1].rejected) == ("Wavy.", "Wet.")
    with pytest.raises(ValueError, match="ratings need a scale"):
        feedback_to_pairs(records)


def test_feedback_to_sft_mixed_batch():
    records = [
        comparison("q", "r1", "a"),
        Edit("r1", "e", CHAT, response_id="o", original="Meh.", edited="Blue."),
        Demonstration("r1", "d", P, "Wavy."),
    ]
    rows, report = feedback_to_sft(records)
    assert [(r.prompt, r.completion, r.source) for r in rows] == [
        (CHAT, said("Blue."), "edit:e votes=1"),
        (P, "Wavy.", "demonstration:d votes=1"),
    ]
    assert (report.records, report.rows, report.filtered) == (3, 2, 1)


def test_many_origins_are_abbreviated_in_the_source():
    records = [comparison(f"q{i}", "r1", "a") for i in range(5)]
    (pair,), _ = comparisons_to_pairs(records)
    assert pair.source == "comparison:q0,comparison:q1,comparison:q2,+2 more votes=5"


def test_report_is_plain_counts():
    report = ConversionReport(records=3, rows=1)
    assert report.as_dict()["records"] == 3
    assert all(isinstance(v, int) for v in report.as_dict().values())


# --------------------------------------------------------------------------------- conversational


def test_conversational_prompts_mirror_into_messages():
    records = [
        rating("c", "r1", "A", 5, prompt=CHAT),
        rating("c", "r1", "B", 1, prompt=CHAT),
    ]
    (pair,), _ = ratings_to_pairs(records, scale="1-5")
    assert pair.prompt == CHAT and pair.is_conversational
    assert (pair.chosen, pair.rejected) == (said("answer A"), said("answer B"))
    # A response already given as messages makes a text prompt one user message.
    chat_answer = Comparison("r", "t", P, a_id="A", a=said("Vast."), b_id="B", b="Wet.", winner="a")
    (pair,), _ = comparisons_to_pairs([chat_answer])
    assert pair.prompt == [{"role": "user", "content": P}]
    assert (pair.chosen, pair.rejected) == (said("Vast."), said("Wet."))


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_pairs_round_trip_through_save_and_load(tmp_path, suffix):
    text = [
        *ratings_to_pairs(Q1, scale="1-5", strategy="all")[0],
        *edits_to_pairs([Edit("r", "e", P, response_id="o", original="Meh.", edited="Vast.")])[0],
    ]
    chat = [
        *comparisons_to_pairs([comparison("c", "r1", "a", 2, prompt=CHAT)])[0],
        *rankings_to_pairs([ranking("c2", "r1", [2, 1, 3], prompt=CHAT)])[0],
    ]
    for name, pairs in (("text", text), ("chat", chat)):
        again = load_pairs(save_pairs(pairs, tmp_path / f"{name}{suffix}"))
        assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in again] == [
            (p.prompt, p.chosen, p.rejected, p.margin) for p in pairs
        ]
    assert text[-1].margin is None  # an edit has no margin; the file still round-trips


def test_pairs_from_loaded_feedback_files(tmp_path):
    rows = [
        {
            "kind": "rating",
            "rater_id": "r1",
            "item_id": "q",
            "prompt": P,
            "response": "Vast.",
            "value": "good",
        },
        {"kind": "rating", "rater_id": "r1", "item_id": "q", "prompt": P, "response": "Wet.", "value": "bad"},
    ]
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_feedback(path, scale="bad,medium,good")
    assert records[0].response_id == text_id("Vast.")
    (pair,), _ = ratings_to_pairs(records, scale="bad,medium,good")
    assert (pair.chosen, pair.rejected, pair.margin) == ("Vast.", "Wet.", 1.0)


def test_trl_subset_survives_import_and_conversion(tmp_path) -> None:
    from prefalign.feedback.importers import import_feedback

    rows = [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "subset": "harmless"},
        {"prompt": "q2", "chosen": "fine", "rejected": "poor"},
    ]
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, _ = comparisons_to_pairs(list(import_feedback(path, format="trl")))
    assert [(p.prompt, p.subset) for p in pairs] == [("q1", "harmless"), ("q2", None)]
    # Two raters' identical votes from different subsets merge into one pair without a subset.
    a = Comparison("r1", "q", "P", a_id="A", a="x", b_id="B", b="y", winner="a", metadata={"subset": "s1"})
    b = Comparison("r2", "q", "P", a_id="A", a="x", b_id="B", b="y", winner="a", metadata={"subset": "s2"})
    assert comparisons_to_pairs([a, b])[0][0].subset is None
    assert comparisons_to_pairs([a, a])[0][0].subset == "s1"
