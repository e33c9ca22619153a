"""Shared test setup: offline, a private cache per session, deterministic CPU threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _run_from_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # Configs name data paths relative to the repository root, as a user running from a clone would.
    monkeypatch.chdir(REPO)


@pytest.fixture
def kill_after_checkpoint(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], AbstractContextManager[None]]:
    """``with kill_after_checkpoint(4): run(...)``: the run dies (KeyboardInterrupt) right after it has
    written checkpoint ``step-4``, as a killed job would; the block expects that interrupt."""
    from prefalign.train.run import Run

    @contextmanager
    def killed(step: int) -> Iterator[None]:
        original = Run.save_checkpoint

        def save_then_die(self: Run, at: int, *args: Any, **kwargs: Any) -> Path:
            path = original(self, at, *args, **kwargs)
            if at == step:
                raise KeyboardInterrupt(f"simulated kill after the step-{step} checkpoint")
            return path

        monkeypatch.setattr(Run, "save_checkpoint", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(Run, "save_checkpoint", original)

    return killed


@pytest.fixture(scope="session")
def _tiny_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefalign-cache")


@pytest.fixture
def tiny_cache(_tiny_cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $PREFALIGN_CACHE at a session-wide temp dir, so tiny models are built once per session."""
    monkeypatch.setenv("PREFALIGN_CACHE", str(_tiny_cache_root))
    return _tiny_cache_root
