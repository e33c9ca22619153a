"""Stanford SHP rows -> prefalign records (one source of :mod:`prefalign.feedback.importers`).

**Stanford SHP** (:func:`load_shp`, https://huggingface.co/datasets/stanfordnlp/SHP): ``post_id``,
``history``, ``human_ref_A``, ``human_ref_B``, ``labels`` (1 = A preferred, 0 = B), ``score_ratio``,
optional ``c_root_id_A``/``c_root_id_B`` (response ids), ``domain``, ``score_A``, ``score_B``. One
:class:`Comparison` per row, ``strength = score_ratio``; ``min_score_ratio`` drops weaker pairs (the
SHP paper trains on ratio >= 2).
"""

from __future__ import annotations

import os
from typing import Any

from prefalign.feedback.rowio import LoadedRows, OnError, load_records
from prefalign.feedback.schema import Comparison, text_id
from prefalign.feedback.validate import (
    FieldError,
    check_id,
    check_number,
    check_row,
    optional_id,
    optional_str,
    require_text,
    show,
)


def _parse_shp(row: Any, rater_id: str, min_score_ratio: float | None) -> list[Comparison]:
    row = check_row(row, "fields post_id, history, human_ref_A, human_ref_B, labels")
    ratio = check_number("score_ratio", row.get("score_ratio"), low=0)
    prompt = require_text("history", row.get("history"))
    a = require_text("human_ref_A", row.get("human_ref_A"))
    b = require_text("human_ref_B", row.get("human_ref_B"))
    label = check_number("labels", row.get("labels"))
    if label not in (0.0, 1.0):
        raise FieldError("labels", f"expected 1 (A preferred) or 0 (B preferred), got {show(label)}")
    if row.get("post_id") is None:
        raise FieldError("post_id", "missing")
    item_id = check_id("post_id", row.get("post_id"))
    metadata: dict[str, Any] = {}
    domain = optional_str("domain", row.get("domain"))
    if domain is not None:
        metadata["domain"] = domain
    for name in ("score_A", "score_B"):
        if row.get(name) is not None and row.get(name) != "":
            metadata[name] = check_number(name, row[name])
    a_id = optional_id(row, "c_root_id_A") or text_id(a)
    b_id = optional_id(row, "c_root_id_B") or text_id(b)
    if a_id == b_id:
        raise FieldError("human_ref_B", "the same response as human_ref_A")
    if min_score_ratio is not None and ratio < min_score_ratio:
        return []
    return [
        Comparison(
            rater_id=rater_id,
            item_id=item_id,
            prompt=prompt,
            a_id=a_id,
            a=a,
            b_id=b_id,
            b=b,
            winner="a" if label == 1.0 else "b",
            strength=ratio,
            metadata=metadata,
        )
    ]


def load_shp(
    source: Any,
    *,
    min_score_ratio: float | None = None,
    rater_id: str = "reddit",
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Stanford SHP rows -> Comparison records (``strength`` = ``score_ratio``).

    Rows with ``score_ratio < min_score_ratio`` are validated, then left out (the SHP paper uses 2).
    """
    return load_records(
        source,
        lambda row, where: _parse_shp(row, rater_id, min_score_ratio),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
