"""Small shared helpers: atomic file writes, seeding, cache location."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models and downloaded datasets live: ``$PREFALIGN_CACHE`` or ~/.cache/prefalign."""
    return Path(os.environ.get("PREFALIGN_CACHE", Path.home() / ".cache" / "prefalign")).expanduser()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and an atomic rename.

    The one atomic file writer: a reader sees the old file or the new one, never a part; a crash or an
    error leaves no temp file behind. Parent folders are created; the file gets the usual 0644 mode.
    """
    path = Path(path)
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


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
    import numpy as np  # here, so that the stdlib helpers above stay importable without torch
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def cpu_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX): there bf16 decoding and
    training run several times faster than fp32; elsewhere bf16 is emulated and slower."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
