"""Preference and SFT data: TRL-format loading with row-level validation, and built-in datasets."""

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

__all__ = [
    "DataError",
    "HHHUnavailableError",
    "LoadedRows",
    "PreferencePair",
    "SFTRow",
    "ensure_hhh",
    "load_hhh",
    "load_pairs",
    "load_sft_rows",
    "save_pairs",
    "split_pairs",
]
