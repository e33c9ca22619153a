"""Proximal Policy Optimization for language models with a value model (Ouyang et al. 2022), as
"The N Implementation Details of RLHF with PPO" (Huang et al. 2024) describe it.

Each step: ``train.batch_size`` prompts, ``sampling.n`` completions of each from the current policy
(pure sampling unless configured, left-padded generation); the step's rollouts are scored once,
right-padded with positions from the attention mask, by the policy at the sampling temperature
(old log-probs), the reference and the value model (V of every prefix, prompt included); the
configured reward scores each completion (a missing-EOS penalty via ``reward.missing_eos_penalty``),
paid at its last token, while every token pays ``kl_coef`` times its KL to the reference
(:func:`prefalign.losses.kl_penalty_rewards`); optional reward whitening (no mean shift); GAE
(``gamma``, ``lam``); whitened advantages. Then ``ppo_epochs`` passes over ``num_minibatches``
shuffled minibatches, one parameter update each: PPO's clipped surrogate plus ``vf_coef`` times
the clipped value loss, both means over the minibatch's tokens. The KL coefficient is fixed or
adapted to ``target_kl`` after each step; the learning rate anneals once per step
(``train.lr_scheduler``). docs/PPO.md maps each implementation detail to its field and test.

The value model is a second copy of the policy's base model (or ``value_model``) with a value
head (:class:`prefalign.models.heads.CausalLMWithValueHead`), LoRA adapters of its own when
``model.lora``; dropout is off in policy, reference, value and reward models.
"""

from __future__ import annotations

import dataclasses
import functools
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
from prefalign.losses import (
    AdaptiveKLController,
    FixedKLController,
    clipped_value_loss,
    gae,
    kl_penalty_rewards,
    ppo_policy_loss,
    whiten,
)
from prefalign.models import load_causal_lm
from prefalign.models.heads import VALUE_HEAD_INITS, CausalLMWithValueHead
from prefalign.models.scoring import completion_logps
from prefalign.ops import masked_sum
from prefalign.recipes.common import load_policy_and_reference, lora_settings, saver
from prefalign.recipes.rollouts import (
    as_rows,
    check_minibatches,
    evaluate,
    load_prompt_splits,
    minibatches,
    padded_rows,
    per_row,
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


@dataclasses.dataclass
class PPOConfig:
    """Configuration of ``prefalign ppo``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """``data.train``: prompts (a .txt file, one per line, or rows with a ``prompt`` field)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """``train.batch_size`` counts prompts per rollout step; ``train.micro_batch_size`` counts
    completions per forward; the learning rate anneals once per step (``lr_scheduler``)."""
    reward: RewardConfig = dataclasses.field(default_factory=lambda: RewardConfig(scorer="vader"))
    """What scores each completion; ``missing_eos_penalty`` is the fixed penalty for no EOS."""
    sampling: SamplingConfig = dataclasses.field(
        default_factory=lambda: SamplingConfig(n=1, max_new_tokens=64)
    )
    """How completions are sampled: pure sampling (top_k 0, top_p 1) unless set here; the
    temperature also divides the logits of every log-prob the losses and the KL use."""
    ppo_epochs: Annotated[int, AtLeast(1)] = 4
    """Passes over each step's rollouts."""
    num_minibatches: Annotated[int, AtLeast(1)] = 1
    """Shuffled minibatches per pass, one parameter update each."""
    clip_low: Annotated[float, Above(0)] = 0.2
    """Policy ratio clip range below 1 (epsilon)."""
    clip_high: Annotated[float, Above(0)] | None = None
    """Clip range above 1; None uses clip_low."""
    value_clip: Annotated[float, Above(0)] | None = 0.2
    """Clip of the value prediction around its rollout value (None: unclipped value loss)."""
    vf_coef: Annotated[float, AtLeast(0)] = 0.1
    """Weight of the value loss."""
    gamma: Annotated[float, InRange(0, 1)] = 1.0
    """Discount of GAE."""
    lam: Annotated[float, InRange(0, 1)] = 0.95
    """Lambda of GAE."""
    kl_controller: Annotated[str, OneOf("fixed", "adaptive")] = "fixed"
    """'fixed': kl_coef stays; 'adaptive': proportional control towards target_kl (Ziegler 2019)."""
    kl_coef: Annotated[float, AtLeast(0)] = 0.05
    """Weight (initial, when adaptive) of the per-token KL penalty in the reward."""
    target_kl: Annotated[float, Above(0)] = 6.0
    """Adaptive controller: the per-sequence KL (nats) to hold."""
    kl_horizon: Annotated[int, AtLeast(1)] = 10000
    """Adaptive controller: horizon in samples (larger adapts more slowly)."""
    kl_estimator: Annotated[str, OneOf("k1", "k3")] = "k1"
    """Per-token KL in the reward: k1 (log pi - log ref: its sum is the sequence KL) or k3."""
    whiten_rewards: bool = False
    """Scale the token rewards to unit variance over the step (no mean shift) before GAE."""
    whiten_advantages: bool = True
    """Shift and scale the advantages to mean 0, variance 1 over the step."""
    normalize_on_reference: Annotated[int, AtLeast(0)] = 0
    """Samples of the starting policy (the reference) whose reward statistics fix
    reward.normalize's scale before training (it stays fixed after); 0: running statistics."""
    value_model: Annotated[str, ModelName(optional=True)] = ""
    """Base of the value model; empty: the policy's model.name (it must share the tokenizer)."""
    value_head_init: Annotated[str, OneOf(*VALUE_HEAD_INITS)] = "zero"
    """'zero' (every first value 0) or 'normal' (N(0, 1/(d+1)) weights)."""
    value_learning_rate: Annotated[float, Above(0)] | None = None
    """Learning rate of the value model; None: train.learning_rate."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference when LoRA is off; empty means the starting weights of model.name."""
    eval_samples: Annotated[int, AtLeast(0)] = 32
    """Held-out completions (cycling through the held-out prompts) scored at eval; 0 skips it."""
    output_dir: Annotated[str, OutputDir()] = "runs/ppo"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        if self.normalize_on_reference and self.reward.normalize == "none":
            raise ConfigError(
                "normalize_on_reference: needs reward.normalize 'standardize' or 'scale' (it is 'none')"
            )
        check_minibatches(self.num_minibatches, self.train.batch_size * self.sampling.n)


@dataclasses.dataclass
class Rollouts:
    """One step's rollouts: per-sample (n_i,) token tensors, and their scores (N,)."""

    samples: list[Sample]
    scores: torch.Tensor
    logps: list[torch.Tensor]
    ref_logps: list[torch.Tensor]
    values: list[torch.Tensor]
    advantages: list[torch.Tensor] = dataclasses.field(default_factory=list)
    returns: list[torch.Tensor] = dataclasses.field(default_factory=list)


def value_positions(
    values: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, mask)`` (B, L-1): V of the prefix before each completion token (the value read at
    the position whose logits predict that token), true on completion tokens."""
    return values[:, :-1], batch["loss_mask"][:, 1:].bool()


def build_value_model(cfg: PPOConfig, tokenizer: Any) -> CausalLMWithValueHead:
    """The value model: a causal LM's decoder plus a value head (LoRA adapters when model.lora)."""
    name = cfg.value_model or cfg.model.name
    lm, value_tokenizer = load_causal_lm(name, lora=lora_settings(cfg.model))
    if value_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"value_model: {name!r} has another tokenizer than the policy {cfg.model.name!r}")
    return CausalLMWithValueHead(lm, init=cfg.value_head_init)


def advantages_of(rollouts: Rollouts, kl_coef: float, cfg: PPOConfig) -> dict[str, float]:
    """Fill ``rollouts.advantages`` / ``returns`` (KL-penalised token rewards, GAE, whitening);
    returns the step's reward-side metrics."""
    logps, mask = padded_rows(rollouts.logps)
    ref, _ = padded_rows(rollouts.ref_logps)
    values, _ = padded_rows(rollouts.values)
    rewards = kl_penalty_rewards(
        rollouts.scores, logps, ref, mask, kl_coef=kl_coef, estimator=cfg.kl_estimator
    )
    non_score = rewards.sum(-1) - rollouts.scores * mask.any(-1)
    if cfg.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    rollouts.advantages, rollouts.returns = per_row(advantages, mask), per_row(returns, mask)
    count = mask.sum().clamp(min=1)
    return {
        "kl": float(masked_sum(logps - ref, mask, dim=-1).mean()),
        "non_score_reward": float(non_score.mean()),
        "returns": float((returns * mask).sum() / count),
        "values": float((values * mask).sum() / count),
        "kl_coef": kl_coef,
    }


def micro_loss(
    policy: torch.nn.Module,
    critic: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    rollouts: Rollouts,
    indices: list[int],
    cfg: PPOConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B,) per-row sums of ``policy loss + vf_coef * value loss`` over completion tokens."""
    pick = [rollouts.logps[i] for i in indices]
    out = completion_logps(policy, batch, temperature=max(cfg.sampling.temperature, 1e-6))
    mask = out.mask
    per_token, metrics = ppo_policy_loss(
        out.token_logps,
        as_rows(pick, mask),
        as_rows([rollouts.advantages[i] for i in indices], mask),
        mask,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
    )
    values, value_mask = value_positions(critic(batch["input_ids"], batch["attention_mask"]).values, batch)
    value_losses, value_metrics = clipped_value_loss(
        values,
        as_rows([rollouts.values[i] for i in indices], value_mask),
        as_rows([rollouts.returns[i] for i in indices], value_mask),
        value_mask,
        clip=cfg.value_clip,
    )
    policy_sum = masked_sum(per_token, mask, dim=-1)
    value_sum = masked_sum(value_losses, value_mask, dim=-1)
    tokens = mask.sum().clamp(min=1)
    metrics.update(
        {
            "policy_loss": policy_sum.detach().sum() / tokens,
            "value_loss": value_sum.detach().sum() / tokens,
            "value_clip_fraction": value_metrics["clip_fraction"],
            "value_error": value_metrics["mse"],
            "entropy": -(out.token_logps.detach() * mask).sum() / tokens,
        }
    )
    metrics["loss"] = metrics["policy_loss"] + cfg.vf_coef * metrics["value_loss"]
    return policy_sum + cfg.vf_coef * value_sum, metrics


def make_controller(cfg: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if cfg.kl_controller == "adaptive":
        return AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


def train(cfg: PPOConfig) -> RunResult:
    """Train a policy and its value model with PPO on the configured prompts and reward."""
    loop = TrainLoop.open(cfg, "ppo")
    prompts, eval_prompts = load_prompt_splits(cfg.data, cfg.train.seed)
    policy, reference, tokenizer = load_policy_and_reference(cfg.model, cfg.reference_model)
    critic = build_value_model(cfg, tokenizer)
    reward = build_reward(cfg.reward, device=loop.device)
    plan = step_plan(len(prompts), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    value_model = loop.prepare("value", critic, len(plan), learning_rate=cfg.value_learning_rate)
    reference = loop.frozen(reference) if reference is not None else None
    loop.restore()
    controller = make_controller(cfg)
    if loop.state:
        reward.load_state_dict(loop.state["reward"])
        controller.load_state_dict(loop.state["kl_controller"])
    engine = RolloutEngine(loop.unwrap("policy"), tokenizer, cfg.sampling)
    pad_id, temperature = tokenizer.pad_token_id, max(cfg.sampling.temperature, 1e-6)
    base_seed = cfg.sampling.seed if cfg.sampling.seed is not None else cfg.train.seed
    if cfg.normalize_on_reference and not loop.state:
        # The starting policy is the reference: its samples fix the reward's scale for the run.
        chosen = [prompts[i % len(prompts)] for i in range(cfg.normalize_on_reference)]
        reward.score(sample_step(engine, chosen, base_seed + 7_919)[: len(chosen)], update=True)

    def state() -> dict[str, Any]:
        return {"reward": reward.state_dict(), "kl_controller": controller.state_dict()}

    def held_out() -> dict[str, float]:
        return evaluate(engine, reward, eval_prompts, cfg.eval_samples, base_seed + 999_983)

    def score(samples: list[Sample], indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        """(old log-probs, reference log-probs, values) of ``samples[indices]``, per sample."""
        args = (samples, indices, pad_id, cfg.train.micro_batch_size, loop.device)
        unwrapped = loop.unwrap("policy")

        def policy_logps(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            out = completion_logps(unwrapped, batch, temperature=temperature)
            return out.token_logps, out.mask

        def ref_logps(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            out = reference_logps(unwrapped, reference, batch, temperature)
            return out.token_logps, out.mask

        def values(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            critic_out = loop.unwrap("value")(batch["input_ids"], batch["attention_mask"])
            return value_positions(critic_out.values, batch)

        columns = [token_values(fn, *args) for fn in (policy_logps, ref_logps, values)]
        return list(zip(*columns, strict=True))

    for step in loop.steps(len(plan)):
        samples = sample_step(engine, [prompts[i] for i in plan[step]], base_seed + 1_000 * step)
        scored = reward.score(samples, update=not cfg.normalize_on_reference)
        logps, refs, values = zip(*loop.share(len(samples), functools.partial(score, samples)), strict=True)
        rollouts = Rollouts(samples, scored.total, list(logps), list(refs), list(values))
        extra = advantages_of(rollouts, controller.value, cfg)
        for minibatch in minibatches(len(samples), cfg.ppo_epochs, cfg.num_minibatches, base_seed + step):
            tokens = sum(len(rollouts.logps[i]) for i in minibatch)
            for micro in loop.micro_batches(minibatch, total=tokens):
                batch = loop.to_device(rollout_batch([samples[i] for i in micro.indices], pad_id))
                losses, metrics = micro_loss(model, value_model, batch, rollouts, micro.indices, cfg)
                loop.backward(losses, micro, metrics)
            loop.update()
        controller.update(extra["kl"], n_steps=len(samples))
        extra.update(reward_metrics(scored))
        extra.update(rollout_metrics(samples))
        loop.optimizer_step(step, extra, evaluate=held_out, state=state())

    return loop.finish(saver(loop.unwrap(), tokenizer), eval_metrics=held_out(), state=state())
