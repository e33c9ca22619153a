"""Evaluation: sentiment judges, diversity, length, KL to the reference, reward scores, HTML reports."""

from prefalign.eval.metrics import (
    distinct_n,
    kl_to_reference,
    mean,
    reward_scores,
    strong_rate,
    text_metrics,
    textblob_polarity,
    vader_compound,
    words,
)
from prefalign.eval.report import render_report, write_report

__all__ = [
    "distinct_n",
    "kl_to_reference",
    "mean",
    "render_report",
    "reward_scores",
    "strong_rate",
    "text_metrics",
    "textblob_polarity",
    "vader_compound",
    "words",
    "write_report",
]
