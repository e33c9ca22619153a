"""Small shared helpers: atomic file writes, seeding, cache location."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch


def cache_dir() -> Path:
    """Where converted models and downloaded datasets live: ``$PREFALIGN_CACHE`` or ~/.cache/prefalign."""
    return Path(os.environ.get("PREFALIGN_CACHE", Path.home() / ".cache" / "prefalign")).expanduser()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written ``tmp_dir`` to ``final_dir``, replacing an older one.

    The rename is atomic on one file system; an older ``final_dir`` is moved aside first and
    removed only after the new one is in place, so a crash never leaves neither.
    """
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is repeatable on the CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
