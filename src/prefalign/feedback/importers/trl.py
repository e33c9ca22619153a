"""TRL rows -> prefalign records (one source of :mod:`prefalign.feedback.importers`).

**TRL** preference rows (:func:`load_trl`): standard, conversational or implicit-prompt rows as read by
:func:`~prefalign.feedback.formats.load_pairs`, as :class:`Comparison` records with ``a`` = chosen and
``winner="a"`` (TRL rows do not record which answer was shown first), ``strength`` = ``margin``.
Writing TRL rows is :func:`prefalign.feedback.formats.save_pairs`.
"""

from __future__ import annotations

import os
from typing import Any

from prefalign.feedback.formats import PreferencePair, parse_pair
from prefalign.feedback.rowio import LoadedRows, OnError, load_records
from prefalign.feedback.schema import Comparison, text_id
from prefalign.feedback.validate import FieldError, optional_id


def pair_to_comparison(pair: PreferencePair, rater_id: str, item_id: str | None = None) -> Comparison:
    """A preference pair as one comparison: ``a`` = chosen, ``winner="a"``, ``strength`` = margin.

    ``item_id`` defaults to the prompt's :func:`text_id`; a pair's ``subset`` goes to the metadata.
    """
    return Comparison(
        rater_id=rater_id,
        item_id=item_id if item_id is not None else text_id(pair.prompt),
        prompt=pair.prompt,
        a_id=text_id(pair.chosen),
        a=pair.chosen,
        b_id=text_id(pair.rejected),
        b=pair.rejected,
        winner="a",
        strength=pair.margin,
        metadata={"subset": pair.subset} if pair.subset is not None else {},
    )


def _parse_trl(row: Any, where: str, rater_id: str) -> list[Comparison]:
    pair = parse_pair(row, where)
    if pair.margin is not None and pair.margin < 0:
        raise FieldError(
            "margin", f"expected a non-negative margin (chosen beats rejected), got {pair.margin:g}"
        )
    rater = optional_id(row, "rater_id") or rater_id
    item_id = optional_id(row, "item_id") or optional_id(row, "prompt_id")
    return [pair_to_comparison(pair, rater, item_id)]


def load_trl(
    source: Any,
    *,
    rater_id: str = "trl",
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """TRL preference rows -> Comparison records (``a`` = chosen, ``winner="a"``, ``strength`` = margin).

    A ``rater_id`` / ``item_id`` (or ``prompt_id``) column is used when present; otherwise the rater is
    ``rater_id`` and the item a hash of the prompt.
    """
    return load_records(
        source,
        lambda row, where: _parse_trl(row, where, rater_id),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
