"""How fast and how well ``prefalign.feedback.aggregate`` aggregates a million judgments on a CPU.

Workload (seeded, ``--seed``, default 0): ``--items`` items (default 100,000) with true log-strength
``t ~ N(0, 1)``, judged by ``--raters`` raters (default 1,000):

* **comparisons** (``--comparisons``, default 1,000,000): random pairs ``(a, b)``, ``a`` shown
  first. 80% of raters are careful (skill ~ U(0.85, 1): they follow Bradley-Terry
  ``P(a) = sigmoid(t_a - t_b)``, otherwise pick at random), 10% are position-biased (skill 0.6;
  otherwise pick ``a`` with probability ``sigmoid(2) = 0.88``) and 10% are spammers (skill 0, coin
  flip) -- exactly the Noisy-BT model.
* **ratings** (as many as comparisons): 1-5 ratings ``round(3 + 1.2 t + offset_r + noise)`` with
  a per-rater offset ~ N(0, 0.5) and noise sd ~ U(0.4, 1.2), clipped to 1-5; spammers answer uniformly.
  The same integers serve as numbers (mean/median/weighted/calibrations) and as 5 classes (Dawid-Skene).
* **rankings** (``comparisons / 4``): random 4-item subsets ordered by a Plackett-Luce draw.

Every method runs once (after a small warm-up run); the table gives the seconds, the iterations
and how well the consensus recovers the truth (Pearson correlation with ``t`` over items that
received any judgment) and, for raters, how many spammers are flagged. Record-level wrappers
(``aggregate_comparisons``/``aggregate_ratings``) are timed on the first ``--records`` judgments,
since building a million Python record objects measures Python, not the aggregation.

Usage::

    .venv/bin/python bench/aggregate_scale.py             # 1M comparisons, 1k raters, 100k items
    .venv/bin/python bench/aggregate_scale.py --quick     # 10x smaller
    .venv/bin/python bench/aggregate_scale.py --out runs/bench/aggregate_scale.json --skip noisy_bt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prefalign.feedback import aggregate as ag
from prefalign.feedback.schema import Comparison, Rating, RatingScale


def simulate(n_items: int, n_raters: int, n_judgments: int, seed: int) -> dict[str, Any]:
    """Truth, rater types, comparisons, ratings and rankings (all integer-coded numpy arrays)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.0, 1.0, n_items)
    kind = rng.choice(3, size=n_raters, p=[0.8, 0.1, 0.1])  # 0 careful, 1 position-biased, 2 spammer
    skill = np.select([kind == 0, kind == 1], [rng.uniform(0.85, 1.0, n_raters), 0.6], 0.0)
    bias = np.where(kind == 1, 2.0, 0.0)

    rater = rng.integers(0, n_raters, n_judgments)
    a = rng.integers(0, n_items, n_judgments)
    b = (a + rng.integers(1, n_items, n_judgments)) % n_items
    follow = rng.random(n_judgments) < skill[rater]
    p_a = np.where(follow, 1.0 / (1.0 + np.exp(-(truth[a] - truth[b]))), 1.0 / (1.0 + np.exp(-bias[rater])))
    outcome = (rng.random(n_judgments) < p_a).astype(np.float64)

    r_rater = rng.integers(0, n_raters, n_judgments)
    r_item = rng.integers(0, n_items, n_judgments)
    offset = rng.normal(0.0, 0.5, n_raters)
    noise = rng.uniform(0.4, 1.2, n_raters)
    raw = 3.0 + 1.2 * truth[r_item] + offset[r_rater] + rng.normal(0.0, 1.0, n_judgments) * noise[r_rater]
    value = np.clip(np.rint(raw), 1, 5)
    spam = kind[r_rater] == 2
    value[spam] = rng.integers(1, 6, int(spam.sum()))

    n_rank = n_judgments // 4
    # 4 distinct items per ranking: start + k * step (k = 0..3, 0 < 3 step < n_items) never repeats.
    start = rng.integers(0, n_items, n_rank)
    step = rng.integers(1, max(n_items // 3, 2), n_rank)
    chosen = (start[:, None] + step[:, None] * np.arange(4)) % n_items
    gumbel = truth[chosen] + rng.gumbel(size=chosen.shape)  # Plackett-Luce draw (Gumbel-max trick)
    ordered = np.take_along_axis(chosen, np.argsort(-gumbel, axis=1), axis=1)
    return {
        "truth": truth,
        "kind": kind,
        "comparisons": {"rater": rater, "a": a, "b": b, "outcome": outcome},
        "ratings": {"rater": r_rater, "item": r_item, "value": value},
        "rankings": ordered,
    }


def corr(x: np.ndarray, truth: np.ndarray, seen: np.ndarray) -> float:
    ok = seen & np.isfinite(x)
    return float(np.corrcoef(x[ok], truth[ok])[0, 1])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = simulate(args.items, args.raters, args.comparisons, args.seed)
    truth, kind = data["truth"], data["kind"]
    cmp, rat = data["comparisons"], data["ratings"]
    n_items, n_raters = args.items, args.raters
    seen_cmp = np.bincount(np.concatenate([cmp["a"], cmp["b"]]), minlength=n_items) > 0
    seen_rat = np.bincount(rat["item"], minlength=n_items) > 0
    rows: list[dict[str, Any]] = []

    def add(name: str, seconds: float, **extra: Any) -> None:
        rows.append({"method": name, "seconds": round(seconds, 3), **extra})
        print(f"  {name:<34} {seconds:8.2f} s  {extra}", flush=True)

    def spammer_recall(flags: np.ndarray) -> dict[str, Any]:
        return {
            "spammers_flagged": f"{int(flags[kind == 2].sum())}/{int((kind == 2).sum())}",
            "careful_flagged": f"{int(flags[kind == 0].sum())}/{int((kind == 0).sum())}",
        }

    winner = np.where(cmp["outcome"] == 1, cmp["a"], cmp["b"])
    loser = np.where(cmp["outcome"] == 1, cmp["b"], cmp["a"])
    if "bt" not in args.skip:
        fit, sec = timed(lambda: ag.bradley_terry(winner, loser, n_items=n_items, alpha=0.1))
        add(
            "bradley_terry (MM, alpha 0.1)",
            sec,
            iterations=fit.iterations,
            corr=corr(fit.scores, truth, seen_cmp),
        )
        agree, sec = timed(
            lambda: ag.comparison_agreement(
                cmp["rater"],
                cmp["a"],
                cmp["b"],
                cmp["outcome"],
                fit.scores,
                n_raters=n_raters,
                prior_precision=0.1,
            )
        )
        spam = ag.detect_spammers(agreement=agree.agreement, n=agree.n)
        add("comparison_agreement + spammers", sec, **spammer_recall(spam.flagged))
    if "noisy_bt" not in args.skip:
        fit, sec = timed(
            lambda: ag.noisy_bradley_terry(
                cmp["rater"], cmp["a"], cmp["b"], cmp["outcome"], n_raters=n_raters, n_items=n_items
            )
        )
        biased = fit.position_bias[kind == 1].mean() if (kind == 1).any() else float("nan")
        add(
            "noisy_bradley_terry (L-BFGS)",
            sec,
            iterations=fit.iterations,
            corr=corr(fit.scores, truth, seen_cmp),
            mean_bias_logit_biased_raters=round(float(biased), 3),
            mean_skill_spammers=round(float(fit.skill[kind == 2].mean()), 3),
        )
    if "pl" not in args.skip:
        rankings = data["rankings"]
        fit, sec = timed(lambda: ag.plackett_luce(rankings, n_items=n_items, alpha=0.1))
        seen_rank = np.bincount(rankings.ravel(), minlength=n_items) > 0
        add(
            f"plackett_luce ({len(rankings)} x 4)",
            sec,
            iterations=fit.iterations,
            corr=corr(fit.scores, truth, seen_rank),
        )

    r, i, v = rat["rater"], rat["item"], rat["value"]
    if "ratings" not in args.skip:
        for name in ("mean", "median"):
            out, sec = timed(lambda name=name: ag.RATING_CONSENSUS[name](r, i, v, n_items=n_items))
            add(f"{name}_consensus", sec, corr=corr(out, truth, seen_rat))
        fit, sec = timed(
            lambda: ag.reliability_weighted_consensus(r, i, v, n_raters=n_raters, n_items=n_items)
        )
        spam = ag.detect_spammers(agreement=fit.agreement, n=fit.n_compared)
        add(
            "reliability_weighted_consensus",
            sec,
            iterations=fit.iterations,
            corr=corr(fit.scores, truth, seen_rat),
            **spammer_recall(spam.flagged),
        )
        for name, fn in ag.CALIBRATIONS.items():
            out, sec = timed(lambda fn=fn: fn(r, v))
            cal = ag.mean_consensus(r, i, out, n_items=n_items)
            add(f"{name}_calibrate (+ mean)", sec, corr=corr(cal, truth, seen_rat))
        label = (v - 1).astype(np.int64)
        fit, sec = timed(
            lambda: ag.dawid_skene(r, i, label, n_raters=n_raters, n_items=n_items, n_classes=5, max_iter=100)
        )
        spam = ag.detect_spammers(confusion=fit.confusion, class_counts=fit.class_counts)
        add(
            "dawid_skene (K=5)",
            sec,
            iterations=fit.iterations,
            corr=corr(fit.posteriors @ np.arange(5.0), truth, seen_rat),
            **spammer_recall(spam.flagged),
        )

    if "records" not in args.skip:
        m = min(args.records, args.comparisons)
        outcome = cmp["outcome"][:m]
        comparisons = [
            Comparison(
                rater_id=f"r{cmp['rater'][k]}",
                item_id="p0",
                prompt="",
                a_id=f"x{cmp['a'][k]}",
                a="",
                b_id=f"x{cmp['b'][k]}",
                b="",
                winner="a" if outcome[k] == 1 else "b",
            )
            for k in range(m)
        ]
        res, sec = timed(lambda: ag.aggregate_comparisons(comparisons, method="bt"))
        add(f"aggregate_comparisons bt ({m} records)", sec, responses=len(res.scores["p0"]))
        ratings = [
            Rating(
                rater_id=f"r{r[k]}",
                item_id="p0",
                prompt="",
                response_id=f"x{i[k]}",
                response="",
                value=float(v[k]),
            )
            for k in range(m)
        ]
        res, sec = timed(lambda: ag.aggregate_ratings(ratings, RatingScale(1, 5), method="weighted"))
        add(f"aggregate_ratings weighted ({m} records)", sec, responses=len(res.scores["p0"]))

    return {
        "workload": {
            "items": n_items,
            "raters": n_raters,
            "comparisons": args.comparisons,
            "ratings": args.comparisons,
            "rankings": args.comparisons // 4,
            "seed": args.seed,
            "rater_kinds": {
                "careful": int((kind == 0).sum()),
                "biased": int((kind == 1).sum()),
                "spammer": int((kind == 2).sum()),
            },
        },
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller workload")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--raters", type=int, default=1_000)
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument(
        "--records", type=int, default=100_000, help="judgments for the record-level wrappers"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["bt", "noisy_bt", "pl", "ratings", "records"]
    )
    parser.add_argument("--out", default="runs/bench/aggregate_scale.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.items //= 10
        args.comparisons //= 10
        args.records //= 10
        args.out = (
            args.out.replace(".json", "_quick.json")
            if args.out.endswith("aggregate_scale.json")
            else args.out
        )
    # Warm-up on a tiny instance so one-off import/allocation costs are not billed to the first method.
    warm = argparse.Namespace(
        **{**vars(args), "items": 200, "raters": 20, "comparisons": 4000, "records": 200}
    )
    print("warm-up ...", flush=True)
    run(warm)
    print(f"{args.comparisons} comparisons / ratings, {args.raters} raters, {args.items} items:", flush=True)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'method':<40} {'seconds':>8}  {'corr':>6}  iterations  notes")
    for row in result["results"]:
        notes = {k: v for k, v in row.items() if k not in ("method", "seconds", "corr", "iterations")}
        corr_txt = f"{row['corr']:.3f}" if "corr" in row else ""
        print(
            f"{row['method']:<40} {row['seconds']:>8.2f}  {corr_txt:>6}  {row.get('iterations', ''):>10}  {notes or ''}"
        )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
