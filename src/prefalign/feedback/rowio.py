"""Row files in and out: the readers every loader of :mod:`prefalign.feedback` shares, the load loop
that turns each rejected row into a :class:`~prefalign.feedback.validate.DataError`, the
rejected-rows report, and one writer of row files.

Sources (:func:`open_source`): ``.jsonl`` (``.json`` holding a list of rows is also read),
``.parquet``, ``.csv`` (cells holding a JSON list of messages are read as conversations), a folder
written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, an in-memory
``datasets.Dataset`` or ``DatasetDict``, or a list of row dicts. Line numbers are 1-based: the line in
the file where the row starts for JSONL and CSV, the index + 1 for a JSON array, Parquet and datasets.

Loading (:func:`load_rows`, :func:`load_records`) takes a parser ``parse(raw_row, "file:line")`` that
returns a record or raises :class:`~prefalign.feedback.validate.FieldError`; with ``on_error="raise"``
the first rejected row raises :class:`~prefalign.feedback.validate.DataError`, with ``"skip"`` the valid
rows are kept and the rejected ones collected on the result's ``errors`` (and written as a JSONL report
with ``report_path``).

Writing (:func:`write_rows`): JSON Lines, CSV or Parquet by the file's suffix, atomically
(:func:`prefalign.utils.atomic_write_bytes`). Depends on :mod:`~prefalign.feedback.validate` only.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from prefalign.feedback.validate import DataError, FieldError
from prefalign.utils import atomic_write_bytes

logger = logging.getLogger("prefalign.feedback")

OnError = Literal["raise", "skip"]
"""What a loader does with a rejected row: raise its DataError, or skip it and go on."""

RawRows = Iterator[tuple[int, Any]]
"""What a reader yields: ``(line, row)`` where row is the raw value, or a :class:`DataError` for a line
that could not be read at all (bad JSON, bad encoding)."""

PARQUET_SUFFIXES = (".parquet", ".pq")


class LoadedRows(list):
    """A list of loaded rows; ``errors`` holds the :class:`DataError` of each row skipped."""

    def __init__(self, rows: Iterable[Any] = (), errors: Iterable[DataError] = ()):
        super().__init__(rows)
        self.errors: list[DataError] = list(errors)


# ------------------------------------------------------------------------------------------ readers


def read_jsonl(path: Path, label: str) -> RawRows:
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


def read_json(path: Path, label: str) -> RawRows:
    """A ``.json`` file: a list of rows (line = index + 1), else read as JSON Lines."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, list):
        yield from enumerate(data, start=1)
    else:
        yield from read_jsonl(path, label)


def decode_cell(value: str) -> Any:
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


def read_csv(path: Path, label: str) -> RawRows:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        start = 2  # line 1 is the header
        try:
            for record in reader:
                row = {
                    k: decode_cell(v) if isinstance(v, str) else v
                    for k, v in record.items()
                    if k is not None  # extra unnamed cells
                }
                yield start, row
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            yield start, DataError(label, start, "<csv>", f"not valid CSV: {exc}")


def read_parquet(path: Path, label: str) -> RawRows:
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


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "state.json"))


def open_source(source: Any, split: str | None) -> tuple[RawRows, str]:
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
        if not is_saved_dataset(path):
            raise ValueError(f"{label} is a folder but not one written by datasets' save_to_disk")
        import datasets

        return _rows_of_dataset(datasets.load_from_disk(str(path)), split, label)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        rows = read_parquet(path, label)
        return ((i + 1, row) if n is None else (n, row) for i, (n, row) in enumerate(rows)), label
    if suffix == ".csv":
        return read_csv(path, label), label
    if suffix == ".json":
        return read_json(path, label), label
    return read_jsonl(path, label), label


# ------------------------------------------------------------------------------------------ loading


def write_report(report_path: str | os.PathLike, errors: Sequence[DataError]) -> Path:
    """The rejected rows as JSON Lines (file, line, field, message), written atomically."""
    path = Path(report_path)
    atomic_write_bytes(
        path, "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in errors).encode()
    )
    return path


def _collect(
    source: Any,
    parse: Callable[[Any, str], Any],
    *,
    many: bool,
    split: str | None,
    on_error: OnError,
    report_path: str | os.PathLike | None,
) -> LoadedRows:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    rows, label = open_source(source, split)
    kept: list[Any] = []
    errors: list[DataError] = []
    seen = good = 0
    for line, raw in rows:
        seen += 1
        if isinstance(raw, DataError):
            error = raw
        else:
            try:
                parsed = parse(raw, f"{label}:{line}")
            except FieldError as exc:
                error = exc.at(label, line)
            except RecursionError:
                if not many:
                    raise
                error = DataError(label, line, "<row>", "nested too deeply")
            else:
                if many:
                    kept.extend(parsed)
                else:
                    kept.append(parsed)
                good += 1
                continue
        if on_error == "raise":
            raise error
        errors.append(error)
    return finish_loading(label, kept, errors, seen=seen, good=good, report_path=report_path)


def load_rows(
    source: Any,
    parse: Callable[[Any, str], Any],
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Read ``source`` and parse each row into one record with ``parse(row, "file:line")``."""
    return _collect(source, parse, many=False, split=split, on_error=on_error, report_path=report_path)


def load_records(
    source: Any,
    parse: Callable[[Any, str], Sequence[Any]],
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Like :func:`load_rows`, but a row gives a list of any number of records (a task with several
    annotations; a task with none gives none, which is not an error), and a row nested too deeply to
    parse is rejected rather than raising ``RecursionError``."""
    return _collect(source, parse, many=True, split=split, on_error=on_error, report_path=report_path)


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
        write_report(report_path, errors)
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


# ------------------------------------------------------------------------------------------ writing


def json_cell(value: Any) -> str | None:
    """A cell stored as text: strings as is, numbers as their text, nested values as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value)


def _csv_cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def write_rows(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    columns: Sequence[str] = (),
    as_text: bool = False,
) -> Path:
    """Write rows as JSON Lines, CSV or Parquet, by the suffix (``.jsonl`` or anything else: JSON Lines),
    atomically; returns the path.

    CSV holds nested values (lists, objects) as JSON cells, which the readers decode again; Parquet
    infers each column's type. ``as_text`` stores every CSV/Parquet cell as text (:func:`json_cell`), so
    that rows of different shapes share one file. ``columns`` names the columns of a file with no rows.
    """
    rows = [dict(row) for row in rows]
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if as_text:
            flat = [{k: json_cell(v) for k, v in row.items()} for row in rows]
            names = sorted({k for row in flat for k in row})
            table = pa.table({c: pa.array([row.get(c) for row in flat], pa.string()) for c in names})
        elif rows or not columns:
            table = pa.Table.from_pylist(rows)
        else:
            table = pa.table({c: pa.array([], pa.string()) for c in columns})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    elif suffix == ".csv":
        out = io.StringIO()
        fieldnames = list(dict.fromkeys(k for row in rows for k in row)) if rows else list(columns)
        writer = csv.DictWriter(out, fieldnames=fieldnames)
        writer.writeheader()
        cell = json_cell if as_text else _csv_cell
        for row in rows:
            writer.writerow({k: cell(v) for k, v in row.items()})
        atomic_write_bytes(path, out.getvalue().encode("utf-8"))
    else:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        atomic_write_bytes(path, text.encode("utf-8"))
    return path
