"""``prefalign generate``: load a policy, sample every prompt, write the samples as JSONL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from prefalign.models import load_causal_lm
from prefalign.rollout.engine import generate
from prefalign.rollout.sampling import GenerationStats, Prompt, Sample, SamplingConfig


def sample_record(sample: Sample) -> dict[str, Any]:
    """One output line: what a rater needs to judge the sample, and how it ended."""
    return {
        "prompt": sample.prompt,
        "prompt_index": sample.prompt_index,
        "sample_index": sample.sample_index,
        "completion": sample.completion,
        "finished": sample.finished,
        "stop_reason": sample.stop_reason,
        "num_tokens": sample.num_tokens,
        "logprob": round(sum(sample.logprobs), 6),
    }


def write_samples(
    model_name: str, prompts: list[Prompt], cfg: SamplingConfig, output: str
) -> GenerationStats:
    """Sample ``cfg.n`` completions per prompt with ``model_name`` on the best device; lines are
    written as batches finish (to ``output.partial``, renamed when all are done)."""
    model, tokenizer = load_causal_lm(model_name)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    stats = GenerationStats()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    columns = (TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar, partial.open("w") as handle:
        task = bar.add_task("generate", total=len(prompts) * cfg.n)

        def write(batch: list[Sample]) -> None:
            handle.writelines(json.dumps(sample_record(s)) + "\n" for s in batch)
            handle.flush()
            bar.advance(task, len(batch))

        generate(model, tokenizer, prompts, cfg, stats=stats, on_batch=write)
    os.replace(partial, out)
    return stats
