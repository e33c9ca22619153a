"""Policy gradients with one reward per completion: GRPO (Shao et al. 2024, DeepSeekMath) with
Dr. GRPO, DAPO and GSPO, RLOO (Ahmadian et al. 2024) and REINFORCE with a baseline (Williams 1992).

Each step takes ``train.batch_size`` prompts, samples ``sampling.n`` completions of each from the
current policy (:class:`prefalign.rollout.RolloutEngine`, synced after every update), scores them
with the configured reward (:mod:`prefalign.rewards`) and turns the rewards into advantages as
``estimator`` says:

* ``group`` (``prefalign grpo``): ``(r - mean_group) / (std_group + eps)`` (``scale_rewards``;
  Dr. GRPO: 'none');
* ``rloo`` (``prefalign rloo``): ``r`` minus the mean of the group's other ``n - 1`` rewards;
* ``reinforce`` (``prefalign reinforce``): ``r`` minus a running mean of past rewards
  (``baseline_decay``), which needs no group (``sampling.n`` may be 1).

The policy loss is PPO's clipped surrogate per token (:func:`prefalign.losses.ppo_policy_loss`;
``clip_high`` is DAPO's clip-higher, ``importance=sequence`` GSPO's sequence ratio), normalised as
``loss`` says (:func:`prefalign.losses.policy_loss_reduction`: 'grpo' per-sequence means,
'dr_grpo' sum over ``max_new_tokens``, 'dapo' token mean) with the minibatch's global counts, so
micro-batches and processes do not change the gradient. The KL to the reference enters with
weight ``beta`` either in the loss (``kl_penalty=loss``: the k3 estimate per token, as GRPO) or in
the reward (``kl_penalty=reward``: ``r - beta * sum_t log(pi/ref)`` of the sampled completion, as
RLOO and REINFORCE in Ahmadian et al.).

``num_iterations`` passes over each step's rollouts in ``num_minibatches`` shuffled minibatches,
one parameter update each (TRL's ``num_iterations`` and ``steps_per_generation``): from the second
update on the ratio to the sampling policy moves off 1 and the clip binds. Log-probs that enter
a loss come from the training model at the sampling temperature, never from the engine. Every
process draws the step's samples with the same seed and trains on its share of them.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import torch

from prefalign.config import (
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
from prefalign.losses import (
    group_advantages,
    policy_loss_reduction,
    ppo_policy_loss,
    reinforce_baseline_advantages,
    rloo_advantages,
)
from prefalign.models.scoring import completion_logps
from prefalign.ops.kl import token_kl
from prefalign.recipes.common import load_policy_and_reference, saver
from prefalign.recipes.rollouts import (
    as_rows,
    check_minibatches,
    evaluate,
    load_prompt_splits,
    minibatches,
    reference_logps,
    reward_metrics,
    rollout_batch,
    rollout_metrics,
    sample_step,
    token_values,
)
from prefalign.rewards import RewardConfig, build_reward
from prefalign.rollout import RolloutEngine, Sample, SamplingConfig
from prefalign.train import RunResult, TrainLoop, step_plan

SCALES = {"group": "std", "batch": "batch", "none": "none"}
ESTIMATORS = ("group", "rloo", "reinforce")
RUN_NAMES = {"group": "grpo", "rloo": "rloo", "reinforce": "reinforce"}


@dataclasses.dataclass
class GRPOConfig:
    """Configuration of ``prefalign grpo`` (and, with other defaults, ``rloo`` and ``reinforce``)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """``data.train``: prompts (a .txt file, one per line, or rows with a ``prompt`` field)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """``train.batch_size`` counts prompts; ``train.micro_batch_size`` counts completions."""
    reward: RewardConfig = dataclasses.field(default_factory=lambda: RewardConfig(scorer="vader"))
    """What scores each completion (prefalign.rewards.RewardConfig)."""
    sampling: SamplingConfig = dataclasses.field(
        default_factory=lambda: SamplingConfig(n=4, max_new_tokens=64)
    )
    """How completions are sampled; ``sampling.n`` is the group size."""
    estimator: Annotated[str, OneOf(*ESTIMATORS)] = "group"
    """Advantages: 'group' (GRPO), 'rloo' (leave-one-out mean) or 'reinforce' (running-mean baseline)."""
    loss: Annotated[str, OneOf("grpo", "dr_grpo", "dapo")] = "grpo"
    """Normalisation: 'grpo' (mean over each completion's tokens, then over completions),
    'dr_grpo' (sum over tokens / max_new_tokens), 'dapo' (mean over all tokens of the minibatch)."""
    scale_rewards: Annotated[str, OneOf(*SCALES)] = "group"
    """estimator=group: divide by the group's std ('group'), the batch's ('batch') or not (Dr. GRPO)."""
    baseline_decay: Annotated[float, InRange(0, 1, hi_open=True)] = 0.9
    """estimator=reinforce: ``b <- decay * b + (1 - decay) * mean(r)`` after each step (b starts
    at the first step's mean)."""
    clip_low: Annotated[float, AtLeast(0)] = 0.2
    """PPO clip range below 1 (epsilon)."""
    clip_high: Annotated[float, AtLeast(0)] | None = None
    """Clip range above 1 (DAPO's clip-higher, e.g. 0.28); None uses clip_low."""
    importance: Annotated[str, OneOf("token", "sequence")] = "token"
    """Importance ratio per token (GRPO) or per sequence (GSPO)."""
    num_iterations: Annotated[int, AtLeast(1)] = 1
    """Passes over each step's rollouts (TRL's num_iterations)."""
    num_minibatches: Annotated[int, AtLeast(1)] = 1
    """Shuffled minibatches per pass, one parameter update each."""
    beta: Annotated[float, AtLeast(0)] = 0.0
    """Weight of the KL to the reference; 0 loads no reference."""
    kl_penalty: Annotated[str, OneOf("loss", "reward")] = "loss"
    """Where beta's KL goes: 'loss' (per-token k3 term) or 'reward' (sequence k1 KL subtracted)."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference when LoRA is off and beta > 0; empty means the starting weights of model.name."""
    eval_samples: Annotated[int, AtLeast(0)] = 32
    """Held-out completions (cycling through the held-out prompts) scored at eval; 0 skips it."""
    output_dir: Annotated[str, OutputDir()] = "runs/grpo"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        if self.estimator != "reinforce" and self.sampling.n < 2:
            raise ConfigError(
                f"sampling.n: estimator {self.estimator!r} compares completions within a group: "
                f"must be >= 2, got {self.sampling.n}"
            )
        check_minibatches(self.num_minibatches, self.train.batch_size * self.sampling.n)


@dataclasses.dataclass
class RLOOConfig(GRPOConfig):
    """Configuration of ``prefalign rloo``: leave-one-out baselines, KL in the reward (Ahmadian et al.)."""

    estimator: Annotated[str, OneOf(*ESTIMATORS)] = "rloo"
    beta: Annotated[float, AtLeast(0)] = 0.05
    kl_penalty: Annotated[str, OneOf("loss", "reward")] = "reward"
    loss: Annotated[str, OneOf("grpo", "dr_grpo", "dapo")] = "dapo"
    output_dir: Annotated[str, OutputDir()] = "runs/rloo"


@dataclasses.dataclass
class ReinforceConfig(GRPOConfig):
    """Configuration of ``prefalign reinforce``: a running-mean baseline, KL in the reward."""

    estimator: Annotated[str, OneOf(*ESTIMATORS)] = "reinforce"
    sampling: SamplingConfig = dataclasses.field(
        default_factory=lambda: SamplingConfig(n=1, max_new_tokens=64)
    )
    beta: Annotated[float, AtLeast(0)] = 0.05
    kl_penalty: Annotated[str, OneOf("loss", "reward")] = "reward"
    loss: Annotated[str, OneOf("grpo", "dr_grpo", "dapo")] = "dapo"
    output_dir: Annotated[str, OutputDir()] = "runs/reinforce"


@dataclasses.dataclass
class Rollouts:
    """One step's samples and what the updates read: advantages (N,), and per-sample (n_i,) token
    log-probs of the sampling policy (``old``; empty with one update) and the reference (``ref``;
    empty without a loss-side KL)."""

    samples: list[Sample]
    advantages: torch.Tensor
    old: list[torch.Tensor]
    ref: list[torch.Tensor]


def micro_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    advantages: torch.Tensor,
    cfg: GRPOConfig,
    counts: tuple[int, int],
    *,
    ref_rows: list[torch.Tensor] | None = None,
    old_rows: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """() loss of one micro-batch, already normalised by the minibatch's (sequences, tokens) ``counts``.

    ``advantages`` (B,); ``ref_rows`` / ``old_rows``: each row's (n_i,) token log-probs under the
    reference (the loss-side KL; None: no KL term) and the sampling policy (None when this is the
    only update: the sampling policy is the current one, so the current log-probs, detached).
    """
    # A group's samples share their prompt: it runs once per micro-batch, not once per sample.
    temperature = max(cfg.sampling.temperature, 1e-6)
    out = completion_logps(model, batch, temperature=temperature, share_prompts=True)
    per_token, metrics = ppo_policy_loss(
        out.token_logps,
        out.token_logps.detach() if old_rows is None else as_rows(old_rows, out.mask),
        advantages,
        out.mask,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
        level=cfg.importance,
    )
    mask = out.mask.bool()
    metrics["entropy"] = -(out.token_logps.detach() * mask).sum() / mask.sum().clamp(min=1)
    if ref_rows is not None:
        kl = token_kl(out.token_logps, as_rows(ref_rows, out.mask), mask, estimator="k3")
        per_token = per_token + cfg.beta * kl
        metrics["kl"] = (kl.detach() * mask).sum() / mask.sum().clamp(min=1)
    sequences, tokens = counts
    loss = policy_loss_reduction(
        per_token,
        mask,
        cfg.loss,
        max_length=cfg.sampling.max_new_tokens,
        num_items=sequences,
        num_tokens=tokens,
    )
    return loss, metrics


def advantages_of(rewards: torch.Tensor, cfg: GRPOConfig, state: dict[str, Any]) -> torch.Tensor:
    """(N,) advantages of the step's rewards by ``cfg.estimator``; updates the REINFORCE baseline."""
    if cfg.estimator == "rloo":
        return rloo_advantages(rewards, cfg.sampling.n)
    if cfg.estimator == "reinforce":
        mean = float(rewards.mean())
        baseline = state.get("baseline", mean)
        state["baseline"] = cfg.baseline_decay * baseline + (1 - cfg.baseline_decay) * mean
        return reinforce_baseline_advantages(rewards, baseline)
    return group_advantages(rewards, cfg.sampling.n, scale=SCALES[cfg.scale_rewards])


def train(cfg: GRPOConfig) -> RunResult:
    """Train a policy with GRPO, RLOO or REINFORCE (``cfg.estimator``) on prompts and a reward."""
    loop = TrainLoop.open(cfg, RUN_NAMES[cfg.estimator])
    prompts, eval_prompts = load_prompt_splits(cfg.data, cfg.train.seed)
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=cfg.beta > 0
    )
    # Every process scores the same samples: the running statistics need no gathering.
    reward = build_reward(cfg.reward, device=loop.device)
    plan = step_plan(len(prompts), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    reference = loop.frozen(reference) if reference is not None else None
    loop.restore()
    state: dict[str, Any] = dict(loop.state)
    if state.get("reward"):
        reward.load_state_dict(state["reward"])
    engine = RolloutEngine(loop.unwrap("policy"), tokenizer, cfg.sampling)
    pad_id, temperature = tokenizer.pad_token_id, max(cfg.sampling.temperature, 1e-6)
    base_seed = cfg.sampling.seed if cfg.sampling.seed is not None else cfg.train.seed
    kl_in_loss = cfg.beta > 0 and cfg.kl_penalty == "loss"
    kl_in_reward = cfg.beta > 0 and cfg.kl_penalty == "reward"

    def held_out() -> dict[str, float]:
        return evaluate(engine, reward, eval_prompts, cfg.eval_samples, base_seed + 999_983)

    def logps_of(samples: list[Sample], of_reference: bool) -> list[torch.Tensor]:
        """Per-sample token log-probs at the sampling temperature, computed once per step."""

        def forward(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            if of_reference:
                out = reference_logps(
                    loop.unwrap("policy"), reference, batch, temperature, share_prompts=True
                )
            else:
                out = completion_logps(
                    loop.unwrap("policy"), batch, temperature=temperature, share_prompts=True
                )
            return out.token_logps, out.mask

        size = cfg.train.micro_batch_size
        return loop.share(
            len(samples), lambda idx: token_values(forward, samples, idx, pad_id, size, loop.device)
        )

    def rollout(step: int) -> tuple[Rollouts, dict[str, float]]:
        samples = sample_step(engine, [prompts[i] for i in plan[step]], base_seed + 1_000 * step)
        scored = reward.score(samples)
        rewards, metrics = scored.total, reward_metrics(scored)
        several = cfg.num_iterations * cfg.num_minibatches > 1
        old = logps_of(samples, False) if several or kl_in_reward else []
        ref = logps_of(samples, True) if cfg.beta > 0 else []
        if kl_in_reward:
            kl = torch.stack([(o - r).sum() for o, r in zip(old, ref, strict=True)])
            rewards = rewards - cfg.beta * kl
            metrics["kl"] = float(kl.mean())
        advantages = advantages_of(rewards, cfg, state)
        keep_old = old if several else []
        return Rollouts(samples, advantages, keep_old, ref if kl_in_loss else []), metrics

    for step in loop.steps(len(plan)):
        rollouts, extra = rollout(step)
        samples = rollouts.samples
        parts = minibatches(len(samples), cfg.num_iterations, cfg.num_minibatches, base_seed + step)
        for minibatch in parts:
            counts = (len(minibatch), sum(samples[i].num_tokens for i in minibatch))
            for micro in loop.micro_batches(minibatch):
                batch = loop.to_device(rollout_batch([samples[i] for i in micro.indices], pad_id))
                old = [rollouts.old[i] for i in micro.indices] if rollouts.old else None
                ref = [rollouts.ref[i] for i in micro.indices] if rollouts.ref else None
                adv = rollouts.advantages[micro.indices].to(loop.device)
                loss, metrics = micro_loss(model, batch, adv, cfg, counts, ref_rows=ref, old_rows=old)
                # backward weighs the sum by P / len(minibatch): scaling by it leaves P * loss, which
                # DDP's average turns into the minibatch's loss; the logged value is that loss too.
                scaled = loss * len(minibatch)
                logged = loss.detach() * len(minibatch) / max(1, micro.count)
                loop.backward(scaled[None], micro, {**metrics, "loss": logged})
            if len(parts) > 1:
                loop.update()
        extra.update(rollout_metrics(samples))
        loop.optimizer_step(step, extra, evaluate=held_out, state={**state, "reward": reward.state_dict()})

    return loop.finish(
        saver(loop.unwrap(), tokenizer),
        eval_metrics=held_out(),
        state={**state, "reward": reward.state_dict()},
    )
