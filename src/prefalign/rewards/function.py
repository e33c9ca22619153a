"""A Python function as a reward: ``"package.module:function"`` or ``"path/to/file.py:function"``.

The function is imported when the reward is built (not when the config is read, so a config can
name code that imports heavy packages) and called once per batch as
``fn(prompts, completions) -> sequence of N numbers`` (a list, array or tensor; booleans count as
1/0, e.g. a verifier's pass/fail). Prompts are passed as given to the sampler (strings or chat
messages), completions as the decoded strings.

Every failure is a one-line :class:`~prefalign.config.ConfigError` that starts with the config key
(``function: ...``): a malformed spec, a missing file or module, an import that raises, a missing
attribute, a wrong number or type of returned values, a non-finite value.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from prefalign.config import ConfigError
from prefalign.rewards.base import Reward, RewardBreakdown, SampleLike, as_rewards, single

RewardCallable = Callable[[list[Any], list[str]], Any]
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def split_spec(spec: str, key: str = "function") -> tuple[str, str, bool]:
    """``"a.b:f"`` -> ``("a.b", "f", False)``; ``"dir/x.py:f"`` -> ``("dir/x.py", "f", True)``.

    Checks the form only (nothing is imported); a bad form is a ConfigError naming ``key``."""
    target, sep, attr = spec.strip().rpartition(":")
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    if not sep or not target or not attr.isidentifier() or not (is_file or _DOTTED.fullmatch(target)):
        raise ConfigError(
            f"{key}: expected 'package.module:function' or 'path/to/file.py:function', got {spec!r}"
        )
    return target, attr, is_file


def spec_problem(spec: str) -> str | None:
    """Why ``spec`` cannot name a function, found without importing it (None when it may): the form,
    the file's existence, or the top-level package's presence. Used when a config is read."""
    try:
        target, _, is_file = split_spec(spec)
    except ConfigError as err:
        return str(err).partition(": ")[2]
    if is_file:
        return None if Path(target).expanduser().is_file() else f"file not found: {target}"
    top = target.split(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
        return f"no module named {top!r} (in {spec!r})"
    return None


def _import_file(path: Path) -> ModuleType:
    # A unique module name per file, registered in sys.modules before running it, so that
    # dataclasses and pickling inside the user's file find their module as in a normal import.
    name = f"prefalign_reward_fn_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_function(spec: str, key: str = "function") -> RewardCallable:
    """The function ``spec`` names, imported now; failures are one-line ConfigErrors naming ``key``."""
    target, attr, is_file = split_spec(spec, key)
    path = Path(target).expanduser().resolve()
    if is_file and not path.is_file():
        raise ConfigError(f"{key}: file not found: {target}")
    try:
        module = _import_file(path) if is_file else importlib.import_module(target)
    except Exception as err:  # noqa: BLE001 - the user's module may raise anything on import
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"{key}: cannot import {target}: {type(err).__name__}: {first}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{key}: {target} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{key}: {target}:{attr} is a {type(fn).__name__}, not a function")
    return fn


class FunctionReward(Reward):
    """Reward from ``fn(prompts, completions)``; ``score`` has the one part ``name``."""

    def __init__(self, fn: RewardCallable, *, name: str = "function", label: str = "") -> None:
        self.fn = fn
        self.name = name
        self.label = label or getattr(fn, "__qualname__", repr(fn))

    @classmethod
    def load(cls, spec: str, *, key: str = "function") -> FunctionReward:
        return cls(load_function(spec, key), name=key, label=spec)

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        prompts = [s.prompt for s in samples]
        completions = [s.completion for s in samples]
        returned = self.fn(prompts, completions)  # its own errors propagate with their traceback
        try:
            values = as_rewards(returned, len(samples), f"{self.name}: {self.label}")
        except ValueError as err:  # a wrong return value: reported like a config problem
            raise ConfigError(str(err)) from None
        return single(self.name, values)
