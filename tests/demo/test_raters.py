"""Simulated raters, their aggregation and the demo's pure helpers (no models)."""

from __future__ import annotations

import random
from pathlib import Path

from prefalign.demo.pipeline import build_pairs, load_titles, split_titles
from prefalign.demo.raters import (
    DEFAULT_PANEL,
    Item,
    RaterProfile,
    aggregate_ratings,
    read_records,
    simulate_ratings,
    true_score,
    write_records,
)


def _items(n_prompts: int = 40, per_prompt: int = 4) -> tuple[list[Item], dict[str, float]]:
    rng = random.Random(0)
    items, truth = [], {}
    for p in range(n_prompts):
        for s in range(per_prompt):
            text = f"review {p}-{s}"
            truth[text] = rng.uniform(-1, 1)
            items.append(Item(f"p{p}-s{s}", f"p{p}", f"prompt {p}", text))
    return items, truth


def _simulate(items, truth, seed=0, panel=DEFAULT_PANEL):
    return simulate_ratings(items, panel, seed=seed, truth=lambda texts: [truth[t] for t in texts])


def _corr(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / (sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y)) ** 0.5


def test_records_shape_range_and_determinism(tmp_path: Path) -> None:
    items, truth = _items()
    records = _simulate(items, truth)
    assert len(records) == len(items) * len(DEFAULT_PANEL)
    keys = {"rater_id", "item_id", "prompt_id", "response", "rating", "timestamp"}
    assert all(keys <= set(r) and 0 <= r["rating"] <= 10 and isinstance(r["rating"], int) for r in records)
    assert records == _simulate(items, truth)
    assert records != _simulate(items, truth, seed=1)
    path = write_records(records, tmp_path / "feedback.jsonl")
    assert read_records(path) == records


def test_default_panel_is_diverse() -> None:
    noise = sorted(r.noise_sd for r in DEFAULT_PANEL if not r.spammer)
    assert len(DEFAULT_PANEL) == 5 and len(set(noise)) >= 3
    assert sum(r.spammer for r in DEFAULT_PANEL) == 1
    assert sum(bool(r.position_bias) for r in DEFAULT_PANEL) == 1


def test_true_score_scale() -> None:
    assert (true_score(-1), true_score(0), true_score(1)) == (0, 5, 10)


def test_aggregate_flags_spammer_and_detects_position_bias() -> None:
    items, truth = _items(200)
    scores, stats = aggregate_ratings(_simulate(items, truth))
    by_id = {s.rater_id: s for s in stats}
    assert [s.rater_id for s in stats if s.suspected_spammer] == ["spammer"]
    assert by_id["spammer"].weight == 0
    assert by_id["careful"].agreement > by_id["steady"].agreement > by_id["hasty"].agreement > 0.5
    honest = [s.position_effect for s in stats if s.rater_id not in ("primacy", "spammer")]
    assert by_id["primacy"].position_effect > 0.6 > max(abs(e) for e in honest)
    # The weighted aggregate tracks the truth better than the plain mean of all five raters.
    gold = [true_score(truth[it.response]) for it in items]
    weighted = [scores[it.item_id] for it in items]
    plain = {}
    for r in _simulate(items, truth):
        plain.setdefault(r["item_id"], []).append(r["rating"])
    plain_mean = [sum(plain[it.item_id]) / 5 for it in items]
    assert _corr(weighted, gold) > _corr(plain_mean, gold)
    assert _corr(weighted, gold) > 0.95


def test_all_spammers_fall_back_to_plain_mean() -> None:
    items, truth = _items(5, 2)
    panel = [RaterProfile("a", spammer=True), RaterProfile("b", spammer=True)]
    scores, stats = aggregate_ratings(_simulate(items, truth, panel=panel), spam_threshold=2.0)
    assert all(s.suspected_spammer for s in stats) and len(scores) == len(items)


def test_build_pairs_outside_in_with_margin_and_finished_only() -> None:
    group = [
        {"prompt": "P", "response": r, "score": s, "finished": f}
        for r, s, f in [
            ("a", 9.0, True),
            ("b", 7.0, True),
            ("c", 6.5, True),
            ("d", 1.0, True),
            ("e", 10.0, False),
        ]
    ]
    pairs = build_pairs({"p0": group}, pairs_per_prompt=2, min_margin=1.0)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "d")]  # b-c gap 0.5 < margin; e unfinished
    pairs = build_pairs({"p0": group}, pairs_per_prompt=2, min_margin=0.0)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "d"), ("b", "c")]


def test_titles_are_shipped_and_split_disjoint() -> None:
    titles = load_titles()
    assert len(titles) >= 150 and len(set(titles)) == len(titles)
    train, held_out = split_titles(titles, 100, 30, seed=0)
    assert len(train) == 100 and len(held_out) == 30 and not set(train) & set(held_out)
    assert split_titles(titles, 100, 30, seed=0) == (train, held_out)


def test_rate_and_pair_writes_feedback_and_pairs(tmp_path: Path) -> None:
    from prefalign.demo.pipeline import DemoSettings, rate_and_pair
    from prefalign.feedback.formats import load_pairs
    from prefalign.rollout import Sample

    texts = [
        "A wonderful, brilliant film. I loved it!",
        "It was fine.",
        "Dull.",
        "A terrible, awful, boring mess.",
    ]
    samples = [
        Sample(f"Review movie {p}.", p, s, text, [1, 2], [0], finished=True)
        for p in range(12)
        for s, text in enumerate(texts)
    ]
    info = rate_and_pair(samples, DemoSettings(pairs_per_prompt=1, min_margin=1.0), tmp_path, seed=0)
    assert len(read_records(tmp_path / "feedback.jsonl")) == len(samples) * len(DEFAULT_PANEL)
    chat = load_pairs(tmp_path / "pairs.jsonl")
    plain = load_pairs(tmp_path / "reward_pairs.jsonl")
    assert info["num_pairs"] == len(chat) == len(plain) == 12
    assert chat[0].prompt == [{"role": "user", "content": "Review movie 0."}]
    assert chat[0].chosen[-1]["content"] == texts[0] and chat[0].rejected[-1]["content"] == texts[3]
    assert plain[0].prompt == "Review movie 0." and plain[0].chosen == texts[0]
    assert info["pair_gold_agreement"] == 1.0 and info["suspected_spammers"] == ["spammer"]
