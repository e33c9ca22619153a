"""Recipe configuration: typed dataclasses loaded from YAML with dotted ``key=value`` overrides.

Every recipe has one config dataclass. A YAML file either holds that config directly or holds one
section per command (``sft:``, ``reward:``, ``dpo:``) so a single file such as ``configs/tiny.yaml``
can drive every command. Unknown keys are an error that names the key and the file, and the fully
resolved config is what each run saves as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the recipe's dataclass."""


# --- Checks: attached to fields with ``typing.Annotated`` and run when a config is read ------------


class Check:
    """A constraint on one config value, attached as ``x: Annotated[int, AtLeast(1)] = 8``.

    :meth:`problem` returns ``None`` when the value fits, else the one-line message tail (what the
    value must be and what it was); the loader prefixes the location (``file[section].train.x``).
    Comparisons are written as ``not (value >= lo)`` so that NaN never passes.
    """

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _num(x: Any) -> str:
    """A number as people write it: 1 for 1.0, 1e-05 stays 1e-05; anything else as repr."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x) if isinstance(x, int | float) and not isinstance(x, bool) else repr(x)


class AtLeast(Check):
    """``value >= lo``."""

    def __init__(self, lo: float) -> None:
        self.lo = lo

    def problem(self, value: Any) -> str | None:
        return None if value >= self.lo else f"must be >= {_num(self.lo)}, got {_num(value)}"


class Above(Check):
    """``value > lo`` (strictly)."""

    def __init__(self, lo: float) -> None:
        self.lo = lo

    def problem(self, value: Any) -> str | None:
        return None if value > self.lo else f"must be > {_num(self.lo)}, got {_num(value)}"


class InRange(Check):
    """``lo <= value <= hi``; ``lo_open`` / ``hi_open`` exclude an end (``[0, 1)`` is ``hi_open=True``)."""

    def __init__(self, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def problem(self, value: Any) -> str | None:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        if above and below:
            return None
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"must be in {left}{_num(self.lo)}, {_num(self.hi)}{right}, got {_num(value)}"


class OneOf(Check):
    """One of the given choices; ``OneOf(*REGISTRY)`` takes a registry dict's keys.

    In modules with ``from __future__ import annotations`` the annotation is evaluated when the
    config is read, so it may name a registry defined further down the module.
    """

    def __init__(self, *choices: str, hints: dict[str, str] | None = None) -> None:
        self.choices = tuple(choices)
        self.hints = hints or {}
        """Wrong value -> a hint added to the message (e.g. 'kto' -> 'use prefalign kto')."""

    def problem(self, value: Any) -> str | None:
        if value in self.choices:
            return None
        hint = f" ({self.hints[value]})" if isinstance(value, str) and value in self.hints else ""
        return f"expected one of {', '.join(map(str, self.choices))}; got {value!r}{hint}"


class Each(Check):
    """Apply a check to every entry of a list; the message names the entry (``entry 2: ...``)."""

    def __init__(self, check: Check) -> None:
        self.check = check

    def problem(self, value: Any) -> str | None:
        for index, item in enumerate(value):
            problem = self.check.problem(item)
            if problem is not None:
                return f"entry {index}: {problem}"
        return None


class NonEmpty(Check):
    """A string (or list) that is not empty."""

    def problem(self, value: Any) -> str | None:
        return None if len(value) else "must not be empty"


class OutputDir(Check):
    """A run folder: not empty and not an existing file (the folder itself is created by the run)."""

    def problem(self, value: Any) -> str | None:
        if value == "":
            return "must not be empty"
        if Path(value).expanduser().is_file():
            return f"is a file, not a folder: {value}"
        return None


class OutputFile(Check):
    """A file to write: not empty and not an existing folder."""

    def problem(self, value: Any) -> str | None:
        if value == "":
            return "must not be empty"
        if Path(value).expanduser().is_dir():
            return f"is a folder, not a file: {value}"
        return None


class Regexes(Check):
    """A list of regular expressions that all compile."""

    def problem(self, value: Any) -> str | None:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                return f"not a valid regular expression {pattern!r}: {err}"
        return None


class DataSource(Check):
    """A data file or folder that exists, or a built-in set name (e.g. 'hhh').

    ``optional=True`` lets the empty string mean "none". The built-in 'hhh' is refused only when
    the machine is offline (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) and it is neither
    cached nor given locally (see :func:`prefalign.feedback.hhh.hhh_available_offline`).
    """

    BUILTIN = ("hhh",)

    def __init__(self, *, optional: bool = False) -> None:
        self.optional = optional

    def problem(self, value: Any) -> str | None:
        if value == "":
            if self.optional:
                return None
            return (
                "is empty: name a JSONL/Parquet/CSV/TXT file, a saved datasets folder, or a built-in "
                f"set ({', '.join(self.BUILTIN)})"
            )
        if Path(value).expanduser().exists():  # a file of a built-in's name wins, as when loading
            return None
        name, _, subset = value.partition(":")
        if name in self.BUILTIN:
            return _builtin_data_problem(name, subset)
        return f"file not found: {value}"


def offline() -> bool:
    """Whether the user asked for no network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set to 1)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _builtin_data_problem(name: str, subset: str) -> str | None:
    from prefalign.catalog import HHH_PATH_ENV as PATH_ENV
    from prefalign.catalog import HHH_SUBSETS as SUBSETS
    from prefalign.catalog import hhh_available_offline

    if subset and subset not in SUBSETS:
        return f"unknown {name} subset {subset!r}; expected one of {', '.join(SUBSETS)}"
    if not offline() or hhh_available_offline():
        return None
    return (
        f"built-in set 'hhh' is not cached and cannot be fetched offline ({_offline_var()} is set); "
        f"set {PATH_ENV} to a local bigbench-1.0.0.tar.gz or hhh_alignment folder"
    )


def _offline_var() -> str:
    return next(f"{v}={os.environ[v]}" for v in _OFFLINE_VARS if v in os.environ and offline())


class ModelName(Check):
    """A built-in model name, an existing local folder, or (online) a model on the Hugging Face hub.

    Offline (``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``) a hub name passes only when it is in
    the local hub cache; online it is looked up with ``huggingface_hub.model_info``. Nothing here
    imports torch or transformers. ``optional=True`` lets the empty string mean "none".
    """

    def __init__(self, *, optional: bool = False) -> None:
        self.optional = optional

    def problem(self, value: Any) -> str | None:
        if value == "":
            return None if self.optional else "is empty: name a built-in model, a local folder or a hub model"
        from prefalign.catalog import BUILTIN_MODEL_NAMES

        if value in BUILTIN_MODEL_NAMES:
            return None
        path = Path(value).expanduser()
        if path.is_dir():
            return None
        builtins = ", ".join(BUILTIN_MODEL_NAMES)
        if path.exists():
            return f"not a model folder: {value}"
        if value.startswith((".", "/", "~")) or value.count("/") > 1 or os.sep + os.sep in value:
            return f"folder not found: {value}"
        return _hub_model_problem(value, builtins)


def _hub_model_problem(name: str, builtins: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except Exception:  # noqa: BLE001 - an invalid repo id: fall through to the messages below
        pass
    if offline():
        return (
            f"unknown model {name!r}: not a built-in ({builtins}), a local folder, or a cached hub "
            f"model ({_offline_var()} is set)"
        )
    try:
        from huggingface_hub import model_info
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        model_info(name, timeout=10)
    except GatedRepoError:
        return None  # it exists; access is checked when it loads
    except RepositoryNotFoundError:
        return f"unknown model {name!r}: not a built-in ({builtins}), a local folder, or a hub model"
    except Exception as err:  # noqa: BLE001 - network or id errors become one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return (
            f"cannot check hub model {name!r} ({first}); built-ins: {builtins}; "
            "set HF_HUB_OFFLINE=1 to use only local and cached models"
        )
    return None


LR_SCHEDULERS = ("constant", "linear", "cosine")
"""Learning-rate schedules of ``train.lr_scheduler`` (all after ``warmup_steps`` of linear warm-up)."""


@dataclasses.dataclass
class ModelConfig:
    """Which model to train and how."""

    name: Annotated[str, ModelName()] = "tiny-causal-lm"
    """Built-in name (see ``prefalign models``), a local HF folder, or a hub name when online."""
    lora: bool = False
    """Train LoRA adapters instead of all weights; the reference model is then the base with
    adapters disabled, so no second copy is held in memory."""
    lora_r: Annotated[int, AtLeast(1)] = 16
    """LoRA rank."""
    lora_alpha: Annotated[int, AtLeast(1)] = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: Annotated[float, InRange(0, 1, hi_open=True)] = 0.0
    """Dropout on the LoRA input; 0 keeps runs deterministic and resumable."""
    lora_target_modules: Annotated[str, NonEmpty()] = "all-linear"
    """'all-linear' or a comma-separated list of module names (e.g. 'q_proj,v_proj')."""


@dataclasses.dataclass
class DataConfig:
    """Where the training rows come from and how they are tokenised."""

    train: Annotated[str, DataSource()] = ""
    """Training data: a JSONL/Parquet/CSV file, a saved ``datasets`` folder, or a built-in name (e.g. 'hhh')."""
    eval: Annotated[str, DataSource(optional=True)] = ""
    """Held-out data in the same forms; empty means carve ``eval_fraction`` out of ``train``."""
    eval_fraction: Annotated[float, InRange(0, 1, hi_open=True)] = 0.0
    """Fraction of ``train`` held out for evaluation when ``eval`` is empty (split by ``seed``)."""
    max_length: Annotated[int, AtLeast(1)] = 512
    """Maximum tokens of prompt + completion; completions are truncated to fit."""
    max_prompt_length: Annotated[int, AtLeast(1)] = 256
    """Maximum prompt tokens; longer prompts keep their last tokens (the end matters most)."""
    on_error: Annotated[str, OneOf("raise", "skip")] = "raise"
    """'raise' stops at the first bad row; 'skip' keeps valid rows and writes DIR/rejected_rows.jsonl."""

    def validate(self) -> None:
        """Cross-field checks, run when the config is read (after the field checks pass).

        A message that starts with a field name (``"eval_fraction: ..."``) is located like a field
        check, so it names the file and the dotted key."""
        if self.eval and self.eval_fraction > 0:
            raise ConfigError(
                f"eval_fraction: {self.eval_fraction:g} would be ignored because eval names held-out "
                "data; set one of them"
            )


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing, shared by every recipe."""

    learning_rate: Annotated[float, Above(0)] = 1e-5
    """Peak learning rate of AdamW."""
    batch_size: Annotated[int, AtLeast(1)] = 8
    """Examples (pairs for dpo/reward) per optimizer step, summed over processes and micro-batches."""
    micro_batch_size: Annotated[int, AtLeast(1)] = 8
    """Examples per forward pass; batch_size / micro_batch_size micro-batches are accumulated."""
    epochs: Annotated[float, Above(0)] = 1.0
    """Passes over the training data (ignored when max_steps > 0)."""
    max_steps: Annotated[int, AtLeast(0)] = 0
    """Stop after this many optimizer steps; 0 means run for ``epochs``."""
    warmup_steps: Annotated[int, AtLeast(0)] = 0
    """Linear warm-up steps."""
    lr_scheduler: Annotated[str, OneOf(*LR_SCHEDULERS)] = "linear"
    """'constant', 'linear' (decay to 0) or 'cosine'."""
    weight_decay: Annotated[float, AtLeast(0)] = 0.0
    """AdamW weight decay."""
    max_grad_norm: Annotated[float, AtLeast(0)] = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    seed: Annotated[int, AtLeast(0)] = 0
    """Seed for initialisation, data order and sampling."""
    save_every: Annotated[int, AtLeast(0)] = 0
    """Write a checkpoint every N optimizer steps; 0 writes one only at the end."""
    keep_checkpoints: Annotated[int, AtLeast(1)] = 2
    """How many recent checkpoints to keep on disk."""
    log_every: Annotated[int, AtLeast(1)] = 10
    """Print the step's metrics under the progress bar every N steps and at the last step
    (metrics.jsonl always gets every step)."""
    eval_every: Annotated[int, AtLeast(0)] = 0
    """Evaluate on held-out data every N steps; 0 evaluates only at the end."""
    precision: Annotated[str, OneOf("auto", "native", "fp32", "bf16")] = "auto"
    """'bf16': bfloat16 autocast for forward and backward (trained weights, gradients and
    optimizer state stay fp32; frozen linear weights are stored in bf16); 'fp32': none; 'auto':
    bf16 on a GPU that supports it, fp32 on a CPU; 'native': bf16 wherever the hardware runs bf16
    matmuls natively, a CPU with AVX512-BF16 or AMX included (~2.4x faster LoRA training there,
    docs/BENCHMARKS.md), fp32 elsewhere (an emulated bf16 is slower than fp32)."""


def _unwrap(tp: Any) -> tuple[Any, list[Check]]:
    """``Annotated[X | None, Check(...)]`` -> ``(X, [Check(...)])``."""
    checks: list[Check] = []
    while typing.get_origin(tp) is Annotated:
        checks += [m for m in tp.__metadata__ if isinstance(m, Check)]
        tp = tp.__origin__
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            inner, inner_checks = _unwrap(args[0])
            return inner, checks + inner_checks
    return tp, checks


def _optional(tp: Any) -> bool:
    """True for ``X | None`` (inside ``Annotated`` or not): YAML's null is then a value."""
    while typing.get_origin(tp) is Annotated:
        tp = tp.__origin__
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except NameError as err:  # a check naming a registry the module does not define
        raise TypeError(f"{cls.__name__}: cannot resolve a field annotation: {err}") from err


_EXPECTED = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def _expected(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping (a section)"
    return _EXPECTED.get(typing.get_origin(tp) or tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str, label: Label) -> Any:
    """``value`` (from YAML or a dict) as type ``tp``, or a ConfigError at ``label(key)``."""
    if value is None and _optional(tp):
        return None
    tp, _ = _unwrap(tp)
    if value is None and tp is str:
        return ""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{label(key)}: expected {_expected(tp)}, got {value!r}")
        return _construct(tp, value, key, label)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{label(key)}: expected a finite number, got {value!r}")
    origin = typing.get_origin(tp) or tp
    if origin in (int, float, str, bool, list, dict):
        if not isinstance(value, origin) or (origin is int and isinstance(value, bool)):
            raise ConfigError(f"{label(key)}: expected {_expected(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if origin is list and args:
            value = [_coerce(v, args[0], f"{key}[{i}]", label) for i, v in enumerate(value)]
    return value


class Label:
    """Where a dotted key's value came from, for messages: ``file[section].key`` or just ``key``.

    Values read from ``where`` (a file, or the dict given to :func:`build_config`) are named with it;
    values from overrides, CLI flags or defaults are named by their dotted key alone.
    """

    def __init__(self, where: str = "", from_where: set[str] | None = None) -> None:
        self.where = where
        self.from_where = from_where or set()

    def __call__(self, key: str) -> str:
        if not key:
            return self.where or "config"
        return f"{self.where}.{key}" if self.where and key in self.from_where else key


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in tree.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        keys.add(dotted)
        if isinstance(v, dict):
            keys |= _dotted_keys(v, dotted)
    return keys


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _construct(cls: type[T], data: dict[str, Any], prefix: str, label: Label) -> T:
    hints = _hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{label(prefix)}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k), label) for k, v in data.items()}
    return cls(**kwargs)


def _check(obj: Any, prefix: str, label: Label) -> None:
    """Run every field's checks (depth first, in field order), then ``obj.validate()`` if any."""
    hints = _hints(type(obj))
    for field in dataclasses.fields(obj):
        key = _join(prefix, field.name)
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check(value, key, label)
            continue
        _, checks = _unwrap(hints[field.name])
        for check in checks:
            if value is None:
                break
            problem = check.problem(value)
            if problem is not None:
                raise ConfigError(f"{label(key)}: {problem}")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(_locate(str(err), obj, prefix, label)) from None


def _locate(message: str, obj: Any, prefix: str, label: Label) -> str:
    """A ``validate()`` message, located: one starting ``key: ...`` (a key of ``obj``, dotted) is
    named like a field check; any other gets the location of ``obj`` itself."""
    head, sep, rest = message.partition(": ")
    if sep:
        try:
            _field_type(type(obj), head)
        except ConfigError:
            pass
        else:
            return f"{label(_join(prefix, head))}: {rest}"
    where = label(prefix) if prefix or label.where else ""
    return f"{where}: {message}" if where else message


def _build(cls: type[T], data: dict[str, Any], label: Label) -> T:
    """Construct ``cls`` from ``data`` (types checked), then run every field's checks and validate()."""
    config = _construct(cls, data, "", label)
    _check(config, "", label)
    return config


def build_config(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """``cls`` from a nested dict (sections as dicts), type-checked and checked like a YAML file."""
    return _build(cls, data, Label(where, _dotted_keys(data)))


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part!r} is not a section")
    node[parts[-1]] = value


def _field_type(cls: type, dotted: str) -> Any:
    """The annotated type of ``dotted`` in ``cls`` (sections walked), or a ConfigError naming the key."""
    tp: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        section = ".".join(parts[:i])
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{dotted}: {section} is not a section")
        hints = _hints(tp)
        if part not in hints or part not in {f.name for f in dataclasses.fields(tp)}:
            valid = sorted(f.name for f in dataclasses.fields(tp))
            where = f" in {section}" if section else ""
            raise ConfigError(f"{dotted}: unknown key {part!r}{where}; valid keys: {valid}")
        tp = _unwrap(hints[part])[0]
    return hints[parts[-1]]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(raw: str, tp: Any, key: str) -> Any:
    """The override text ``raw`` as a value of field type ``tp``.

    An optional field takes ``null`` (or ``none``, ``~``) as None. A string field takes the text as
    it is (no YAML: ``my data #1.jsonl`` and ``1e3`` stay strings);
    booleans, integers and numbers are parsed strictly; YAML is used only for lists, mappings and
    sections. Errors are one-line ConfigErrors naming ``key``.
    """
    base, _ = _unwrap(tp)
    text = raw.strip()
    if _optional(tp) and text.lower() in ("null", "none", "~"):
        return None
    if base is str:
        return raw
    if base is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    if base is int:
        if re.fullmatch(r"[+-]?\d[\d_]*", text):
            return int(text)
        raise ConfigError(f"{key}: expected an integer, got {raw!r}")
    if base is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {raw!r}")
        return value
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse {raw!r} as {_expected(base)}: {_yaml_problem(err)}") from None
    return _coerce(value, tp, key, Label())


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line from a (multi-line) YAML error: the problem and where it is."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def parse_overrides(overrides: list[str], cls: type) -> dict[str, Any]:
    """Turn ``["train.learning_rate=1e-4", "model.lora=true"]`` into a nested dict of typed values.

    Each value is parsed by the type of the field its key names in ``cls`` (see :func:`parse_value`);
    an unknown key is an error that lists the valid ones.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.learning_rate=1e-4")
        _set_dotted(tree, key, parse_value(raw, _field_type(cls, key), key))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path, section: str | None = None) -> tuple[dict[str, Any], str]:
    """The mapping in a YAML config file (its ``section`` when it has one) and its label for messages."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{path}: cannot read the config file: {getattr(err, 'strerror', None) or err}"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    if section is not None and section in loaded and isinstance(loaded[section], dict):
        return loaded[section], f"{path}[{section}]"
    return loaded, str(path)


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    section: str | None = None,
    values: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, then the YAML file, then dotted overrides, then ``values`` (last wins),
    and check every value (types, ranges, choices, files, model names) before returning.

    When the file has a top-level key equal to ``section`` (the command name), only that section
    is read, so one file can configure several commands. ``values`` maps dotted keys to typed
    values set by the caller (e.g. the CLI's ``--output-dir``); they are not parsed as text.
    Raises :class:`ConfigError` with a one-line message naming the key (and the file).
    """
    data: dict[str, Any] = {}
    where = ""
    if path is not None:
        data, where = read_config_file(path, section)
    from_file = _dotted_keys(data)
    extra = parse_overrides(list(overrides or []), cls)
    for key, value in (values or {}).items():
        _field_type(cls, key)
        _set_dotted(extra, key, value)
    from_file -= {k for k in _dotted_keys(extra) if not isinstance(_get_dotted(extra, k), dict)}
    return _build(cls, _merge(data, extra), Label(where, from_file))


def _get_dotted(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for YAML and JSON)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    from prefalign.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False))
