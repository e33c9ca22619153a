"""``prefalign demo --quick`` end to end on the real packaged models (SmolLM2 + MiniLM).

Slow: converts SmolLM2 on first use (about 20 s) and runs the whole pipeline (about 2 minutes on
2 CPU cores), here with two methods side by side: DPO on the rated pairs and GRPO (RL with the
reward model trained on them). The thresholds are far below what the quick run measures (VADER 0.14 -> 0.54), so
the test checks that the pipeline steers the policy, not the exact figure.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from prefalign.cli import main

SUMMARY_KEYS = {"gold_mean", "gold_strong_rate", "judge2_mean", "reward_mean", "distinct2", "mean_length"}


@pytest.mark.slow
def test_quick_demo_writes_summary_and_report_and_moves_sentiment(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output-dir", str(out), "--method", "dpo,grpo"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary["before"]) and SUMMARY_KEYS <= set(summary["after"])
    for key in ("kl", "reward_model_accuracy", "seconds"):
        assert isinstance(summary[key], float)
    assert summary["kl"] > 0
    assert summary["after"]["gold_mean"] > summary["before"]["gold_mean"] + 0.1
    assert summary["suspected_spammers"], "the simulated spammer should be flagged"

    # Feedback went through the data path: records and pairs on disk, read back by the recipes.
    assert (out / "feedback.jsonl").read_text().count("\n") == summary["num_feedback_records"]
    assert (out / "pairs.jsonl").read_text().count("\n") == summary["num_pairs"]
    assert (out / "dpo" / "final" / "config.json").exists()
    # Both methods trained on the same pairs and were scored on the same prompts.
    assert (out / "grpo" / "final" / "config.json").exists()
    assert summary["method"] == "dpo" and list(summary["methods"]) == ["dpo", "grpo"]
    grpo_config = (out / "grpo" / "config.yaml").read_text()
    assert str(out / "reward" / "final") in grpo_config and str(out / "prompts.txt") in grpo_config
    assert summary["methods"]["dpo"]["gold_mean"] == summary["after"]["gold_mean"]
    for name in ("dpo", "grpo"):
        assert SUMMARY_KEYS <= set(summary["methods"][name]) and summary["methods"][name]["kl"] > 0

    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["phase"] for s in samples} == {"before", "dpo", "grpo"}
    assert "Methods side by side" in report
    first_before = next(s for s in samples if s["phase"] == "before")
    first_after = next(s for s in samples if s["phase"] == "dpo")
    assert html.escape(first_before["completion"]) in report  # example generations, before
    assert html.escape(first_after["completion"]) in report  # ... and after


@pytest.mark.parametrize("method", ["dpo", "kto", "listwise", "phf", "grpo", "rloo", "ppo", "online-dpo"])
def test_every_demo_method_builds_a_valid_config(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each method's options meet its recipe's config (checked, nothing trained), KL strength too."""
    from prefalign.demo import pipeline
    from prefalign.recipes import RECIPES

    built = {}

    class Recipe:
        @staticmethod
        def train(config: object) -> object:
            built["config"] = config
            return None

    for name in ("pairs.jsonl", "rankings.jsonl", "phf_corpus.jsonl", "prompts.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "reward" / "final").mkdir(parents=True)
    (tmp_path / "reward" / "final" / "config.json").write_text("{}")
    spec = pipeline.DEMO_METHODS[method]
    _, config_cls = RECIPES[spec["recipe"]].load()
    monkeypatch.setattr(type(RECIPES[spec["recipe"]]), "load", lambda self: (Recipe, config_cls))
    pipeline.train_policy(tmp_path, pipeline.QUICK, 0, method, beta=0.3)
    config = built["config"]
    assert getattr(config, pipeline.kl_field(method)) == 0.3
    assert config.output_dir == str(tmp_path / f"{method}@0.3")
    if spec.get("rl"):
        assert config.reward.model == [str(tmp_path / "reward" / "final")]
        assert config.data.train == str(tmp_path / "prompts.txt")


def test_eval_prompts_from_titles_or_rows(tmp_path: Path) -> None:
    from prefalign.demo.pipeline import PROMPT_TEMPLATE, load_eval_prompts

    (tmp_path / "titles.txt").write_text("Alien\n\nHeat\n")
    assert load_eval_prompts(tmp_path / "titles.txt") == [
        PROMPT_TEMPLATE.format(title=t) for t in ("Alien", "Heat")
    ]
    (tmp_path / "rows.jsonl").write_text('{"prompt": "Praise Heat."}\n')
    assert load_eval_prompts(tmp_path / "rows.jsonl") == ["Praise Heat."]


def test_the_cli_hands_methods_betas_and_eval_prompts_to_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefalign.demo.pipeline as pipeline

    seen: dict = {}
    monkeypatch.setattr(pipeline, "run_demo", lambda output_dir, **kwargs: seen.update(kwargs))
    (tmp_path / "titles.txt").write_text("Alien\n")
    args = ["demo", "--method", "dpo,grpo", "--betas", "0.02,0.2", "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--eval-prompts", str(tmp_path / "titles.txt")]) == 0
    assert seen["methods"] == ["dpo", "grpo"] and seen["betas"] == [0.02, 0.2]
    assert seen["eval_prompts_file"] == str(tmp_path / "titles.txt")
