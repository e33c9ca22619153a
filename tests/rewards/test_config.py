"""RewardConfig (checked when read, one-line errors naming the key) and build_reward end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from prefalign.config import ConfigError, build_config, load_config, save_config
from prefalign.rewards import RewardConfig, RewardModelReward, ShapedReward, build_reward


@dataclasses.dataclass
class RLConfig:
    """A recipe embedding the reward section, as PPO/GRPO configs will."""

    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)


def _config(**reward: object) -> RLConfig:
    return build_config(RLConfig, {"reward": reward}, "c.yaml")


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        ({}, "c.yaml.reward: no reward configured: set at least one of model, function, rules or scorer"),
        ({"model": ["./no/such/rm"]}, "c.yaml.reward.model: entry 0: folder not found: ./no/such/rm"),
        ({"model": "tiny-reward"}, "c.yaml.reward.model: expected a list, got 'tiny-reward'"),
        (
            {"rules": [{"patern": "x"}]},
            "reward.rules[0]: unknown key(s) ['patern']; valid keys: ['pattern', 'weight']",
        ),
        (
            {"rules": [{"pattern": "x", "weight": "high"}]},
            "reward.rules[0].weight: expected a number, got 'high'",
        ),
        (
            {"rules": [{"pattern": "ok"}, {"pattern": "(x"}]},
            "c.yaml.reward.rules: entry 1: not a valid regular expression '(x': "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            {"rules": [{"pattern": ""}]},
            "c.yaml.reward.rules: entry 0: pattern is empty (it would match every completion)",
        ),
        (
            {"function": "no_such_pkg_q.m:f"},
            "c.yaml.reward.function: no module named 'no_such_pkg_q' (in 'no_such_pkg_q.m:f')",
        ),
        ({"function": "./nope.py:f"}, "c.yaml.reward.function: file not found: ./nope.py"),
        (
            {"function": "module.f"},
            "c.yaml.reward.function: expected 'package.module:function' or 'path/to/file.py:function', got 'module.f'",
        ),
        (
            {"scorer": "precomputed"},
            "c.yaml.reward.scorer: expected one of none, blocklist, vader; got 'precomputed'",
        ),
        (
            {"scorer": "blocklist", "scorer_patterns": ["(x"]},
            "c.yaml.reward.scorer_patterns: not a valid regular expression",
        ),
        (
            {"scorer": "vader", "weights": {"model": 1.0}},
            "c.yaml.reward.weights: 'model' is not a configured component; configured: scorer",
        ),
        (
            {"scorer": "vader", "weights": {"scorer": "x"}},
            "c.yaml.reward.weights: 'scorer' must be a finite number, got 'x'",
        ),
        (
            {"scorer": "vader", "uncertainty_penalty": 1},
            "c.yaml.reward.uncertainty_penalty: set only with a reward model",
        ),
        ({"scorer": "vader", "length_penalty": -0.1}, "c.yaml.reward.length_penalty: must be >= 0, got -0.1"),
        (
            {"scorer": "vader", "missing_eos_penalty": -1},
            "c.yaml.reward.missing_eos_penalty: must be >= 0, got -1",
        ),
        ({"scorer": "vader", "normalize": True}, "c.yaml.reward.normalize: expected a string, got True"),
        (
            {"scorer": "vader", "normalize": "whiten"},
            "c.yaml.reward.normalize: expected one of none, scale, standardize",
        ),
        ({"scorer": "vader", "batch_size": 0}, "c.yaml.reward.batch_size: must be >= 1, got 0"),
    ],
)
def test_bad_configs_are_one_line_errors_naming_the_key(reward: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(**reward)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_the_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = _config(rules=[{"pattern": "a", "weight": 2}], weights={"rules": 0.5}, normalize="scale")
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["reward"]["rules"] == [
        {"pattern": "a", "weight": 2.0}
    ]
    assert load_config(RLConfig, tmp_path / "config.yaml") == cfg
    overridden = load_config(
        RLConfig, tmp_path / "config.yaml", ["reward.weights={rules: 3}", "reward.rules=[{pattern: b}]"]
    )
    assert overridden.reward.weights == {"rules": 3} and overridden.reward.rules[0].pattern == "b"
    assert overridden.reward.rules[0].weight == 1.0


def test_every_component_summed_with_its_weight_then_shaped(
    tiny_cache: Path, tmp_path: Path, make_sample
) -> None:
    (tmp_path / "fn.py").write_text(
        "def exclaim(prompts, completions):\n    return [c.count('!') for c in completions]\n"
    )
    cfg = _config(
        model=["tiny-reward"],
        function=f"{tmp_path}/fn.py:exclaim",
        rules=[{"pattern": "(?i)hello", "weight": 1.0}, {"pattern": "stupid", "weight": -2.0}],
        scorer="blocklist",
        weights={"model": 0.5, "function": 2.0, "scorer": 3.0},  # rules keep weight 1
        length_penalty=0.1,
        missing_eos_penalty=1.0,
        max_length=64,
        max_prompt_length=16,
    ).reward
    reward = build_reward(cfg)
    samples = [
        make_sample("Hello!!", tokens=3),
        make_sample("you stupid thing", tokens=5, finished=False),
        make_sample("fine.", tokens=2),
    ]
    breakdown = reward.score(samples)
    model = breakdown.parts["model"]
    assert breakdown.parts["function"].tolist() == [2.0, 0.0, 0.0]
    assert breakdown.parts["rules"].tolist() == [1.0, -2.0, 0.0]
    assert breakdown.parts["scorer"].tolist() == [0.0, -1.0, 0.0]
    # 0.5 m + 2 f + r + 3 s - 0.1 n - [not finished]
    hand = torch.tensor([4.0 + 1.0 - 0.3, -2.0 - 3.0 - 0.5 - 1.0, -0.2])
    torch.testing.assert_close(breakdown.total, 0.5 * model + hand)
    direct = RewardModelReward.load(["tiny-reward"], max_length=64, max_prompt_length=16)(samples)
    torch.testing.assert_close(model, direct)
    assert set(breakdown.metrics()) == {
        f"reward/{k}"
        for k in (
            "model",
            "function",
            "rules",
            "scorer",
            "sum",
            "length_penalty",
            "missing_eos_penalty",
            "total",
        )
    }


def test_normalising_builds_a_resumable_normaliser(make_sample) -> None:
    samples = [make_sample(t) for t in ("yes", "no", "yes yes")]
    cfg = _config(rules=[{"pattern": "yes", "weight": 1.0}], normalize="standardize").reward
    reward = build_reward(cfg)
    assert isinstance(reward, ShapedReward) and reward.normalizer is not None and reward.normalizer.shift_mean
    first = reward(samples)
    # rules: 1, 0, 1 -> mean 2/3, unbiased std sqrt(1/3)
    torch.testing.assert_close(first, (torch.tensor([1.0, 0.0, 1.0]) - 2 / 3) / (1 / 3) ** 0.5)
    resumed = build_reward(cfg)
    resumed.load_state_dict(reward.state_dict())
    assert torch.equal(resumed(samples), reward(samples))
    assert (
        build_reward(_config(rules=[{"pattern": "y"}], normalize="scale").reward).normalizer.shift_mean
        is False
    )
    assert build_reward(_config(rules=[{"pattern": "y"}]).reward).normalizer is None


def test_import_failures_surface_when_built(tmp_path: Path) -> None:
    (tmp_path / "fn.py").write_text("def other(prompts, completions):\n    return []\n")
    cfg = _config(function=f"{tmp_path}/fn.py:exclaim").reward  # the file exists: the config reads fine
    with pytest.raises(ConfigError, match=r"^function: .*fn\.py has no attribute 'exclaim'$"):
        build_reward(cfg)
