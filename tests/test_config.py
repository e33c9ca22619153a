from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefalign.config import ConfigError, load_config, parse_overrides, save_config
from prefalign.recipes.dpo import DPOConfig


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("beta: 0.2\ntrain: {learning_rate: 1.0e-4, batch_size: 4}\n")
    cfg = load_config(DPOConfig, path, ["train.batch_size=2", "model.lora=true", "train.learning_rate=3e-5"])
    assert cfg.beta == 0.2
    assert cfg.train.batch_size == 2
    assert cfg.train.learning_rate == pytest.approx(3e-5)
    assert cfg.model.lora is True
    assert cfg.train.micro_batch_size == 8  # default kept


def test_sections_select_the_command(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dpo: {beta: 0.5}\nsft: {output_dir: x}\n")
    assert load_config(DPOConfig, path, section="dpo").beta == 0.5


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: {learnin_rate: 1.0}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*train.*learnin_rate"):
        load_config(DPOConfig, path)


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(DPOConfig, None, ["train.batch_size=many"])


def test_override_parsing() -> None:
    assert parse_overrides(["a.b=1", "a.c=x", "d=true"]) == {"a": {"b": 1, "c": "x"}, "d": True}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(DPOConfig, None, ["beta=0.3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(DPOConfig, tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["beta"] == 0.3
