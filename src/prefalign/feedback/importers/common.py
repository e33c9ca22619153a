"""Helpers two or more importers share (the field checks every importer uses are in
:mod:`prefalign.feedback.validate`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefalign.feedback.schema import text_id
from prefalign.feedback.validate import Text, optional_id


def item_id_of(row: Mapping[str, Any], prompt: Text, *names: str) -> str:
    """The first id found in the fields ``names`` of ``row``, else a hash of the prompt (:func:`text_id`)."""
    for name in names:
        found = optional_id(row, name)
        if found is not None:
            return found
    return text_id(prompt)


def merge_mapping(defaults: Mapping[str, Any], mapping: Mapping[str, Any] | None, what: str) -> dict:
    """``defaults`` updated with a user's ``mapping``; an unknown key raises ValueError naming it."""
    merged = dict(defaults)
    for key, value in (mapping or {}).items():
        if key not in defaults:
            raise ValueError(f"unknown {what} mapping key {key!r}; expected one of {', '.join(defaults)}")
        merged[key] = value
    return merged
