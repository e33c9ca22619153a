"""Reward models from pairs, rankings or ratings, with optional ensembles.

Objectives (``objective=``, :data:`REWARD_OBJECTIVES`): ``bradley_terry`` on preference pairs
(optional per-pair margins and reward centring), ``plackett_luce`` on rankings of several responses
(listwise rows; pair files load as rankings of two), and ``mse`` or ``ordinal`` regression on
ratings (feedback records of kind ``rating``, optionally reduced to one consensus per response
first). The model is any sequence classifier (the built-in ``minilm-l6``), or a causal LM backbone
such as ``smollm2-135m-instruct`` or ``tiny-causal-lm``, whose new scalar head reads the last
non-pad token. ``ensemble_size=k`` gives it k heads, each trained on its own bootstrap resample;
a response's reward is the heads' mean and its uncertainty their standard deviation. ``ordinal``
also learns each head's cut points, saved as ``final/rating_thresholds.json``.

Every run writes ``eval.json`` for its held-out split as RewardBench scores it (see
:func:`prefalign.models.reward.pairwise_report`): held-out rankings and ratings are read as the
pairs they imply. Inference with the saved model is :mod:`prefalign.models.reward`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch

from prefalign.config import (
    AtLeast,
    ConfigError,
    DataConfig,
    DataSource,
    ModelConfig,
    OneOf,
    OutputDir,
    TrainConfig,
)
from prefalign.feedback.formats import ListwiseRow, PreferencePair, load_pairs
from prefalign.losses.reward import (
    bootstrap_weights,
    bradley_terry_loss,
    ordinal_rating_loss,
    plackett_luce_loss,
    rating_mse_loss,
)
from prefalign.models import disable_dropout, load_reward_model
from prefalign.models.reward import (
    OrdinalRewardModel,
    collate_reward_rows,
    encode_reward_text,
    evaluate_pairs,
    reward_scorer,
    score_heads,
    with_reward_heads,
    write_rating_thresholds,
)
from prefalign.recipes._reward_rows import RatedResponse, implied_pairs, load_reward_rows, row_texts
from prefalign.recipes.common import lora_settings, saver
from prefalign.train import RunResult, TrainLoop, step_plan


@dataclasses.dataclass
class RewardConfig:
    """Configuration of ``prefalign reward``."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(name="tiny-reward"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    objective: Annotated[str, OneOf(*REWARD_OBJECTIVES)] = "bradley_terry"
    """'bradley_terry' (pairs), 'plackett_luce' (rankings), 'mse' or 'ordinal' (ratings)."""
    use_margins: bool = False
    """bradley_terry: require each pair's ``margin`` field as the reward gap (Llama 2, eq. 2)."""
    center_coef: Annotated[float, AtLeast(0)] = 0.0
    """bradley_terry: weight of the (r_chosen + r_rejected)^2 penalty that keeps rewards near 0."""
    ensemble_size: Annotated[int, AtLeast(1)] = 1
    """Reward heads on the shared backbone; their mean is the reward, their spread the uncertainty."""
    bootstrap: bool = True
    """With ensemble_size > 1, weight each example per head by a Poisson(1) draw (online bootstrap)."""
    rating_scale: str = ""
    """mse/ordinal: the rating scale, e.g. '1-5' or 'bad,medium,good'; ordinal needs it, mse reads
    the lowest and highest rating when empty."""
    rating_consensus: Annotated[str, OneOf("mean", "median", "weighted", "dawid_skene", "none")] = "mean"
    """mse/ordinal: 'mean', 'median', 'weighted' or 'dawid_skene' consensus per response (see
    ``prefalign data aggregate``), or 'none' to train on every single rating."""
    benchmark: Annotated[str, DataSource(optional=True)] = ""
    """An extra pair file or built-in set (e.g. 'hhh') scored at the end into eval.json['benchmark']."""
    output_dir: Annotated[str, OutputDir()] = "runs/reward"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        """Cross-field checks, run when the config is read (field checks have passed)."""
        from prefalign.feedback.schema import RatingScale

        if self.rating_scale:
            try:
                RatingScale.parse(self.rating_scale)
            except ValueError as err:
                raise ConfigError(f"rating_scale: {err}") from None
        elif self.objective == "ordinal":
            raise ConfigError("rating_scale: the ordinal objective needs the scale, e.g. rating_scale=1-5")
        if self.ensemble_size > 1 and self.model.lora:
            raise ConfigError("model.lora: LoRA does not fit ensemble_size > 1; train the heads without LoRA")


# ---- the objectives: (rewards (M, k) of the rows' texts, rows, cfg, cut points) -> ((B, k), metrics)
Losses = tuple[torch.Tensor, dict[str, torch.Tensor]]
Cuts = torch.Tensor | None
"""(k, L-1) cut points of every head (ordinal only)."""


def _per_head(n_heads: int, loss: Callable[[int], Losses]) -> Losses:
    """(B, k) losses of every head; the metrics are the heads' means."""
    results = [loss(h) for h in range(n_heads)]
    metrics = {k: torch.stack([r[1][k] for r in results]).mean() for k in results[0][1]}
    return torch.stack([r[0] for r in results], dim=1), metrics


def bradley_terry_batch(
    rewards: torch.Tensor, rows: list[PreferencePair], cfg: RewardConfig, cuts: Cuts
) -> Losses:
    pairs = rewards.view(len(rows), 2, -1)  # chosen, rejected of each pair
    margin = torch.tensor([p.margin or 0.0 for p in rows], device=rewards.device) if cfg.use_margins else None
    return _per_head(
        pairs.shape[2],
        lambda h: bradley_terry_loss(
            pairs[:, 0, h], pairs[:, 1, h], margin=margin, center_coef=cfg.center_coef
        ),
    )


def plackett_luce_batch(
    rewards: torch.Tensor, rows: list[ListwiseRow], cfg: RewardConfig, cuts: Cuts
) -> Losses:
    width, device = max(len(row.responses) for row in rows), rewards.device
    ranks = torch.ones(len(rows), width, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), width, dtype=torch.bool, device=device)
    for b, row in enumerate(rows):
        ranks[b, : len(row.ranks)] = torch.tensor(row.ranks)
        mask[b, : len(row.ranks)] = True
    owner = torch.tensor([b for b, row in enumerate(rows) for _ in row.responses], device=device)
    slot = torch.tensor([i for row in rows for i in range(len(row.responses))], device=device)

    def head(h: int) -> Losses:
        table = torch.zeros(len(rows), width, dtype=rewards.dtype, device=device).index_put(
            (owner, slot), rewards[:, h]
        )
        return plackett_luce_loss(table, ranks, mask)

    return _per_head(rewards.shape[1], head)


def mse_batch(rewards: torch.Tensor, rows: list[RatedResponse], cfg: RewardConfig, cuts: Cuts) -> Losses:
    targets = torch.tensor([r.target for r in rows], device=rewards.device)
    return _per_head(rewards.shape[1], lambda h: rating_mse_loss(rewards[:, h], targets))


def ordinal_batch(rewards: torch.Tensor, rows: list[RatedResponse], cfg: RewardConfig, cuts: Cuts) -> Losses:
    levels = torch.tensor([r.level for r in rows], device=rewards.device)
    assert cuts is not None
    return _per_head(rewards.shape[1], lambda h: ordinal_rating_loss(rewards[:, h], levels, cuts[h]))


@dataclasses.dataclass(frozen=True)
class RewardObjective:
    """What an objective trains on ('pairs', 'rankings' or 'ratings') and its batch loss."""

    data: str
    batch_loss: Callable[[torch.Tensor, list[Any], RewardConfig, Cuts], Losses]


REWARD_OBJECTIVES: dict[str, RewardObjective] = {
    "bradley_terry": RewardObjective("pairs", bradley_terry_batch),
    "plackett_luce": RewardObjective("rankings", plackett_luce_batch),
    "mse": RewardObjective("ratings", mse_batch),
    "ordinal": RewardObjective("ratings", ordinal_batch),
}


def train(cfg: RewardConfig) -> RunResult:
    """Train a reward model as configured."""
    objective = REWARD_OBJECTIVES[cfg.objective]
    loop = TrainLoop.open(cfg, "reward")
    backbone, tokenizer = load_reward_model(cfg.model.name, lora=lora_settings(cfg.model))
    backbone = with_reward_heads(backbone, cfg.ensemble_size)
    disable_dropout(backbone)
    train_rows, eval_rows, levels = load_reward_rows(
        objective.data,
        cfg.data,
        cfg.train.seed,
        loop.run.output_dir,
        rating_scale=cfg.rating_scale,
        consensus=cfg.rating_consensus,
        ordinal=cfg.objective == "ordinal",
    )
    module: torch.nn.Module = backbone
    if cfg.objective == "ordinal":
        assert levels is not None
        module = OrdinalRewardModel(backbone, len(levels.names), cfg.ensemble_size)
    lengths = {"max_length": cfg.data.max_length, "max_prompt_length": cfg.data.max_prompt_length}
    encoded = [[encode_reward_text(tokenizer, p, c, **lengths) for p, c in row_texts(r)] for r in train_rows]
    eval_pairs = implied_pairs(eval_rows)
    plan = step_plan(len(train_rows), cfg.train)
    model = loop.prepare("reward", module, len(plan))
    loop.restore()

    def report() -> dict[str, Any]:
        return evaluate_pairs(reward_scorer(loop.unwrap("reward")), tokenizer, eval_pairs, **lengths)

    def held_out() -> dict[str, float]:
        return {f"eval/{k}": v for k, v in report().items() if isinstance(v, float)}

    for step in loop.steps(len(plan)):
        for micro in loop.micro_batches(plan[step]):
            ids = [text for i in micro.indices for text in encoded[i]]
            rewards = score_heads(model, loop.to_device(collate_reward_rows(ids, tokenizer.pad_token_id)))
            inner = loop.unwrap("reward")
            cuts = inner.thresholds() if isinstance(inner, OrdinalRewardModel) else None
            losses, metrics = objective.batch_loss(rewards, [train_rows[i] for i in micro.indices], cfg, cuts)
            if cfg.ensemble_size > 1 and cfg.bootstrap:
                losses = losses * bootstrap_weights(
                    torch.tensor(micro.indices), cfg.ensemble_size, cfg.train.seed
                ).to(losses)
            loop.backward(losses.mean(dim=1), micro, metrics)  # per example: the heads' mean
        loop.optimizer_step(step, evaluate=held_out if eval_pairs else None)

    eval_metrics = report()
    if eval_metrics:
        eval_metrics["split"] = {
            "eval": cfg.data.eval or f"{cfg.data.eval_fraction} of train",
            "seed": cfg.train.seed,
            "num_rows": len(eval_rows),
        }
    scorer = reward_scorer(loop.unwrap("reward"))
    if cfg.benchmark:
        benchmark = load_pairs(cfg.benchmark, on_error=cfg.data.on_error)  # type: ignore[arg-type]
        scores = evaluate_pairs(scorer, tokenizer, benchmark, **lengths)
        eval_metrics["benchmark"] = {"name": cfg.benchmark, **scores}

    def save(final_dir: Path) -> None:
        saver(scorer, tokenizer)(final_dir)
        inner = loop.unwrap("reward")
        if isinstance(inner, OrdinalRewardModel):
            assert levels is not None
            write_rating_thresholds(final_dir, levels.names, inner.thresholds())

    return loop.finish(save, eval_metrics=eval_metrics)
