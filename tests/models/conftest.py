"""Fixtures for prefalign.models tests: a per-session model cache for the tiny built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def _tiny_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefalign-cache")


@pytest.fixture
def tiny_cache(_tiny_cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $PREFALIGN_CACHE at a session-wide temp dir, so tiny models are built once per session."""
    monkeypatch.setenv("PREFALIGN_CACHE", str(_tiny_cache_root))
    return _tiny_cache_root
