"""The crash-safe folder builders, tested with fake converters (no real model involved)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from prefalign.models._atomic import MARKER, atomic_output_dir, build_once, is_complete


def _temp_dirs(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}.tmp-*"))


def _write_files(tmp: Path, text: str = "weights") -> None:
    (tmp / "config.json").write_text("{}")
    (tmp / "model.bin").write_text(text)


class Crash(RuntimeError):
    pass


def test_build_once_builds_then_reuses(tmp_path: Path) -> None:
    calls = []
    final = tmp_path / "models" / "fake"

    def builder(tmp: Path) -> None:
        calls.append(tmp)
        assert tmp.parent == final.parent and tmp.name.startswith(".fake.tmp-")
        _write_files(tmp)

    assert build_once(final, builder) == final
    assert build_once(final, builder) == final
    assert len(calls) == 1
    assert (final / "model.bin").read_text() == "weights"
    assert json.loads((final / MARKER).read_text())["version"] == "1"
    assert is_complete(final) and _temp_dirs(final) == []


def test_crash_mid_conversion_leaves_nothing_and_rerun_succeeds(tmp_path: Path) -> None:
    final = tmp_path / "fake"

    def slow_crashing(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        time.sleep(0.05)  # half-way through a "slow" conversion
        raise Crash("disk full")

    with pytest.raises(Crash):
        build_once(final, slow_crashing)
    assert not final.exists()
    assert _temp_dirs(final) == []

    assert build_once(final, _write_files) == final
    assert is_complete(final) and (final / "model.bin").exists()


def test_keyboard_interrupt_is_cleaned_too(tmp_path: Path) -> None:
    final = tmp_path / "fake"

    def interrupted(tmp: Path) -> None:
        _write_files(tmp)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(final, interrupted)
    assert not final.exists() and _temp_dirs(final) == []


def _build_and_get_killed(final: str) -> None:
    def builder(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")  # half-written
        os.kill(os.getpid(), signal.SIGKILL)

    build_once(final, builder)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_killed_process_leaves_only_a_stale_temp_dir_that_is_cleaned(tmp_path: Path) -> None:
    final = tmp_path / "fake"
    proc = multiprocessing.get_context("fork").Process(target=_build_and_get_killed, args=(str(final),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert not final.exists()  # never a half-written final folder
    assert len(_temp_dirs(final)) == 1  # the dead build's leftovers
    assert not is_complete(final)

    assert build_once(final, _write_files) == final  # the lock died with the process
    assert is_complete(final)
    assert _temp_dirs(final) == []


def test_concurrent_builders_convert_once(tmp_path: Path) -> None:
    final = tmp_path / "fake"
    calls = []

    def slow(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.2)
        _write_files(tmp)

    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(build_once(final, slow))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
    assert results == [final] * 3


def test_new_version_rebuilds_and_swaps_atomically(tmp_path: Path) -> None:
    final = tmp_path / "fake"
    build_once(final, lambda tmp: _write_files(tmp, "old"), version="1")
    build_once(final, lambda tmp: _write_files(tmp, "new"), version="2")
    assert (final / "model.bin").read_text() == "new"
    assert is_complete(final, "2") and not is_complete(final, "1")

    with pytest.raises(Crash):
        build_once(final, lambda tmp: (_ for _ in ()).throw(Crash()), version="3")
    assert (final / "model.bin").read_text() == "new"  # a failed rebuild keeps the old folder
    assert _temp_dirs(final) == []


def test_atomic_output_dir_replaces_or_keeps(tmp_path: Path) -> None:
    out = tmp_path / "final"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1"

    with pytest.raises(Crash), atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("2")
        raise Crash
    assert (out / "a.txt").read_text() == "1"
    assert _temp_dirs(out) == []

    with atomic_output_dir(out) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert oct(out.stat().st_mode & 0o777) == "0o755"
