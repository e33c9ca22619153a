"""Recipe configuration: typed dataclasses loaded from YAML with dotted ``key=value`` overrides.

Every recipe has one config dataclass. A YAML file either holds that config directly or holds one
section per command (``sft:``, ``reward:``, ``dpo:``) so a single file such as ``configs/tiny.yaml``
can drive every command. Unknown keys are an error that names the key and the file, and the fully
resolved config is what each run saves as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the recipe's dataclass."""


@dataclasses.dataclass
class ModelConfig:
    """Which model to train and how."""

    name: str = "tiny-causal-lm"
    """Built-in name (see ``prefalign models``), a local HF folder, or a hub name when online."""
    lora: bool = False
    """Train LoRA adapters instead of all weights; the reference model is then the base with
    adapters disabled, so no second copy is held in memory."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input; 0 keeps runs deterministic and resumable."""
    lora_target_modules: str = "all-linear"
    """'all-linear' or a comma-separated list of module names (e.g. 'q_proj,v_proj')."""


@dataclasses.dataclass
class DataConfig:
    """Where the training rows come from and how they are tokenised."""

    train: str = ""
    """Training data: a JSONL/Parquet/CSV file, a saved ``datasets`` folder, or a built-in name (e.g. 'hhh')."""
    eval: str = ""
    """Held-out data in the same forms; empty means carve ``eval_fraction`` out of ``train``."""
    eval_fraction: float = 0.0
    """Fraction of ``train`` held out for evaluation when ``eval`` is empty (split by ``seed``)."""
    max_length: int = 512
    """Maximum tokens of prompt + completion; completions are truncated to fit."""
    max_prompt_length: int = 256
    """Maximum prompt tokens; longer prompts keep their last tokens (the end matters most)."""
    on_error: str = "raise"
    """'raise' stops at the first bad row; 'skip' keeps valid rows and writes DIR/rejected_rows.jsonl."""


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing, shared by every recipe."""

    learning_rate: float = 1e-5
    """Peak learning rate of AdamW."""
    batch_size: int = 8
    """Examples (pairs for dpo/reward) per optimizer step, summed over processes and micro-batches."""
    micro_batch_size: int = 8
    """Examples per forward pass; batch_size / micro_batch_size micro-batches are accumulated."""
    epochs: float = 1.0
    """Passes over the training data (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 means run for ``epochs``."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    lr_scheduler: str = "linear"
    """'constant', 'linear' (decay to 0) or 'cosine'."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    seed: int = 0
    """Seed for initialisation, data order and sampling."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps; 0 writes one only at the end."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep on disk."""
    log_every: int = 1
    """Print a progress line every N steps (metrics.jsonl always gets every step)."""
    eval_every: int = 0
    """Evaluate on held-out data every N steps; 0 evaluates only at the end."""


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` so overrides parse to the real type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if tp is str and value is None:
            return ""
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def build_config(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """``cls`` from a nested dict (sections as dicts), type-checked like a YAML file."""
    return _build(cls, data, where)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.learning_rate=1e-4", "model.lora=true"]`` into a nested dict.

    Values are parsed as YAML scalars, so numbers, booleans and lists work as expected.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        # YAML reads '1e-4' as a string; numbers written that way are common in learning rates.
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else value
            except ValueError:
                pass
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    section: str | None = None,
) -> T:
    """Build ``cls`` from defaults, then the YAML file, then dotted overrides (last wins).

    When the file has a top-level key equal to ``section`` (the command name), only that section
    is read, so one file can configure several commands.
    """
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as err:
            raise ConfigError(f"config file not found: {path}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        if section is not None and section in loaded and isinstance(loaded[section], dict):
            loaded = loaded[section]
            where = f"{path}[{section}]"
        data = loaded
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    return _build(cls, data, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for YAML and JSON)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    from prefalign.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False))
