"""Human feedback data: the four kinds of human feedback, many raters, and clean training rows.

Modules, lowest first (the layers; a module imports only modules of lower layers, never one of its
own layer or above, and no module imports this package's lazy names -- :data:`LAYERS` holds the
order and ``tests/feedback/test_layers.py`` checks it, function-level imports included):

1. ``validate`` -- the public row errors (:class:`FieldError` for one field of a row,
   :class:`DataError` placing it in a file and line) and the field checks; standard library only.
2. ``rowio`` -- row files in and out: readers (JSONL, JSON, CSV, Parquet, ``datasets``), the load
   loop, the rejected-rows report, :func:`~prefalign.feedback.rowio.write_rows`. ``hhh`` -- the
   built-in dataset (fetch, convert, cache). ``scorers`` -- automatic scorers of texts.
3. ``formats`` -- training rows in TRL's formats (pairs, SFT, unpaired, listwise): load, save,
   split. ``schema`` -- feedback records (ratings, rankings, comparisons, edits, demonstrations).
4. ``aggregate`` (consensus, Dawid-Skene, Bradley-Terry, Plackett-Luce), ``agreement``
   (Krippendorff, Fleiss, Cohen), ``convert`` (feedback -> pairs / SFT / listwise rows), ``corpus``
   (scored documents), ``privacy`` (pseudonyms, scrubbing).
5. ``importers`` -- a package, one module per source (HH-RLHF, UltraFeedback, SHP, Argilla, Label
   Studio, TRL) plus the registry and :func:`import_feedback`.
6. ``inspect`` -- the data-quality report.
7. ``actions`` -- ``prefalign data inspect|convert|aggregate`` as plain functions
   (:func:`inspect_data`, :func:`convert_data`, :func:`aggregate_data`).
8. ``commands`` -- their argparse layer (``prefalign data ...``).

Everything above rests on :mod:`prefalign.utils` (the atomic writer, the cache folder) and, for
numbers, numpy/scipy; nothing here imports torch, models or training code.

The names below are imported on first use (PEP 562), so ``import prefalign.feedback.formats`` or
building the CLI parser does not pull numpy or torch in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

LAYERS: tuple[tuple[str, ...], ...] = (
    ("validate",),
    ("hhh", "rowio", "scorers"),
    ("formats", "schema"),
    ("aggregate", "agreement", "convert", "corpus", "privacy"),
    ("importers",),
    ("inspect",),
    ("actions",),
    ("commands",),
)
"""The submodules by layer, lowest first: a module may import modules of lower layers only."""

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "aggregate_data": "actions",
    "convert_data": "actions",
    "inspect_data": "actions",
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
    "ListwiseRow": "formats",
    "PreferencePair": "formats",
    "SFTRow": "formats",
    "UnpairedRow": "formats",
    "load_hhh": "formats",
    "load_listwise_rows": "formats",
    "load_pairs": "formats",
    "load_sft_rows": "formats",
    "load_unpaired_rows": "formats",
    "save_pairs": "formats",
    "split_pairs": "formats",
    "HHHUnavailableError": "hhh",
    "ensure_hhh": "hhh",
    "import_feedback": "importers",
    "InspectReport": "inspect",
    "inspect_feedback": "inspect",
    "LoadedRows": "rowio",
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
    "DataError": "validate",
    "FieldError": "validate",
}

__all__ = [
    "AgreementReport",
    "Comparison",
    "ConversionConfig",
    "DataError",
    "Demonstration",
    "Edit",
    "FieldError",
    "HHHUnavailableError",
    "InspectReport",
    "LAYERS",
    "ListwiseRow",
    "LoadedRows",
    "PreferencePair",
    "Ranking",
    "Rating",
    "RatingScale",
    "SFTRow",
    "UnpairedRow",
    "aggregate_comparisons",
    "aggregate_data",
    "aggregate_rankings",
    "aggregate_ratings",
    "comparisons_agreement",
    "convert_data",
    "ensure_hhh",
    "feedback_to_pairs",
    "feedback_to_sft",
    "import_feedback",
    "inspect_data",
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
    from prefalign.feedback.actions import aggregate_data, convert_data, inspect_data
    from prefalign.feedback.aggregate import aggregate_comparisons, aggregate_rankings, aggregate_ratings
    from prefalign.feedback.agreement import (
        AgreementReport,
        comparisons_agreement,
        krippendorff_alpha,
        ratings_agreement,
    )
    from prefalign.feedback.convert import ConversionConfig, feedback_to_pairs, feedback_to_sft
    from prefalign.feedback.formats import (
        ListwiseRow,
        PreferencePair,
        SFTRow,
        UnpairedRow,
        load_hhh,
        load_listwise_rows,
        load_pairs,
        load_sft_rows,
        load_unpaired_rows,
        save_pairs,
        split_pairs,
    )
    from prefalign.feedback.hhh import HHHUnavailableError, ensure_hhh
    from prefalign.feedback.importers import import_feedback
    from prefalign.feedback.inspect import InspectReport, inspect_feedback
    from prefalign.feedback.privacy import pseudonymize_records, scrub_records
    from prefalign.feedback.rowio import LoadedRows
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
    from prefalign.feedback.validate import DataError, FieldError
