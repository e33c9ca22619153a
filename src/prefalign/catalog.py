"""What is built in, without importing torch: model names and the hhh data set's location.

Config checks (:mod:`prefalign.config`) read this module when a config is read. The model
loaders live in :data:`prefalign.models.registry.BUILTIN_MODELS`, which has exactly these names
(a test keeps the two equal); fetching and converting hhh lives in :mod:`prefalign.feedback.hhh`.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefalign.utils import cache_dir

BUILTIN_MODEL_NAMES: dict[str, str] = {
    "smollm2-135m-instruct": "causal",
    "minilm-l6": "reward",
    "tiny-causal-lm": "causal",
    "tiny-reward": "reward",
}
"""Built-in model name -> 'causal' (a policy) or 'reward' (a 1-output scorer backbone)."""


HHH_SUBSETS = ("harmless", "helpful", "honest", "other")
"""The subsets of BIG-bench hhh_alignment (``data.train=hhh:helpful``)."""
HHH_PATH_ENV = "PREFALIGN_HHH_PATH"
"""Environment variable naming a local bigbench sdist or hhh_alignment folder."""


def hhh_cache_path() -> Path:
    """Where the converted dataset lives: ``$PREFALIGN_CACHE/datasets/hhh/hhh.jsonl``."""
    return cache_dir() / "datasets" / "hhh" / "hhh.jsonl"


def hhh_available_offline() -> bool:
    """Whether hhh can be had without a network: the converted file is cached, or
    ``$PREFALIGN_HHH_PATH`` names an existing archive or folder."""
    if hhh_cache_path().is_file():
        return True
    local = os.environ.get(HHH_PATH_ENV, "")
    return bool(local) and Path(local).expanduser().exists()
