"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath), with Dr. GRPO and DAPO.

Each optimizer step takes ``train.batch_size`` prompts, samples ``sampling.n`` completions of each
from the current policy (:class:`prefalign.rollout.RolloutEngine`, synced after every update),
scores them with the configured reward (:mod:`prefalign.rewards`), and turns each group's rewards
into advantages ``(r - mean_group) / (std_group + eps)`` (``scale_rewards``; Dr. GRPO: 'none').
The policy loss is PPO's clipped surrogate per token (:func:`prefalign.losses.ppo_policy_loss`;
``clip_high`` is DAPO's clip-higher, ``importance=sequence`` GSPO's sequence ratio), plus
``beta`` times the k3 estimate of KL(policy || reference) per token, normalised as ``loss``
says (:func:`prefalign.losses.policy_loss_reduction`: 'grpo' per-sequence means, 'dr_grpo' sum
over ``max_new_tokens``, 'dapo' token mean), with the step's global counts, so micro-batches and
processes do not change the gradient.

One policy update per generation (TRL's ``num_iterations=1``): the importance ratio is 1 at the
update and the clip only matters through ``importance``/``clip_high`` once several updates reuse a
generation. Log-probs for the loss come from the training model at the sampling temperature,
never from the engine. Every process draws the step's samples with the same seed (the same
samples everywhere) and trains on its share of them.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import torch

from prefalign.config import (
    AtLeast,
    ConfigError,
    DataConfig,
    ModelConfig,
    ModelName,
    OneOf,
    OutputDir,
    TrainConfig,
)
from prefalign.feedback.formats import load_prompts, split_rows
from prefalign.losses import group_advantages, policy_loss_reduction, ppo_policy_loss
from prefalign.models.scoring import completion_logps, reference_scope
from prefalign.ops.kl import token_kl
from prefalign.recipes.common import load_policy_and_reference, saver
from prefalign.rewards import RewardConfig, build_reward
from prefalign.rollout import RolloutEngine, Sample, SamplingConfig
from prefalign.tokens import Text, right_pad
from prefalign.train import RunResult, TrainLoop, step_plan

SCALES = {"group": "std", "batch": "batch", "none": "none"}


@dataclasses.dataclass
class GRPOConfig:
    """Configuration of ``prefalign grpo``."""

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
    loss: Annotated[str, OneOf("grpo", "dr_grpo", "dapo")] = "grpo"
    """Normalisation: 'grpo' (mean over each completion's tokens, then over completions),
    'dr_grpo' (sum over tokens / max_new_tokens), 'dapo' (mean over all tokens of the step)."""
    scale_rewards: Annotated[str, OneOf(*SCALES)] = "group"
    """Advantage scale: the group's std ('group'), the batch's ('batch') or none (Dr. GRPO)."""
    clip_low: Annotated[float, AtLeast(0)] = 0.2
    """PPO clip range below 1 (epsilon)."""
    clip_high: Annotated[float, AtLeast(0)] | None = None
    """Clip range above 1 (DAPO's clip-higher, e.g. 0.28); None uses clip_low."""
    importance: Annotated[str, OneOf("token", "sequence")] = "token"
    """Importance ratio per token (GRPO) or per sequence (GSPO)."""
    beta: Annotated[float, AtLeast(0)] = 0.0
    """Weight of the per-token k3 KL to the reference; 0 loads no reference."""
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
        if self.sampling.n < 2:
            raise ConfigError(
                f"sampling.n: GRPO compares completions within a group: must be >= 2, got {self.sampling.n}"
            )


def rollout_batch(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (prompt, completion) batch of samples for the scorer."""
    return right_pad([s.prompt_ids for s in samples], [s.completion_ids for s in samples], pad_id)


def micro_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    advantages: torch.Tensor,
    ref_logps: torch.Tensor | None,
    cfg: GRPOConfig,
    counts: tuple[int, int],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """() loss of one micro-batch, already normalised by the step's (sequences, tokens) ``counts``."""
    out = completion_logps(model, batch, temperature=max(cfg.sampling.temperature, 1e-6))
    per_token, metrics = ppo_policy_loss(
        out.token_logps,
        out.token_logps.detach(),  # one update per generation: the sampling policy is this one
        advantages,
        out.mask,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
        level=cfg.importance,
    )
    mask = out.mask.bool()
    metrics["entropy"] = -(out.token_logps.detach() * mask).sum() / mask.sum().clamp(min=1)
    if ref_logps is not None:
        kl = token_kl(out.token_logps, ref_logps, mask, estimator="k3")
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


@torch.no_grad()
def reference_token_logps(policy: Any, reference: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T) per-token log-probs of ``batch`` under the reference (adapters off for LoRA)."""
    with reference_scope(policy, reference) as model:
        return completion_logps(model, batch).token_logps


def sample_step(engine: RolloutEngine, prompts: list[Text], seed: int) -> list[Sample]:
    """The step's groups: ``n`` completions of each prompt from the current policy, prompt-major."""
    engine.sync()
    return engine.generate(prompts, seed=seed)


def evaluate(
    engine: RolloutEngine, reward: Any, prompts: list[Text], count: int, seed: int
) -> dict[str, float]:
    """Mean reward, length and EOS rate of ``count`` held-out samples (the reward's scale untouched)."""
    if not prompts or not count:
        return {}
    chosen = [prompts[i % len(prompts)] for i in range(count)]
    samples = sample_step(engine, chosen, seed)[:count]
    scores = reward.score(samples, update=False).total
    return {
        "eval/reward": float(scores.mean()),
        "eval/length": sum(s.num_tokens for s in samples) / len(samples),
        "eval/eos_rate": sum(s.finished for s in samples) / len(samples),
    }


def train(cfg: GRPOConfig) -> RunResult:
    """Train a policy with GRPO on the configured prompts and reward."""
    loop = TrainLoop.open(cfg, "grpo")
    prompts = load_prompts(cfg.data.train)
    eval_prompts = load_prompts(cfg.data.eval) if cfg.data.eval else []
    if not cfg.data.eval and cfg.data.eval_fraction > 0:
        prompts, eval_prompts = split_rows(prompts, eval_fraction=cfg.data.eval_fraction, seed=cfg.train.seed)
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=cfg.beta > 0
    )
    # Every process scores the same samples: the running statistics need no gathering.
    reward = build_reward(cfg.reward, device=loop.device)
    plan = step_plan(len(prompts), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    if reference is not None:
        reference.to(loop.device)
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
        advantages = group_advantages(scored.total, cfg.sampling.n, scale=SCALES[cfg.scale_rewards])
        tokens = sum(s.num_tokens for s in samples)
        for micro in loop.micro_batches(list(range(len(samples)))):
            batch = loop.to_device(rollout_batch([samples[i] for i in micro.indices], pad_id))
            ref = reference_token_logps(loop.unwrap("policy"), reference, batch) if cfg.beta > 0 else None
            adv = advantages[micro.indices].to(loop.device)
            loss, metrics = micro_loss(model, batch, adv, ref, cfg, (len(samples), tokens))
            # backward weighs the sum by P / len(samples): scaling by len(samples) leaves P * loss,
            # which DDP's average turns into the step's loss; the logged value is the step's too.
            scaled = loss * len(samples)
            loop.backward(
                scaled[None], micro, {**metrics, "loss": loss.detach() * len(samples) / max(1, micro.count)}
            )
        extra = {
            f"reward/{k}" if not k.startswith("reward") else k: float(v.mean())
            for k, v in scored.parts.items()
        }
        extra.update(
            {
                "reward": float(scored.total.mean()),
                "reward_std": float(scored.total.std()) if len(samples) > 1 else 0.0,
                "completion_length": tokens / len(samples),
                "eos_rate": sum(s.finished for s in samples) / len(samples),
            }
        )
        loop.optimizer_step(step, extra, evaluate=held_out, state={"reward": reward.state_dict()})

    return loop.finish(
        saver(loop.unwrap(), tokenizer), eval_metrics=held_out(), state={"reward": reward.state_dict()}
    )
