"""Preference and SFT data in TRL's formats: load, validate, save, split.

Preference rows (``load_pairs``) follow TRL's preference formats:

* standard text: ``{"prompt": str, "chosen": str, "rejected": str}``;
* conversational: ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`` where a
  message is ``{"role": ..., "content": ...}``; the prompt holds the turns up to the last user turn
  and chosen/rejected the assistant turn(s);
* implicit prompt: ``{"chosen": ..., "rejected": ...}`` only, both full texts or conversations that
  share a prefix; the shared prefix becomes the prompt (as TRL's ``extract_prompt`` does).

An optional string ``subset`` column is kept (used to stratify :func:`split_pairs`), and so is an
optional numeric ``margin`` column (how much better chosen is than rejected, e.g. a rating gap from
:mod:`prefalign.feedback.convert`; TRL's reward trainer reads a column of that name); other columns
are ignored.

SFT rows (``load_sft_rows``) follow TRL's SFT formats: ``{"prompt", "completion"}`` (text or
conversational), ``{"messages": [...]}`` (prompt = every message but the final assistant one,
completion = that final assistant message) and ``{"text": ...}`` (prompt ``""``).

Unpaired rows (``load_unpaired_rows``, for KTO) follow TRL's unpaired preference format
``{"prompt", "completion", "label": bool}`` (True = desirable). Listwise rows
(``load_listwise_rows``) are ``{"prompt", "responses": [...], "ranks": [...]}`` as
``prefalign data convert --to listwise`` writes them (rank 1 = best, equal ranks = ties). Both also
read pair rows, so one pair file trains every method: a pair becomes a desirable and an undesirable
row, or a ranking of two.

Sources: ``.jsonl`` (``.json`` holding a list of rows is also read), ``.parquet``, ``.csv`` (cells
holding a JSON list of messages are read as conversations), a folder written by
``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, an in-memory ``datasets.Dataset``
or ``DatasetDict``, a list of row dicts, or a built-in dataset name (``"hhh"``, ``"hhh:harmless"``...).

Every rejected row raises a :class:`DataError` naming file, line and field; with
``on_error="skip"`` the valid rows are kept, the rejected ones are collected on the returned list's
``errors`` attribute, logged as a warning and (with ``report_path``) written to a JSONL report.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from prefalign.feedback.convert import ListwiseRow

logger = logging.getLogger("prefalign.feedback")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PAIR_FIELDS = ("prompt", "chosen", "rejected")
_EXPECTED = "expected a non-empty string or a list of messages"

OnError = Literal["raise", "skip"]
Text = str | list[dict[str, Any]]


# --------------------------------------------------------------------------------------------- types


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


class _FieldError(Exception):
    """Internal: a validation failure on one field, before file/line are known."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PreferencePair:
    """One preference example in TRL's format (text, or conversational lists of messages)."""

    prompt: Text
    chosen: Text
    rejected: Text
    subset: str | None = None
    margin: float | None = None  # how much chosen beats rejected (rating gap, strength); None = unknown
    source: str | None = None  # "file.jsonl:12"

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def to_dict(self) -> dict[str, Any]:
        """The TRL row: ``prompt``/``chosen``/``rejected`` (plus ``subset`` and ``margin`` when set)."""
        row: dict[str, Any] = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.subset is not None:
            row["subset"] = self.subset
        if self.margin is not None:
            row["margin"] = self.margin
        return row


@dataclass(frozen=True)
class SFTRow:
    """One SFT example in TRL's prompt-completion form (text, or conversational lists of messages)."""

    prompt: Text
    completion: Text
    source: str | None = None

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.completion, list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion}


class LoadedRows(list):
    """A list of loaded rows; ``errors`` holds the :class:`DataError` of each row skipped."""

    def __init__(self, rows: Iterable[Any] = (), errors: Iterable[DataError] = ()):
        super().__init__(rows)
        self.errors: list[DataError] = list(errors)


# ------------------------------------------------------------------------------------ field checks


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and not value:
        return "an empty string"
    if isinstance(value, list) and not value:
        return "an empty list"
    return type(value).__name__


def _check_message(field: str, index: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise _FieldError(
            field, f"message {index} must be an object with 'role' and 'content', got {_type_name(message)}"
        )
    # Parquet/datasets fill keys missing from some messages with None: drop those again.
    msg = {str(k): v for k, v in message.items() if v is not None or k in ("role", "content")}
    if "role" not in msg:
        raise _FieldError(field, f"message {index} has no 'role'")
    role = msg["role"]
    if not isinstance(role, str) or role not in ROLES:
        shown = repr(role) if isinstance(role, str) else _type_name(role)
        raise _FieldError(
            field, f"message {index} has role {shown}; expected one of {', '.join(sorted(ROLES))}"
        )
    if "content" not in msg:
        raise _FieldError(field, f"message {index} has no 'content'")
    content = msg["content"]
    if isinstance(content, str):
        if not content.strip():
            raise _FieldError(field, f"message {index} has empty 'content'")
    elif isinstance(content, list):  # multimodal content parts: [{"type": "text", "text": ...}, ...]
        if not content or not all(isinstance(p, Mapping) and isinstance(p.get("type"), str) for p in content):
            raise _FieldError(
                field,
                f"message {index} 'content' must be a non-empty string or a list of {{'type': ...}} parts",
            )
    else:
        raise _FieldError(field, f"message {index} 'content' must be a string, got {_type_name(content)}")
    return msg


def _check_text(field: str, value: Any, *, allow_empty_list: bool = False) -> Text:
    """A non-empty string, or a non-empty list of valid messages."""
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError(field, f"{_EXPECTED}, got an empty string")
        return value
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        if not value and not allow_empty_list:
            raise _FieldError(field, f"{_EXPECTED}, got an empty list")
        return [_check_message(field, i, m) for i, m in enumerate(value)]
    raise _FieldError(field, f"{_EXPECTED}, got {_type_name(value)}")


def _require_assistant(field: str, messages: list[dict[str, Any]]) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise _FieldError(field, "expected the assistant's reply, but no message has role 'assistant'")


def _same_kind(field: str, value: Text, reference_field: str, reference: Text) -> None:
    if isinstance(value, list) != isinstance(reference, list):
        kind = "a list of messages" if isinstance(reference, list) else "a string"
        raise _FieldError(
            field, f"'{reference_field}' is {kind}, so '{field}' must be too, got {_type_name(value)}"
        )


def _common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _split_implicit_prompt(chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """TRL's implicit prompt: the shared prefix of chosen and rejected (whole messages, or characters)."""
    n = _common_prefix_len(chosen, rejected)
    if isinstance(chosen, str) and 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1  # as TRL: the separating space stays with the answers
    if n == 0:
        raise _FieldError(
            "prompt", "missing, and 'chosen' and 'rejected' share no prefix to use as the implicit prompt"
        )
    prompt, chosen_rest, rejected_rest = chosen[:n], chosen[n:], rejected[n:]
    for field, rest in (("chosen", chosen_rest), ("rejected", rejected_rest)):
        if not rest or (isinstance(rest, str) and not rest.strip()):
            raise _FieldError(field, "nothing is left after removing the prompt shared with the other answer")
    return prompt, chosen_rest, rejected_rest


def _row_mapping(row: Any) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise _FieldError(
            "<row>", f"expected an object with fields {', '.join(PAIR_FIELDS)}, got {_type_name(row)}"
        )
    return row


def _subset_of(row: Mapping[str, Any]) -> str | None:
    subset = row.get("subset")
    if subset is None or subset == "":  # "" is an empty CSV cell: a file where only some pairs have one
        return None
    if not isinstance(subset, str) or not subset.strip():
        raise _FieldError("subset", f"expected a non-empty string or null, got {_type_name(subset)}")
    return subset


def _margin_of(row: Mapping[str, Any]) -> float | None:
    margin = row.get("margin")
    if margin is None or (isinstance(margin, str) and not margin.strip()):
        return None  # absent, null, or an empty CSV cell (a file where only some pairs have a margin)
    if isinstance(margin, str):  # CSV cells are strings
        try:
            margin = float(margin)
        except ValueError:
            raise _FieldError("margin", f"expected a number or null, got {margin!r}") from None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise _FieldError("margin", f"expected a finite number or null, got {_type_name(margin)}")
    try:
        as_float = float(margin)  # an int beyond float range raises OverflowError
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        shown = repr(margin) if isinstance(margin, float) else "an integer too large for a float"
        raise _FieldError("margin", f"expected a finite number or null, got {shown}")
    return as_float


def parse_pair(row: Any, source: str | None = None) -> PreferencePair:
    """Validate one preference row; raises ``_FieldError`` (wrapped into DataError by the loaders)."""
    row = _row_mapping(row)
    for field in ("chosen", "rejected"):
        if field not in row or row[field] is None:
            raise _FieldError(field, "missing")
    chosen = _check_text("chosen", row["chosen"])
    rejected = _check_text("rejected", row["rejected"])
    _same_kind("rejected", rejected, "chosen", chosen)
    if row.get("prompt") is None:
        prompt, chosen, rejected = _split_implicit_prompt(chosen, rejected)
    else:
        prompt = _check_text("prompt", row["prompt"])
        _same_kind("chosen", chosen, "prompt", prompt)
        _same_kind("rejected", rejected, "prompt", prompt)
    if isinstance(chosen, list):
        _require_assistant("chosen", chosen)
        _require_assistant("rejected", rejected)
    if chosen == rejected:
        raise _FieldError("rejected", "identical to 'chosen'; a preference pair needs two different answers")
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        subset=_subset_of(row),
        margin=_margin_of(row),
        source=source,
    )


def parse_sft_row(row: Any, source: str | None = None) -> SFTRow:
    """Validate one SFT row (prompt/completion, messages or text)."""
    if not isinstance(row, Mapping):
        raise _FieldError(
            "<row>",
            f"expected an object with 'prompt'+'completion', 'messages' or 'text', got {_type_name(row)}",
        )
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, (list, tuple)) or not messages:
            raise _FieldError(
                "messages", f"expected a non-empty list of messages, got {_type_name(messages)}"
            )
        checked = [_check_message("messages", i, m) for i, m in enumerate(messages)]
        if checked[-1]["role"] != "assistant":
            raise _FieldError(
                "messages",
                f"the last message must be the assistant's reply, got role {checked[-1]['role']!r}",
            )
        return SFTRow(prompt=checked[:-1], completion=checked[-1:], source=source)
    if row.get("completion") is not None:
        if row.get("prompt") is None:
            raise _FieldError("prompt", "missing")
        prompt = _check_text("prompt", row["prompt"])
        completion = _check_text("completion", row["completion"])
        _same_kind("completion", completion, "prompt", prompt)
        if isinstance(completion, list):
            _require_assistant("completion", completion)
        return SFTRow(prompt=prompt, completion=completion, source=source)
    if row.get("text") is not None:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise _FieldError("text", f"expected a non-empty string, got {_type_name(text)}")
        return SFTRow(prompt="", completion=text, source=source)
    if row.get("prompt") is not None:
        raise _FieldError("completion", "missing")
    raise _FieldError(
        "<row>", "expected fields 'prompt'+'completion', 'messages' or 'text'; found none of them"
    )


# ------------------------------------------------------------------------------------------ readers

# A reader yields (line, row) where row is the raw value, or a DataError for a line that could not be
# read at all (bad JSON / encoding).
RawRows = Iterator[tuple[int, Any]]


def _read_jsonl(path: Path, label: str) -> RawRows:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    DataError(label, number, "<json>", f"not valid UTF-8 ({exc.reason} at byte {exc.start})"),
                )
                continue
            try:
                yield number, json.loads(text)
            except (ValueError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                col = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
                yield number, DataError(label, number, "<json>", f"not valid JSON: {reason}{col}")


def _read_json(path: Path, label: str) -> RawRows:
    """A ``.json`` file: a list of rows (line = index + 1), else read as JSON Lines."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, list):
        yield from enumerate(data, start=1)
    else:
        yield from _read_jsonl(path, label)


def _decode_cell(value: str) -> Any:
    """CSV cells are strings; one holding a JSON list of messages is a conversation."""
    stripped = value.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            return value
        if (
            isinstance(decoded, list)
            and decoded
            and all(isinstance(m, dict) and "role" in m for m in decoded)
        ):
            return decoded
    return value


def _read_csv(path: Path, label: str) -> RawRows:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        start = 2  # line 1 is the header
        try:
            for record in reader:
                row = {
                    k: _decode_cell(v) if isinstance(v, str) else v
                    for k, v in record.items()
                    if k is not None  # extra unnamed cells
                }
                yield start, row
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            yield start, DataError(label, start, "<csv>", f"not valid CSV: {exc}")


def _read_parquet(path: Path, label: str) -> RawRows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...
        yield 1, DataError(label, 1, "<file>", f"not a readable Parquet file: {exc}")
        return
    for batch in table.to_batches():
        for row in batch.to_pylist():
            yield None, row  # numbered by the caller


def _is_dataset(obj: Any) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(obj, (datasets.Dataset, datasets.DatasetDict))


def _pick_split(dataset_dict: Any, split: str | None, label: str) -> tuple[Any, str]:
    names = list(dataset_dict.keys())
    if split is None:
        if len(names) != 1:
            raise ValueError(f"{label} has splits {names}; pass split= to choose one")
        split = names[0]
    if split not in dataset_dict:
        raise ValueError(f"{label} has no split {split!r}; it has {names}")
    return dataset_dict[split], f"{label}[{split}]"


def _rows_of_dataset(dataset: Any, split: str | None, label: str) -> tuple[RawRows, str]:
    datasets = sys.modules["datasets"]
    if isinstance(dataset, datasets.DatasetDict):
        dataset, label = _pick_split(dataset, split, label)
    return ((i + 1, row) for i, row in enumerate(dataset)), label


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "state.json"))


def _open_source(source: Any, split: str | None) -> tuple[RawRows, str]:
    """Rows of ``source`` and the label naming it in errors."""
    if _is_dataset(source):
        info = getattr(source, "info", None)  # a Dataset has .info; a DatasetDict has none
        name = getattr(info, "dataset_name", None)
        return _rows_of_dataset(source, split, f"<dataset {name}>" if name else "<dataset>")
    if isinstance(source, (list, tuple)):
        return enumerate(source, start=1), "<rows>"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path, a datasets.Dataset or a list of rows, got {type(source).__name__}")
    label = os.fspath(source)
    path = Path(label).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such data file or folder: {label}")
    if path.is_dir():
        if not _is_saved_dataset(path):
            raise ValueError(f"{label} is a folder but not one written by datasets' save_to_disk")
        import datasets

        return _rows_of_dataset(datasets.load_from_disk(str(path)), split, label)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        rows = _read_parquet(path, label)
        return ((i + 1, row) if n is None else (n, row) for i, (n, row) in enumerate(rows)), label
    if suffix == ".csv":
        return _read_csv(path, label), label
    if suffix == ".json":
        return _read_json(path, label), label
    return _read_jsonl(path, label), label


def _builtin(source: Any) -> tuple[str, str | None] | None:
    """``("hhh", "harmless")`` for a built-in dataset name, unless a file of that name exists."""
    if not isinstance(source, str) or os.path.exists(source):
        return None
    name, _, subset = source.partition(":")
    if name == "hhh":
        return name, subset or None
    return None


# ------------------------------------------------------------------------------------------ loading


def _write_report(report_path: str | os.PathLike, errors: Sequence[DataError]) -> None:
    text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in errors)
    _atomic_write_bytes(Path(report_path), text.encode("utf-8"))


def _load(
    source: Any,
    parse: Any,
    *,
    split: str | None,
    on_error: OnError,
    report_path: str | os.PathLike | None,
) -> LoadedRows:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    rows, label = _open_source(source, split)
    kept: list[Any] = []
    errors: list[DataError] = []
    seen = 0
    for line, raw in rows:
        seen += 1
        if isinstance(raw, DataError):
            error = raw
        else:
            try:
                kept.append(parse(raw, f"{label}:{line}"))
                continue
            except _FieldError as exc:
                error = DataError(label, line, exc.field, exc.message)
        if on_error == "raise":
            raise error
        errors.append(error)
    return finish_loading(label, kept, errors, seen=seen, good=len(kept), report_path=report_path)


def finish_loading(
    label: str,
    kept: list[Any],
    errors: list[DataError],
    *,
    seen: int,
    good: int,
    report_path: str | os.PathLike | None,
) -> LoadedRows:
    """End of a skip-mode load: write the rejected-rows report, warn, and refuse an all-bad file.

    ``seen`` counts the rows read and ``good`` those accepted (a row may yield several records).
    """
    if report_path is not None:
        _write_report(report_path, errors)
    if seen == 0:
        raise DataError(label, 1, "<file>", "no rows found")
    if errors:
        where = f"; details in {os.fspath(report_path)}" if report_path is not None else ""
        logger.warning(
            "skipped %d of %d rows of %s that failed validation%s", len(errors), seen, label, where
        )
        if good == 0:
            first = errors[0]
            raise DataError(
                first.file, first.line, first.field, f"all {seen} rows were rejected; first: {first.message}"
            )
    return LoadedRows(kept, errors)


def load_pairs(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[PreferencePair]:
    """Load and validate preference pairs (see the module docstring for formats and sources).

    ``split`` picks a split of a ``DatasetDict`` (needed when it has several). With
    ``on_error="skip"`` invalid rows are skipped, logged, listed on the result's ``errors`` and written
    to ``report_path`` (JSONL: file, line, field, message); with ``"raise"`` the first one raises
    :class:`DataError`.
    """
    builtin = _builtin(source)
    if builtin is not None:
        from prefalign.feedback import hhh

        path = hhh.ensure_hhh()
        pairs = _load(path, parse_pair, split=split, on_error=on_error, report_path=report_path)
        subset = builtin[1]
        if subset is None:
            return pairs
        if subset not in hhh.SUBSETS:
            raise ValueError(f"unknown hhh subset {subset!r}; choose one of {', '.join(hhh.SUBSETS)}")
        return LoadedRows([p for p in pairs if p.subset == subset], pairs.errors)
    return _load(source, parse_pair, split=split, on_error=on_error, report_path=report_path)


def load_sft_rows(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[SFTRow]:
    """Load and validate SFT rows in TRL's formats; same sources and error handling as :func:`load_pairs`."""
    return _load(source, parse_sft_row, split=split, on_error=on_error, report_path=report_path)


# ------------------------------------------------------------------------- unpaired and listwise rows


@dataclass(frozen=True)
class UnpairedRow:
    """One completion judged on its own (TRL's unpaired preference format), for KTO.

    ``label`` is True for a desirable completion, False for an undesirable one.
    """

    prompt: Text
    completion: Text
    label: bool
    source: str | None = None  # "file.jsonl:12"; both halves of a pair row share it

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label}


def _label_of(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # CSV cells are strings
        return value.strip().lower() == "true"
    raise _FieldError("label", f"expected true (desirable) or false (undesirable), got {_type_name(value)}")


def _answer(field: str, value: Any, prompt: Text) -> Text:
    """A completion: text or messages of the prompt's kind, with an assistant turn when messages."""
    if value is None:
        raise _FieldError(field, "missing")
    answer = _check_text(field, value)
    _same_kind(field, answer, "prompt", prompt)
    if isinstance(answer, list):
        _require_assistant(field, answer)
    return answer


def parse_unpaired_rows(row: Any, source: str | None = None) -> list[UnpairedRow]:
    """Validate one unpaired row (one record) or one pair row (two records: desirable, undesirable)."""
    if not isinstance(row, Mapping):
        raise _FieldError(
            "<row>", f"expected an object with 'prompt', 'completion' and 'label', got {_type_name(row)}"
        )
    if row.get("completion") is None and row.get("label") is None:
        if row.get("chosen") is None and row.get("rejected") is None:
            raise _FieldError(
                "<row>",
                "expected 'prompt'+'completion'+'label' (unpaired) or 'chosen'+'rejected' (a pair); found neither",
            )
        pair = parse_pair(row, source)
        return [
            UnpairedRow(pair.prompt, pair.chosen, True, source),
            UnpairedRow(pair.prompt, pair.rejected, False, source),
        ]
    if row.get("prompt") is None:
        raise _FieldError("prompt", "missing")
    prompt = _check_text("prompt", row["prompt"])
    completion = _answer("completion", row.get("completion"), prompt)
    if row.get("label") is None:
        raise _FieldError("label", "missing; true for a desirable completion, false for an undesirable one")
    return [UnpairedRow(prompt, completion, _label_of(row["label"]), source)]


def parse_listwise_row(row: Any, source: str | None = None) -> ListwiseRow:
    """Validate one listwise row (or a pair row, a ranking of two); responses come back best first.

    Ranks are integers >= 1, lower is better, equal ranks are ties; they are renumbered densely
    (1, 1, 2 for 1, 1, 3) and the responses sorted by rank (stably, so tied responses keep their order).
    A row whose responses all tie is kept (``data convert`` can write one); it adds nothing to a
    Plackett-Luce loss.
    """
    from prefalign.feedback.convert import ListwiseRow  # convert imports this module

    if not isinstance(row, Mapping):
        raise _FieldError(
            "<row>", f"expected an object with 'prompt', 'responses' and 'ranks', got {_type_name(row)}"
        )
    if row.get("responses") is None:
        if row.get("chosen") is None and row.get("rejected") is None:
            raise _FieldError(
                "<row>",
                "expected 'prompt'+'responses'+'ranks' (a ranking) or 'chosen'+'rejected' (a pair); found neither",
            )
        pair = parse_pair(row, source)
        return ListwiseRow(pair.prompt, [pair.chosen, pair.rejected], [1, 2], source)
    if row.get("prompt") is None:
        raise _FieldError("prompt", "missing")
    prompt = _check_text("prompt", row["prompt"])
    raw = row["responses"]
    if not isinstance(raw, (list, tuple)) or len(raw) < 2:
        shown = f"{len(raw)} response" if isinstance(raw, (list, tuple)) else _type_name(raw)
        raise _FieldError("responses", f"expected a list of at least two responses, got {shown}")
    responses: list[Text] = []
    for index, value in enumerate(raw):
        try:
            responses.append(_answer("responses", value, prompt))
        except _FieldError as exc:
            raise _FieldError("responses", f"response {index}: {exc.message}") from None
        for earlier in range(index):
            if responses[earlier] == responses[index]:
                raise _FieldError("responses", f"responses {earlier} and {index} are identical")
    ranks = row.get("ranks")
    if ranks is None:
        raise _FieldError("ranks", "missing; give each response's rank (1 = best, equal ranks for ties)")
    if not isinstance(ranks, (list, tuple)) or len(ranks) != len(responses):
        shown = f"{len(ranks)} ranks" if isinstance(ranks, (list, tuple)) else _type_name(ranks)
        raise _FieldError("ranks", f"expected one rank per response ({len(responses)}), got {shown}")
    for index, rank in enumerate(ranks):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise _FieldError("ranks", f"rank {index} must be an integer >= 1, got {rank!r}")
    dense = {rank: level for level, rank in enumerate(sorted(set(ranks)), start=1)}
    order = sorted(range(len(responses)), key=lambda i: ranks[i])
    return ListwiseRow(prompt, [responses[i] for i in order], [dense[ranks[i]] for i in order], source)


def _load_expanded(
    source: Any,
    parse: Any,
    expand_pair: Any,
    *,
    split: str | None,
    on_error: OnError,
    report_path: str | os.PathLike | None,
) -> LoadedRows:
    """``_load`` with the built-in datasets (pairs) routed through ``expand_pair``."""
    if _builtin(source) is not None:
        pairs = load_pairs(source, split=split, on_error=on_error, report_path=report_path)
        return LoadedRows([r for p in pairs for r in expand_pair(p)], pairs.errors)
    return _load(source, parse, split=split, on_error=on_error, report_path=report_path)


def load_unpaired_rows(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[UnpairedRow]:
    """Load and validate unpaired rows ``{prompt, completion, label}`` (TRL's unpaired format).

    Pair rows (and built-in pair datasets) are read too: each gives a desirable row (chosen) and an
    undesirable row (rejected) with the same ``source``. Same sources and error handling as
    :func:`load_pairs`: a bad row raises :class:`DataError` naming file, line and field.
    """

    def expand(pair: PreferencePair) -> list[UnpairedRow]:
        return parse_unpaired_rows(pair.to_dict(), pair.source)

    nested = _load_expanded(
        source,
        parse_unpaired_rows,  # one list of records per row, flattened below
        lambda pair: [expand(pair)],
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
    return LoadedRows([r for group in nested for r in group], nested.errors)


def load_listwise_rows(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[ListwiseRow]:
    """Load and validate listwise rows ``{prompt, responses, ranks}`` (best first after loading).

    Pair rows (and built-in pair datasets) are read as rankings of two. Same sources and error
    handling as :func:`load_pairs`: a bad row raises :class:`DataError` naming file, line and field.
    """
    return _load_expanded(
        source,
        parse_listwise_row,
        lambda pair: [parse_listwise_row(pair.to_dict(), pair.source)],
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# ------------------------------------------------------------------------------------------- saving


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rows_for_saving(pairs: Sequence[PreferencePair]) -> list[dict[str, Any]]:
    kinds = {p.is_conversational for p in pairs}
    if len(kinds) > 1:
        raise ValueError("cannot save a mix of text and conversational pairs in one file")
    with_subset = any(p.subset is not None for p in pairs)
    with_margin = any(p.margin is not None for p in pairs)
    rows = []
    for p in pairs:
        row: dict[str, Any] = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
        if with_subset:
            row["subset"] = p.subset
        if with_margin:
            # Floats for every row (None where unknown) so Parquet infers one double column.
            row["margin"] = None if p.margin is None else float(p.margin)
        rows.append(row)
    return rows


def save_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> Path:
    """Write pairs in TRL's format (prompt/chosen/rejected, plus subset and margin when any pair has one).

    The format follows the suffix: ``.parquet``, ``.csv`` (conversations as JSON cells) or JSON Lines
    (anything else). The file is written to a temp file and renamed into place.
    """
    pairs = list(pairs)
    rows = _rows_for_saving(pairs)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = (
            pa.Table.from_pylist(rows)
            if rows
            else pa.table({f: pa.array([], pa.string()) for f in PAIR_FIELDS})
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        _atomic_write_bytes(path, buffer.getvalue())
    elif suffix == ".csv":
        out = io.StringIO()
        fields = list(rows[0]) if rows else list(PAIR_FIELDS)
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for k, v in row.items()}
            )
        _atomic_write_bytes(path, out.getvalue().encode("utf-8"))
    else:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        _atomic_write_bytes(path, text.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------ splitting


def split_pairs(
    pairs: Sequence[PreferencePair], *, eval_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic train/eval split of pairs, stratified by ``subset`` (see :func:`split_rows`)."""
    return split_rows(pairs, eval_fraction=eval_fraction, seed=seed, stratum=lambda pair: pair.subset)


RowT = TypeVar("RowT")


def split_rows(
    rows: Sequence[RowT],
    *,
    eval_fraction: float,
    seed: int,
    stratum: Callable[[RowT], str | None] = lambda row: None,
) -> tuple[list[RowT], list[RowT]]:
    """Deterministic train/eval split of any rows, stratified by ``stratum(row)`` (e.g. the subset).

    The eval set has ``round(len(rows) * eval_fraction)`` rows (at least one, and leaving at least one
    for training, when ``0 < eval_fraction`` and there are two or more rows), shared out between the
    strata in proportion to their sizes (largest remainders). Both halves keep the input order. The
    result depends only on the rows' order, ``eval_fraction`` and ``seed``.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    rows = list(rows)
    total = len(rows)
    n_eval = round(total * eval_fraction)
    if eval_fraction > 0 and total >= 2:
        n_eval = min(max(n_eval, 1), total - 1)
    groups: dict[str | None, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(stratum(row), []).append(index)
    # Largest-remainder allocation of n_eval across the subsets, ties broken by subset name.
    keys = sorted(groups, key=lambda k: (k is not None, k or ""))
    quotas = {k: n_eval * len(groups[k]) / total for k in keys} if total else {}
    counts = {k: int(quotas[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(quotas[k] - counts[k]), keys.index(k)))
    for k in by_remainder[: n_eval - sum(counts.values())]:
        counts[k] += 1
    eval_indices: set[int] = set()
    for k in keys:
        members = list(groups[k])
        random.Random(f"prefalign-split/{seed}/{k}").shuffle(members)
        eval_indices.update(members[: counts[k]])
    train = [r for i, r in enumerate(rows) if i not in eval_indices]
    held_out = [r for i, r in enumerate(rows) if i in eval_indices]
    return train, held_out
