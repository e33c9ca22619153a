"""Loading tokenizers, policies and reward models; LoRA; saving merged folders."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefalign.models._atomic import atomic_output_dir
from prefalign.models.registry import resolve_model_path

logger = logging.getLogger(__name__)

NEW_PAD_TOKEN = "<|pad|>"
_HEAD_PREFIXES = ("score.", "classifier.")


@dataclass
class LoraSettings:
    """LoRA adapter settings (see ``peft.LoraConfig``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    """'all-linear' (every linear layer except the LM/classifier head) or a list of module names."""


# ---- tokenizer --------------------------------------------------------------------------------
def ensure_pad_token(tokenizer) -> bool:
    """Give ``tokenizer`` a pad token, distinct from eos when possible. Returns True if a token was added.

    * no pad token: use the unk token if it exists and differs from eos; otherwise add a new
      special token ``<|pad|>`` (the model's embeddings must then grow; the ``load_*`` functions
      do that);
    * pad == eos: switch to unk when unk exists and differs from eos (so masking padding never
      masks the eos a model must learn to emit), else keep it;
    * any other pad token is kept.
    """
    pad, eos, unk = tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token
    unk_ok = unk is not None and unk != eos
    if pad is not None and (pad != eos or not unk_ok):
        return False
    if unk_ok:
        tokenizer.pad_token = unk
        return False
    tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})
    return True


def load_tokenizer(name_or_path: str | os.PathLike, *, padding_side: str | None = None):
    """Load the tokenizer of a built-in name, a local folder or a hub id, with a pad token guaranteed.

    ``padding_side`` ('left' for generation, 'right' for training) overrides the saved default;
    callers may also set ``tokenizer.padding_side`` themselves at any time.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    ensure_pad_token(tokenizer)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


# ---- models -----------------------------------------------------------------------------------
def _match_tokenizer(model, tokenizer) -> None:
    """Grow embeddings for added tokens; put the tokenizer's pad id into config and generation config."""
    embeddings = model.get_input_embeddings()
    if embeddings is not None and len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.pad_token_id = tokenizer.pad_token_id


def apply_lora(model, lora: LoraSettings, task_type: str, trainable_token_ids: Sequence[int] = ()):
    """Wrap ``model`` in a peft LoRA model ('CAUSAL_LM' or 'SEQ_CLS'; the latter also trains the head).

    ``trainable_token_ids``: input-embedding rows trained in full beside the adapters (peft's
    ``trainable_token_indices``; tied output rows follow), for tokens added to the vocabulary,
    such as PHF's control tokens, whose new rows LoRA would otherwise leave at their random init.
    """
    from peft import LoraConfig, get_peft_model

    targets = lora.target_modules
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type=task_type,
        trainable_token_indices=[int(i) for i in trainable_token_ids] or None,
    )
    with warnings.catch_warnings():
        # peft 0.21 still calls transformers' deprecated ``is_gradient_checkpointing``; the
        # FutureWarning is theirs to fix and only clutters every LoRA run's output.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def load_causal_lm(
    name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, lora: LoraSettings | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) for a causal LM; ``model.config.pad_token_id`` is the tokenizer's pad id.

    With ``lora`` the model is a ``peft.PeftModel`` whose base weights are frozen; use
    :func:`reference_logits_context` for reference log-probs and :func:`merge_and_save` to export.
    Train/eval mode and dropout are left to the caller.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    _match_tokenizer(model, tokenizer)
    if lora is not None:
        model = apply_lora(model, lora, "CAUSAL_LM")
    return model, tokenizer


def load_reward_model(
    name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, lora: LoraSettings | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) for a scalar reward model: ``AutoModelForSequenceClassification``, num_labels=1
    (or k for a saved k-head ensemble from ``prefalign reward ensemble_size=k``).

    A backbone without a trained 1-output head (a causal LM such as SmolLM2, or the MiniLM
    encoder) gets a freshly initialised ``score``/``classifier`` head. That is expected for a new
    reward model, so transformers' "newly initialized" report is silenced and logged at INFO level
    instead; other missing weights are still reported as a warning. Decoder backbones score the
    last non-pad token, which is why ``config.pad_token_id`` is always set. With ``lora`` the head
    is trained in full alongside the adapters (peft ``modules_to_save``).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=_saved_reward_heads(path),
            dtype=dtype,
            pad_token_id=tokenizer.pad_token_id,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    head = [k for k in missing if k.startswith(_HEAD_PREFIXES)]
    other = [k for k in missing if not k.startswith(_HEAD_PREFIXES)]
    if head:
        logger.info(
            "%s: new reward head %s initialised randomly (expected before reward training)", path, head
        )
    if other:
        logger.warning("%s: weights missing from the checkpoint and initialised randomly: %s", path, other)
    _match_tokenizer(model, tokenizer)
    if lora is not None:
        model = apply_lora(model, lora, "SEQ_CLS")
    return model, tokenizer


def _saved_reward_heads(path: str) -> int:
    """Outputs of a saved reward model (k for a k-head ensemble); 1 for any other backbone."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    trained = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    return int(config.num_labels) if trained else 1


# ---- peft helpers -----------------------------------------------------------------------------
def unwrap_model(model):
    """Strip DDP/DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def is_peft_model(model) -> bool:
    """True for a ``peft.PeftModel`` (also when wrapped in DDP or torch.compile)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(unwrap_model(model), PeftModel)


@contextlib.contextmanager
def reference_logits_context(model) -> Iterator[Any]:
    """Inside the block, a LoRA ``model`` behaves as its frozen base (adapters off), under no_grad.

    This gives DPO its reference model without a second copy in memory. The adapters (and any
    trained head) are re-enabled on exit, also on error. Yields the unwrapped peft model, but
    calling the original (possibly DDP-wrapped) ``model`` inside the block works just as well.
    Raises ``TypeError`` for a non-peft model: load a separate reference model instead.
    """
    inner = unwrap_model(model)
    if not is_peft_model(inner):
        raise TypeError(
            "reference_logits_context needs a peft (LoRA) model; for full fine-tuning load a separate "
            "frozen reference model (e.g. a second load_causal_lm) and use it directly"
        )
    with inner.disable_adapter(), torch.no_grad():
        yield inner


def merge_and_save(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Write a plain HF folder (model + tokenizer) that ``from_pretrained`` loads; returns its path.

    For a peft model the adapters are merged into a deep copy, so ``model`` keeps its adapters
    and training can continue. The folder is written to a temp dir next to ``out_dir`` and
    renamed into place, replacing an older ``out_dir`` only once the new one is complete.
    """
    model = unwrap_model(model)
    merged = copy.deepcopy(model).merge_and_unload() if is_peft_model(model) else model
    merged.config.pad_token_id = tokenizer.pad_token_id
    with atomic_output_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir).expanduser().absolute()


def mergeable_lora_layers(model) -> dict[str, Any] | None:
    """The LoRA linears of a peft ``model`` by their name in the merged model, when every trainable
    weight is a plain LoRA factor of one of them (no DoRA, no trained head or token rows), so the
    merged weights carry all the training; None otherwise."""
    model = unwrap_model(model)
    if not is_peft_model(model):
        return None
    from peft.tuners.lora import Linear as LoraLinear

    layers = {n: m for n, m in model.get_base_model().named_modules() if isinstance(m, LoraLinear)}
    factors = {id(p) for m in layers.values() for p in [*m.lora_A.parameters(), *m.lora_B.parameters()]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    dora = any(any(m.use_dora.values()) for m in layers.values())
    if not layers or dora or any(id(p) not in factors for p in trainable):
        return None
    return layers


@torch.no_grad()
def merged_weight(layer: Any) -> torch.Tensor:
    """(out, in) weight of a LoRA linear with its active adapters added: W + (alpha/r) B A."""
    weight = layer.get_base_layer().weight
    merged = weight.float()
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A:
            merged = merged + layer.get_delta_weight(adapter).float()
    return merged


@torch.no_grad()
def merged_copy(model, dtype: torch.dtype) -> tuple[Any, dict[str, Any]]:
    """``(copy, layers)``: a frozen copy of the peft ``model`` in ``dtype`` with its adapters merged
    (a plain transformers model: decoding pays no adapter matmuls), and the LoRA linears whose
    merged weights refresh it (:func:`merged_weight`). The frozen weights are cast while
    copying, so memory never holds a second copy in the policy's own dtype."""
    model = unwrap_model(model)
    layers = mergeable_lora_layers(model)
    if layers is None:
        raise TypeError("merged_copy needs a LoRA model whose trainable weights are all LoRA factors")
    cast = {
        id(p): torch.nn.Parameter(p.detach().to(dtype, copy=True), requires_grad=False)
        for p in model.parameters()
    }
    base = copy.deepcopy(model.get_base_model(), memo=dict(cast))
    for name, layer in layers.items():
        target = base.get_submodule(name).get_base_layer()
        target.weight.copy_(merged_weight(layer))
        base.set_submodule(name, target)
    return base.requires_grad_(False), layers


def count_parameters(model, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared/tied tensors counted once); only trainable ones if asked."""
    return sum(p.numel() for p in unwrap_model(model).parameters() if p.requires_grad or not trainable_only)


def disable_dropout(model) -> None:
    """Set every dropout probability to 0: log-ratios against a reference must not be noisy.

    Covers ``nn.Dropout`` modules and the float ``attention_dropout`` that attention layers keep
    (Llama, Qwen2, Mistral).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
