from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefalign.config import (
    Above,
    AtLeast,
    ConfigError,
    DataSource,
    InRange,
    ModelName,
    OneOf,
    TrainConfig,
    build_config,
    load_config,
    parse_overrides,
    parse_value,
    save_config,
)
from prefalign.recipes.dpo import DPOConfig

PAIRS = "configs/data/tiny_pairs.jsonl"  # tests run from the repository root
DATA = f"data.train={PAIRS}"


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"beta: 0.2\ndata: {{train: {PAIRS}}}\ntrain: {{learning_rate: 1.0e-4, batch_size: 4}}\n")
    cfg = load_config(DPOConfig, path, ["train.batch_size=2", "model.lora=true", "train.learning_rate=3e-5"])
    assert cfg.beta == 0.2
    assert cfg.train.batch_size == 2
    assert cfg.train.learning_rate == pytest.approx(3e-5)
    assert cfg.model.lora is True
    assert cfg.train.micro_batch_size == 8  # default kept


def test_sections_select_the_command(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"dpo: {{beta: 0.5, data: {{train: {PAIRS}}}}}\nsft: {{output_dir: x}}\n")
    assert load_config(DPOConfig, path, section="dpo").beta == 0.5


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: {learnin_rate: 1.0}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*train.*learnin_rate"):
        load_config(DPOConfig, path)


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^train\.batch_size: expected an integer, got 'many'$"):
        load_config(DPOConfig, None, [DATA, "train.batch_size=many"])


def test_overrides_parse_by_the_field_type() -> None:
    tree = parse_overrides(
        ["train.batch_size=4", "train.learning_rate=1e-4", "model.lora=true", "output_dir=1e3", "loss=ipo"],
        DPOConfig,
    )
    assert tree == {
        "train": {"batch_size": 4, "learning_rate": 1e-4},
        "model": {"lora": True},
        "output_dir": "1e3",  # a str field takes the text as it is: no YAML, no number
        "loss": "ipo",
    }
    assert isinstance(tree["train"]["learning_rate"], float)
    # No YAML for strings: '#' starts no comment, spaces and colons stay, 'null' is a name.
    assert parse_value("my data #1.jsonl", str, "data.train") == "my data #1.jsonl"
    assert parse_value("a: b", str, "k") == "a: b"
    assert parse_value("null", str, "k") == "null"
    assert parse_value("", str, "k") == ""
    assert parse_value(" 8 ", int, "k") == 8
    assert parse_value("1_000", int, "k") == 1000
    assert parse_value("2", float, "k") == 2.0
    assert parse_value("Off", bool, "k") is False
    assert parse_value("[a, 'b c']", list[str], "k") == ["a", "b c"]  # YAML only where a list is expected


@pytest.mark.parametrize(
    ("raw", "tp", "message"),
    [
        ("abc", int, "k: expected an integer, got 'abc'"),
        ("1.5", int, "k: expected an integer, got '1.5'"),
        ("1e3", int, "k: expected an integer, got '1e3'"),
        ("true", int, "k: expected an integer, got 'true'"),
        ("fast", float, "k: expected a number, got 'fast'"),
        ("inf", float, "k: expected a finite number, got 'inf'"),
        ("maybe", bool, "k: expected true or false, got 'maybe'"),
        ("[x", list[str], "k: cannot parse '[x' as a list: "),
        ("{a: 1}", list[str], "k: expected a list, got {'a': 1}"),
        ("[1, 2]", list[str], "k[0]: expected a string, got 1"),
    ],
)
def test_override_values_are_parsed_strictly(raw: str, tp: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_value(raw, tp, "k")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_override_keys_must_exist() -> None:
    with pytest.raises(
        ConfigError, match=r"^train\.learnin_rate: unknown key 'learnin_rate' in train; valid"
    ):
        parse_overrides(["train.learnin_rate=1"], DPOConfig)
    with pytest.raises(ConfigError, match=r"^nope: unknown key 'nope'; valid keys: \['beta', "):
        parse_overrides(["nope=1"], DPOConfig)
    with pytest.raises(ConfigError, match=r"^train\.batch_size\.x: train\.batch_size is not a section$"):
        parse_overrides(["train.batch_size.x=1"], DPOConfig)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"], DPOConfig)


@pytest.mark.parametrize(
    ("check", "value", "problem"),
    [
        (AtLeast(1), 0, "must be >= 1, got 0"),
        (AtLeast(1), 1, None),
        (Above(0), 0.0, "must be > 0, got 0"),
        (Above(0), -0.5, "must be > 0, got -0.5"),
        (Above(0), 1e-9, None),
        (Above(0), float("nan"), "must be > 0, got nan"),
        (InRange(0, 1, hi_open=True), 1.0, "must be in [0, 1), got 1"),
        (InRange(0, 1, hi_open=True), 0.0, None),
        (InRange(0, 1, lo_open=True), 0, "must be in (0, 1], got 0"),
        (InRange(0, 0.5), 0.75, "must be in [0, 0.5], got 0.75"),
        (OneOf("constant", "linear", "cosine"), "foo", "expected one of constant, linear, cosine; got 'foo'"),
        (OneOf(*{"a": 1, "b": 2}), "b", None),
        (
            DataSource(),
            "",
            "is empty: name a JSONL/Parquet/CSV/TXT file, a saved datasets folder, or a built-in set (hhh)",
        ),
        (DataSource(optional=True), "", None),
        (DataSource(), "x.jsonl", "file not found: x.jsonl"),
        (DataSource(), PAIRS, None),
        (DataSource(), "configs/data", None),
        (
            DataSource(),
            "hhh:nope",
            "unknown hhh subset 'nope'; expected one of harmless, helpful, honest, other",
        ),
        (ModelName(), "tiny-causal-lm", None),
        (ModelName(), "configs", None),  # any existing folder passes here; loading says if it is no model
        (ModelName(), "./no/such/folder", "folder not found: ./no/such/folder"),
        (ModelName(), "", "is empty: name a built-in model, a local folder or a hub model"),
        (ModelName(optional=True), "", None),
    ],
)
def test_checks_against_hand_worked_messages(check: object, value: object, problem: str | None) -> None:
    assert check.problem(value) == problem  # type: ignore[attr-defined]


def test_checks_run_when_the_config_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^train\.batch_size: must be >= 1, got 0$"):
        load_config(DPOConfig, None, [DATA, "train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"^data\.train: is empty: name a JSONL"):
        load_config(DPOConfig, None, [])  # defaults are checked too: there is no default data
    # A bad value read from a file is named with the file and section; the same value given as an
    # override is named by its key alone.
    path = tmp_path / "c.yaml"
    path.write_text(f"dpo:\n  data: {{train: {PAIRS}}}\n  train: {{lr_scheduler: foo}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(DPOConfig, path, section="dpo")
    assert (
        str(info.value)
        == f"{path}[dpo].train.lr_scheduler: expected one of constant, linear, cosine; got 'foo'"
    )
    with pytest.raises(ConfigError, match=r"^beta: must be > 0, got -1$"):
        load_config(DPOConfig, path, ["beta=-1", "train.lr_scheduler=cosine"], section="dpo")
    # build_config (a dict, e.g. the demo's) checks the same way.
    with pytest.raises(ConfigError, match=r"^demo\.train\.batch_size: must be >= 1, got 0$"):
        build_config(DPOConfig, {"data": {"train": PAIRS}, "train": {"batch_size": 0}}, "demo")
    with pytest.raises(ConfigError, match=r"^warmup_steps: must be >= 0, got -1$"):
        build_config(TrainConfig, {"warmup_steps": -1}, "")


def test_validate_runs_after_the_field_checks_and_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^label_smoothing: loss 'ipo' has no label smoothing; set it to 0$"
    ):
        load_config(DPOConfig, None, [DATA, "loss=ipo", "label_smoothing=0.1"])
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{train: {PAIRS}, eval: {PAIRS}, eval_fraction: 0.2}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(DPOConfig, path)
    assert str(info.value).startswith(f"{path}.data.eval_fraction: 0.2 would be ignored")


def test_yaml_files_keep_their_types_and_numbers_without_a_dot(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"data: {{train: {PAIRS}}}\ntrain: {{learning_rate: 1e-4}}\n"
    )  # YAML 1.1: '1e-4' is a str
    assert load_config(DPOConfig, path).train.learning_rate == pytest.approx(1e-4)
    path.write_text(f"data: {{train: {PAIRS}}}\ntrain: {{batch_size: 2.5}}\n")
    with pytest.raises(ConfigError, match=r"\.train\.batch_size: expected an integer, got 2\.5$"):
        load_config(DPOConfig, path)
    path.write_text("train: {batch_size: [1, }\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: .*\(line 1, column \d+\)$"):
        load_config(DPOConfig, path)


def test_values_from_flags_are_typed_not_parsed() -> None:
    cfg = load_config(DPOConfig, None, [DATA], values={"output_dir": "1e3", "resume": True})
    assert cfg.output_dir == "1e3" and cfg.resume is True
    with pytest.raises(ConfigError, match=r"^output_dir: must not be empty$"):
        load_config(DPOConfig, None, [DATA], values={"output_dir": ""})


def test_model_names_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    problem = ModelName().problem("someone/some-model")
    assert problem is not None
    assert problem.startswith("unknown model 'someone/some-model': not a built-in (smollm2-135m-instruct, ")
    assert problem.endswith("a local folder, or a cached hub model (HF_HUB_OFFLINE=1 is set)")


def test_builtin_model_names_match_the_registry() -> None:
    from prefalign.catalog import BUILTIN_MODEL_NAMES
    from prefalign.models import BUILTIN_MODELS

    assert {n: m.kind for n, m in BUILTIN_MODELS.items()} == BUILTIN_MODEL_NAMES


def test_reading_a_config_imports_no_torch(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys; from prefalign.config import TrainConfig, DataConfig, build_config; "
        f"build_config(DataConfig, {{'train': 'hhh:helpful'}}); build_config(DataConfig, {{'train': {PAIRS!r}}}); "
        "from prefalign.config import ModelName; assert ModelName().problem('tiny-reward') is None; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFALIGN_HHH_PATH": str(tmp_path)}  # 'hhh' given locally
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(DPOConfig, None, [DATA, "beta=0.3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(DPOConfig, tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["beta"] == 0.3
