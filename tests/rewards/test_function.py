"""Python-function rewards (prefalign.rewards.function): loaded from a file or a module, called once
per batch with (prompts, completions), every failure a one-line ConfigError naming the key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefalign.config import ConfigError
from prefalign.rewards import FunctionReward, load_function
from prefalign.rewards.function import spec_problem, split_spec

SOURCE = """
import dataclasses

CALLS = []

@dataclasses.dataclass  # needs its module in sys.modules: a plain exec would break this
class Counter:
    n: int = 0

def length_reward(prompts, completions):
    CALLS.append((list(prompts), list(completions)))
    return [len(c) / 10 for c in completions]

def bad_length(prompts, completions):
    return [1.0]

def words(prompts, completions):
    return ["many"] * len(completions)

def nan(prompts, completions):
    return [float("nan")] * len(completions)

def boom(prompts, completions):
    raise KeyError("user bug")

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def reward_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(SOURCE)
    return path


def test_a_file_function_gets_prompts_and_completions_once_per_batch(reward_file: Path, make_sample) -> None:
    reward = FunctionReward.load(f"{reward_file}:length_reward")
    chat = [{"role": "user", "content": "Hi"}]
    samples = [make_sample("abcd"), make_sample("", prompt=chat), make_sample("x" * 15)]
    breakdown = reward.score(samples)
    assert breakdown.total.tolist() == pytest.approx([0.4, 0.0, 1.5])
    assert list(breakdown.parts) == ["function"]
    calls = sys.modules[reward.fn.__module__].CALLS
    assert calls == [(["Say hi.", chat, "Say hi."], ["abcd", "", "x" * 15])]  # prompts as given


def test_a_module_function_is_imported_by_its_dotted_name(tmp_path: Path, monkeypatch, make_sample) -> None:
    package = tmp_path / "rewardpkg_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scores.py").write_text(
        "def shout(prompts, completions):\n    return [c.count('!') for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = FunctionReward.load("rewardpkg_test.scores:shout")
    assert reward([make_sample("a!!"), make_sample("b")]).tolist() == [2.0, 0.0]
    assert spec_problem("rewardpkg_test.scores:shout") is None


def test_spec_forms() -> None:
    assert split_spec("a.b:f") == ("a.b", "f", False)
    assert split_spec("dir/x.py:f") == ("dir/x.py", "f", True)
    assert split_spec("x.py:f") == ("x.py", "f", True)
    for bad in ("a.b", "a.b:", ":f", "a b:f", "a.b:f-g", "a..b:f"):
        with pytest.raises(ConfigError, match=r"^function: expected 'package\.module:function'"):
            split_spec(bad)


def test_spec_problems_found_without_importing(tmp_path: Path) -> None:
    assert (
        spec_problem("nosuch_pkg_xyz.mod:f") == "no module named 'nosuch_pkg_xyz' (in 'nosuch_pkg_xyz.mod:f')"
    )
    assert spec_problem(f"{tmp_path}/none.py:f") == f"file not found: {tmp_path}/none.py"
    assert spec_problem("os.path:join") is None


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("missing", r"^function: .*my_rewards\.py has no attribute 'missing'$"),
        ("NOT_A_FUNCTION", r"^function: .*my_rewards\.py:NOT_A_FUNCTION is a int, not a function$"),
    ],
)
def test_missing_or_wrong_attributes(reward_file: Path, attr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_function(f"{reward_file}:{attr}")


def test_import_failures_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import nosuch_module_for_reward_test\n")
    with pytest.raises(ConfigError) as err:
        load_function(f"{broken}:f")
    assert str(err.value) == (
        f"function: cannot import {broken}: ModuleNotFoundError: No module named 'nosuch_module_for_reward_test'"
    )
    with pytest.raises(ConfigError, match=r"^function: file not found: .*none\.py$"):
        load_function(f"{tmp_path}/none.py:f")
    with pytest.raises(ConfigError, match=r"^function: cannot import nosuch_pkg_xyz\.m: ModuleNotFoundError"):
        load_function("nosuch_pkg_xyz.m:f")


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("bad_length", r"^function: .*my_rewards\.py:bad_length: returned 1 values for 2 samples$"),
        ("words", r"^function: .*:words: expected 2 numbers, got values of type str$"),
        ("nan", r"^function: .*:nan: value 0 is nan; rewards must be finite$"),
    ],
)
def test_wrong_returns_are_config_errors_naming_the_function(
    reward_file: Path, attr: str, message: str, make_sample
) -> None:
    reward = FunctionReward.load(f"{reward_file}:{attr}")
    with pytest.raises(ConfigError, match=message) as err:
        reward([make_sample("a"), make_sample("b")])
    assert "\n" not in str(err.value)


def test_errors_raised_by_the_function_itself_keep_their_type(reward_file: Path, make_sample) -> None:
    reward = FunctionReward.load(f"{reward_file}:boom")
    with pytest.raises(KeyError, match="user bug"):
        reward([make_sample("a")])
