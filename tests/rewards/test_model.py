"""Reward-model rewards (prefalign.rewards.model) on the tiny built-in: mean - k * std equals
score_texts_with_uncertainty called directly, for one model, a k-head model and two models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefalign.config import ConfigError
from prefalign.models import load_reward_model
from prefalign.models.reward import score_texts_with_uncertainty, with_reward_heads
from prefalign.models.tiny import build_tiny_reward
from prefalign.rewards import RewardModelReward

PROMPTS = ["Say hi.", "Tell me a joke.", [{"role": "user", "content": "Say hi."}]]
ANSWERS = ["Hello, lovely day!", "Why did the robot go to school?", "Go away."]
LENGTHS = {"batch_size": 2, "max_length": 64, "max_prompt_length": 16}


def _save(model, tokenizer, path: Path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def samples(make_sample) -> list:
    return [make_sample(a, prompt=p) for p, a in zip(PROMPTS, ANSWERS, strict=True)]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second tiny reward model: same tokenizer, other weights."""
    return _save(*build_tiny_reward(seed=7), tmp_path_factory.mktemp("rm-b"))


def test_one_model_scores_as_the_reward_recipe_encodes(tiny_cache: Path, samples: list) -> None:
    reward = RewardModelReward.load(["tiny-reward"], **LENGTHS)
    breakdown = reward.score(samples)
    model, tokenizer = load_reward_model("tiny-reward")
    mean, std = score_texts_with_uncertainty(model, tokenizer, PROMPTS, ANSWERS, **LENGTHS)
    torch.testing.assert_close(breakdown.total, mean)
    assert breakdown.total.dtype == torch.float32 and breakdown.total.device.type == "cpu"
    assert std.abs().max() == 0 and list(breakdown.parts) == ["model"]  # one head: no spread to log
    assert len(set(breakdown.total.tolist())) == 3  # the texts get different scores
    assert not any(p.requires_grad for m in reward.models for p in m.parameters())


def test_two_models_pool_into_an_ensemble_charged_k_std(
    tiny_cache: Path, other_model: str, samples: list
) -> None:
    reward = RewardModelReward.load(["tiny-reward", other_model], uncertainty_penalty=0.5, **LENGTHS)
    assert reward.heads == 2
    breakdown = reward.score(samples)
    models = [load_reward_model(name)[0] for name in ("tiny-reward", other_model)]
    tokenizer = load_reward_model("tiny-reward")[1]
    mean, std = score_texts_with_uncertainty(models, tokenizer, PROMPTS, ANSWERS, **LENGTHS)
    assert bool((std > 0).all())
    torch.testing.assert_close(breakdown.total, mean - 0.5 * std)
    torch.testing.assert_close(breakdown.parts["model_mean"], mean)
    torch.testing.assert_close(breakdown.parts["model_std"], std)
    # Two heads: std = |a - b| / sqrt(2) of the two models' own rewards.
    one = [RewardModelReward.load([name], **LENGTHS)(samples) for name in ("tiny-reward", other_model)]
    torch.testing.assert_close(std, (one[0] - one[1]).abs() / 2**0.5)


def test_a_k_head_model_is_an_ensemble_too(tmp_path: Path, samples: list) -> None:
    model, tokenizer = build_tiny_reward()
    torch.manual_seed(0)
    folder = _save(with_reward_heads(model, 3), tokenizer, tmp_path / "rm3")
    reward = RewardModelReward.load([folder], uncertainty_penalty=1.0, **LENGTHS)
    assert reward.heads == 3
    loaded, tok = load_reward_model(folder)
    mean, std = score_texts_with_uncertainty(loaded, tok, PROMPTS, ANSWERS, **LENGTHS)
    torch.testing.assert_close(reward(samples), mean - std)


def test_models_with_other_tokenizers_cannot_be_pooled(tiny_cache: Path, tmp_path: Path) -> None:
    model, tokenizer = build_tiny_reward()
    tokenizer.add_tokens(["<|extra|>"])
    model.resize_token_embeddings(len(tokenizer))
    other = _save(model, tokenizer, tmp_path / "rm-other-tok")
    with pytest.raises(
        ConfigError, match=r"^model: entry 1 \(.*rm-other-tok\) has another tokenizer than entry 0"
    ):
        RewardModelReward.load(["tiny-reward", other])


def test_an_uncertainty_penalty_needs_two_heads(tiny_cache: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^uncertainty_penalty: 0\.5 has no effect with a single reward head"
    ):
        RewardModelReward.load(["tiny-reward"], uncertainty_penalty=0.5)
