"""Simulated raters, their aggregation and the demo's pure helpers (no models)."""

from __future__ import annotations

import random
from pathlib import Path

from prefalign.demo.pipeline import load_titles, split_titles
from prefalign.demo.raters import (
    DEFAULT_PANEL,
    SCALE,
    Item,
    position_effects,
    simulate_ratings,
    true_score,
)
from prefalign.feedback.aggregate import aggregate_ratings
from prefalign.feedback.schema import Rating, load_feedback, save_feedback


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
    assert all(isinstance(r, Rating) and isinstance(r.value, int) and 0 <= r.value <= 10 for r in records)
    assert all(r.item_id.startswith("p") and r.response_id.startswith(r.item_id + "-") for r in records)
    assert {r.metadata["position"] for r in records} == {0, 1, 2, 3}
    assert records == _simulate(items, truth)
    assert records != _simulate(items, truth, seed=1)
    path = save_feedback(records, tmp_path / "feedback.jsonl")
    assert list(load_feedback(path, scale=SCALE)) == records


def test_default_panel_is_diverse() -> None:
    noise = sorted(r.noise_sd for r in DEFAULT_PANEL if not r.spammer)
    assert len(DEFAULT_PANEL) == 5 and len(set(noise)) >= 3
    assert sum(r.spammer for r in DEFAULT_PANEL) == 1
    assert sum(bool(r.position_bias) for r in DEFAULT_PANEL) == 1


def test_true_score_scale() -> None:
    assert (true_score(-1), true_score(0), true_score(1)) == (0, 5, 10)


def test_feedback_aggregation_flags_the_spammer_and_sees_position_bias() -> None:
    items, truth = _items(200)
    records = _simulate(items, truth)
    consensus = aggregate_ratings(records, SCALE, method="weighted")
    raters = consensus.raters
    assert [name for name, r in sorted(raters.items()) if r.spammer] == ["spammer"]
    assert raters["spammer"].weight == 0
    assert raters["careful"].agreement > raters["steady"].agreement > raters["hasty"].agreement > 0.5
    effects = position_effects(records, consensus.scores)
    honest = [e for name, e in effects.items() if name not in ("primacy", "spammer")]
    assert effects["primacy"] > 0.6 > max(abs(e) for e in honest)
    # The weighted consensus tracks the truth better than the plain mean of all five raters.
    gold = [true_score(truth[it.response]) for it in items]
    weighted = [consensus.scores[it.prompt_id][it.item_id] for it in items]
    plain = aggregate_ratings(records, SCALE, method="mean").scores
    plain_mean = [plain[it.prompt_id][it.item_id] for it in items]
    assert _corr(weighted, gold) > _corr(plain_mean, gold)
    assert _corr(weighted, gold) > 0.95


def test_the_spammer_is_flagged_at_the_demo_sizes() -> None:
    """Quick demo (32 prompts x 4) and full demo (100 x 4), several seeds: exactly the spammer."""
    for n_prompts in (32, 100):
        items, truth = _items(n_prompts)
        for seed in range(5):
            raters = aggregate_ratings(_simulate(items, truth, seed=seed), SCALE).raters
            assert [name for name, r in raters.items() if r.spammer] == ["spammer"], (n_prompts, seed)


def test_titles_are_shipped_and_split_disjoint() -> None:
    titles = load_titles()
    assert len(titles) >= 150 and len(set(titles)) == len(titles)
    train, held_out = split_titles(titles, 100, 30, seed=0)
    assert len(train) == 100 and len(held_out) == 30 and not set(train) & set(held_out)
    assert split_titles(titles, 100, 30, seed=0) == (train, held_out)


def test_rate_and_pair_writes_feedback_and_pairs(tmp_path: Path) -> None:
    from prefalign.demo.pipeline import DemoSettings, rate_and_pair
    from prefalign.feedback.formats import load_listwise_rows, load_pairs
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
    assert len(load_feedback(tmp_path / "feedback.jsonl")) == len(samples) * len(DEFAULT_PANEL)
    chat = load_pairs(tmp_path / "pairs.jsonl")
    plain = load_pairs(tmp_path / "reward_pairs.jsonl")
    assert info["num_pairs"] == len(chat) == len(plain) == 12
    assert chat[0].prompt == [{"role": "user", "content": "Review movie 0."}]
    assert chat[0].chosen[-1]["content"] == texts[0] and chat[0].rejected[-1]["content"] == texts[3]
    assert plain[0].prompt == "Review movie 0." and plain[0].chosen == texts[0]
    assert info["pair_gold_agreement"] == 1.0 and info["suspected_spammers"] == ["spammer"]
    assert chat[0].margin is not None and 0 < chat[0].margin <= 1  # consensus gap / scale span
    assert 0.3 < info["rater_agreement"]["krippendorff_alpha_interval"] < 1
    assert {r["rater_id"] for r in info["raters"]} == {p.rater_id for p in DEFAULT_PANEL}
    # Rankings of each prompt's four completions by consensus, for `--method listwise`.
    rankings = load_listwise_rows(tmp_path / "rankings.jsonl")
    assert info["num_rankings"] == len(rankings) == 12
    assert rankings[0].prompt == [{"role": "user", "content": "Review movie 0."}]
    assert len(rankings[0].responses) == 4 and rankings[0].ranks[0] == 1
    assert rankings[0].responses[0][-1]["content"] == texts[0]
    assert rankings[0].responses[-1][-1]["content"] == texts[3]
    # Every finished sample with its consensus score, for `--method phf`.
    from prefalign.feedback.corpus import load_corpus

    corpus = load_corpus(tmp_path / "phf_corpus.jsonl", scorer=None)
    assert info["num_phf_documents"] == len(corpus) == len(samples)
    assert corpus[0].prompt == [{"role": "user", "content": "Review movie 0."}]
    assert corpus[0].segments == (texts[0],) and corpus[0].scores[0] > corpus[3].scores[0]


def test_unfinished_completions_and_ties_make_no_pairs(tmp_path: Path) -> None:
    from prefalign.demo.pipeline import DemoSettings, rate_and_pair
    from prefalign.feedback.formats import load_pairs
    from prefalign.rollout import Sample

    texts = ["A wonderful, brilliant film. I loved it!", "A terrible, awful, boring mess.", "Good."]
    samples = [
        # the best review of every prompt was cut at the cap: it must not be chosen
        Sample(f"Review movie {p}.", p, s, text, [1, 2], [0], finished=s != 0)
        for p in range(12)
        for s, text in enumerate(texts)
    ]
    rate_and_pair(samples, DemoSettings(pairs_per_prompt=1, min_margin=1.0), tmp_path, seed=0)
    pairs = load_pairs(tmp_path / "pairs.jsonl")
    assert pairs and all(p.chosen[-1]["content"] == "Good." for p in pairs)
    assert all(p.rejected[-1]["content"] == texts[1] for p in pairs)
    assert (tmp_path / "phf_corpus.jsonl").read_text().count("\n") == 24  # the 12 cut reviews are left out
