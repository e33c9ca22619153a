"""Names of the built-in models and their kind, without importing torch.

Config checks (:class:`prefalign.config.ModelName`) read this table; the loaders and descriptions
live in :data:`prefalign.models.registry.BUILTIN_MODELS`, which has exactly these names (a test
keeps the two equal).
"""

from __future__ import annotations

BUILTIN_MODEL_NAMES: dict[str, str] = {
    "smollm2-135m-instruct": "causal",
    "minilm-l6": "reward",
    "tiny-causal-lm": "causal",
    "tiny-reward": "reward",
}
"""Built-in model name -> 'causal' (a policy) or 'reward' (a 1-output scorer backbone)."""
