"""Importers for the feedback formats people already have, into prefalign's records.

Every importer reads the same sources as :func:`prefalign.feedback.formats.load_pairs` (JSON Lines, a
``.json`` array, CSV, Parquet, a ``datasets`` dataset or folder, a list of row dicts), validates every
row and, on a bad one, raises :class:`~prefalign.feedback.validate.DataError` naming the file, the line
(JSONL/CSV line; index + 1 for a JSON array export such as Label Studio's or Argilla's ``to_json``; row
index + 1 for Parquet/datasets) and the field as a dotted path (``completions[2].overall_score``,
``annotations[0].result[1].value.selected``). With ``on_error="skip"`` the valid rows are kept, the
rejected ones are listed on the result's ``errors`` (and written to ``report_path`` as JSONL). A row is
the unit of rejection: one bad annotation rejects its whole task, so that a report line can be fixed
and the file re-imported without double counting.

One module per source, each documenting the fields it reads (everything else is ignored):

* :mod:`~prefalign.feedback.importers.hh_rlhf` -- Anthropic HH-RLHF transcripts -> preference pairs;
* :mod:`~prefalign.feedback.importers.ultrafeedback` -- UltraFeedback, raw and binarized -> ratings;
* :mod:`~prefalign.feedback.importers.shp` -- Stanford SHP -> comparisons;
* :mod:`~prefalign.feedback.importers.argilla` -- Argilla v2 exports -> ratings, comparisons,
  rankings, edits, demonstrations;
* :mod:`~prefalign.feedback.importers.label_studio` -- Label Studio JSON exports -> the same;
* :mod:`~prefalign.feedback.importers.trl` -- TRL preference rows -> comparisons;
* ``prefalign`` -- prefalign's own records, :func:`prefalign.feedback.schema.load_feedback`.

This package holds the registry (:data:`FORMATS`, one loader per format), :func:`detect_format` and
:func:`import_feedback`. Helpers two sources share are in
:mod:`~prefalign.feedback.importers.common`; the source modules import it and the layers below
(``validate``, ``rowio``, ``schema``, ``formats``), never each other or this package.

:func:`detect_format` sniffs the first rows; :func:`import_feedback` is the single entry point.
Response ids are derived from the response text (:func:`~prefalign.feedback.schema.text_id`) unless the
source gives one (SHP's comment ids), so the same answer seen in several tasks is one response.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prefalign.feedback.importers.argilla import ARGILLA_MAPPING, load_argilla
from prefalign.feedback.importers.hh_rlhf import ASSISTANT_TURN, load_hh_rlhf
from prefalign.feedback.importers.label_studio import LABEL_STUDIO_MAPPING, load_label_studio
from prefalign.feedback.importers.shp import load_shp
from prefalign.feedback.importers.trl import load_trl, pair_to_comparison
from prefalign.feedback.importers.ultrafeedback import (
    ULTRAFEEDBACK_ASPECTS,
    ULTRAFEEDBACK_SCALES,
    load_ultrafeedback,
)
from prefalign.feedback.rowio import LoadedRows, OnError, open_source
from prefalign.feedback.schema import load_feedback
from prefalign.feedback.validate import DataError

LOADERS: dict[str, Callable[..., LoadedRows]] = {
    "prefalign": load_feedback,
    "hh-rlhf": load_hh_rlhf,
    "ultrafeedback": load_ultrafeedback,
    "shp": load_shp,
    "argilla": load_argilla,
    "label-studio": load_label_studio,
    "trl": load_trl,
}
"""The registry: format name -> loader ``(source, *, split, on_error, report_path, **options)``."""
FORMATS: tuple[str, ...] = tuple(LOADERS)
"""The format names :func:`import_feedback` accepts (besides ``"auto"``)."""


# ------------------------------------------------------------------------------------ detect / import


def _sniff(keys: set[str], rows: Sequence[Mapping[str, Any]]) -> str | None:
    if "data" in keys and ({"annotations", "completions", "predictions"} & keys):
        return "label-studio"
    if "fields" in keys and ("responses" in keys or "suggestions" in keys):
        return "argilla"
    if any(k.endswith((".responses", ".suggestion")) for k in keys):
        return "argilla"
    if "kind" in keys and "rater_id" in keys:
        return "prefalign"
    if {"human_ref_A", "human_ref_B"} <= keys:
        return "shp"
    if "completions" in keys and "instruction" in keys:
        return "ultrafeedback"
    if {"score_chosen", "score_rejected"} <= keys:
        return "ultrafeedback"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and all(
            isinstance(r.get("chosen"), str) and ASSISTANT_TURN in r["chosen"] for r in rows if "chosen" in r
        ):
            return "hh-rlhf"
        return "trl"
    return None


def detect_format(source: Any, *, split: str | None = None, rows: int = 5) -> str:
    """The format of ``source`` (one of :data:`FORMATS`), from the keys of its first object rows."""
    raw_rows, label = open_source(source, split)
    sample: list[Mapping[str, Any]] = []
    for _, raw in raw_rows:
        if isinstance(raw, Mapping):
            sample.append(raw)
            if len(sample) >= rows:
                break
    keys = {str(k) for row in sample for k in row}
    found = _sniff(keys, sample)
    if found is None:
        shown = ", ".join(sorted(keys)[:12]) or "(no object rows)"
        raise DataError(
            label, 1, "<file>", f"cannot tell the feedback format from the fields {shown}; pass format=..."
        )
    return found


def import_feedback(
    source: Any,
    format: str = "auto",
    *,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
    split: str | None = None,
    **options: Any,
) -> LoadedRows:
    """Import ``source`` in ``format`` (``"auto"`` detects it) into records, or pairs for HH-RLHF.

    ``options`` go to the format's loader (``aspect=`` for UltraFeedback, ``mapping=`` for Argilla and
    Label Studio, ``min_score_ratio=`` for SHP, ``as_text=`` for HH-RLHF, ``scale=`` for prefalign...).
    The result is a list with ``errors`` (the rows skipped with ``on_error="skip"``).
    """
    name = format.strip().lower().replace("_", "-")
    if name == "auto":
        name = detect_format(source, split=split)
    elif name == "labelstudio":
        name = "label-studio"
    elif name == "hh":
        name = "hh-rlhf"
    if name not in LOADERS:
        raise ValueError(f"unknown feedback format {format!r}; choose auto or one of {', '.join(FORMATS)}")
    return LOADERS[name](source, split=split, on_error=on_error, report_path=report_path, **options)


__all__ = [
    "ARGILLA_MAPPING",
    "FORMATS",
    "LABEL_STUDIO_MAPPING",
    "LOADERS",
    "ULTRAFEEDBACK_ASPECTS",
    "ULTRAFEEDBACK_SCALES",
    "detect_format",
    "import_feedback",
    "load_argilla",
    "load_hh_rlhf",
    "load_label_studio",
    "load_shp",
    "load_trl",
    "load_ultrafeedback",
    "pair_to_comparison",
]
