"""Kahneman-Tversky Optimization (KTO) from unpaired completions, each labelled desirable or not.

Data is TRL's unpaired format ``{prompt, completion, label}``; a pair file works too (each pair is
one desirable and one undesirable row), so the same data can train every method. The loss is
:func:`prefalign.losses.preference.kto_loss`.

KTO's reference point ``z_ref`` estimates ``KL(pi || ref)`` from *mismatched* pairs: within each
optimizer step the completions are shifted by one, so prompt ``x_k`` is paired with completion
``y_{k-1}`` (TRL's construction). The estimate covers the whole step: every process scores all of
the step's mismatched pairs under the policy as it is at the start of the step, without gradients,
so ``z_ref`` is the same on every process and for every split into micro-batches. Because the step
plan is fixed by the seed, the mismatched pairs are too, and their reference log-probs are computed
before training with everything else.

Reads top to bottom: load the policy (LoRA optional) and reference, encode, score under the
reference, the optimizer loop, save. At step 0 the policy equals the reference, so every
example's loss is half its weight (0.5 with the default weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch

from prefalign.config import Above, ConfigError, DataConfig, ModelConfig, ModelName, OutputDir, TrainConfig
from prefalign.feedback.formats import UnpairedRow, load_unpaired_rows, split_rows
from prefalign.losses.preference import kto_loss
from prefalign.models.scoring import completion_logps, reference_completion_logps, score_completions
from prefalign.recipes.common import encode, load_policy_and_reference, load_splits, saver
from prefalign.tokens import right_pad
from prefalign.train import RunResult, TrainLoop, console, step_plan

TokenIds = tuple[list[int], list[int]]


@dataclasses.dataclass
class KTOConfig:
    """Configuration of ``prefalign kto``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    beta: Annotated[float, Above(0)] = 0.1
    """Scale of the log-ratio in KTO's value function (the strength of the pull to the reference)."""
    desirable_weight: Annotated[float, Above(0)] = 1.0
    """lambda_D, the loss weight of desirable examples."""
    undesirable_weight: Annotated[float, Above(0)] = 1.0
    """lambda_U, the loss weight of undesirable examples; the paper keeps
    lambda_D * n_desirable / (lambda_U * n_undesirable) within [1, 4/3]."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference model when LoRA is off; empty means the starting weights of ``model.name``."""
    precompute_reference: bool = True
    """Score every example and mismatched pair under the reference once, before training."""
    output_dir: Annotated[str, OutputDir()] = "runs/kto"
    """Where config.yaml, metrics.jsonl, checkpoints/ and final/ go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        """Cross-field checks, run when the config is read (field checks have passed)."""
        if self.train.batch_size < 2:
            raise ConfigError(
                f"train.batch_size: must be >= 2 for KTO (its KL estimate pairs each prompt with another "
                f"example's completion), got {self.train.batch_size}"
            )


# ---- data ----------------------------------------------------------------------------------------
def load_unpaired_splits(
    data: DataConfig, seed: int, report_dir: Any = None
) -> tuple[list[UnpairedRow], list[UnpairedRow]]:
    """Training and held-out rows as the config asks (:func:`load_splits`).

    The split keeps rows from one source line together, so both halves of a pair land on the same
    side and nothing held out was seen in training.
    """
    return load_splits(load_unpaired_rows, data, seed, report_dir, split=split_by_source)


def split_by_source(
    rows: list[UnpairedRow], *, eval_fraction: float, seed: int
) -> tuple[list[UnpairedRow], list[UnpairedRow]]:
    """:func:`split_rows` over groups of rows from the same source line."""
    groups: dict[str, list[UnpairedRow]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(row.source or f"#{index}", []).append(row)
    train, held_out = split_rows(list(groups.values()), eval_fraction=eval_fraction, seed=seed)
    return [r for g in train for r in g], [r for g in held_out for r in g]


def mismatched_pairs(encoded: list[TokenIds], indices: Sequence[int], max_length: int) -> list[TokenIds]:
    """KTO's KL pairs for a batch: prompt ``k`` with the completion of ``k - 1`` (cyclically).

    The completion is cut to fit ``max_length`` after the other prompt.
    """
    pairs = []
    for k, i in enumerate(indices):
        prompt = encoded[i][0]
        completion = encoded[indices[k - 1]][1]
        pairs.append((prompt, completion[: max(1, max_length - len(prompt))]))
    return pairs


def step_class_means(
    metrics: dict[str, torch.Tensor], labels: torch.Tensor, count: int, step_labels: torch.Tensor
) -> dict[str, torch.Tensor | float]:
    """One micro-batch's metrics rescaled so the loop logs class means over the whole step.

    ``kto_loss`` gives ``rewards/*`` and ``logps/*`` as means over the micro-batch's desirable
    (``chosen``) and undesirable (``rejected``) examples, and a micro-batch may hold only one kind.
    The loop logs the example-weighted mean of what ``count``-example micro-batches record over the
    step's ``N`` examples, so a class mean ``m`` over ``n`` of the micro-batch's examples is recorded
    as ``m * n * N / (n_step * count)``: the logged value is the mean over the step's ``n_step``.
    """
    out: dict[str, torch.Tensor | float] = {
        k: v for k, v in metrics.items() if not k.startswith(("rewards/", "logps/"))
    }
    examples = step_labels.numel()
    for name, members, step_members in (
        ("chosen", labels, step_labels),
        ("rejected", ~labels, ~step_labels),
    ):
        n, n_step = int(members.sum()), int(step_members.sum())
        for kind in ("rewards", "logps"):
            if n_step:
                value = metrics.get(f"{kind}/{name}", 0.0)  # absent when the micro-batch has none
                out[f"{kind}/{name}"] = value * n * examples / (n_step * count) if count else 0.0
    if "rewards/chosen" in out and "rewards/rejected" in out:
        out["rewards/margin"] = out["rewards/chosen"] - out["rewards/rejected"]
    return out


# ---- evaluation ----------------------------------------------------------------------------------
def evaluate(
    loop: TrainLoop,
    model: torch.nn.Module,
    rows: list[TokenIds],
    labels: torch.Tensor,
    ref: torch.Tensor,
    ref_kl: torch.Tensor,
    pad_id: int,
    cfg: KTOConfig,
    loss_fn: Callable[..., Any],
) -> dict[str, float]:
    """Mean loss and metrics on held-out rows; the KL pairs are the held-out set shifted by one."""
    size = cfg.train.micro_batch_size
    kl_rows = mismatched_pairs(rows, range(len(rows)), cfg.data.max_length)
    logps = score_completions(model, rows, pad_id, batch_size=size)[0].to(loop.device)
    policy_kl = score_completions(model, kl_rows, pad_id, batch_size=size)[0].to(loop.device)
    ref, labels, ref_kl = ref.to(loop.device), labels.to(loop.device), ref_kl.to(loop.device)
    losses, metrics = loss_fn(logps, ref, labels, policy_kl, ref_kl, **loss_kwargs(cfg))
    return {f"eval/{k}": float(v) for k, v in {"loss": losses.mean(), **metrics}.items()}


def loss_kwargs(cfg: KTOConfig) -> dict[str, float]:
    return {
        "beta": cfg.beta,
        "desirable_weight": cfg.desirable_weight,
        "undesirable_weight": cfg.undesirable_weight,
    }


def train(cfg: KTOConfig, *, loss_fn: Callable[..., Any] = kto_loss) -> RunResult:
    """Run KTO as configured; ``loss_fn`` replaces :func:`kto_loss` with any function of its shape."""
    loop = TrainLoop.open(cfg, "kto")
    policy, reference, tokenizer = load_policy_and_reference(cfg.model, cfg.reference_model)
    pad_id = tokenizer.pad_token_id
    train_rows, eval_rows = load_unpaired_splits(cfg.data, cfg.train.seed, loop.run.output_dir)
    encoded = [encode(tokenizer, r.prompt, r.completion, cfg.data) for r in train_rows]
    eval_encoded = [encode(tokenizer, r.prompt, r.completion, cfg.data) for r in eval_rows]
    labels = torch.tensor([r.label for r in train_rows], dtype=torch.bool)
    eval_labels = torch.tensor([r.label for r in eval_rows], dtype=torch.bool)
    desirable = int(labels.sum())
    console.print(f"kto: {desirable} desirable and {len(labels) - desirable} undesirable training examples")
    plan = step_plan(len(encoded), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    reference = loop.frozen(reference) if reference is not None else None

    size = cfg.train.micro_batch_size
    kl_rows = [mismatched_pairs(encoded, indices, cfg.data.max_length) for indices in plan]
    eval_kl_rows = mismatched_pairs(eval_encoded, range(len(eval_encoded)), cfg.data.max_length)

    def reference_logps(rows: list[TokenIds]) -> torch.Tensor:
        return reference_completion_logps(policy, reference, rows, pad_id, batch_size=size)

    train_ref = train_ref_kl = None
    if cfg.precompute_reference:
        console.print(
            f"scoring {len(encoded) + len(eval_encoded)} examples and their KL pairs under the reference"
        )
        train_ref = reference_logps(encoded)
        train_ref_kl = [reference_logps(rows) for rows in kl_rows]
    eval_ref, eval_ref_kl = reference_logps(eval_encoded), reference_logps(eval_kl_rows)
    if cfg.precompute_reference:
        reference = None  # every reference log-prob is in hand: free the frozen copy's memory
    loop.restore()

    def held_out() -> dict[str, float]:
        if not eval_encoded:
            return {}
        return evaluate(loop, model, eval_encoded, eval_labels, eval_ref, eval_ref_kl, pad_id, cfg, loss_fn)

    for step in loop.steps(len(plan)):
        indices = plan[step]
        # The reference point: the whole step's mismatched pairs, scored before any micro-batch.
        policy_kl = score_completions(model, kl_rows[step], pad_id, batch_size=size)[0].to(loop.device)
        ref_kl = train_ref_kl[step] if train_ref_kl is not None else reference_logps(kl_rows[step])
        ref_kl = ref_kl.to(loop.device)
        step_labels = labels[indices]
        for micro in loop.micro_batches(indices):
            rows = [encoded[i] for i in micro.indices]
            batch = right_pad([p for p, _ in rows], [c for _, c in rows], pad_id)
            out = completion_logps(model, loop.to_device(batch))
            ref = train_ref[micro.indices] if train_ref is not None else reference_logps(rows)
            micro_labels = labels[micro.indices]
            on_device = ref.to(loop.device), micro_labels.to(loop.device)
            losses, metrics = loss_fn(out.sums, *on_device, policy_kl, ref_kl, **loss_kwargs(cfg))
            loop.backward(losses, micro, step_class_means(metrics, micro_labels, micro.count, step_labels))
        loop.optimizer_step(step, evaluate=held_out)

    return loop.finish(saver(loop.unwrap(), tokenizer), eval_metrics=held_out())
