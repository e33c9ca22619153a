"""Human feedback data: the four kinds of feedback, many raters, and clean training rows.

Submodules: ``schema`` (ratings, rankings, comparisons, edits, demonstrations), ``importers``
(HH-RLHF, UltraFeedback, SHP, Argilla, Label Studio, TRL), ``aggregate`` (consensus, Dawid-Skene,
Bradley-Terry, Plackett-Luce, spammers), ``agreement`` (Krippendorff, Fleiss, Cohen), ``convert``
(feedback -> pairs / SFT / listwise rows), ``privacy`` (pseudonyms, scrubbing), ``formats``
(validated TRL-format pair and SFT files) and ``hhh`` (the built-in dataset).
"""

from prefalign.feedback.aggregate import (
    aggregate_comparisons,
    aggregate_rankings,
    aggregate_ratings,
)
from prefalign.feedback.agreement import (
    AgreementReport,
    comparisons_agreement,
    krippendorff_alpha,
    ratings_agreement,
)
from prefalign.feedback.convert import ConversionConfig, feedback_to_pairs, feedback_to_sft
from prefalign.feedback.formats import (
    DataError,
    LoadedRows,
    PreferencePair,
    SFTRow,
    load_pairs,
    load_sft_rows,
    save_pairs,
    split_pairs,
)
from prefalign.feedback.hhh import HHHUnavailableError, ensure_hhh, load_hhh
from prefalign.feedback.importers import import_feedback
from prefalign.feedback.privacy import pseudonymize_records, scrub_records
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    Ranking,
    Rating,
    RatingScale,
    load_feedback,
    save_feedback,
)

__all__ = [
    "AgreementReport",
    "Comparison",
    "ConversionConfig",
    "DataError",
    "Demonstration",
    "Edit",
    "HHHUnavailableError",
    "LoadedRows",
    "PreferencePair",
    "Ranking",
    "Rating",
    "RatingScale",
    "SFTRow",
    "aggregate_comparisons",
    "aggregate_rankings",
    "aggregate_ratings",
    "comparisons_agreement",
    "ensure_hhh",
    "feedback_to_pairs",
    "feedback_to_sft",
    "import_feedback",
    "krippendorff_alpha",
    "load_feedback",
    "load_hhh",
    "load_pairs",
    "load_sft_rows",
    "pseudonymize_records",
    "ratings_agreement",
    "save_feedback",
    "save_pairs",
    "scrub_records",
    "split_pairs",
]
