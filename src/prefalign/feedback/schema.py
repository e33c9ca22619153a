"""Raw human feedback: ratings, rankings, comparisons, edits and demonstrations, from many raters.

One record is one judgment by one rater. Every kind shares the fields

* ``kind``: ``"rating"``, ``"ranking"``, ``"comparison"``, ``"edit"`` or ``"demonstration"``;
* ``rater_id``: who gave it (a string; pseudonymise before sharing, see ``prefalign.feedback.privacy``);
* ``item_id``: the task the rater saw (one prompt with the response(s) shown); records of the same
  item from different raters are what aggregation reconciles;
* ``prompt``: the prompt text or a list of chat messages (as in TRL's formats);
* ``timestamp``: ISO 8601 string or ``null``; ``metadata``: any JSON object.

and adds its own:

* rating: ``response_id``, ``response``, ``value`` (a number on a numeric scale, or a label of an
  ordered label scale such as bad/medium/good; see :class:`RatingScale`);
* ranking: ``responses`` (a list of ``{"id", "text"}``) and ``ranks`` (one entry per response, 1 =
  best; equal ranks are ties; ``null`` = not ranked, so partial orders are allowed);
* comparison: ``a_id``, ``a``, ``b_id``, ``b`` (``a`` is the response shown first / on the left,
  which is what position-bias estimates rely on), ``winner`` (``"a"``, ``"b"`` or ``"tie"``) and
  optional ``strength`` (a non-negative number, e.g. 1 = slightly better, 3 = much better);
* edit: ``response_id``, ``original``, ``edited`` and optional ``reason``;
* demonstration: ``response`` (the rater's own answer).

A response id may be omitted: it is then derived from the response text (a stable hash), so that
the same answer shown to several raters is recognised as one. Records are read from JSON Lines,
CSV (list/object cells as JSON), Parquet, a ``datasets`` dataset or a list of dicts with
:func:`load_feedback`; every rejected row names file, line and field, exactly as
:func:`prefalign.feedback.formats.load_pairs` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefalign.feedback.rowio import LoadedRows, OnError, decode_cell, load_rows, write_rows
from prefalign.feedback.validate import FieldError, Text, check_id, check_text, optional_str, type_name

FeedbackKind = Literal["rating", "ranking", "comparison", "edit", "demonstration"]
KINDS: tuple[str, ...] = ("rating", "ranking", "comparison", "edit", "demonstration")
WINNERS = ("a", "b", "tie")


def text_id(text: Text) -> str:
    """Stable 16-hex-digit id of a response text (or message list): equal texts get equal ids."""
    canonical = text if isinstance(text, str) else json.dumps(text, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- scales


@dataclass(frozen=True)
class RatingScale:
    """How rating values are read: numbers in ``[low, high]``, or ordered ``labels`` (worst first).

    ``RatingScale(0, 10)`` is a 0-10 score; ``RatingScale(labels=("bad", "medium", "good"))`` maps
    bad -> 0, medium -> 1, good -> 2 (:meth:`to_number`). Labels match case-insensitively.
    """

    low: float = 0.0
    high: float = 10.0
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            if len(self.labels) < 2 or len({lab.lower() for lab in self.labels}) != len(self.labels):
                raise ValueError(f"a label scale needs two or more distinct labels, got {self.labels}")
        elif not self.low < self.high:
            raise ValueError(f"rating scale needs low < high, got [{self.low}, {self.high}]")

    @property
    def is_ordinal(self) -> bool:
        return self.labels is not None

    @property
    def span(self) -> tuple[float, float]:
        """(lowest, highest) numeric value of the scale."""
        return (0.0, float(len(self.labels) - 1)) if self.labels is not None else (self.low, self.high)

    def to_number(self, value: float | str) -> float:
        """Numeric value of a rating (its index for a label scale); raises ValueError when off-scale."""
        if self.labels is not None:
            if isinstance(value, str):
                lowered = [lab.lower() for lab in self.labels]
                if value.strip().lower() in lowered:
                    return float(lowered.index(value.strip().lower()))
            raise ValueError(f"{value!r} is not one of the labels {', '.join(self.labels)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number in [{self.low:g}, {self.high:g}], got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{value:g} is outside the scale [{self.low:g}, {self.high:g}]")
        return float(value)

    @classmethod
    def parse(cls, spec: str | Sequence[str] | Mapping[str, Any] | RatingScale) -> RatingScale:
        """A scale from ``"0-10"``, ``"bad,medium,good"``, a list of labels or ``{"low", "high"}``."""
        if isinstance(spec, RatingScale):
            return spec
        if isinstance(spec, Mapping):
            if "labels" in spec:
                return cls(labels=tuple(str(x) for x in spec["labels"]))
            return cls(float(spec.get("low", 0.0)), float(spec.get("high", 10.0)))
        if isinstance(spec, str):
            if "," in spec:
                return cls(labels=tuple(x.strip() for x in spec.split(",") if x.strip()))
            low, sep, high = spec.partition("-")
            if sep:
                try:
                    return cls(float(low), float(high))
                except ValueError:
                    pass
            raise ValueError(f"rating scale {spec!r}: expected 'LOW-HIGH' (e.g. 0-10) or 'bad,medium,good'")
        return cls(labels=tuple(str(x) for x in spec))


# -------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class _Common:
    rater_id: str
    item_id: str
    prompt: Text

    def common_dict(self) -> dict[str, Any]:
        return {"rater_id": self.rater_id, "item_id": self.item_id, "prompt": self.prompt}


@dataclass(frozen=True)
class Rating(_Common):
    """One rater's score of one response."""

    response_id: str
    response: Text
    value: float | str
    timestamp: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["rating"] = "rating"


@dataclass(frozen=True)
class RankedResponse:
    id: str
    text: Text


@dataclass(frozen=True)
class Ranking(_Common):
    """One rater's order of several responses: ``ranks[i]`` is the rank of ``responses[i]`` (1 = best).

    Equal ranks are ties; ``None`` marks a response the rater left unranked (a partial order).
    """

    responses: tuple[RankedResponse, ...]
    ranks: tuple[int | None, ...]
    timestamp: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["ranking"] = "ranking"

    def ordered(self) -> list[list[RankedResponse]]:
        """Ranked responses grouped best first; each group holds tied responses (unranked dropped)."""
        groups: dict[int, list[RankedResponse]] = {}
        for response, rank in zip(self.responses, self.ranks, strict=True):
            if rank is not None:
                groups.setdefault(rank, []).append(response)
        return [groups[r] for r in sorted(groups)]


@dataclass(frozen=True)
class Comparison(_Common):
    """One rater's choice between response ``a`` (shown first) and ``b``."""

    a_id: str
    a: Text
    b_id: str
    b: Text
    winner: Literal["a", "b", "tie"]
    strength: float | None = None
    timestamp: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["comparison"] = "comparison"


@dataclass(frozen=True)
class Edit(_Common):
    """A rater's correction of a response: ``edited`` is preferred over ``original``."""

    response_id: str
    original: Text
    edited: Text
    reason: str | None = None
    timestamp: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["edit"] = "edit"


@dataclass(frozen=True)
class Demonstration(_Common):
    """A response the rater wrote for the prompt."""

    response: Text
    timestamp: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["demonstration"] = "demonstration"


Feedback = Rating | Ranking | Comparison | Edit | Demonstration


def to_dict(record: Feedback) -> dict[str, Any]:
    """The JSON row of a record (the inverse of :func:`parse_feedback`)."""
    row: dict[str, Any] = {"kind": record.kind, **record.common_dict()}
    for f in dataclasses.fields(record):
        if f.name in row:
            continue
        value = getattr(record, f.name)
        if f.name == "responses":
            value = [{"id": r.id, "text": r.text} for r in value]
        elif f.name == "ranks":
            value = list(value)
        row[f.name] = value
    return row


# ------------------------------------------------------------------------------------------- parsing


def _check_id(row: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = row.get(name)
    if value is None or value == "":
        if default is not None:
            return default
        raise FieldError(name, "missing")
    return check_id(name, value)


def _check_optional_str(row: Mapping[str, Any], name: str) -> str | None:
    return optional_str(name, row.get(name))


def _check_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    value = row.get("metadata")
    if value is None or value == "":
        return {}
    if isinstance(value, str):  # a CSV cell
        try:
            value = json.loads(value)
        except ValueError:
            raise FieldError("metadata", "expected a JSON object, got a string that is not JSON") from None
    if not isinstance(value, Mapping):
        raise FieldError("metadata", f"expected an object, got {type_name(value)}")
    return dict(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, str):  # CSV cells are strings
        try:
            value = float(value)
        except ValueError:
            raise FieldError(name, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(name, f"expected a finite number, got {type_name(value)}")
    try:
        as_float = float(value)  # an int beyond float range raises OverflowError
    except OverflowError:
        raise FieldError(name, "expected a finite number, got an integer too large for a float") from None
    if not math.isfinite(as_float):
        raise FieldError(name, f"expected a finite number, got {as_float!r}")
    return as_float


def _check_value(row: Mapping[str, Any], scale: RatingScale | None) -> float | str:
    if "value" not in row or row["value"] is None or row["value"] == "":
        raise FieldError("value", "missing")
    value = row["value"]
    if scale is not None and scale.is_ordinal:
        if not isinstance(value, str):
            raise FieldError("value", f"expected one of the labels {', '.join(scale.labels or ())}")
        try:
            scale.to_number(value)
        except ValueError as exc:
            raise FieldError("value", str(exc)) from None
        return value.strip()
    if isinstance(value, str) and scale is None:
        try:
            return _number("value", value)
        except FieldError:
            if not value.strip():
                raise
            return value.strip()  # a label; the scale decides later whether it is one
    number = _number("value", value)
    if scale is not None:
        try:
            scale.to_number(number)
        except ValueError as exc:
            raise FieldError("value", str(exc)) from None
    return number


def _decode_cell_text(value: Any) -> Any:
    """A CSV/Parquet text cell that holds a JSON list of messages is a conversation; else as is."""
    return decode_cell(value) if isinstance(value, str) else value


def _decode_json_cell(name: str, value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            raise FieldError(name, "looks like JSON but does not parse") from None
    return value


def _parse_ranking(row: Mapping[str, Any], common: dict[str, Any], extra: dict[str, Any]) -> Ranking:
    responses = _decode_json_cell("responses", row.get("responses"))
    if not isinstance(responses, list) or len(responses) < 2:
        raise FieldError("responses", f"expected a list of two or more responses, got {type_name(responses)}")
    parsed = []
    for i, item in enumerate(responses):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, Mapping):
            raise FieldError(
                "responses", f"response {i} must be an object with 'text', got {type_name(item)}"
            )
        try:
            text = check_text("text", item.get("text"))
        except FieldError as exc:
            raise FieldError("responses", f"response {i}: {exc.message}") from None
        try:
            rid = _check_id(item, "id", default=text_id(text))
        except FieldError as exc:
            raise FieldError("responses", f"response {i} id: {exc.message}") from None
        parsed.append(RankedResponse(rid, text))
    if len({r.id for r in parsed}) != len(parsed):
        raise FieldError("responses", "two responses share an id (or an identical text)")
    ranks = _decode_json_cell("ranks", row.get("ranks"))
    if not isinstance(ranks, list):
        raise FieldError("ranks", f"expected a list with one rank per response, got {type_name(ranks)}")
    if len(ranks) != len(parsed):
        raise FieldError("ranks", f"has {len(ranks)} entries for {len(parsed)} responses")
    checked: list[int | None] = []
    for i, rank in enumerate(ranks):
        if rank is None:
            checked.append(None)
            continue
        if isinstance(rank, bool) or not isinstance(rank, (int, float)) or rank != int(rank) or rank < 1:
            raise FieldError("ranks", f"entry {i} must be a positive integer or null, got {rank!r}")
        checked.append(int(rank))
    if sum(r is not None for r in checked) < 2:
        raise FieldError("ranks", "at least two responses must be ranked")
    return Ranking(**common, responses=tuple(parsed), ranks=tuple(checked), **extra)


def parse_feedback(row: Any, source: str | None = None, *, scale: RatingScale | None = None) -> Feedback:
    """Validate one raw row into a record; raises ``FieldError`` naming the bad field.

    ``scale`` (optional) checks rating values against a numeric range or a label set.
    """
    del source  # kept for the loader's parse(row, source) signature
    if not isinstance(row, Mapping):
        raise FieldError("<row>", f"expected a JSON object, got {type_name(row)}")
    kind = row.get("kind")
    if kind not in KINDS:
        shown = repr(kind) if isinstance(kind, str) else type_name(kind)
        raise FieldError("kind", f"expected one of {', '.join(KINDS)}, got {shown}")
    common = {
        "rater_id": _check_id(row, "rater_id"),
        "item_id": _check_id(row, "item_id"),
        "prompt": check_text("prompt", _decode_cell_text(row.get("prompt"))),
    }
    extra = {"timestamp": _check_optional_str(row, "timestamp"), "metadata": _check_metadata(row)}
    if kind == "rating":
        response = check_text("response", _decode_cell_text(row.get("response")))
        return Rating(
            **common,
            response_id=_check_id(row, "response_id", default=text_id(response)),
            response=response,
            value=_check_value(row, scale),
            **extra,
        )
    if kind == "ranking":
        return _parse_ranking(row, common, extra)
    if kind == "comparison":
        a = check_text("a", _decode_cell_text(row.get("a")))
        b = check_text("b", _decode_cell_text(row.get("b")))
        winner = row.get("winner")
        if winner not in WINNERS:
            shown = repr(winner) if isinstance(winner, str) else type_name(winner)
            raise FieldError("winner", f"expected 'a', 'b' or 'tie', got {shown}")
        strength = row.get("strength")
        if strength is not None and strength != "":
            strength = _number("strength", strength)
            if strength < 0:
                raise FieldError("strength", f"expected a non-negative number, got {strength:g}")
        else:
            strength = None
        return Comparison(
            **common,
            a_id=_check_id(row, "a_id", default=text_id(a)),
            a=a,
            b_id=_check_id(row, "b_id", default=text_id(b)),
            b=b,
            winner=winner,
            strength=strength,
            **extra,
        )
    if kind == "edit":
        original = check_text("original", _decode_cell_text(row.get("original")))
        edited = check_text("edited", _decode_cell_text(row.get("edited")))
        return Edit(
            **common,
            response_id=_check_id(row, "response_id", default=text_id(original)),
            original=original,
            edited=edited,
            reason=_check_optional_str(row, "reason"),
            **extra,
        )
    response = check_text("response", _decode_cell_text(row.get("response")))
    return Demonstration(**common, response=response, **extra)


# ---------------------------------------------------------------------------------------- load / save


def load_feedback(
    source: str | os.PathLike | Any,
    *,
    scale: RatingScale | str | None = None,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Load and validate feedback records (JSONL, CSV, Parquet, ``datasets``, or a list of dicts).

    With ``on_error="raise"`` the first bad row raises :class:`~prefalign.feedback.validate.DataError`
    (file, line, field); with ``"skip"`` valid rows are kept, the rejected ones are on the result's
    ``errors`` and, with ``report_path``, written there as JSONL.
    """
    parsed_scale = RatingScale.parse(scale) if scale is not None else None

    def parse(row: Any, where: str) -> Feedback:
        return parse_feedback(row, where, scale=parsed_scale)

    return load_rows(source, parse, split=split, on_error=on_error, report_path=report_path)


def save_feedback(records: Iterable[Feedback], path: str | os.PathLike) -> Path:
    """Write records as JSON Lines, CSV or Parquet, by suffix; atomic.

    CSV and Parquet cells are stored as text (nested values as JSON), so that one file can mix kinds
    whose columns differ; :func:`load_feedback` decodes them again.
    """
    return write_rows([to_dict(r) for r in records], path, as_text=True)
