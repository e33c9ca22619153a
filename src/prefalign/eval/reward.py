"""Reward-model evaluation on preference pairs, as RewardBench scores it.

RewardBench (Lambert et al. 2024, arXiv 2403.13787, sec. 4) counts a pair as right when
``r(chosen) > r(rejected)`` (a tie is wrong); a section's score is the accuracy over all its pairs
(subsets weighted by their size) and the leaderboard score is the unweighted mean of sections. We
report both: ``accuracy`` over all pairs and ``subset_mean_accuracy`` over the subsets. Beside it
stands the longer-answer baseline (how often the chosen answer is simply the longer one), which a
reward model must beat before its accuracy means anything, and the calibration of
``P(chosen wins) = sigmoid(r_chosen - r_rejected)``, the Bradley-Terry reading of the rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from prefalign.feedback.formats import PreferencePair, Text


def text_length(text: Text) -> int:
    """Characters of a completion (for messages, of all their contents)."""
    return len(text) if isinstance(text, str) else sum(len(str(m.get("content", ""))) for m in text)


def expected_calibration_error(probabilities: torch.Tensor, n_bins: int = 10) -> float:
    """ECE of pairwise win probabilities whose true answer is always "chosen wins".

    Each pair predicts its more probable side with confidence ``max(p, 1 - p)``; confidences in
    [0.5, 1] are cut into ``n_bins`` equal bins and ``ECE = sum_b (n_b / N) |accuracy_b -
    confidence_b|`` (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3). A pair at
    exactly p = 0.5 counts as wrong, as in the accuracy.

    Args:
        probabilities: (N,) ``P(chosen beats rejected)`` per pair.
    """
    if probabilities.numel() == 0:
        return 0.0
    p = probabilities.double().flatten()
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double()
    bins = ((confidence - 0.5) * 2 * n_bins).long().clamp(0, n_bins - 1)
    total = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, torch.ones_like(p))
    conf_sum = torch.zeros_like(total).index_add_(0, bins, confidence)
    right_sum = torch.zeros_like(total).index_add_(0, bins, correct)
    used = total > 0
    gap = (right_sum[used] - conf_sum[used]).abs()  # n_b * |acc_b - conf_b|
    return float(gap.sum() / p.numel())


def pairwise_report(
    pairs: Sequence[PreferencePair],
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    chosen_std: torch.Tensor | None = None,
    rejected_std: torch.Tensor | None = None,
) -> dict[str, Any]:
    """RewardBench-style metrics of given rewards on pairs.

    Args:
        pairs: the N pairs (for subsets and answer lengths).
        chosen, rejected: (N,) rewards of the chosen and rejected answers.
        chosen_std, rejected_std: optional (N,) ensemble spread, reported as ``mean_uncertainty``.

    Returns:
        ``accuracy``, ``subset_mean_accuracy``, ``length_baseline_accuracy``, ``calibration_error``,
        ``num_pairs``, ``mean_margin``, ``subsets`` (name -> accuracy), ``subset_sizes`` and
        ``length_baseline_subsets``; pairs without a subset are grouped under ``"all"``.
    """
    if len(pairs) != chosen.numel() or chosen.shape != rejected.shape:
        raise ValueError(
            f"{len(pairs)} pairs but rewards of shapes {tuple(chosen.shape)} and {tuple(rejected.shape)}"
        )
    if not pairs:
        return {}
    chosen, rejected = chosen.double().flatten(), rejected.double().flatten()
    correct = (chosen > rejected).double()
    longer = torch.tensor(
        [float(text_length(p.chosen) > text_length(p.rejected)) for p in pairs], dtype=torch.float64
    )
    groups: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        groups.setdefault(pair.subset or "all", []).append(index)
    subsets = {name: float(correct[idx].mean()) for name, idx in sorted(groups.items())}
    report: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "subset_mean_accuracy": sum(subsets.values()) / len(subsets),
        "length_baseline_accuracy": float(longer.mean()),
        "calibration_error": expected_calibration_error(torch.sigmoid(chosen - rejected)),
        "num_pairs": len(pairs),
        "mean_margin": float((chosen - rejected).mean()),
        "subsets": subsets,
        "subset_sizes": {name: len(idx) for name, idx in sorted(groups.items())},
        "length_baseline_subsets": {name: float(longer[idx].mean()) for name, idx in sorted(groups.items())},
    }
    if chosen_std is not None and rejected_std is not None:
        report["mean_uncertainty"] = float(torch.cat([chosen_std, rejected_std]).double().mean())
    return report


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
