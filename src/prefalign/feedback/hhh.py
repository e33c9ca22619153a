"""Built-in preference dataset ``hhh``: BIG-bench's ``hhh_alignment`` task (Apache-2.0).

221 human-written prompt/chosen/rejected pairs in four subsets: harmless (58), helpful (59),
honest (61) and other (43). The task ships inside the ``bigbench`` source distribution on PyPI
(``bigbench-1.0.0.tar.gz``, ~358 MB; there is no wheel). On first use :func:`ensure_hhh` streams that
archive from PyPI (showing a progress bar), checks its SHA-256, reads only the members
``bigbench/benchmark_tasks/hhh_alignment/<subset>/task.json`` from the stream (nothing is written to
disk but the result), converts them and writes ``$PREFALIGN_CACHE/datasets/hhh/hhh.jsonl``
atomically (temp file + ``os.replace``). Later calls read that file.

Offline: set ``PREFALIGN_HHH_PATH`` to a local copy of ``bigbench-1.0.0.tar.gz`` or to a folder
holding ``hhh_alignment/<subset>/task.json`` (the task folder itself, or any folder above it).

Format: each task.json example is ``{"input": ..., "target_scores": {answer_a: 1, answer_b: 0}}``.
``input`` is the human's side of a Human/Assistant dialogue without the leading ``"Human: "`` (BIG-bench
adds ``example_input_prefix="\\nHuman: "`` and ``example_output_prefix="\\nAssistant:"`` when it builds
the model's input); multi-turn examples carry the earlier turns inline as
``"...\\n\\nAssistant:  ...\\n\\nHuman:  ..."``. The prompt is kept as that input text verbatim; the
answer scored 1 is ``chosen`` and the one scored 0 is ``rejected``.

This module only fetches, converts and caches the file (it imports nothing else of the package);
reading it as pairs is :func:`prefalign.feedback.formats.load_pairs` (``"hhh"``, ``"hhh:SUBSET"``) or
:func:`prefalign.feedback.formats.load_hhh`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from prefalign.catalog import HHH_PATH_ENV, HHH_SUBSETS, hhh_cache_path
from prefalign.utils import atomic_write_bytes

try:  # POSIX: serialise concurrent first uses
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("prefalign.feedback")

SUBSETS = HHH_SUBSETS
EXPECTED_COUNTS = {"harmless": 58, "helpful": 59, "honest": 61, "other": 43}  # 221 in all
SDIST_PACKAGE = "bigbench"
SDIST_VERSION = "1.0.0"
SDIST_FILENAME = f"{SDIST_PACKAGE}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
DEFAULT_PYPI_URL = "https://pypi.org/pypi"
PATH_ENV = HHH_PATH_ENV
PYPI_ENV = "PREFALIGN_PYPI_URL"  # JSON API root; for mirrors (and tests)
MAX_TASK_BYTES = 16 * 1024 * 1024
TIMEOUT_S = 60

_MEMBER = re.compile(r"(?:^|/)hhh_alignment/([^/]+)/task\.json$")


class HHHUnavailableError(RuntimeError):
    """The hhh data could not be obtained (no network, bad archive, wrong contents)."""


def _how_to_provide() -> str:
    return (
        f"To provide it by hand, get {SDIST_FILENAME} on a machine with internet access "
        f"(`pip download --no-deps --no-binary :all: {SDIST_PACKAGE}=={SDIST_VERSION}`, or "
        f"https://pypi.org/project/{SDIST_PACKAGE}/{SDIST_VERSION}/#files) and set "
        f"{PATH_ENV}=/path/to/{SDIST_FILENAME}, or set {PATH_ENV} to a folder holding "
        "hhh_alignment/<subset>/task.json (e.g. an extracted bigbench/benchmark_tasks)."
    )


cache_path = hhh_cache_path


# ------------------------------------------------------------------------------------- conversion


def convert_task(task: Mapping[str, Any], subset: str) -> list[dict[str, Any]]:
    """TRL rows ``{"prompt", "chosen", "rejected", "subset"}`` from one BIG-bench task.json."""
    examples = task.get("examples")
    if not isinstance(examples, list):
        raise HHHUnavailableError(f"hhh_alignment/{subset}/task.json has no 'examples' list")
    rows = []
    for index, example in enumerate(examples):
        scores = example.get("target_scores") if isinstance(example, Mapping) else None
        prompt = example.get("input") if isinstance(example, Mapping) else None
        if (
            not isinstance(prompt, str)
            or not isinstance(scores, Mapping)
            or sorted(scores.values()) != [0, 1]
        ):
            raise HHHUnavailableError(
                f"hhh_alignment/{subset}/task.json, example {index}: expected 'input' and two "
                "'target_scores' scored 1 (chosen) and 0 (rejected)"
            )
        chosen = next(answer for answer, score in scores.items() if score == 1)
        rejected = next(answer for answer, score in scores.items() if score == 0)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "subset": subset})
    return rows


def _parse_task(data: bytes, name: str) -> dict[str, Any]:
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise HHHUnavailableError(f"{name} is not valid JSON: {exc}") from exc


def tasks_from_tar(
    fileobj: IO[bytes] | None = None, *, path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The hhh_alignment subset task.json files from a tar archive, read as a stream.

    Pass an open binary stream (read sequentially, e.g. an HTTP response; gzip-compressed) or a
    ``path`` (any compression). Only the matching members are read into memory.
    """
    tasks: dict[str, Any] = {}
    if path is not None:
        archive = tarfile.open(path, mode="r:*")
    else:
        archive = tarfile.open(fileobj=fileobj, mode="r|gz")
    with archive:
        for member in archive:
            match = _MEMBER.search(member.name)
            if not match or not member.isfile() or member.size > MAX_TASK_BYTES:
                continue
            handle = archive.extractfile(member)
            if handle is None:  # pragma: no cover - isfile() checked
                continue
            tasks[match.group(1)] = _parse_task(handle.read(), member.name)
    return tasks


def tasks_from_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """The subset task.json files under ``folder`` (the hhh_alignment folder or any folder above it)."""
    folder = Path(folder)
    candidates = [folder / s / "task.json" for s in SUBSETS] if folder.name == "hhh_alignment" else []
    if not any(p.is_file() for p in candidates):
        candidates = sorted(folder.glob("**/hhh_alignment/*/task.json"))
    return {p.parent.name: _parse_task(p.read_bytes(), str(p)) for p in candidates if p.is_file()}


def rows_from_tasks(
    tasks: Mapping[str, Any], expected_counts: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """Convert the four subset tasks (in SUBSETS order), checking the subsets and their sizes."""
    expected_counts = EXPECTED_COUNTS if expected_counts is None else expected_counts
    missing = [s for s in SUBSETS if s not in tasks]
    if missing:
        raise HHHUnavailableError(f"hhh_alignment subsets {missing} not found (found {sorted(tasks)})")
    rows: list[dict[str, Any]] = []
    for subset in SUBSETS:
        converted = convert_task(tasks[subset], subset)
        want = expected_counts.get(subset)
        if want is not None and len(converted) != want:
            raise HHHUnavailableError(
                f"hhh_alignment/{subset} has {len(converted)} examples, expected {want}: not the "
                f"{SDIST_FILENAME} this loader knows"
            )
        rows.extend(converted)
    return rows


def write_cache(rows: list[dict[str, Any]], path: str | os.PathLike | None = None) -> Path:
    """Write rows as JSONL at ``path`` (default :func:`cache_path`) via a temp file and a rename."""
    path = cache_path() if path is None else Path(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------- download


class _HashingReader:
    """A read-only stream that hashes and counts what passes through, and advances a progress bar."""

    def __init__(self, raw: IO[bytes], advance: Any = None):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.advance = advance

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        if self.advance is not None and data:
            self.advance(len(data))
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _sdist_info(pypi_url: str) -> tuple[str, int | None]:
    """URL and size of the pinned sdist, from PyPI's JSON API."""
    api = f"{pypi_url.rstrip('/')}/{SDIST_PACKAGE}/json"  # (not every mirror serves /NAME/VERSION/json)
    with urllib.request.urlopen(api, timeout=TIMEOUT_S) as response:
        meta = json.load(response)
    entries = [*meta.get("releases", {}).get(SDIST_VERSION, []), *meta.get("urls", [])]
    for entry in entries:
        if entry.get("filename") == SDIST_FILENAME:
            return entry["url"], entry.get("size")
    raise HHHUnavailableError(f"{api} lists no {SDIST_FILENAME}")


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"hhh: streaming {SDIST_FILENAME}", total=total)
        yield lambda n: progress.advance(task, n)


def download_tasks(*, progress: bool = True, pypi_url: str | None = None) -> dict[str, Any]:
    """Stream the bigbench sdist from PyPI, verify it, and return the hhh_alignment tasks."""
    pypi_url = pypi_url or os.environ.get(PYPI_ENV) or DEFAULT_PYPI_URL
    step = f"looking up {SDIST_FILENAME} at {pypi_url}"
    try:
        url, size = _sdist_info(pypi_url)
        step = f"downloading {url}"
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, _progress(progress, size) as advance:
            reader = _HashingReader(response, advance)
            step = f"reading {SDIST_FILENAME} as it downloads"
            tasks = tasks_from_tar(reader)
            reader.drain()  # hash the rest of the file too
    except HHHUnavailableError:
        raise
    except (OSError, EOFError, tarfile.TarError, zlib.error, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HHHUnavailableError(f"hhh: failed {step}: {reason}. {_how_to_provide()}") from exc
    if size is not None and reader.size != size:
        raise HHHUnavailableError(
            f"hhh: {SDIST_FILENAME} download was cut short ({reader.size} of {size} bytes). {_how_to_provide()}"
        )
    if reader.sha256.hexdigest() != SDIST_SHA256:
        raise HHHUnavailableError(
            f"hhh: {SDIST_FILENAME} from {url} has SHA-256 {reader.sha256.hexdigest()}, expected "
            f"{SDIST_SHA256}. {_how_to_provide()}"
        )
    return tasks


def _local_tasks(path_text: str) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise HHHUnavailableError(f"{PATH_ENV}={path_text} does not exist. {_how_to_provide()}")
    try:
        tasks = tasks_from_folder(path) if path.is_dir() else tasks_from_tar(path=path)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise HHHUnavailableError(f"{PATH_ENV}={path_text}: cannot read it as a tar archive: {exc}") from exc
    if not tasks:
        raise HHHUnavailableError(f"{PATH_ENV}={path_text} holds no hhh_alignment/<subset>/task.json")
    return tasks


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_hhh(*, force: bool = False, progress: bool = True) -> Path:
    """Path of the converted hhh JSONL, building it on first use (from ``$PREFALIGN_HHH_PATH`` if set,
    else by streaming the bigbench sdist from PyPI). ``force`` rebuilds it."""
    path = cache_path()
    if path.is_file() and not force:
        return path
    with _lock(path):
        if path.is_file() and not force:  # built meanwhile by another process
            return path
        start = time.perf_counter()
        local = os.environ.get(PATH_ENV)
        tasks = _local_tasks(local) if local else download_tasks(progress=progress)
        rows = rows_from_tasks(tasks)
        write_cache(rows, path)
        logger.info("hhh: wrote %d pairs to %s in %.1f s", len(rows), path, time.perf_counter() - start)
    return path
