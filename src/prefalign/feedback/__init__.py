"""Human feedback data: the four kinds of human feedback, many raters, and clean training rows.

Submodules: ``schema`` (ratings, rankings, comparisons, edits, demonstrations), ``importers``
(HH-RLHF, UltraFeedback, SHP, Argilla, Label Studio, TRL), ``aggregate`` (consensus, Dawid-Skene,
Bradley-Terry, Plackett-Luce, spammers), ``agreement`` (Krippendorff, Fleiss, Cohen), ``convert``
(feedback -> pairs / SFT / listwise rows), ``privacy`` (pseudonyms, scrubbing), ``formats``
(validated TRL-format pair and SFT files), ``hhh`` (the built-in dataset), ``inspect`` (a data
quality report) and ``commands`` (``prefalign data ...``).

The names below are imported on first use (PEP 562), so ``import prefalign.feedback.formats`` or
building the CLI parser does not pull numpy or torch in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "aggregate_comparisons": "aggregate",
    "aggregate_rankings": "aggregate",
    "aggregate_ratings": "aggregate",
    "AgreementReport": "agreement",
    "comparisons_agreement": "agreement",
    "krippendorff_alpha": "agreement",
    "ratings_agreement": "agreement",
    "ConversionConfig": "convert",
    "feedback_to_pairs": "convert",
    "feedback_to_sft": "convert",
    "DataError": "formats",
    "LoadedRows": "formats",
    "PreferencePair": "formats",
    "SFTRow": "formats",
    "UnpairedRow": "formats",
    "load_listwise_rows": "formats",
    "load_pairs": "formats",
    "load_sft_rows": "formats",
    "load_unpaired_rows": "formats",
    "save_pairs": "formats",
    "split_pairs": "formats",
    "HHHUnavailableError": "hhh",
    "ensure_hhh": "hhh",
    "load_hhh": "hhh",
    "import_feedback": "importers",
    "InspectReport": "inspect",
    "inspect_feedback": "inspect",
    "pseudonymize_records": "privacy",
    "scrub_records": "privacy",
    "Comparison": "schema",
    "Demonstration": "schema",
    "Edit": "schema",
    "Ranking": "schema",
    "Rating": "schema",
    "RatingScale": "schema",
    "load_feedback": "schema",
    "save_feedback": "schema",
}

__all__ = [
    "AgreementReport",
    "Comparison",
    "ConversionConfig",
    "DataError",
    "Demonstration",
    "Edit",
    "HHHUnavailableError",
    "InspectReport",
    "LoadedRows",
    "PreferencePair",
    "Ranking",
    "Rating",
    "RatingScale",
    "SFTRow",
    "UnpairedRow",
    "aggregate_comparisons",
    "aggregate_rankings",
    "aggregate_ratings",
    "comparisons_agreement",
    "ensure_hhh",
    "feedback_to_pairs",
    "feedback_to_sft",
    "import_feedback",
    "inspect_feedback",
    "krippendorff_alpha",
    "load_feedback",
    "load_hhh",
    "load_listwise_rows",
    "load_pairs",
    "load_sft_rows",
    "load_unpaired_rows",
    "pseudonymize_records",
    "ratings_agreement",
    "save_feedback",
    "save_pairs",
    "scrub_records",
    "split_pairs",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from prefalign.feedback.aggregate import aggregate_comparisons, aggregate_rankings, aggregate_ratings
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
        UnpairedRow,
        load_listwise_rows,
        load_pairs,
        load_sft_rows,
        load_unpaired_rows,
        save_pairs,
        split_pairs,
    )
    from prefalign.feedback.hhh import HHHUnavailableError, ensure_hhh, load_hhh
    from prefalign.feedback.importers import import_feedback
    from prefalign.feedback.inspect import InspectReport, inspect_feedback
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
