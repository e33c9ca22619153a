"""Online (iterative) DPO: pairs sampled from the current policy, labelled by a reward, every step.

Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback" (OAIF, arXiv
2402.04792), and Xiong et al. 2024, "Iterative Preference Learning from Human Feedback" (arXiv
2312.11456; best-vs-worst of n samples). Each optimizer step takes ``train.batch_size`` prompts,
samples ``sampling.n`` >= 2 completions of each from the current policy
(:class:`prefalign.rollout.RolloutEngine`, synced after every update; every process draws the same
samples with seed ``base + 1000 * step``) and scores them with the configured reward
(:mod:`prefalign.rewards`). Each prompt gives one pair, its highest-scored completion chosen and
its lowest rejected (:func:`select_pairs`); a prompt whose best and worst are within
``min_margin`` gives none. Labelling is by the configured reward only (reward models, a function,
rules, a scorer); labels from human raters through the feedback path are not wired in.

The update is one pairwise loss of :data:`prefalign.losses.PAIRWISE_LOSSES` (``loss=``, as in
``prefalign dpo``) against the reference: the LoRA policy with its adapters off, or a frozen copy
of the starting weights. The pairs are new every step, so the reference's log-probs are computed
each step without gradients. Policy log-probs are at temperature 1 (the DPO objective's policy),
whatever the sampling temperature. The loss is the mean over the step's pairs (weight ``P / K``
per pair, :class:`prefalign.train.TrainLoop`), so micro-batches (``train.micro_batch_size``
counts pairs) and processes do not change the gradient. A step with no pair makes no update and
logs ``pairs`` 0. At step 0 the policy is its reference, so the first sigmoid loss is ln 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

import torch

from prefalign.config import (
    Above,
    AtLeast,
    ConfigError,
    DataConfig,
    InRange,
    ModelConfig,
    ModelName,
    OneOf,
    OutputDir,
    TrainConfig,
)
from prefalign.losses.preference import PAIRWISE_LOSSES, PairwiseLoss
from prefalign.models.scoring import completion_logps
from prefalign.recipes.common import (
    EncodedPair,
    check_pairwise_options,
    load_policy_and_reference,
    pair_batch,
    pair_loss,
    saver,
)
from prefalign.recipes.rollouts import (
    evaluate,
    load_prompt_splits,
    reference_logps,
    reward_metrics,
    rollout_metrics,
    sample_step,
)
from prefalign.rewards import RewardConfig, build_reward
from prefalign.rollout import RolloutEngine, Sample, SamplingConfig
from prefalign.train import RunResult, TrainLoop, step_plan


@dataclasses.dataclass
class OnlineDPOConfig:
    """Configuration of ``prefalign online-dpo``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """``data.train``: prompts (a .txt file, one per line, or rows with a ``prompt`` field)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """``train.batch_size`` counts prompts; ``train.micro_batch_size`` counts pairs (2 sequences each)."""
    reward: RewardConfig = dataclasses.field(default_factory=lambda: RewardConfig(scorer="vader"))
    """What labels the pairs: the reward of each completion (prefalign.rewards.RewardConfig)."""
    sampling: SamplingConfig = dataclasses.field(
        default_factory=lambda: SamplingConfig(n=4, max_new_tokens=64)
    )
    """How completions are sampled; ``sampling.n`` (>= 2) per prompt, of which the best and the
    worst form the pair (2 is OAIF's pair)."""
    loss: Annotated[
        str, OneOf(*PAIRWISE_LOSSES, hints={"kto": "use prefalign kto", "listwise": "use prefalign listwise"})
    ] = "sigmoid"
    """Pairwise loss, a key of prefalign.losses.PAIRWISE_LOSSES: 'sigmoid' (DPO), 'cdpo', 'ipo',
    'robust', 'hinge', 'simpo' or 'orpo' (the last two need no reference model)."""
    beta: Annotated[float, Above(0)] = 0.1
    """Strength of the implicit KL penalty to the reference (DPO's beta); SimPO's reward scale;
    ORPO's weight lambda of the odds-ratio term."""
    label_smoothing: Annotated[float, InRange(0, 0.5, hi_open=True)] = 0.0
    """Assumed label-flip probability (sigmoid/cdpo: cDPO, robust, simpo); 0 is no smoothing."""
    gamma: Annotated[float, AtLeast(0)] = 0.5
    """SimPO's target reward margin gamma (loss=simpo only)."""
    sft_coef: Annotated[float, AtLeast(0)] = 0.0
    """Weight of the chosen completion's length-normalised NLL added to the loss (RPO); 0 disables it."""
    min_margin: Annotated[float, AtLeast(0)] = 0.0
    """A prompt gives a pair only when its best reward exceeds its worst by more than this (in
    units of the reward's total, after ``reward.normalize``); 0 drops exact ties only."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    eval_samples: Annotated[int, AtLeast(0)] = 32
    """Held-out completions (cycling through the held-out prompts) scored at eval; 0 skips it."""
    output_dir: Annotated[str, OutputDir()] = "runs/online-dpo"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        if self.sampling.n < 2:
            raise ConfigError(
                "sampling.n: online DPO pairs the best and worst completion of each prompt: "
                f"must be >= 2, got {self.sampling.n}"
            )
        check_pairwise_options(self)


def select_pairs(rewards: torch.Tensor, n: int, min_margin: float = 0.0) -> torch.Tensor:
    """(K, 2) sample indices ``[chosen, rejected]``: per group of ``n``, its best and its worst.

    ``rewards`` (G * n,) is prompt-major (group g holds samples ``g*n .. g*n + n - 1``). Ties go
    to the first sample. Groups whose best exceeds their worst by ``min_margin`` or less give no
    pair, so K <= G.
    """
    groups = rewards.reshape(-1, n)
    best, worst = groups.argmax(dim=1), groups.argmin(dim=1)
    gap = groups.gather(1, best[:, None])[:, 0] - groups.gather(1, worst[:, None])[:, 0]
    offsets = torch.arange(groups.shape[0]) * n
    pairs = torch.stack([best + offsets, worst + offsets], dim=1)
    return pairs[gap > min_margin]


def encode_pairs(samples: list[Sample], pairs: torch.Tensor) -> list[EncodedPair]:
    """The (K, 2) ``pairs`` of :func:`select_pairs` as token rows for :func:`pair_batch`."""
    return [
        EncodedPair(samples[c].prompt_ids, samples[c].completion_ids, samples[r].completion_ids)
        for c, r in pairs.tolist()
    ]


def pair_metrics(rewards: torch.Tensor, pairs: torch.Tensor) -> dict[str, float]:
    """Rewards of the step's chosen and rejected completions and their mean margin; ``pairs`` kept.

    ``rewards`` (N,) of all samples, ``pairs`` (K, 2) indices; only ``pairs`` when K is 0.
    """
    metrics: dict[str, float] = {"pairs": float(pairs.shape[0])}
    if pairs.shape[0]:
        chosen, rejected = rewards[pairs[:, 0]].double(), rewards[pairs[:, 1]].double()
        metrics.update(
            {
                "reward/chosen": float(chosen.mean()),
                "reward/rejected": float(rejected.mean()),
                "margin": float((chosen - rejected).mean()),
            }
        )
    return metrics


def micro_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    ref: torch.Tensor | None,
    loss: PairwiseLoss,
    cfg: OnlineDPOConfig,
    loss_fn: Callable[..., Any] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B,) pair losses of one :func:`pair_batch` batch (2B rows) and their detached metrics.

    ``ref`` (B, 2) holds the reference's summed log-probs of [chosen, rejected] (None for a
    reference-free loss). With a reference, ``kl`` is the k1 estimate ``log pi - log ref`` summed
    over each completion's tokens, averaged over the chosen and rejected completions.
    """
    out = completion_logps(model, batch, share_prompts=True)  # chosen and rejected share the prompt
    losses, metrics = pair_loss(loss, cfg, out.sums, out.counts, ref, loss_fn)
    if ref is not None:
        policy = torch.stack(out.sums.detach().chunk(2), dim=1)  # (B, 2)
        metrics["kl"] = (policy - ref.to(policy)).mean()
    return losses, metrics


def train(cfg: OnlineDPOConfig, *, loss_fn: Callable[..., Any] | None = None) -> RunResult:
    """Train a policy with online DPO; ``loss_fn`` replaces the function of ``cfg.loss`` (same inputs)."""
    loss = PAIRWISE_LOSSES[cfg.loss]
    loop = TrainLoop.open(cfg, "online-dpo")
    prompts, eval_prompts = load_prompt_splits(cfg.data, cfg.train.seed)
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=loss.reference
    )
    # Every process scores the same samples: the running statistics need no gathering.
    reward = build_reward(cfg.reward, device=loop.device)
    plan = step_plan(len(prompts), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    reference = loop.frozen(reference) if reference is not None else None
    loop.restore()
    if loop.state.get("reward"):
        reward.load_state_dict(loop.state["reward"])
    engine = RolloutEngine(loop.unwrap("policy"), tokenizer, cfg.sampling)
    pad_id = tokenizer.pad_token_id
    base_seed = cfg.sampling.seed if cfg.sampling.seed is not None else cfg.train.seed

    def held_out() -> dict[str, float]:
        return evaluate(engine, reward, eval_prompts, cfg.eval_samples, base_seed + 999_983)

    for step in loop.steps(len(plan)):
        samples = sample_step(engine, [prompts[i] for i in plan[step]], base_seed + 1_000 * step)
        scored = reward.score(samples)
        pairs = select_pairs(scored.total, cfg.sampling.n, cfg.min_margin)
        rows = encode_pairs(samples, pairs)
        # No pair (every group tied): no forward, no backward, so the update changes nothing.
        for micro in loop.micro_batches(list(range(len(rows)))) if rows else []:
            batch = loop.to_device(pair_batch([rows[i] for i in micro.indices], pad_id))
            ref = None
            if loss.reference:
                ref_sums = reference_logps(loop.unwrap("policy"), reference, batch, share_prompts=True).sums
                ref = torch.stack(ref_sums.chunk(2), dim=1)
            losses, metrics = micro_loss(model, batch, ref, loss, cfg, loss_fn)
            loop.backward(losses, micro, metrics)
        extra = {**reward_metrics(scored), **pair_metrics(scored.total, pairs), **rollout_metrics(samples)}
        loop.optimizer_step(step, extra, evaluate=held_out, state={"reward": reward.state_dict()})

    return loop.finish(
        saver(loop.unwrap(), tokenizer), eval_metrics=held_out(), state={"reward": reward.state_dict()}
    )
