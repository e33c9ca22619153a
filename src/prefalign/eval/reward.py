"""Reward-model evaluation on preference pairs, as RewardBench scores it.

The scoring and the metrics live with reward-model inference in :mod:`prefalign.models.reward`
(:func:`~prefalign.models.reward.evaluate_pairs` scores a model or ensemble on pairs,
:func:`~prefalign.models.reward.pairwise_report` computes RewardBench's accuracy, subset means,
the longer-answer baseline and calibration from given rewards), so training and ``prefalign
reward-eval`` report the same numbers; this module adds the terminal summary.
"""

from __future__ import annotations

from typing import Any

from prefalign.models.reward import (
    evaluate_pairs,
    expected_calibration_error,
    pairwise_report,
    text_length,
)

__all__ = [
    "evaluate_pairs",
    "expected_calibration_error",
    "format_report",
    "pairwise_report",
    "text_length",
]


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the terminal: overall and per-subset accuracy beside the length baseline."""
    if not report.get("num_pairs"):
        return "no pairs to score"
    lines = [
        f"{report['num_pairs']} pairs: accuracy {report['accuracy']:.3f} "
        f"(subset mean {report['subset_mean_accuracy']:.3f}), longer-answer baseline "
        f"{report['length_baseline_accuracy']:.3f}, calibration error {report['calibration_error']:.3f}"
    ]
    if "mean_uncertainty" in report:
        lines[0] += f", mean ensemble std {report['mean_uncertainty']:.3f}"
    width = max(len(name) for name in report["subsets"])
    for name, accuracy in report["subsets"].items():
        lines.append(
            f"  {name:<{width}}  {accuracy:.3f}  (baseline {report['length_baseline_subsets'][name]:.3f}, "
            f"{report['subset_sizes'][name]} pairs)"
        )
    return "\n".join(lines)
