"""Recipes: one module per alignment algorithm, each a config dataclass and ``train(config)``.

:data:`RECIPES` is the one registry of them, used by the CLI and the demo. Importing this package
imports no recipe (and no torch): :meth:`Recipe.load` imports one when it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Recipe:
    """Where a recipe lives and what it does, in one line."""

    module: str
    config_class: str
    help: str

    def load(self) -> tuple[ModuleType, type]:
        """(the recipe module, its config dataclass)."""
        module = importlib.import_module(self.module)
        return module, getattr(module, self.config_class)


RECIPES: dict[str, Recipe] = {
    "sft": Recipe("prefalign.recipes.sft", "SFTConfig", "supervised fine-tuning on prompt/completion rows"),
    "reward": Recipe(
        "prefalign.recipes.reward",
        "RewardConfig",
        "train a reward model: Bradley-Terry on pairs, Plackett-Luce on rankings, or rating regression",
    ),
    "dpo": Recipe(
        "prefalign.recipes.dpo",
        "DPOConfig",
        "align a policy with DPO / cDPO / IPO / robust / hinge / SimPO / ORPO on preference pairs",
    ),
    "kto": Recipe(
        "prefalign.recipes.kto",
        "KTOConfig",
        "align a policy with KTO on unpaired desirable / undesirable completions (or pairs)",
    ),
    "listwise": Recipe(
        "prefalign.recipes.listwise",
        "ListwiseConfig",
        "align a policy with listwise (Plackett-Luce) DPO on rankings of several answers (or pairs)",
    ),
    "phf": Recipe(
        "prefalign.recipes.phf",
        "PHFConfig",
        "pretrain with human feedback on a scored corpus (conditional, filtering, UL, RWR, AWR)",
    ),
    "contrastive": Recipe(
        "prefalign.recipes.contrastive",
        "ContrastiveConfig",
        "contrastive alignment: InfoNCE ranks the preferred answer above in-batch negatives",
    ),
    "grpo": Recipe(
        "prefalign.recipes.grpo",
        "GRPOConfig",
        "reinforcement learning with GRPO (Dr. GRPO, DAPO, GSPO variants) on prompts and a reward",
    ),
    "online-dpo": Recipe(
        "prefalign.recipes.online_dpo",
        "OnlineDPOConfig",
        "online DPO: each step's pairs sampled from the policy, best vs worst by a reward, DPO-family loss",
    ),
    "rloo": Recipe(
        "prefalign.recipes.grpo",
        "RLOOConfig",
        "reinforcement learning with RLOO (leave-one-out baselines, KL in the reward) on prompts and a reward",
    ),
    "reinforce": Recipe(
        "prefalign.recipes.grpo",
        "ReinforceConfig",
        "reinforcement learning with REINFORCE and a running-mean baseline on prompts and a reward",
    ),
    "ppo": Recipe(
        "prefalign.recipes.ppo",
        "PPOConfig",
        "reinforcement learning with PPO: value model, GAE, per-token KL penalty, clipped losses",
    ),
}
