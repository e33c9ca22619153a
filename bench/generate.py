"""Generation throughput: prefalign's rollout backends against plain ``model.generate``.

Same model (SmolLM2-135M-Instruct, fp32), same prompts, same batch, in one process, interleaved
(``--repeats`` rounds of every variant), so the ratios hold even on a shared machine. Two cases:

* ``fixed``: 64 rows x 64 new tokens with stop tokens banned (``min_new_tokens`` = 64): pure decode
  speed, every row the same length.
* ``ragged``: the demo's real case: 64 prompts "Write a short review of the movie <title>.",
  up to 96 new tokens, rows stop at EOS, so rows finish at different steps.

Variants: ``generate`` (plain ``model.generate`` on the fp32 model, sampling at temperature 1: the
baseline), ``generate-bf16`` (the same on a bf16 copy: how much the dtype alone gives), ``hf``
(prefalign's ``hf`` backend: ``model.generate`` plus the log-prob recorder, default dtype),
``native`` (prefalign's decode loop, default dtype: bf16 where the CPU has native bf16 matmuls)
and ``native-fp32``. Tokens/s counts generated tokens (through the stop token); the time of a
prefalign variant includes making its bf16 copy.
``--profile`` prints a ``torch.profiler`` table of one native run.

    .venv/bin/python bench/generate.py --repeats 3 --out runs/bench/generate.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from prefalign.models import load_causal_lm
from prefalign.rollout import SamplingConfig, generate, stop_token_ids
from prefalign.tokens import encode_prompt, left_pad

TITLES = [
    "Casablanca", "Vertigo", "Alien", "Heat", "Amelie", "Ran", "Fargo", "Up", "Jaws", "Psycho",
    "Rocky", "Brazil", "Memento", "Gattaca", "Arrival", "Her",
]  # fmt: skip


BF16: list[Any] = []  # a bf16 copy of the model for the generate-bf16 variant


def prompts(rows: int) -> list[str]:
    return [f"Write a short review of the movie {TITLES[i % len(TITLES)]}." for i in range(rows)]


def gemm_gflops(size: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def plain_generate(model: Any, tokenizer: Any, texts: list[str], cfg: SamplingConfig) -> int:
    """``model.generate`` as a user would call it; returns generated tokens (through the stop token)."""
    stops = stop_token_ids(model, tokenizer)
    rows = [encode_prompt(tokenizer, t) for t in texts]
    batch = left_pad(rows, tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed or 0)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
    generated = out[:, batch["input_ids"].shape[1] :].tolist()
    total = 0
    for row in generated:
        ends = [i for i, t in enumerate(row) if t in stops]
        total += ends[0] + 1 if ends else len(row)
    return total


def run_variant(
    model: Any, tokenizer: Any, variant: str, texts: list[str], cfg: SamplingConfig
) -> dict[str, float]:
    start = time.perf_counter()
    if variant == "generate":
        tokens = plain_generate(model, tokenizer, texts, cfg)
    elif variant == "generate-bf16":
        tokens = plain_generate(BF16[0], tokenizer, texts, cfg)
    else:
        backend, _, dtype = variant.partition("-")
        options = {"dtype": {"fp32": "float32", "bf16": "bfloat16"}[dtype]} if dtype else {}
        samples = generate(model, tokenizer, texts, cfg, backend=backend, **options)
        tokens = sum(s.num_tokens for s in samples)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", default="fixed,ragged")
    parser.add_argument("--variants", default="generate,generate-bf16,hf,native,native-fp32")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_causal_lm("smollm2-135m-instruct")
    model.eval()
    BF16.append(copy.deepcopy(model).to(torch.bfloat16))
    texts = prompts(args.rows)
    cases = {
        "fixed": SamplingConfig(
            max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, batch_size=args.rows
        ),
        "ragged": SamplingConfig(max_new_tokens=96, batch_size=args.rows),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    results: dict[str, Any] = {"gemm_gflops": [gemm_gflops()], "runs": []}
    for round_ in range(args.repeats):
        for case in args.cases.split(","):
            for variant in args.variants.split(","):
                row = {"case": case, "variant": variant, "round": round_}
                row.update(run_variant(model, tokenizer, variant, texts, cases[case]))
                results["runs"].append(row)
                print(
                    f"{case:7s} {variant:9s} round {round_}: {row['tokens']:5d} tokens in "
                    f"{row['seconds']:6.1f}s = {row['tokens_per_s']:6.1f} tokens/s",
                    flush=True,
                )
    results["gemm_gflops"].append(gemm_gflops())
    print(
        f"GEMM probe (start, end): {results['gemm_gflops'][0]:.0f}, {results['gemm_gflops'][1]:.0f} GFLOP/s"
    )
    summary = {}
    for case in args.cases.split(","):
        best = {
            v: max(r["tokens_per_s"] for r in results["runs"] if r["case"] == case and r["variant"] == v)
            for v in args.variants.split(",")
        }
        base = best.get("generate")
        for variant, rate in best.items():
            ratio = f"{rate / base:.2f}x" if base else "-"
            print(f"{case:7s} {variant:9s} best {rate:6.1f} tokens/s  {ratio} plain generate")
        summary[case] = best
    results["best_tokens_per_s"] = summary
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_variant(model, tokenizer, "native", texts, cases["fixed"])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
