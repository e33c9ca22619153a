"""The run folder: no clobbering, atomic checkpoints of several modules, exact resume, rank-aware writes."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from prefalign.config import load_config
from prefalign.recipes.dpo import DPOConfig
from prefalign.train.run import Ranks, Run, RunDirError


@pytest.fixture(autouse=True)
def _keep_global_rng() -> Iterator[None]:
    """These tests reseed and restore the global RNGs; leave them as they were for other tests."""
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_rng_state(saved[0])
    random.setstate(saved[1])
    np.random.set_state(saved[2])


def _cfg(out: Path) -> DPOConfig:
    return load_config(
        DPOConfig,
        None,
        [f"output_dir={out}", "train.keep_checkpoints=2", "data.train=configs/data/tiny_pairs.jsonl"],
    )


def _optimizer(
    module: torch.nn.Module, lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))


def _draws() -> tuple[list[float], float, list[float]]:
    """The next numbers of the torch, python and numpy RNGs (consumes them)."""
    return torch.rand(4).tolist(), random.random(), np.random.rand(4).tolist()


def test_refuses_to_clobber_an_earlier_run(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = Run.open(tmp_path, cfg)
    run.log(1, {"loss": 1.0})
    with pytest.raises(RunDirError, match="--resume"):
        Run.open(tmp_path, cfg)
    Run.open(tmp_path, cfg, overwrite=True)
    assert not (tmp_path / "metrics.jsonl").exists()
    assert (tmp_path / "config.yaml").exists()


def test_checkpoint_is_atomic_kept_and_restores_exactly(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run = Run.open(tmp_path, cfg)
    model = torch.nn.Linear(3, 2)
    opt, sched = _optimizer(model, 0.1)
    for step in (1, 2, 3):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        sched.step()
        run.log(step, {"loss": float(step)})
        run.save_checkpoint(
            step, modules={"policy": model}, optimizers={"policy": opt}, schedulers={"policy": sched}
        )
    # only the last two are kept; a stale temp folder from a killed write is ignored
    (tmp_path / "checkpoints" / ".tmp-step-9").mkdir()
    assert [s for s, _ in run.checkpoints()] == [2, 3]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    run.log(4, {"loss": 4.0})  # logged after the last checkpoint: dropped on resume
    fresh = torch.nn.Linear(3, 2)
    fresh_opt, fresh_sched = _optimizer(fresh, 0.1)
    resumed = Run.open(tmp_path, cfg, resume=True)
    step, state = resumed.restore({"policy": fresh}, {"policy": fresh_opt}, {"policy": fresh_sched})
    assert (step, state) == (3, {})
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert [r["step"] for r in resumed.read_metrics()] == [1, 2, 3]
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert fresh_sched.get_last_lr() == sched.get_last_lr()


def test_restore_without_a_checkpoint_starts_at_zero(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt, sched = _optimizer(model, 0.1)
    run = Run.open(tmp_path, _cfg(tmp_path))
    assert run.restore({"policy": model}, {"policy": opt}, {"policy": sched}) == (0, {})


def test_two_modules_recipe_state_and_rng_restore_exactly(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    policy, value = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    policy_opt, policy_sched = _optimizer(policy, 0.1)
    value_opt, value_sched = _optimizer(value, 0.05)
    run = Run.open(tmp_path, cfg)

    def train_step(p: torch.nn.Module, v: torch.nn.Module, opts: list, scheds: list, x: torch.Tensor) -> None:
        hidden = p(x)
        (hidden.square().mean() + v(hidden.detach()).sum()).backward()
        for o, s in zip(opts, scheds, strict=True):
            o.step()
            s.step()
            o.zero_grad()

    for _ in range(3):
        train_step(policy, value, [policy_opt, value_opt], [policy_sched, value_sched], torch.randn(5, 3))
    state = {"seen": 15, "kl_coef": 0.05, "queue": [1, 2, 3], "name": "ppo"}
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    path = run.save_checkpoint(
        3,
        modules={"policy": policy, "value": value},
        optimizers={"policy": policy_opt, "value": value_opt},
        schedulers={"policy": policy_sched, "value": value_sched},
        state=state,
    )
    assert (path / "rng-0.pt").exists()
    assert {p.name for p in path.glob("*.safetensors")} == {"policy.safetensors", "value.safetensors"}
    expected_draws = _draws()  # what each RNG gives next, right after the checkpoint
    saved = {
        n: {k: t.clone() for k, t in m.state_dict().items()}
        for n, m in (("policy", policy), ("value", value))
    }
    saved_opts = {"policy": policy_opt.state_dict(), "value": value_opt.state_dict()}

    # Fresh objects, different weights and RNG states: everything must come back from disk.
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    fresh_policy, fresh_value = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    fresh_policy_opt, fresh_policy_sched = _optimizer(fresh_policy, 0.1)
    fresh_value_opt, fresh_value_sched = _optimizer(fresh_value, 0.05)
    resumed = Run.open(tmp_path, cfg, resume=True)
    step, restored_state = resumed.restore(
        {"policy": fresh_policy, "value": fresh_value},
        {"policy": fresh_policy_opt, "value": fresh_value_opt},
        {"policy": fresh_policy_sched, "value": fresh_value_sched},
    )
    assert step == 3
    assert restored_state == state
    assert _draws() == expected_draws
    for name, module in (("policy", fresh_policy), ("value", fresh_value)):
        for key, tensor in module.state_dict().items():
            torch.testing.assert_close(tensor, saved[name][key], rtol=0, atol=0)
    for name, opt in (("policy", fresh_policy_opt), ("value", fresh_value_opt)):
        got, want = opt.state_dict(), saved_opts[name]
        assert got["param_groups"] == want["param_groups"]
        for index, slots in want["state"].items():
            for slot, tensor in slots.items():
                torch.testing.assert_close(got["state"][index][slot], tensor, rtol=0, atol=0)
    assert fresh_policy_sched.get_last_lr() == policy_sched.get_last_lr()
    assert fresh_value_sched.get_last_lr() == value_sched.get_last_lr()
    assert fresh_policy_opt.param_groups[0]["lr"] != fresh_value_opt.param_groups[0]["lr"]

    # The next step from the restored objects is the original's next step, bit for bit.
    x = torch.randn(5, 3)
    train_step(policy, value, [policy_opt, value_opt], [policy_sched, value_sched], x)
    train_step(
        fresh_policy,
        fresh_value,
        [fresh_policy_opt, fresh_value_opt],
        [fresh_policy_sched, fresh_value_sched],
        x,
    )
    for a, b in ((policy, fresh_policy), (value, fresh_value)):
        for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_each_rank_restores_its_own_rng_file(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    model = torch.nn.Linear(3, 2)
    opt, sched = _optimizer(model, 0.1)
    run = Run.open(tmp_path, cfg)
    run.log(1, {"loss": 1.0})
    path = run.save_checkpoint(1, {"policy": model}, {"policy": opt}, {"policy": sched}, {"seen": 4})
    # The second process's file, as that process would have written it (its own RNG state).
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    rank1_state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    torch.save(rank1_state, path / "rng-1.pt")
    expected_draws = _draws()

    run.log(2, {"loss": 2.0})
    other = Run.open(tmp_path, cfg, resume=True, ranks=Ranks(index=1, count=2))
    assert other.restore({"policy": torch.nn.Linear(3, 2)}, {}, {}) == (1, {"seen": 4})
    assert _draws() == expected_draws
    # Only the main process truncates the metrics file.
    assert [r["step"] for r in other.read_metrics()] == [1, 2]


def test_a_non_main_rank_writes_nothing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run")
    ranks = Ranks(index=1, count=2)  # barrier: a no-op
    assert not ranks.is_main
    run = Run.open(tmp_path / "run", cfg, ranks=ranks)
    record = run.log(1, {"loss": torch.tensor(0.5)})
    assert record["step"] == 1 and record["loss"] == 0.5
    path = run.write_json("eval.json", {"eval/loss": 0.25})
    assert path == tmp_path / "run" / "eval.json"
    assert not (tmp_path / "run").exists()  # not even the folder (or config.yaml)

    # Next to a main process's run: its files are left as they are.
    main = Run.open(tmp_path / "run", cfg)
    main.log(1, {"loss": 1.0})
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    other = Run.open(tmp_path / "run", cfg, resume=True, ranks=ranks)
    other.log(2, {"loss": 2.0})
    other.write_json("eval.json", {"eval/loss": 0.25})
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert not (tmp_path / "run" / "eval.json").exists()
    main.write_json("eval.json", {"eval/loss": 0.25})
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == {"eval/loss": 0.25}


def test_restore_refuses_a_checkpoint_of_other_modules(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    policy = torch.nn.Linear(3, 2)
    opt, sched = _optimizer(policy, 0.1)
    run = Run.open(tmp_path, cfg)
    run.save_checkpoint(
        1, modules={"policy": policy}, optimizers={"policy": opt}, schedulers={"policy": sched}
    )
    value = torch.nn.Linear(2, 1)
    value_opt, value_sched = _optimizer(value, 0.1)
    resumed = Run.open(tmp_path, cfg, resume=True)
    with pytest.raises(RunDirError, match="no weights for module 'value'"):
        resumed.restore({"policy": policy, "value": value}, {"policy": opt, "value": value_opt})
    with pytest.raises(RunDirError, match="no optimizer state for module 'value'"):
        resumed.restore({"policy": policy}, {"policy": opt, "value": value_opt})
    wider = torch.nn.Linear(3, 2)
    wider.register_parameter("extra", torch.nn.Parameter(torch.zeros(1)))  # would silently stay at 0
    with pytest.raises(RunDirError, match="lacks trainable weights of the model, e.g. \\['extra'\\]"):
        resumed.restore({"policy": wider}, {})
