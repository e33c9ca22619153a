"""``train.precision``: bf16 autocast with fp32 weights, frozen linears stored in bf16, and the
recipes' results close to fp32's on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefalign.cli import main
from prefalign.config import load_config
from prefalign.models import LoraSettings, load_causal_lm
from prefalign.recipes.grpo import GRPOConfig
from prefalign.rollout import RolloutEngine, SamplingConfig
from prefalign.train import TrainLoop, read_metrics
from prefalign.train.loop import mixed_precision, native_bf16


def test_precision_names_map_to_accelerate() -> None:
    assert mixed_precision("fp32") == "no"
    assert mixed_precision("bf16") == "bf16"
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert mixed_precision("auto") == ("bf16" if gpu_bf16 else "no")
    assert mixed_precision("native") == ("bf16" if native_bf16() else "no")


def test_bad_precision_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="train.precision"):
        overrides = [f"output_dir={tmp_path}", "data.train=configs/data/tiny_pairs.jsonl"]
        load_config(GRPOConfig, None, [*overrides, "train.precision=fp16"])


def _bf16_loop(tmp_path: Path) -> TrainLoop:
    overrides = [f"output_dir={tmp_path / 'run'}", "data.train=configs/data/tiny_pairs.jsonl"]
    cfg = load_config(GRPOConfig, None, [*overrides, "train.precision=bf16"])
    return TrainLoop.open(cfg, "test")


def test_bf16_keeps_trained_weights_fp32_and_stores_frozen_linears_in_bf16(
    tmp_path: Path, tiny_cache: Path
) -> None:
    loop = _bf16_loop(tmp_path)
    policy, tokenizer = load_causal_lm("tiny-causal-lm", lora=LoraSettings(r=4))
    model = loop.prepare("policy", policy, total_steps=2)
    dtypes = {name: p.dtype for name, p in policy.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if n.endswith("base_layer.weight")} == {torch.bfloat16}
    # Embeddings (and the head tied to them) and norms keep the residual stream in fp32.
    assert {d for n, d in dtypes.items() if "embed" in n or "norm" in n} == {torch.float32}
    assert policy.get_base_model().config._attn_implementation == "eager"

    seen = []
    mlp = policy.get_base_model().model.layers[0].mlp.up_proj
    mlp.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    logits = model(input_ids=torch.tensor([[1, 5, 9, 4, 7, 3]])).logits
    assert seen == [torch.bfloat16]  # the forward ran under autocast
    logits.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)

    # Decoding keeps SDPA attention in its own copy (faster per token than eager).
    engine = RolloutEngine(policy, tokenizer, SamplingConfig(dtype="bfloat16", max_new_tokens=3))
    assert engine.decoder.config._attn_implementation == "sdpa"
    assert len(engine.generate(["Hi"])) == 1


def test_bf16_frozen_reference_runs_in_autocast(tmp_path: Path, tiny_cache: Path) -> None:
    loop = _bf16_loop(tmp_path)
    reference, _ = load_causal_lm("tiny-causal-lm")
    expected = reference(input_ids=torch.tensor([[1, 5, 9, 4]])).logits
    frozen = loop.frozen(reference)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert frozen.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    got = frozen(input_ids=torch.tensor([[1, 5, 9, 4]])).logits
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("lora", [True, False])
def test_grpo_in_bf16_stays_close_to_fp32(tmp_path: Path, lora: bool) -> None:
    # beta > 0: the KL term reads the reference (adapters off with LoRA, a frozen copy without).
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["grpo", "--config", "configs/tiny.yaml", "--output-dir", str(out), "beta=0.1"]
        args += [f"train.precision={precision}", f"model.lora={str(lora).lower()}", "train.max_steps=2"]
        assert main(args) == 0
        runs[precision] = read_metrics(out)
    first32, first16 = runs["fp32"][0], runs["bf16"][0]
    # The same samples (decoding is bf16 either way), so the same rewards; the loss and KL
    # differ by bf16 round-off only.
    assert first16["reward"] == pytest.approx(first32["reward"], abs=1e-6)
    assert first16["entropy"] == pytest.approx(first32["entropy"], rel=0.05)
    assert first16["loss"] == pytest.approx(first32["loss"], abs=0.02)
