"""Contrastive alignment: InfoNCE pulls the preferred answer's score above a set of worse ones.

The negatives belong to the optimizer step, not to the micro-batch: for each pair ``i`` of a step
the candidates are its chosen answer (the positive), its rejected answer and, with
``in_batch_negatives``, the chosen answers of the step's other pairs, except those that share
row i's prompt ids or chosen answer (another good answer to the same prompt).
:func:`prefalign.losses.contrastive.info_nce_loss` asks the positive to win the ``(1 + N)``-way
softmax at temperature ``tau``; the step's loss ``L`` is the mean over its pairs. Every process
knows the whole step from the plan, so ``L`` and its gradient depend neither on
``train.micro_batch_size`` nor on the number of processes. The score (:data:`SCORES`):

* ``likelihood``: ``log pi(y | x_i)`` of each candidate (:func:`completion_logps`; token mean with
  ``length_normalize``), minus the reference's with ``reference: true`` (so the first loss is
  ``log(1 + N)``). Row i's scores depend only on its own sequences ``(x_i, y)``: each micro-batch
  scores its rows' ``b * (1 + N)`` sequences with gradient, and the accumulated gradient is exactly
  ``dL/dtheta``. A step of B pairs costs ``B * (B + 1)`` sequences (``2B`` without in-batch negatives).
* ``representation``: cosine similarity of the policy's mean-pooled last-layer embeddings of the
  prompt and of the answer (a dual encoder, as in CLIP). Answer embeddings enter every row's loss,
  so the gradient is cached (Gao et al. 2021, arXiv 2101.06983): every process embeds the step's
  3B texts without gradient, computes ``L`` and ``G_e = dL/de`` for each embedding ``e``; each
  micro-batch re-embeds its own rows' texts with gradient and back-propagates ``sum_e <e, G_e>``.
  Over all micro-batches and processes that is ``sum_e G_e de/dtheta = dL/dtheta`` exactly.

With ``score: likelihood``, ``reference: true``, ``length_normalize: false``,
``in_batch_negatives: false`` and ``temperature = 1 / beta`` the loss is DPO's sigmoid loss
(docs/CONTRASTIVE.md compares the two).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F

from prefalign.config import (
    Above,
    ConfigError,
    DataConfig,
    ModelConfig,
    ModelName,
    OneOf,
    OutputDir,
    TrainConfig,
)
from prefalign.losses.contrastive import info_nce_loss
from prefalign.models.scoring import completion_logps, reference_scope
from prefalign.ops import masked_mean
from prefalign.recipes.common import (
    EncodedPair,
    encode_pair,
    load_pair_splits,
    load_policy_and_reference,
    saver,
    weighted_means,
)
from prefalign.tokens import right_pad
from prefalign.train import RunResult, TrainLoop, step_plan


@dataclasses.dataclass
class ContrastiveConfig:
    """Configuration of ``prefalign contrastive``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    score: Annotated[str, OneOf(*SCORES)] = "likelihood"
    """How the policy scores a (prompt, answer): 'likelihood' or 'representation' (see SCORES)."""
    temperature: Annotated[float, Above(0)] = 1.0
    """InfoNCE temperature tau: scores are divided by it. Smaller is sharper. Typical values:
    0.05-0.1 for cosine similarities (CLIP starts at 0.07); about 0.5 for length-normalised
    log-likelihoods; 1 / beta (e.g. 10) to match DPO on summed log-ratios."""
    reference: bool = False
    """Score 'likelihood' as a log-ratio to a frozen reference (the starting weights), the DPO-like
    form that anchors the policy to where it started. Only for score 'likelihood'."""
    reference_model: Annotated[str, ModelName(optional=True)] = ""
    """Reference model when reference is on and LoRA is off; empty means the starting weights of
    ``model.name``. With LoRA the reference is the base model with adapters disabled."""
    length_normalize: bool = True
    """'likelihood' only: average the log-probs over the answer's tokens (so long answers are not
    penalised for their length); false sums them, as DPO and CPL do."""
    in_batch_negatives: bool = True
    """Also use the chosen answers of the optimizer step's other pairs as negatives (N =
    train.batch_size instead of 1); held-out pairs are taken in groups of train.batch_size."""
    output_dir: Annotated[str, OutputDir()] = "runs/contrastive"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        """Cross-field checks, run when the config is read (field checks have passed)."""
        if self.reference and self.score != "likelihood":
            raise ConfigError(f"reference: true applies to score 'likelihood' only, not {self.score!r}")


# ---- the step's candidates ---------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    """The pairs of one optimizer step (or held-out group) and every row's candidates.

    Answers are numbered ``0..B-1`` for the rows' chosen answers and ``B..2B-1`` for the rejected
    ones. ``index`` (B, 1 + N): row i's candidates, column 0 its positive ``i``, then ``B + i`` (its
    rejected answer) and, with in-batch negatives, the other rows' chosen answers in step order.
    ``valid`` (B, N): False for in-batch negatives that share row i's prompt ids or chosen answer.
    """

    rows: list[EncodedPair]
    index: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def of(cls, rows: list[EncodedPair], in_batch_negatives: bool) -> Step:
        index, valid = [], []
        for i, row in enumerate(rows):
            others = [j for j in range(len(rows)) if j != i] if in_batch_negatives else []
            index.append([i, len(rows) + i, *others])
            same = [
                rows[j].prompt_ids == row.prompt_ids or rows[j].chosen_ids == row.chosen_ids for j in others
            ]
            valid.append([True] + [not s for s in same])
        return cls(rows, torch.tensor(index, dtype=torch.long), torch.tensor(valid, dtype=torch.bool))

    @property
    def answers(self) -> list[list[int]]:
        return [r.chosen_ids for r in self.rows] + [r.rejected_ids for r in self.rows]


@dataclasses.dataclass
class Scoring:
    """What the score functions need besides the model: the reference, padding, device, options."""

    policy: torch.nn.Module
    reference: torch.nn.Module | None
    pad_id: int
    device: torch.device
    cfg: ContrastiveConfig

    def batch(self, prompts: list[list[int]], completions: list[list[int]]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in right_pad(prompts, completions, self.pad_id).items()}


# ---- scores ------------------------------------------------------------------------------------
def likelihood_features(model: torch.nn.Module, step: Step, rows: list[int], ctx: Scoring) -> torch.Tensor:
    """(b, 1 + N) scores of rows ``rows`` of the step: log pi(y | x_i) of each candidate y (token
    mean with ``length_normalize``, the SimPO reward without its beta), minus the reference's."""
    width = step.index.shape[1]
    prompts = [step.rows[i].prompt_ids for i in rows for _ in range(width)]
    answers = step.answers
    completions = [answers[k] for i in rows for k in step.index[i].tolist()]
    batch = ctx.batch(prompts, completions)

    def score(model: torch.nn.Module) -> torch.Tensor:
        out = completion_logps(model, batch)
        return out.sums / out.counts.clamp(min=1) if ctx.cfg.length_normalize else out.sums

    scores = score(model)
    if ctx.cfg.reference:
        with reference_scope(ctx.policy, ctx.reference) as reference:
            reference_scores = score(reference)
        scores = scores - reference_scores
    return scores.view(len(rows), width)


def representation_features(
    model: torch.nn.Module, step: Step, rows: list[int], ctx: Scoring
) -> torch.Tensor:
    """(b, 3, d) unit embeddings of each row's prompt, chosen and rejected answer: the mean over
    the text's tokens of the last hidden layer (the whole text is its own "completion")."""
    texts = [
        t for i in rows for t in (step.rows[i].prompt_ids, step.rows[i].chosen_ids, step.rows[i].rejected_ids)
    ]
    batch = ctx.batch([[] for _ in texts], texts)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
        logits_to_keep=1,  # the LM head is not needed
    )
    hidden = out.hidden_states[-1].float()
    embeddings = F.normalize(masked_mean(hidden, batch["loss_mask"].unsqueeze(-1), dim=1), dim=-1)
    return embeddings.view(len(rows), 3, -1)


def representation_scores(features: torch.Tensor, step: Step) -> torch.Tensor:
    """(B, 1 + N) cosine similarities of each prompt with its candidates, from every row's features."""
    answers = torch.cat([features[:, 1], features[:, 2]])  # chosen 0..B-1, rejected B..2B-1
    return (features[:, 0] @ answers.T).gather(1, step.index.to(features.device))


@dataclasses.dataclass(frozen=True)
class ScoreVariant:
    """``features(model, step, rows, ctx)``: the rows' features, with gradient when enabled;
    ``combine(features of every row, step)`` the (B, 1 + N) scores, or None when the features are
    the rows' scores themselves (each row's scores depend on that row's forward only)."""

    features: Callable[[torch.nn.Module, Step, list[int], Scoring], torch.Tensor]
    combine: Callable[[torch.Tensor, Step], torch.Tensor] | None = None


SCORES: dict[str, ScoreVariant] = {
    "likelihood": ScoreVariant(likelihood_features),
    "representation": ScoreVariant(representation_features, representation_scores),
}
"""Score variants by name."""


def nce(
    scores: torch.Tensor, valid: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCE on (b, 1 + N) scores, plus ``pair_accuracy`` (positive above its own rejected)."""
    losses, metrics = info_nce_loss(scores[:, 0], scores[:, 1:], temperature=temperature, negative_mask=valid)
    return losses, {**metrics, "pair_accuracy": (scores[:, 0] > scores[:, 1]).detach().float().mean()}


@torch.no_grad()
def step_scores(model: torch.nn.Module, variant: ScoreVariant, step: Step, ctx: Scoring) -> torch.Tensor:
    """Every row's features, without gradient, in chunks of ``train.micro_batch_size`` rows."""
    size = ctx.cfg.train.micro_batch_size
    chunks = [list(range(s, min(s + size, len(step.rows)))) for s in range(0, len(step.rows), size)]
    return torch.cat([variant.features(model, step, rows, ctx) for rows in chunks])


def cached_gradients(
    model: torch.nn.Module, variant: ScoreVariant, step: Step, ctx: Scoring
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(losses (B,), scores (B, 1 + N), dL/dfeatures) of the whole step, from no-grad features."""
    assert variant.combine is not None
    features = step_scores(model, variant, step, ctx).requires_grad_(True)
    with torch.enable_grad():
        scores = variant.combine(features, step)
        losses, _ = nce(scores, step.valid.to(scores.device), ctx.cfg.temperature)
        (grads,) = torch.autograd.grad(losses.sum(), features)
    return losses.detach(), scores.detach(), grads


def evaluate(
    model: torch.nn.Module, variant: ScoreVariant, rows: list[EncodedPair], ctx: Scoring
) -> dict[str, float]:
    """Held-out InfoNCE loss and accuracies, over groups of ``train.batch_size`` pairs in file order."""
    model.eval()
    parts = []
    for start in range(0, len(rows), ctx.cfg.train.batch_size):
        step = Step.of(rows[start : start + ctx.cfg.train.batch_size], ctx.cfg.in_batch_negatives)
        scores = step_scores(model, variant, step, ctx)
        scores = variant.combine(scores, step) if variant.combine else scores
        losses, metrics = nce(scores, step.valid.to(scores.device), ctx.cfg.temperature)
        parts.append((len(step.rows), {"loss": losses.mean(), **metrics}))
    model.train()
    return weighted_means(parts, "eval/")


def train(cfg: ContrastiveConfig, *, variant: ScoreVariant | None = None) -> RunResult:
    """Run contrastive alignment as configured; ``variant`` replaces ``SCORES[cfg.score]``."""
    variant = variant or SCORES[cfg.score]
    loop = TrainLoop.open(cfg, "contrastive")
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=cfg.reference
    )
    train_pairs, eval_pairs = load_pair_splits(cfg.data, cfg.train.seed, loop.run.output_dir)
    train_rows = [encode_pair(tokenizer, p, cfg.data) for p in train_pairs]
    eval_rows = [encode_pair(tokenizer, p, cfg.data) for p in eval_pairs]
    plan = step_plan(len(train_rows), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    reference = loop.frozen(reference) if reference is not None else None
    ctx = Scoring(model, reference, tokenizer.pad_token_id, loop.device, cfg)
    loop.restore()

    def held_out() -> dict[str, float]:
        return evaluate(loop.unwrap(), variant, eval_rows, ctx) if eval_rows else {}

    for step_number in loop.steps(len(plan)):
        indices = plan[step_number]
        step = Step.of([train_rows[i] for i in indices], cfg.in_batch_negatives)
        position = {row: p for p, row in enumerate(indices)}
        cache = cached_gradients(loop.unwrap(), variant, step, ctx) if variant.combine else None
        for micro in loop.micro_batches(indices):
            rows = [position[i] for i in micro.indices]
            features = variant.features(model, step, rows, ctx)
            valid = step.valid[rows].to(loop.device)
            if cache is None:  # row-local scores: the rows' own forward carries the exact gradient
                losses, metrics = nce(features, valid, cfg.temperature)
            else:  # the step's cached dL/dfeatures, back-propagated through the rows' own features
                step_losses, scores, grads = cache
                surrogate = (features * grads[rows]).flatten(1).sum(dim=1)
                losses = surrogate + (step_losses[rows] - surrogate).detach()
                metrics = nce(scores[rows], valid, cfg.temperature)[1]
            loop.backward(losses, micro, metrics)
        loop.optimizer_step(step_number, evaluate=held_out)

    eval_metrics = held_out()
    return loop.finish(saver(loop.unwrap(), tokenizer), eval_metrics=eval_metrics)
