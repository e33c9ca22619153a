"""Crash-safe creation of model folders: build in a temp dir, then rename into place.

Two helpers:

* :func:`build_once` makes a cached folder (a converted or materialised built-in model) exactly
  once. It takes an exclusive ``fcntl.flock`` on ``.NAME.lock`` next to the folder, so concurrent
  processes (or threads) wait for the first one instead of converting twice; it builds into
  ``.NAME.tmp-XXXX`` in the same parent folder and ``os.replace``-s that into ``NAME`` only when the
  builder returned and a marker file (``prefalign_build.json``) is written. A builder that raises
  leaves no folder and no temp dir; a process killed mid-build leaves only a ``.NAME.tmp-*`` dir,
  which is never mistaken for a finished folder and is removed by the next ``build_once`` (it holds
  the lock, so any temp dir it sees is stale).
* :func:`atomic_output_dir` is a context manager yielding a temp dir whose contents replace
  ``out_dir`` on success (used by ``merge_and_save``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefalign.utils import replace_dir

try:  # POSIX only; elsewhere builds are still atomic, just not serialised across processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MARKER = "prefalign_build.json"


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 dirs and some writers 0600 files; make the result world-readable like a normal folder."""
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' tqdm bars (also the GGUF dequantizing bar) and info logs in the block."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    gguf_module = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_module is None:
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils as gguf_module
    gguf_tqdm = getattr(gguf_module, "tqdm", None)
    if gguf_tqdm is not None:  # it imports tqdm directly, ignoring transformers' switch
        gguf_module.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_module.tqdm = gguf_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _tmp_prefix(final_dir: Path) -> str:
    return f".{final_dir.name}.tmp-"


def is_complete(final_dir: Path, version: str | None = None) -> bool:
    """True when ``final_dir`` was finished by :func:`build_once` (with this ``version`` if given)."""
    marker = final_dir / MARKER
    if not marker.is_file():
        return False
    if version is None:
        return True
    try:
        return json.loads(marker.read_text()).get("version") == version
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the ``with`` block.

    The kernel drops the lock when the process dies, so a killed holder never blocks others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def clean_stale_temp_dirs(final_dir: Path) -> list[Path]:
    """Remove leftover ``.NAME.tmp-*`` dirs of killed builds; call only while holding the lock."""
    removed = []
    if final_dir.parent.is_dir():
        for tmp in final_dir.parent.glob(_tmp_prefix(final_dir) + "*"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def build_once(
    final_dir: str | Path,
    builder: Callable[[Path], Any],
    *,
    version: str = "1",
    on_build_start: Callable[[], None] | None = None,
) -> Path:
    """Return ``final_dir``, first building it with ``builder(tmp_dir)`` unless already complete.

    ``version`` is stored in the marker; a finished folder with another version is rebuilt and
    swapped in atomically (so bumping the recipe of a built-in invalidates old caches).
    ``on_build_start`` is called (under the lock) just before a real build, e.g. to print a notice.
    """
    final_dir = Path(final_dir).expanduser().absolute()
    if is_complete(final_dir, version):
        return final_dir
    lock = final_dir.with_name(f".{final_dir.name}.lock")
    with file_lock(lock):
        if is_complete(final_dir, version):  # another process finished while we waited
            return final_dir
        clean_stale_temp_dirs(final_dir)
        if on_build_start is not None:
            on_build_start()
        tmp = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=_tmp_prefix(final_dir)))
        try:
            started = time.time()
            builder(tmp)
            marker = {
                "version": version,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.time() - started, 2),
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            _make_readable(tmp)
            replace_dir(tmp, final_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final_dir


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temp dir next to ``out_dir``; on success it replaces ``out_dir``, on error it is removed."""
    out_dir = Path(out_dir).expanduser().absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_tmp_prefix(out_dir)))
    try:
        yield tmp
        _make_readable(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
