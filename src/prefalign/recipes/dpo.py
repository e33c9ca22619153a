"""Direct Preference Optimization and its pairwise relatives from prompt/chosen/rejected pairs.

``loss=`` picks one entry of :data:`LOSS_VARIANTS`: DPO (``sigmoid``), cDPO, IPO, robust DPO,
hinge, and the reference-free SimPO and ORPO; ``sft_coef`` adds the chosen answer's
length-normalised NLL to any of them (RPO). Unpaired data trains with ``prefalign kto`` and
rankings of more than two answers with ``prefalign listwise``.

Reads top to bottom: load the policy (LoRA optional), tokenise the pairs, compute the reference
log-probabilities once, then the optimizer loop, then save. With LoRA the reference is the same
model with its adapters disabled, so no second copy is held in memory. Without LoRA a frozen copy
of the starting weights is loaded. Reference-free losses load no reference and score nothing
before training.

Because the reference never changes, its log-probabilities are computed in one pass before
training (``precompute_reference=True``) instead of at every step; at step 0 the policy equals the
reference, so the first logged loss of the sigmoid loss is ln 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from prefalign.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from prefalign.losses.preference import (
    dpo_loss,
    hinge_loss,
    ipo_loss,
    orpo_loss,
    robust_dpo_loss,
    simpo_loss,
    with_sft_loss,
)
from prefalign.recipes.common import (
    TokenizedPair,
    build_optimizer,
    clip_and_step,
    collate_pairs,
    completion_logps,
    load_tokenized_pairs,
    loss_scale,
    make_accelerator,
    mean_metrics,
    micro_batches,
    save_final,
    step_plan,
)
from prefalign.recipes.scoring import load_policy_and_reference, reference_scope
from prefalign.run import Run, RunResult, console
from prefalign.utils import seed_everything


@dataclasses.dataclass
class DPOConfig:
    """Configuration of ``prefalign dpo``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: str = "sigmoid"
    """Pairwise loss, a key of LOSS_VARIANTS: 'sigmoid' (DPO), 'cdpo', 'ipo', 'robust', 'hinge',
    'simpo' or 'orpo' (the last two need no reference model)."""
    beta: float = 0.1
    """Strength of the implicit KL penalty to the reference (DPO's beta); SimPO's reward scale;
    ORPO's weight lambda of the odds-ratio term."""
    label_smoothing: float = 0.0
    """Assumed label-flip probability (sigmoid/cdpo: cDPO, robust, simpo); 0 is no smoothing."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin gamma (loss=simpo only)."""
    sft_coef: float = 0.0
    """Weight of the chosen answer's length-normalised NLL added to the loss (RPO; TRL's
    loss_type=[..., 'sft'] weight); 0 disables it."""
    reference_model: str = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score all pairs under the reference once before training (saves a forward per step)."""
    output_dir: str = "runs/dpo"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


@dataclasses.dataclass(frozen=True)
class LossVariant:
    """How the recipe feeds one pairwise loss."""

    fn: Callable[..., Any]
    """The pure loss (prefalign.losses.preference)."""
    reference: bool
    """Takes reference log-probs, ``fn(pc, pr, rc, rr, ...)``; else ``fn(pc, pr, ...)`` and no reference is loaded."""
    average_logps: bool
    """Takes per-token average log-probs (sum / token count) instead of sums."""
    smoothing: bool
    """Accepts ``label_smoothing``."""
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Further keyword arguments: loss argument name -> DPOConfig field."""


LOSS_VARIANTS: dict[str, LossVariant] = {
    "sigmoid": LossVariant(dpo_loss, reference=True, average_logps=False, smoothing=True),
    "cdpo": LossVariant(dpo_loss, reference=True, average_logps=False, smoothing=True),
    "ipo": LossVariant(ipo_loss, reference=True, average_logps=False, smoothing=False),
    "robust": LossVariant(robust_dpo_loss, reference=True, average_logps=False, smoothing=True),
    "hinge": LossVariant(hinge_loss, reference=True, average_logps=False, smoothing=False),
    "simpo": LossVariant(
        simpo_loss, reference=False, average_logps=True, smoothing=True, options={"gamma": "simpo_gamma"}
    ),
    "orpo": LossVariant(orpo_loss, reference=False, average_logps=True, smoothing=False),
}
"""The ``loss=`` choices of ``prefalign dpo``. IPO gets sequence sums (the paper's form; TRL averages)."""


def pair_loss(
    loss_fn: Callable[..., Any],
    variant: LossVariant,
    cfg: DPOConfig,
    logps: torch.Tensor,
    counts: torch.Tensor,
    ref: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The configured loss of one ``collate_pairs`` batch.

    ``logps`` and ``counts`` (2B,) are the policy's summed log-probs of [chosen; rejected] and
    their token counts (as :func:`completion_logps` returns them; the counts give averaged
    log-probs and the SFT term), ``ref`` the (B, 2) reference log-probs (None when reference-free).
    """
    counts = counts.clamp(min=1).to(logps.dtype)
    half = logps.shape[0] // 2
    scale = counts if variant.average_logps else torch.ones_like(counts)
    policy = logps / scale
    args = [policy[:half], policy[half:]]
    if variant.reference:
        assert ref is not None
        ref = ref.to(logps.dtype) / torch.stack([scale[:half], scale[half:]], dim=1)
        args += [ref[:, 0], ref[:, 1]]
    kwargs: dict[str, Any] = {"beta": cfg.beta, **{k: getattr(cfg, f) for k, f in variant.options.items()}}
    if cfg.label_smoothing:
        kwargs["label_smoothing"] = cfg.label_smoothing
    out = loss_fn(*args, **kwargs)
    if cfg.sft_coef:
        out = with_sft_loss(out, -logps[:half] / counts[:half], sft_coef=cfg.sft_coef)
    return out


@torch.no_grad()
def reference_pair_logps(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[TokenizedPair],
    pad_id: int,
    batch_size: int,
) -> torch.Tensor:
    """(N, 2) reference log-probs of every pair's chosen and rejected answer."""
    model, context = reference_scope(policy, reference)
    out = []
    with context:
        for start in range(0, len(rows), batch_size):
            logps, _ = completion_logps(model, collate_pairs(rows[start : start + batch_size], pad_id))
            out.append(torch.stack(logps.chunk(2), dim=1))  # [chosen; rejected] -> (B, 2)
    return torch.cat(out) if out else torch.zeros(0, 2)


def evaluate(
    policy: torch.nn.Module,
    rows: list[TokenizedPair],
    ref_logps: torch.Tensor | None,
    pad_id: int,
    cfg: DPOConfig,
    loss_fn: Callable[..., Any],
) -> dict[str, float]:
    """Mean loss and reward metrics of the current policy on held-out pairs."""
    variant = LOSS_VARIANTS[cfg.loss]
    policy.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start : start + cfg.train.micro_batch_size]
            batch = collate_pairs(chunk, pad_id)
            logps, counts = completion_logps(policy, batch)
            ref = ref_logps[start : start + len(chunk)] if ref_logps is not None else None
            losses, metrics = pair_loss(loss_fn, variant, cfg, logps, counts, ref)
            parts.append((len(chunk), {"loss": losses.mean(), **metrics}))
    policy.train()
    return {f"eval/{k}": v for k, v in mean_metrics(parts).items()}


def resolve_loss(cfg: DPOConfig) -> LossVariant:
    """The :data:`LOSS_VARIANTS` entry ``cfg.loss`` names, checked against the other settings."""
    if cfg.loss not in LOSS_VARIANTS:
        hint = {"kto": "prefalign kto", "listwise": "prefalign listwise"}.get(cfg.loss)
        more = f"; {cfg.loss} has its own command: {hint}" if hint else ""
        raise ConfigError(f"loss: unknown {cfg.loss!r}; choose from {sorted(LOSS_VARIANTS)}{more}")
    variant = LOSS_VARIANTS[cfg.loss]
    if cfg.label_smoothing and not variant.smoothing:
        raise ConfigError(f"label_smoothing: loss {cfg.loss!r} has no label smoothing; set it to 0")
    if cfg.sft_coef < 0:
        raise ConfigError(f"sft_coef must be >= 0, got {cfg.sft_coef}")
    return variant


def train(cfg: DPOConfig, *, loss_fn: Callable[..., Any] | None = None) -> RunResult:
    """Run DPO as configured; ``loss_fn`` overrides the function of ``cfg.loss`` (same inputs)."""
    variant = resolve_loss(cfg)
    loss_fn = loss_fn or variant.fn
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=variant.reference
    )
    pad_id = tokenizer.pad_token_id
    train_rows, eval_rows = load_tokenized_pairs(tokenizer, cfg.data, cfg.train.seed, run.output_dir)
    plan = step_plan(len(train_rows), cfg.train)
    optimizer, scheduler = build_optimizer(policy, cfg.train, len(plan))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    policy.train()

    ref_batch = max(1, cfg.train.micro_batch_size)
    train_ref = eval_ref = None
    if cfg.precompute_reference and variant.reference:
        console.print(f"scoring {len(train_rows) + len(eval_rows)} pairs under the reference model")
        train_ref = reference_pair_logps(policy, reference, train_rows, pad_id, ref_batch)
        eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, ref_batch)
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    start = run.restore(policy, optimizer, scheduler)

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "dpo"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        parts = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            rows = [train_rows[i] for i in micro]
            batch = collate_pairs(rows, pad_id)
            logps, counts = completion_logps(policy, batch)
            if not variant.reference:
                ref = None
            elif train_ref is not None:
                ref = train_ref[micro]
            else:
                ref = reference_pair_logps(policy, reference, rows, pad_id, len(rows))
            losses, metrics = pair_loss(loss_fn, variant, cfg, logps, counts, ref)
            accelerator.backward(losses.sum() * scale)
            parts.append((len(micro), {"loss": losses.detach().mean(), **metrics}))
        grad_norm = clip_and_step(policy, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {**mean_metrics(parts), "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]}
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_rows:
            if eval_ref is None and variant.reference:
                eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, ref_batch)
            last.update(evaluate(policy, eval_rows, eval_ref, pad_id, cfg, loss_fn))
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} acc {last.get('rewards/accuracy', 0):.2f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(policy), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(policy)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics: dict[str, Any] = {}
    if eval_rows:
        if eval_ref is None and variant.reference:
            eval_ref = reference_pair_logps(policy, reference, eval_rows, pad_id, ref_batch)
        eval_metrics = evaluate(policy, eval_rows, eval_ref, pad_id, cfg, loss_fn)
    return save_final(run, unwrapped, tokenizer, steps=len(plan), last=last, eval_metrics=eval_metrics)
