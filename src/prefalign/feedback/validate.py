"""Row validation shared by every reader in :mod:`prefalign.feedback`: the public row errors and the
field checks.

Two errors:

* :class:`FieldError` -- one field of one row failed a check. A parser raises it before it knows where
  the row came from; it carries the field (a column, a dotted path such as ``completions[2].score``,
  or ``"<row>"`` for a row that is not an object) and the message.
* :class:`DataError` -- the user-facing error: the same failure placed in its file and line. The
  loaders (:mod:`prefalign.feedback.rowio`) turn each :class:`FieldError` into one, and a rejected-rows
  report is a list of them.

The checks (``check_*``) take the field name first, return the checked (sometimes normalised) value
and raise :class:`FieldError`. This is the lowest module of the package: standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""Chat message roles accepted in a conversation."""
Text = str | list[dict[str, Any]]
"""A text, or a conversation (a list of ``{"role", "content"}`` messages)."""

_EXPECTED = "expected a non-empty string or a list of messages"
_MAX_SHOWN = 40


# -------------------------------------------------------------------------------------------- errors


class DataError(ValueError):
    """A data row failed validation. ``line`` is 1-based (JSONL/CSV: the line in the file where the row
    starts; Parquet/datasets: row index + 1); ``field`` is the column, or ``"<json>"`` for a line that is
    not JSON, ``"<row>"`` for a row that is not an object, ``"<file>"`` for a source with no rows."""

    def __init__(self, file: str, line: int, field: str, message: str):
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(f"{file}, line {line}, field '{field}': {message}")

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.file, self.line, self.field, self.message))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class FieldError(Exception):
    """One field of one row failed a check (before the file and line are known); see :class:`DataError`."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message

    def __reduce__(self):
        return (type(self), (self.field, self.message))

    def at(self, file: str, line: int) -> DataError:
        """This failure placed in ``file`` at ``line``."""
        return DataError(file, line, self.field, self.message)


# ------------------------------------------------------------------------------------- field checks


def type_name(value: Any) -> str:
    """How a bad value is named in a message: ``null``, ``an empty string``, ``an empty list`` or its type."""
    if value is None:
        return "null"
    if isinstance(value, str) and not value:
        return "an empty string"
    if isinstance(value, list) and not value:
        return "an empty list"
    return type(value).__name__


def show(value: Any) -> str:
    """A short description of a bad value for an error message."""
    if isinstance(value, str) and value.strip():
        text = repr(value)
        return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + "...'"
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        text = repr(value)
        return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    return type_name(value)


def check_message(field: str, index: int, message: Any) -> dict[str, Any]:
    """Message ``index`` of a conversation: an object with a known ``role`` and non-empty ``content``."""
    if not isinstance(message, Mapping):
        raise FieldError(
            field, f"message {index} must be an object with 'role' and 'content', got {type_name(message)}"
        )
    # Parquet/datasets fill keys missing from some messages with None: drop those again.
    msg = {str(k): v for k, v in message.items() if v is not None or k in ("role", "content")}
    if "role" not in msg:
        raise FieldError(field, f"message {index} has no 'role'")
    role = msg["role"]
    if not isinstance(role, str) or role not in ROLES:
        shown = repr(role) if isinstance(role, str) else type_name(role)
        raise FieldError(
            field, f"message {index} has role {shown}; expected one of {', '.join(sorted(ROLES))}"
        )
    if "content" not in msg:
        raise FieldError(field, f"message {index} has no 'content'")
    content = msg["content"]
    if isinstance(content, str):
        if not content.strip():
            raise FieldError(field, f"message {index} has empty 'content'")
    elif isinstance(content, list):  # multimodal content parts: [{"type": "text", "text": ...}, ...]
        if not content or not all(isinstance(p, Mapping) and isinstance(p.get("type"), str) for p in content):
            raise FieldError(
                field,
                f"message {index} 'content' must be a non-empty string or a list of {{'type': ...}} parts",
            )
    else:
        raise FieldError(field, f"message {index} 'content' must be a string, got {type_name(content)}")
    return msg


def check_text(field: str, value: Any, *, allow_empty_list: bool = False) -> Text:
    """A non-empty string, or a non-empty list of valid messages."""
    if isinstance(value, str):
        if not value.strip():
            raise FieldError(field, f"{_EXPECTED}, got an empty string")
        return value
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        if not value and not allow_empty_list:
            raise FieldError(field, f"{_EXPECTED}, got an empty list")
        return [check_message(field, i, m) for i, m in enumerate(value)]
    raise FieldError(field, f"{_EXPECTED}, got {type_name(value)}")


def require_assistant(field: str, messages: list[dict[str, Any]]) -> None:
    """An answer given as messages must hold the assistant's reply."""
    if not any(m["role"] == "assistant" for m in messages):
        raise FieldError(field, "expected the assistant's reply, but no message has role 'assistant'")


def same_kind(field: str, value: Text, reference_field: str, reference: Text) -> None:
    """``value`` is text when ``reference`` is text, and messages when it is messages."""
    if isinstance(value, list) != isinstance(reference, list):
        kind = "a list of messages" if isinstance(reference, list) else "a string"
        raise FieldError(
            field, f"'{reference_field}' is {kind}, so '{field}' must be too, got {type_name(value)}"
        )


def check_mapping(field: str, value: Any, what: str = "an object") -> Mapping[str, Any]:
    """An object (a JSON object, a dict)."""
    if not isinstance(value, Mapping):
        raise FieldError(field, f"expected {what}, got {type_name(value)}")
    return value


def check_list(field: str, value: Any, what: str = "a list") -> list[Any]:
    """A list (or tuple), returned as a list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    raise FieldError(field, f"expected {what}, got {type_name(value)}")


def check_number(field: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """A finite number (CSV/JSON strings holding one are read too), optionally within [low, high]."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(field, f"expected a number, got {show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"expected a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise FieldError(field, "expected a number, got an integer too large for a float") from None
    if not math.isfinite(number):
        raise FieldError(field, f"expected a finite number, got {show(number)}")
    too_low, too_high = low is not None and number < low, high is not None and number > high
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise FieldError(field, f"{number:g} is outside the range [{lo}, {hi}]")
    return number


def check_id(field: str, value: Any) -> str:
    """An id: a non-blank string or an integer, returned as a stripped string."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldError(field, f"expected a string or integer id, got {type_name(value)}")
    text = str(value).strip()
    if not text:
        raise FieldError(field, "expected a non-empty id, got a blank string")
    return text


def optional_id(row: Mapping[str, Any], name: str) -> str | None:
    """The id in ``row[name]`` (see :func:`check_id`), or None when the field is absent, null or ``""``."""
    value = row.get(name)
    if value is None or value == "":
        return None
    return check_id(name, value)


def optional_str(field: str, value: Any) -> str | None:
    """A string, or None for null or ``""`` (an empty CSV cell)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(field, f"expected a string or null, got {type_name(value)}")
    return value


def require_text(field: str, value: Any) -> Text:
    """Like :func:`check_text`, but a null or absent value is reported as ``missing``."""
    if value is None:
        raise FieldError(field, "missing")
    return check_text(field, value)


def check_row(row: Any, expected: str) -> Mapping[str, Any]:
    """A row must be an object; ``expected`` says with what (``"fields prompt, chosen, rejected"``)."""
    if not isinstance(row, Mapping):
        raise FieldError("<row>", f"expected an object with {expected}, got {type_name(row)}")
    return row
