"""Bad input to every command ends in one line, ``prefalign <cmd>: error: ...``, and exit status 2.

Each case is a valid invocation with one thing wrong. It runs in-process through
``prefalign.cli.main`` (fast); three run as real processes to prove there is no traceback end to
end. Every value is checked when the config is read, so nothing is written: the run folder under
``tmp_path`` must not exist afterwards.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefalign.cli import RECIPES, main

PAIR = '{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n'

# command -> the extra arguments of a valid baseline ({data} and {tmp} are filled in per test)
BASE: dict[str, list[str]] = {
    "sft": ["model.name=tiny-causal-lm", "data.train={data}"],
    "reward": ["model.name=tiny-reward", "data.train={data}"],
    "dpo": ["model.name=tiny-causal-lm", "data.train={data}"],
    "kto": ["model.name=tiny-causal-lm", "data.train={data}"],
    "listwise": ["model.name=tiny-causal-lm", "data.train={data}"],
    "phf": ["model.name=tiny-causal-lm", "data.train={data}"],
    "contrastive": ["model.name=tiny-causal-lm", "data.train={data}"],
    "grpo": ["model.name=tiny-causal-lm", "data.train={data}"],
    "online-dpo": ["model.name=tiny-causal-lm", "data.train={data}"],
    "rloo": ["model.name=tiny-causal-lm", "data.train={data}"],
    "reinforce": ["model.name=tiny-causal-lm", "data.train={data}"],
    "ppo": ["model.name=tiny-causal-lm", "data.train={data}"],
}

# A valid `prefalign generate` (prompts from the pair file: a pair row has a prompt field).
GEN = ["--model", "tiny-causal-lm", "--prompts", "{data}", "--output", "{tmp}/run/out.jsonl"]

# (argv, text the one-line message must contain). Recipe commands get --output-dir {tmp}/run and
# their baseline first; the overrides given here come last, so they win.
CASES: list[tuple[list[str], str]] = [
    # sft
    (["sft", "train.batch_size=0"], "train.batch_size: must be >= 1, got 0"),
    (["sft", "train.batch_size=abc"], "train.batch_size: expected an integer, got 'abc'"),
    (["sft", "train.batch_size=[x"], "train.batch_size: expected an integer, got '[x'"),
    (
        ["sft", "train.lr_scheduler=foo"],
        "train.lr_scheduler: expected one of constant, linear, cosine; got 'foo'",
    ),
    (["sft", "data.train="], "data.train: is empty: name a JSONL"),
    (["sft", "data.train={tmp}/missing.jsonl"], "data.train: file not found: {tmp}/missing.jsonl"),
    (["sft", "data.train=my data #1.jsonl"], "data.train: file not found: my data #1.jsonl"),
    (["sft", "train.learnin_rate=1"], "train.learnin_rate: unknown key 'learnin_rate' in train"),
    (["sft", "novalue"], "override 'novalue': expected key=value"),
    (["sft", "--config", "{tmp}/missing.yaml"], "config file not found: {tmp}/missing.yaml"),
    (["sft", "--config", "{tmp}/bad.yaml"], "{tmp}/bad.yaml[sft].train.batch_size: must be >= 1, got 0"),
    (["sft", "--config", "{tmp}/broken.yaml"], "{tmp}/broken.yaml: not valid YAML"),
    (["sft", "--output-dir", "{data}"], "output_dir: is a file, not a folder: {data}"),
    (["sft", "--resume", "--overwrite"], "resume and overwrite: pick one"),
    (["sft", "model.name=no-such-model"], "model.name: unknown model 'no-such-model'"),
    (["sft", "model.name={tmp}/no-such-folder"], "model.name: folder not found: {tmp}/no-such-folder"),
    (["sft", "model.lora=maybe"], "model.lora: expected true or false, got 'maybe'"),
    (["sft", "model.lora_dropout=1"], "model.lora_dropout: must be in [0, 1), got 1"),
    # reward
    (
        ["reward", "objective=foo"],
        "objective: expected one of bradley_terry, plackett_luce, mse, ordinal; got 'foo'",
    ),
    (["reward", "ensemble_size=0"], "ensemble_size: must be >= 1, got 0"),
    (["reward", "benchmark={tmp}/missing.jsonl"], "benchmark: file not found: {tmp}/missing.jsonl"),
    (["reward", "objective=ordinal"], "rating_scale: the ordinal objective needs the scale"),
    (["reward", "rating_consensus=vote"], "rating_consensus: expected one of"),
    # dpo
    (["dpo", "beta=-1"], "beta: must be > 0, got -1"),
    (["dpo", "beta=nan"], "beta: expected a finite number, got 'nan'"),
    (["dpo", "loss=kto"], "loss: expected one of sigmoid"),
    (["dpo", "loss=ipo", "label_smoothing=0.1"], "label_smoothing: loss 'ipo' has no label smoothing"),
    (["dpo", "label_smoothing=0.5"], "label_smoothing: must be in [0, 0.5), got 0.5"),
    (["dpo", "reference_model={tmp}/no-ref"], "reference_model: folder not found: {tmp}/no-ref"),
    (["dpo", "data.on_error=foo"], "data.on_error: expected one of raise, skip; got 'foo'"),
    (["dpo", "data.train=hhh"], "data.train: built-in set 'hhh' is not cached and cannot be fetched offline"),
    (["dpo", "data.train=hhh:nope"], "data.train: unknown hhh subset 'nope'"),
    (["dpo", "data.eval_fraction=1"], "data.eval_fraction: must be in [0, 1), got 1"),
    (["dpo", "data.eval={tmp}/missing.jsonl"], "data.eval: file not found: {tmp}/missing.jsonl"),
    (["dpo", "train.learning_rate=0"], "train.learning_rate: must be > 0, got 0"),
    # kto, listwise
    (["kto", "train.batch_size=1"], "train.batch_size: must be >= 2 for KTO"),
    (["kto", "undesirable_weight=0"], "undesirable_weight: must be > 0, got 0"),
    (["listwise", "sft_coef=-0.5"], "sft_coef: must be >= 0, got -0.5"),
    (["listwise", "train.epochs=0"], "train.epochs: must be > 0, got 0"),
    # phf
    (["phf", "objective=foo"], "objective: expected one of"),
    (["phf", "segmentation=word"], "segmentation: expected one of"),
    (["phf", "scorer.name=toxic"], "scorer.name: expected one of blocklist, vader, precomputed; got 'toxic'"),
    (["phf", "scorer.patterns=[x"], "scorer.patterns: cannot parse '[x' as a list"),
    (["phf", "scorer.patterns=['(']"], "scorer.patterns: not a valid regular expression '('"),
    (["phf", "bad_token=<|good|>"], "bad_token: must differ from good_token"),
    (["phf", "generation.top_p=0"], "top_p"),  # rollout.SamplingConfig: checked by PHFConfig.validate
    (["phf", "threshold_percentile=100"], "threshold_percentile: must be in [0, 100), got 100"),
    # contrastive
    (["contrastive", "temperature=0"], "temperature: must be > 0, got 0"),
    (
        ["contrastive", "score=representation", "reference=true"],
        "reference: true applies to score 'likelihood' only",
    ),
    (["contrastive", "score=cosine"], "score: expected one of likelihood, representation; got 'cosine'"),
    # reward-eval, models, demo, data
    (
        ["reward-eval", "--model", "{tmp}/no-model", "--data", "{data}"],
        "--model: folder not found: {tmp}/no-model",
    ),
    (["reward-eval", "--model", "tiny-reward", "--data", "{tmp}/missing.jsonl"], "--data: file not found"),
    (
        ["reward-eval", "--model", "tiny-reward", "--data", "{data}", "--batch-size", "0"],
        "--batch-size: must be >= 1",
    ),
    (["reward-eval", "--model", "tiny-reward", "--data", "{data}", "--out", "{tmp}"], "--out: is a folder"),
    (["grpo", "sampling.n=1"], "sampling.n: estimator 'group' compares completions within a group"),
    (["grpo", "reward.model=[{tmp}/no-rm]"], "reward.model: entry 0: folder not found"),
    (["grpo", "reward.scorer=none"], "no reward configured"),
    (["rloo", "sampling.n=1"], "sampling.n: estimator 'rloo' compares completions within a group"),
    (["reinforce", "baseline_decay=1"], "baseline_decay: must be in [0, 1), got 1"),
    (["grpo", "num_minibatches=100"], "num_minibatches: 100 minibatches of 32 rollouts per step"),
    (["ppo", "normalize_on_reference=4"], "normalize_on_reference: needs reward.normalize"),
    (["ppo", "value_clip=-1"], "value_clip: must be > 0, got -1"),
    (["ppo", "value_model={tmp}/no-value-model"], "value_model:"),
    (["online-dpo", "sampling.n=1"], "sampling.n: online DPO pairs the best and worst completion"),
    (["online-dpo", "min_margin=-0.5"], "min_margin: must be >= 0, got -0.5"),
    (["online-dpo", "loss=ipo", "label_smoothing=0.1"], "label_smoothing: loss 'ipo' has no label smoothing"),
    (["dpo", "gamma=1.0"], "gamma: loss 'sigmoid' has no target margin"),
    (["generate", *GEN, "--n", "0"], "--n: must be >= 1, got 0"),
    (["generate", *GEN, "--top-p", "0"], "--top-p: must be in (0, 1], got 0"),
    (["generate", *GEN, "--backend", "vllm"], "--backend: expected one of native, hf; got 'vllm'"),
    (["generate", *GEN, "--temperature", "-1"], "--temperature: must be >= 0"),
    (["generate", *GEN[:2], "--prompts", "{tmp}/missing.txt", *GEN[4:]], "--prompts: file not found"),
    (
        ["generate", *GEN[:2], "--prompts", "{tmp}/bad.jsonl", *GEN[4:]],
        "{tmp}/bad.jsonl, line 2, field 'prompt'",
    ),
    (["generate", "--model", "no-such-model", *GEN[2:]], "--model: unknown model 'no-such-model'"),
    (["generate", *GEN[:4], "--output", "{tmp}"], "--output: is a folder"),
    (["models", "--prepare", "no-such-model"], "--prepare: unknown model 'no-such-model'; expected one of"),
    (["demo", "--method", "foo", "--output-dir", "{tmp}/run"], "--method: unknown"),
    (["demo", "--seed", "-1", "--output-dir", "{tmp}/run"], "--seed: must be >= 0, got -1"),
    (
        ["demo", "--betas", "0.1,x", "--output-dir", "{tmp}/run"],
        "--betas: expected numbers separated by commas",
    ),
    (["demo", "--betas", "0.1,0", "--output-dir", "{tmp}/run"], "--betas: every KL strength must be > 0"),
    (["demo", "--eval-prompts", "{tmp}/none.txt", "--output-dir", "{tmp}/run"], "{tmp}/none.txt"),
    (["data", "inspect", "{tmp}/missing.jsonl"], "{tmp}/missing.jsonl"),
    (["data", "convert", "{data}", "-o", "{tmp}/run/out.txt"], "--output {tmp}/run/out.txt"),
    (["data", "aggregate", "{tmp}/missing.jsonl", "-o", "{tmp}/run/out.jsonl"], "{tmp}/missing.jsonl"),
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Offline, an empty prefalign cache (so 'hhh' is not cached), a tiny data file and configs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PREFALIGN_HHH_PATH", raising=False)
    data = tmp_path / "rows.jsonl"
    data.write_text(PAIR)
    (tmp_path / "bad.yaml").write_text(f"sft:\n  data: {{train: {data}}}\n  train: {{batch_size: 0}}\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "Hi"}\n{"prompt": 3}\n')
    (tmp_path / "broken.yaml").write_text("sft:\n  train: {batch_size: [1, }\n")
    return {"tmp": str(tmp_path), "data": str(data)}


def _argv(case: list[str], env: dict[str, str]) -> list[str]:
    command, rest = case[0], case[1:]
    if command in RECIPES:
        rest = ["--output-dir", "{tmp}/run", *BASE[command], *rest]
    return [a.format(**env) for a in [command, *rest]]


@pytest.mark.parametrize(("case", "expected"), CASES, ids=[" ".join(c) for c, _ in CASES])
def test_bad_invocation_is_one_line_and_exit_2(
    case: list[str], expected: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(case, env)
    status = main(argv)
    err = capsys.readouterr().err
    command = "data " + argv[1] if argv[0] == "data" else argv[0]
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"prefalign {command}: error: "), err
    assert expected.format(**env) in err
    assert "Traceback" not in err
    assert not (Path(env["tmp"]) / "run").exists()


@pytest.mark.parametrize("command", sorted(RECIPES))
def test_the_baselines_are_valid(
    command: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each recipe's baseline passes every check and reaches train(): the cases above differ from it
    only by the bad part."""
    module = importlib.import_module(RECIPES[command].module)
    reached = []

    def fake_train(config: object) -> None:
        reached.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(module, "train", fake_train)
    with pytest.raises(SystemExit):
        main(_argv([command], env))
    assert len(reached) == 1, capsys.readouterr().err


SUBPROCESS_CASES = [
    (["dpo", "data.train="], "data.train: is empty"),
    (["reward-eval", "--model", "{tmp}/no-model", "--data", "{data}"], "--model: folder not found"),
    (["models", "--prepare", "no-such-model"], "--prepare: unknown model"),
]


@pytest.mark.parametrize(("case", "expected"), SUBPROCESS_CASES, ids=[c[0] for c, _ in SUBPROCESS_CASES])
def test_real_process_prints_one_line_and_exits_2(
    case: list[str], expected: str, env: dict[str, str]
) -> None:
    exe = Path(sys.executable).with_name("prefalign")
    if not exe.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    argv = _argv(case, env)
    proc = subprocess.run(
        [str(exe), *argv], capture_output=True, text=True, timeout=120, env={**os.environ}, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"prefalign {argv[0]}: error: ")
    assert expected in line
    assert not (Path(env["tmp"]) / "run").exists()


def test_paths_reach_the_recipe_as_typed(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--output-dir`` and string overrides are paths, not YAML: '1e3' stays text, '#' starts no comment."""
    module = importlib.import_module(RECIPES["sft"].module)
    odd = Path(env["tmp"]) / "my data #1.jsonl"
    odd.write_text(PAIR)
    reached = []
    monkeypatch.setattr(module, "train", lambda config: (reached.append(config), sys.exit(0)))
    monkeypatch.chdir(env["tmp"])
    with pytest.raises(SystemExit):
        main(["sft", "--output-dir", "1e3", "--overwrite", "data.train=my data #1.jsonl"])
    (config,) = reached
    assert (config.output_dir, config.data.train, config.overwrite) == ("1e3", "my data #1.jsonl", True)
