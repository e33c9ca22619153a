"""Reward models from pairs, rankings or ratings, with optional ensembles.

Objectives (``objective=``, :data:`REWARD_OBJECTIVES`): ``bradley_terry`` on preference pairs
(optional per-pair margins and reward centring), ``plackett_luce`` on rankings of several responses
(listwise rows; pair files load as rankings of two), and ``mse`` or ``ordinal`` regression on
ratings (feedback records of kind ``rating``, optionally reduced to one consensus per response
first). The model is any sequence classifier (the built-in ``minilm-l6``), or a causal LM backbone
such as ``smollm2-135m-instruct`` or ``tiny-causal-lm``, whose new scalar head reads the last
non-pad token. ``ensemble_size=k`` gives it k heads, each trained on its own bootstrap resample;
a response's reward is the heads' mean and its uncertainty their standard deviation.

Every run writes ``eval.json`` for its held-out split as RewardBench scores it (see
:mod:`prefalign.eval.reward`): held-out rankings and ratings are read as the pairs they imply.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from prefalign.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from prefalign.eval.reward import pairwise_report
from prefalign.feedback.convert import ListwiseRow
from prefalign.feedback.formats import PreferencePair, load_pairs, split_rows
from prefalign.losses.reward import (
    bootstrap_weights,
    bradley_terry_loss,
    ordered_thresholds,
    ordinal_rating_loss,
    plackett_luce_loss,
    rating_mse_loss,
)
from prefalign.models import load_reward_model
from prefalign.recipes.common import (
    Text,
    build_optimizer,
    clip_and_step,
    disable_dropout,
    load_pair_splits,
    lora_settings,
    loss_scale,
    make_accelerator,
    mean_metrics,
    micro_batches,
    render_completion,
    render_prompt,
    save_final,
    step_plan,
)
from prefalign.run import Run, RunResult, console
from prefalign.utils import atomic_write_text, seed_everything


@dataclasses.dataclass
class RewardConfig:
    """Configuration of ``prefalign reward``."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(name="tiny-reward"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    objective: str = "bradley_terry"
    """'bradley_terry' (pairs), 'plackett_luce' (rankings), 'mse' or 'ordinal' (ratings)."""
    use_margins: bool = False
    """bradley_terry: require each pair's ``margin`` field as the reward gap (Llama 2, eq. 2)."""
    center_coef: float = 0.0
    """bradley_terry: weight of the (r_chosen + r_rejected)^2 penalty that keeps rewards near 0."""
    ensemble_size: int = 1
    """Reward heads on the shared backbone; their mean is the reward, their spread the uncertainty."""
    bootstrap: bool = True
    """With ensemble_size > 1, weight each example per head by a Poisson(1) draw (online bootstrap)."""
    rating_scale: str = ""
    """mse/ordinal: the rating scale, e.g. '1-5' or 'bad,medium,good'; ordinal needs it, mse reads
    the lowest and highest rating when empty."""
    rating_consensus: str = "mean"
    """mse/ordinal: 'mean', 'median', 'weighted' or 'dawid_skene' consensus per response (see
    ``prefalign data aggregate``), or 'none' to train on every single rating."""
    benchmark: str = ""
    """An extra pair file or built-in set (e.g. 'hhh') scored at the end into eval.json['benchmark']."""
    output_dir: str = "runs/reward"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Text], completions: list[Text], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenise prompt+completion rows for a sequence classifier, right-padded.

    Encoders with a separator token (BERT-style) get the prompt and completion as a text pair and
    lose prompt tokens first when too long; other models read the plain concatenation.
    """
    prompt_texts = [render_prompt(tokenizer, p) for p in prompts]
    completion_texts = [
        render_completion(tokenizer, p, c) if isinstance(c, list) else c
        for p, c in zip(prompts, completions, strict=True)
    ]
    if tokenizer.sep_token is not None:
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"  # keep the end of the prompt, next to the answer
        try:
            enc = tokenizer(
                prompt_texts,
                completion_texts,
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
        finally:
            tokenizer.truncation_side = side
    else:
        texts = [p + c for p, c in zip(prompt_texts, completion_texts, strict=True)]
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def score_heads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reward of every head per row, shape (B, k); k = 1 for a single reward model."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def score(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scalar reward per row (the heads' mean), shape (B,)."""
    return score_heads(model, batch).mean(dim=1)


@torch.no_grad()
def score_texts_with_uncertainty(
    models: torch.nn.Module | Sequence[torch.nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Text],
    completions: list[Text],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble reward and its uncertainty per row: (mean (N,), std (N,)).

    The members are every head of every given model (k heads of one model, or k separately trained
    models sharing a tokenizer); the std is 0 for a single head.
    """
    members = [models] if isinstance(models, torch.nn.Module) else list(models)
    states = [m.training for m in members]
    for m in members:
        m.eval()
    columns = []
    for model in members:
        out = []
        for start in range(0, len(prompts), batch_size):
            batch = encode_texts(
                tokenizer,
                prompts[start : start + batch_size],
                completions[start : start + batch_size],
                max_length,
            )
            out.append(score_heads(model, batch))
        columns.append(torch.cat(out) if out else torch.zeros(0, 1))
    for m, state in zip(members, states, strict=True):
        m.train(state)
    heads = torch.cat(columns, dim=1)  # (N, total heads)
    std = heads.std(dim=1, unbiased=True) if heads.shape[1] > 1 else torch.zeros(heads.shape[0])
    return heads.mean(dim=1), std


def score_texts(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Text],
    completions: list[Text],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> torch.Tensor:
    """Rewards of many (prompt, completion) rows, shape (N,) (an ensemble's mean)."""
    mean, _ = score_texts_with_uncertainty(
        model, tokenizer, prompts, completions, batch_size=batch_size, max_length=max_length
    )
    return mean


def pair_batch(
    tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], max_length: int
) -> dict[str, Any]:
    """Chosen rows then rejected rows, (2B, T)."""
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return encode_texts(tokenizer, prompts, completions, max_length)


def evaluate_pairs(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferencePair],
    *,
    max_length: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """RewardBench-style report of a reward model (or ensemble) on pairs: see
    :func:`prefalign.eval.reward.pairwise_report`."""
    if not pairs:
        return {}
    # Score each distinct (prompt, answer) once: the pairs implied by a ranking or by ratings
    # reuse every answer several times.
    index: dict[str, int] = {}
    rows: list[tuple[Text, Text]] = []
    slots = []
    for pair in pairs:
        for answer in (pair.chosen, pair.rejected):
            key = json.dumps([pair.prompt, answer], sort_keys=True)
            if key not in index:
                index[key] = len(rows)
                rows.append((pair.prompt, answer))
            slots.append(index[key])
    mean, std = score_texts_with_uncertainty(
        model,
        tokenizer,
        [prompt for prompt, _ in rows],
        [answer for _, answer in rows],
        batch_size=batch_size,
        max_length=max_length,
    )
    chosen_slots, rejected_slots = torch.tensor(slots[0::2]), torch.tensor(slots[1::2])
    chosen, rejected = mean[chosen_slots], mean[rejected_slots]
    n_heads = sum(_n_heads(m) for m in ([model] if isinstance(model, torch.nn.Module) else model))
    if n_heads > 1:
        return pairwise_report(
            pairs, chosen, rejected, chosen_std=std[chosen_slots], rejected_std=std[rejected_slots]
        )
    return pairwise_report(pairs, chosen, rejected)


def _n_heads(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "num_labels", 1) or 1)


# ---- rows of each objective ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RatedResponse:
    """One response with its (consensus or single) rating, for rating regression."""

    item_id: str
    prompt: Text
    response: Text
    target: float
    """The rating mapped to [0, 1] (lowest to highest point of the scale)."""
    level: int
    """The rating's level on an ordinal scale, 0 = worst (rounded for consensus means)."""


@dataclasses.dataclass(frozen=True)
class RatingLevels:
    """How ratings map to targets and levels."""

    low: float
    high: float
    names: list[str]
    """One name per level, worst first."""


def _rating_levels(cfg: RewardConfig, values: list[float | str]) -> RatingLevels:
    from prefalign.feedback.schema import RatingScale

    if cfg.rating_scale:
        scale = RatingScale.parse(cfg.rating_scale)
        if scale.labels is not None:
            return RatingLevels(0.0, float(len(scale.labels) - 1), list(scale.labels))
        low, high = scale.low, scale.high
    elif cfg.objective == "ordinal":
        raise ConfigError("rating_scale: the ordinal objective needs the scale, e.g. rating_scale=1-5")
    else:
        numbers = [float(v) for v in values if not isinstance(v, str)]
        if len(numbers) != len(values) or not numbers:
            raise ConfigError("rating_scale: label ratings need the scale, e.g. rating_scale=bad,medium,good")
        low, high = min(numbers), max(numbers)
        if low == high:
            raise ConfigError(f"every rating is {low:g}: nothing to regress on")
        console.print(f"rating scale read from the data: {low:g}-{high:g} (set rating_scale to fix it)")
    steps = high - low
    if cfg.objective == "ordinal" and (steps != int(steps) or not 1 <= steps <= 100):
        raise ConfigError(f"rating_scale {low:g}-{high:g}: ordinal needs whole-number steps, 2 to 101 levels")
    names = [f"{low + i:g}" for i in range(int(steps) + 1)] if steps == int(steps) else []
    return RatingLevels(low, high, names)


def load_rated_splits(
    cfg: RewardConfig, report_dir: Any
) -> tuple[list[RatedResponse], list[RatedResponse], RatingLevels]:
    """Training and held-out rated responses; the seeded split is by item, so no prompt is in both."""
    from prefalign.feedback.schema import Rating, load_feedback

    def load(source: str) -> list[Rating]:
        records = load_feedback(
            source,
            scale=cfg.rating_scale or None,
            on_error=cfg.data.on_error,  # type: ignore[arg-type]
            report_path=str(report_dir / "rejected_rows.jsonl"),
        )
        ratings = [r for r in records if isinstance(r, Rating)]
        if not ratings:
            raise ConfigError(f"{source}: no rating records (objective {cfg.objective!r} trains on ratings)")
        if len(ratings) < len(records):
            console.print(f"{source}: {len(records) - len(ratings)} non-rating records ignored")
        return ratings

    if not cfg.data.train:
        raise ConfigError("data.train is empty: name a file of rating records")
    train_records = load(cfg.data.train)
    if cfg.data.eval:
        eval_records = load(cfg.data.eval)
    else:
        items = sorted({r.item_id for r in train_records})
        _, held_items = split_rows(items, eval_fraction=cfg.data.eval_fraction, seed=cfg.train.seed)
        held = set(held_items)
        eval_records = [r for r in train_records if r.item_id in held]
        train_records = [r for r in train_records if r.item_id not in held]
    levels = _rating_levels(cfg, [r.value for r in train_records + eval_records])
    return _rated_rows(train_records, levels, cfg), _rated_rows(eval_records, levels, cfg), levels


def _rated_rows(records: list[Any], levels: RatingLevels, cfg: RewardConfig) -> list[RatedResponse]:
    from prefalign.feedback.aggregate import aggregate_ratings
    from prefalign.feedback.schema import RatingScale

    if not records:
        return []
    scale = RatingScale.parse(cfg.rating_scale) if cfg.rating_scale else RatingScale(levels.low, levels.high)

    def row(rec: Any, value: float) -> RatedResponse:
        target = (value - levels.low) / (levels.high - levels.low)
        level = min(max(round(value - levels.low), 0), max(len(levels.names) - 1, 0))
        return RatedResponse(rec.item_id, rec.prompt, rec.response, target, level)

    if cfg.rating_consensus == "none":
        return [row(r, scale.to_number(r.value)) for r in records]
    consensus = aggregate_ratings(records, scale, method=cfg.rating_consensus)  # type: ignore[arg-type]
    first: dict[tuple[str, str], Any] = {}
    for rec in records:
        first.setdefault((rec.item_id, rec.response_id), rec)
    return [row(rec, consensus.scores[item][response]) for (item, response), rec in first.items()]


def load_ranking_splits(cfg: RewardConfig, report_dir: Any) -> tuple[list[ListwiseRow], list[ListwiseRow]]:
    """Training and held-out rankings (listwise rows; a pair file loads as rankings of two)."""
    from prefalign.feedback.formats import load_listwise_rows

    def load(source: str) -> list[ListwiseRow]:
        return list(
            load_listwise_rows(
                source, on_error=cfg.data.on_error, report_path=str(report_dir / "rejected_rows.jsonl")
            )
        )

    if not cfg.data.train:
        raise ConfigError("data.train is empty: name a file of listwise rows or pairs")
    train_rows = load(cfg.data.train)
    if cfg.data.eval:
        return train_rows, load(cfg.data.eval)
    return split_rows(train_rows, eval_fraction=cfg.data.eval_fraction, seed=cfg.train.seed)


def implied_pairs(rows: Sequence[Any]) -> list[PreferencePair]:
    """The preference pairs that held-out rows imply, for a RewardBench-style report.

    Pairs are themselves; a ranking gives every two responses of different rank; ratings of one item
    give every two responses with different ratings.
    """
    pairs: list[PreferencePair] = []
    # Ratings: item -> response -> (prompt, response, targets); single ratings are averaged first.
    by_item: dict[str, dict[str, tuple[Text, Text, list[float]]]] = {}
    for row in rows:
        if isinstance(row, PreferencePair):
            pairs.append(row)
        elif isinstance(row, ListwiseRow):
            for i, better in enumerate(row.responses):
                for j, worse in enumerate(row.responses):
                    if row.ranks[i] < row.ranks[j]:
                        pairs.append(PreferencePair(row.prompt, better, worse))
        else:
            key = json.dumps(row.response, sort_keys=True)
            by_item.setdefault(row.item_id, {}).setdefault(key, (row.prompt, row.response, []))[2].append(
                row.target
            )
    for responses in by_item.values():
        means = [(prompt, text, sum(t) / len(t)) for prompt, text, t in responses.values()]
        for prompt, better, high in means:
            pairs.extend(PreferencePair(prompt, better, worse) for _, worse, low in means if high > low)
    return pairs


# ---- losses of each objective --------------------------------------------------------------------
class OrdinalRewardModel(torch.nn.Module):
    """A reward model plus the ordered cut points of a cumulative-logit rating model, per head.

    The cut points start evenly spaced around 0 (``softplus(0)`` apart); they are saved next to the
    model as ``final/rating_thresholds.json``.
    """

    def __init__(self, backbone: torch.nn.Module, n_levels: int, n_heads: int) -> None:
        super().__init__()
        if n_levels < 2:
            raise ValueError(f"ordinal regression needs at least 2 levels, got {n_levels}")
        self.backbone = backbone
        spacing = float(torch.nn.functional.softplus(torch.tensor(0.0)))
        self.first = torch.nn.Parameter(torch.full((n_heads,), -spacing * (n_levels - 2) / 2))
        self.gaps = torch.nn.Parameter(torch.zeros(n_heads, n_levels - 2))

    def forward(self, **inputs: torch.Tensor) -> Any:
        return self.backbone(**inputs)

    def thresholds(self, head: int) -> torch.Tensor:
        """(L-1,) increasing cut points of one head."""
        return ordered_thresholds(self.first[head], self.gaps[head])


LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _per_head(
    n_heads: int, loss: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B, k) losses of every head; the metrics are the heads' means."""
    results = [loss(h) for h in range(n_heads)]
    losses = torch.stack([r[0] for r in results], dim=1)
    metrics = {k: torch.stack([r[1][k] for r in results]).mean() for k in results[0][1]}
    return losses, metrics


def bradley_terry_batch(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[PreferencePair], cfg: RewardConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rewards = score_heads(model, pair_batch(tokenizer, rows, cfg.data.max_length))
    half = len(rows)
    margin = torch.tensor([p.margin or 0.0 for p in rows]) if cfg.use_margins else None
    return _per_head(
        rewards.shape[1],
        lambda h: bradley_terry_loss(
            rewards[:half, h], rewards[half:, h], margin=margin, center_coef=cfg.center_coef
        ),
    )


def plackett_luce_batch(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[ListwiseRow], cfg: RewardConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    prompts = [row.prompt for row in rows for _ in row.responses]
    responses = [r for row in rows for r in row.responses]
    flat = score_heads(model, encode_texts(tokenizer, prompts, responses, cfg.data.max_length))  # (sum K, k)
    width = max(len(row.responses) for row in rows)
    ranks = torch.ones(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    owner = torch.tensor([b for b, row in enumerate(rows) for _ in row.responses])
    slot = torch.tensor([i for row in rows for i in range(len(row.responses))])
    for b, row in enumerate(rows):
        ranks[b, : len(row.ranks)] = torch.tensor(row.ranks)
        mask[b, : len(row.ranks)] = True

    def head(h: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rewards = torch.zeros(len(rows), width, dtype=flat.dtype).index_put((owner, slot), flat[:, h])
        return plackett_luce_loss(rewards, ranks, mask)

    return _per_head(flat.shape[1], head)


def _rated_rewards(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[RatedResponse], cfg: RewardConfig
) -> torch.Tensor:
    batch = encode_texts(tokenizer, [r.prompt for r in rows], [r.response for r in rows], cfg.data.max_length)
    return score_heads(model, batch)


def mse_batch(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[RatedResponse], cfg: RewardConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rewards = _rated_rewards(model, tokenizer, rows, cfg)
    targets = torch.tensor([r.target for r in rows])
    return _per_head(rewards.shape[1], lambda h: rating_mse_loss(rewards[:, h], targets))


def ordinal_batch(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[RatedResponse], cfg: RewardConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rewards = _rated_rewards(model, tokenizer, rows, cfg)
    levels = torch.tensor([r.level for r in rows])
    ordinal = _ordinal_module(model)
    return _per_head(
        rewards.shape[1], lambda h: ordinal_rating_loss(rewards[:, h], levels, ordinal.thresholds(h))
    )


def _ordinal_module(model: torch.nn.Module) -> OrdinalRewardModel:
    inner = _strip_wrappers(model)
    if not isinstance(inner, OrdinalRewardModel):
        raise TypeError(f"the ordinal objective needs an OrdinalRewardModel, got {type(inner).__name__}")
    return inner


def _strip_wrappers(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP-style ``.module`` wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


@dataclasses.dataclass(frozen=True)
class RewardObjective:
    """What an objective trains on and its batch loss ``(model, tokenizer, rows, cfg) -> ((B, k), metrics)``."""

    data: str
    """'pairs', 'rankings' or 'ratings'."""
    batch_loss: LossFn


REWARD_OBJECTIVES: dict[str, RewardObjective] = {
    "bradley_terry": RewardObjective("pairs", bradley_terry_batch),
    "plackett_luce": RewardObjective("rankings", plackett_luce_batch),
    "mse": RewardObjective("ratings", mse_batch),
    "ordinal": RewardObjective("ratings", ordinal_batch),
}


def _check_config(cfg: RewardConfig) -> RewardObjective:
    if cfg.objective not in REWARD_OBJECTIVES:
        raise ConfigError(f"objective: unknown {cfg.objective!r}; choose from {sorted(REWARD_OBJECTIVES)}")
    if cfg.ensemble_size < 1:
        raise ConfigError(f"ensemble_size must be at least 1, got {cfg.ensemble_size}")
    consensus = ("none", "mean", "median", "weighted", "dawid_skene")
    if cfg.rating_consensus not in consensus:
        raise ConfigError(
            f"rating_consensus: unknown {cfg.rating_consensus!r}; choose from {list(consensus)}"
        )
    return REWARD_OBJECTIVES[cfg.objective]


def _with_heads(model: torch.nn.Module, n_heads: int) -> torch.nn.Module:
    """Replace a 1-output head by an n-output one (new heads start from the model's own init)."""
    if n_heads == 1:
        return model
    head_names = ("score", "classifier")
    for name in head_names:
        old = getattr(model, name, None)
        if isinstance(old, torch.nn.Linear):
            new = torch.nn.Linear(old.in_features, n_heads, bias=old.bias is not None)
            model._init_weights(new)  # type: ignore[operator]
            setattr(model, name, new.to(old.weight.dtype))
            model.config.num_labels = n_heads
            model.num_labels = n_heads
            return model
    raise ValueError(f"ensemble_size > 1: {type(model).__name__} has no linear 'score'/'classifier' head")


def train(cfg: RewardConfig) -> RunResult:
    """Train a reward model as configured."""
    objective = _check_config(cfg)
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    if cfg.ensemble_size > 1 and cfg.model.lora:
        raise ConfigError("ensemble_size > 1 with model.lora: train the heads without LoRA")
    backbone, tokenizer = load_reward_model(cfg.model.name, lora=lora_settings(cfg.model))
    backbone = _with_heads(backbone, cfg.ensemble_size)
    disable_dropout(backbone)
    levels = None
    if objective.data == "pairs":
        train_rows, eval_rows = load_pair_splits(cfg.data, cfg.train.seed, run.output_dir)
    elif objective.data == "rankings":
        train_rows, eval_rows = load_ranking_splits(cfg, run.output_dir)
    else:
        train_rows, eval_rows, levels = load_rated_splits(cfg, run.output_dir)
    model: torch.nn.Module = backbone
    if cfg.objective == "ordinal":
        assert levels is not None
        model = OrdinalRewardModel(backbone, len(levels.names), cfg.ensemble_size)
    plan = step_plan(len(train_rows), cfg.train)
    optimizer, scheduler = build_optimizer(model, cfg.train, len(plan))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    start = run.restore(model, optimizer, scheduler)
    eval_pairs = implied_pairs(eval_rows)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "reward"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        parts = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            losses, metrics = objective.batch_loss(model, tokenizer, [train_rows[i] for i in micro], cfg)
            if cfg.ensemble_size > 1 and cfg.bootstrap:
                weights = bootstrap_weights(torch.tensor(micro), cfg.ensemble_size, cfg.train.seed)
                losses = losses * weights.to(losses)
            per_example = losses.mean(dim=1)  # (B,): the heads' mean
            accelerator.backward(per_example.sum() * scale)
            parts.append((len(micro), {"loss": per_example.detach().mean(), **metrics}))
        grad_norm = clip_and_step(model, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {**mean_metrics(parts), "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]}
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_pairs:
            held_out = evaluate_pairs(_backbone(model), tokenizer, eval_pairs, max_length=cfg.data.max_length)
            last["eval/accuracy"] = held_out["accuracy"]
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} acc {last.get('accuracy', 0):.2f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(model), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(model)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    scorer = _backbone(unwrapped)
    eval_metrics = evaluate_pairs(scorer, tokenizer, eval_pairs, max_length=cfg.data.max_length)
    if eval_metrics:
        eval_metrics["split"] = {
            "eval": cfg.data.eval or f"{cfg.data.eval_fraction} of train",
            "seed": cfg.train.seed,
            "num_rows": len(eval_rows),
        }
    if cfg.benchmark:
        benchmark = load_pairs(cfg.benchmark, on_error=cfg.data.on_error)  # type: ignore[arg-type]
        eval_metrics["benchmark"] = {
            "name": cfg.benchmark,
            **evaluate_pairs(scorer, tokenizer, list(benchmark), max_length=cfg.data.max_length),
        }
    result = save_final(run, scorer, tokenizer, steps=len(plan), last=last, eval_metrics=eval_metrics)
    if isinstance(unwrapped, OrdinalRewardModel):
        assert levels is not None
        cuts = [unwrapped.thresholds(h).tolist() for h in range(cfg.ensemble_size)]
        atomic_write_text(
            result.final_dir / "rating_thresholds.json",
            json.dumps({"levels": levels.names, "thresholds": cuts}, indent=2),
        )
    return result


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The scoring model inside an ordinal wrapper (or the model itself)."""
    model = _strip_wrappers(model)
    return model.backbone if isinstance(model, OrdinalRewardModel) else model
