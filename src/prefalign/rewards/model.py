"""A learned reward model (or an ensemble) as a reward: ``mean - k * std`` over the ensemble's heads.

The text a reward model reads is encoded exactly as ``prefalign reward`` trains it
(:func:`prefalign.models.reward.encode_reward_text`, via
:func:`~prefalign.models.reward.score_texts_with_uncertainty`): prompt and completion rendered by
the one prompt renderer, the chat template closing the assistant turn. A completion cut at the
length cap is therefore scored as if it had ended; the missing-EOS penalty of
:mod:`prefalign.rewards.shaping` is what tells it apart.

Subtracting ``k`` standard deviations of an ensemble is a conservative, uncertainty-penalised
reward in the spirit of Coste et al. 2024 ("Reward Model Ensembles Help Mitigate
Overoptimization"; their UWO objective subtracts the variance). The std is used here because it
is in reward units, so ``k`` reads as "how many standard deviations of doubt to charge".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from prefalign.config import ConfigError
from prefalign.models import load_reward_model
from prefalign.models.reward import head_count, score_texts_with_uncertainty
from prefalign.rewards.base import Reward, RewardBreakdown, SampleLike


class RewardModelReward(Reward):
    """Reward of one reward model or an ensemble (all heads of all ``models``, one shared tokenizer).

    ``score`` parts: ``model`` (N,) = mean - k * std; with several heads also ``model_mean`` and
    ``model_std`` (N,), the ensemble's mean and unbiased standard deviation.
    """

    def __init__(
        self,
        models: torch.nn.Module | Sequence[torch.nn.Module],
        tokenizer: Any,
        *,
        uncertainty_penalty: float = 0.0,
        batch_size: int = 32,
        max_length: int = 512,
        max_prompt_length: int = 256,
        name: str = "model",
    ) -> None:
        self.models = [models] if isinstance(models, torch.nn.Module) else list(models)
        self.tokenizer = tokenizer
        self.uncertainty_penalty = float(uncertainty_penalty)
        self.batch_size, self.max_length, self.max_prompt_length = batch_size, max_length, max_prompt_length
        self.name = name
        self.heads = sum(head_count(m) for m in self.models)

    @classmethod
    def load(
        cls, names: Sequence[str], *, device: str | torch.device | None = None, **kwargs: Any
    ) -> RewardModelReward:
        """Load every reward-model folder or built-in name (frozen, eval mode, on ``device``).

        Several models are pooled into one ensemble, so they must share a tokenizer; otherwise a
        one-line :class:`ConfigError` names the ``model`` entry that differs.
        """
        models, tokenizer = [], None
        for index, name in enumerate(names):
            model, tok = load_reward_model(name)
            if tokenizer is not None and not _same_tokenizer(tokenizer, tok):
                raise ConfigError(
                    f"model: entry {index} ({name}) has another tokenizer than entry 0 ({names[0]}); "
                    "an ensemble scores one encoding of each text, so its models must share a tokenizer"
                )
            tokenizer = tokenizer or tok
            model.requires_grad_(False)  # the reward is a fixed judge: no graph, no optimizer state
            models.append(model.to(device).eval() if device is not None else model.eval())
        if not models:
            raise ConfigError("model: name at least one reward-model folder or built-in name")
        reward = cls(models, tokenizer, **kwargs)
        if reward.uncertainty_penalty > 0 and reward.heads < 2:
            raise ConfigError(
                f"uncertainty_penalty: {reward.uncertainty_penalty:g} has no effect with a single reward "
                "head; name several models or one trained with ensemble_size > 1, or set it to 0"
            )
        return reward

    def score(self, samples: Sequence[SampleLike]) -> RewardBreakdown:
        mean, std = score_texts_with_uncertainty(
            self.models,
            self.tokenizer,
            [s.prompt for s in samples],
            [s.completion for s in samples],
            batch_size=self.batch_size,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )
        reward = (mean - self.uncertainty_penalty * std).float()
        parts = {self.name: reward}
        if self.heads > 1:
            parts |= {f"{self.name}_mean": mean.float(), f"{self.name}_std": std.float()}
        return RewardBreakdown(reward, parts)


def _same_tokenizer(a: Any, b: Any) -> bool:
    """Same vocabulary, chat template and pad token: the ids of every text are then the same."""
    return (
        a.get_vocab() == b.get_vocab()
        and getattr(a, "chat_template", None) == getattr(b, "chat_template", None)
        and a.pad_token_id == b.pad_token_id
    )
