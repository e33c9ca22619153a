"""Contrastive alignment: InfoNCE pulls the preferred answer's score above a batch of worse ones.

For each prompt ``x_i`` of a micro-batch the candidates are its chosen answer (the positive), its
own rejected answer, and, with ``in_batch_negatives``, the chosen answers of the micro-batch's
other rows (as in CLIP, the other rows' positives serve as negatives). The policy scores every
candidate under ``x_i`` and :func:`prefalign.losses.contrastive.info_nce_loss` asks the positive
to win the ``(1 + N)``-way softmax at temperature ``tau``.

The score is picked by name from :data:`SCORES` (``score:`` in the config):

* ``likelihood``: the completion's log-likelihood given the prompt, averaged over its tokens
  (``length_normalize``) or summed. With ``reference: true`` it is the log-ratio to a frozen
  reference, ``log pi(y|x) - log ref(y|x)``, the DPO-like form: at step 0 every score is 0 and the
  loss is ``log(1 + N)``. Each prompt is paired with each of its candidates, so a micro-batch of
  B rows runs ``B * (B + 1)`` sequences with in-batch negatives (``2B`` without): keep
  ``train.micro_batch_size`` small.
* ``representation``: CLIP-style cosine similarity between the policy's embedding of the prompt
  and of the completion, each encoded on its own and mean-pooled over its tokens from the last
  hidden layer (``last_hidden_state``, after the final norm). One forward of ``3B`` short
  sequences per micro-batch. This shapes the model's embeddings, not its likelihoods: sampling
  from the trained model is not directly steered. No reference applies.

How it differs from DPO (docs/CONTRASTIVE.md has the longer version): DPO is pairwise, on
log-ratios to a reference, with ``beta`` the strength of an implicit KL penalty derived from the
KL-regularised RL objective. InfoNCE is a ``(1 + N)``-way classification with a temperature and
in-batch negatives, and has no KL anchor unless ``reference: true``. With ``score: likelihood``,
``reference: true``, ``length_normalize: false``, ``in_batch_negatives: false`` and
``temperature = 1 / beta`` this recipe computes exactly DPO's sigmoid loss.

In-batch negatives are drawn from the *micro-batch*, so ``train.micro_batch_size`` sets N and is
part of the objective (gradient accumulation is not the same as a larger micro-batch here, unlike
in the pairwise recipes). Rows that share the prompt's token ids, or whose chosen answer equals the
positive, are not used as negatives: their chosen answer is another good answer to the same
prompt. The reference is scored at every micro-batch (one extra no-grad forward) rather than
precomputed, because the in-batch pairings depend on the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from prefalign.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from prefalign.losses.contrastive import info_nce_loss
from prefalign.ops import masked_mean
from prefalign.recipes.common import (
    TokenizedPair,
    build_optimizer,
    clip_and_step,
    completion_logps,
    load_tokenized_pairs,
    loss_scale,
    make_accelerator,
    mean_metrics,
    micro_batches,
    pad_sequences,
    save_final,
    step_plan,
)
from prefalign.recipes.scoring import load_policy_and_reference, reference_scope
from prefalign.run import Run, RunResult, console
from prefalign.utils import seed_everything


@dataclasses.dataclass
class ContrastiveConfig:
    """Configuration of ``prefalign contrastive``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    score: str = "likelihood"
    """How the policy scores a (prompt, answer): 'likelihood' or 'representation' (see SCORES)."""
    temperature: float = 1.0
    """InfoNCE temperature tau: scores are divided by it. Smaller is sharper. Typical values:
    0.05-0.1 for cosine similarities (CLIP starts at 0.07); about 0.5 for length-normalised
    log-likelihoods; 1 / beta (e.g. 10) to match DPO on summed log-ratios."""
    reference: bool = False
    """Score 'likelihood' as a log-ratio to a frozen reference (the starting weights), the DPO-like
    form that anchors the policy to where it started. Only for score 'likelihood'."""
    reference_model: str = ""
    """Reference model when reference is on and LoRA is off; empty means the starting weights of
    ``model.name``. With LoRA the reference is the base model with adapters disabled."""
    length_normalize: bool = True
    """'likelihood' only: average the log-probs over the answer's tokens (so long answers are not
    penalised for their length); false sums them, as DPO and CPL do."""
    in_batch_negatives: bool = True
    """Also use the other rows' chosen answers in the micro-batch as negatives (N = micro-batch
    size instead of 1)."""
    output_dir: str = "runs/contrastive"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


# ---- candidates --------------------------------------------------------------------------------
def candidate_layout(
    rows: list[TokenizedPair], in_batch_negatives: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which answers each prompt of a micro-batch is scored against.

    Answers are numbered ``0..B-1`` for the rows' chosen answers and ``B..2B-1`` for the rejected
    ones. Row ``i`` gets ``[i, B + i]`` (positive, own rejected) followed, with in-batch negatives,
    by the other rows' chosen answers ``j != i`` in order.

    Returns:
        ``(index, valid)``: index (B, 1 + N) long, column 0 the positive; valid (B, N) bool, False
        for in-batch negatives that share row i's prompt ids or equal its chosen answer.
    """
    b = len(rows)
    index, valid = [], []
    for i, row in enumerate(rows):
        others = [j for j in range(b) if j != i] if in_batch_negatives else []
        index.append([i, b + i, *others])
        valid.append(
            [True]
            + [rows[j].prompt_ids != row.prompt_ids and rows[j].chosen_ids != row.chosen_ids for j in others]
        )
    return torch.tensor(index, dtype=torch.long), torch.tensor(valid, dtype=torch.bool)


def _answers(rows: list[TokenizedPair]) -> list[list[int]]:
    return [r.chosen_ids for r in rows] + [r.rejected_ids for r in rows]


# ---- scores ------------------------------------------------------------------------------------
def likelihood_scores(
    model: torch.nn.Module,
    rows: list[TokenizedPair],
    index: torch.Tensor,
    pad_id: int,
    cfg: ContrastiveConfig,
) -> torch.Tensor:
    """(B, 1 + N) log-likelihood of each candidate answer given row i's prompt.

    One forward over ``B * (1 + N)`` prompt+answer sequences; the log-probs are averaged over the
    answer's tokens when ``cfg.length_normalize`` (the average log-likelihood that SimPO, Meng et
    al. 2024, arXiv 2405.14734, uses as its reward, without its beta) and summed otherwise.
    """
    answers = _answers(rows)
    prompts = [rows[i].prompt_ids for i in range(len(rows)) for _ in range(index.shape[1])]
    completions = [answers[k] for k in index.flatten().tolist()]
    logps, counts = completion_logps(model, pad_sequences(prompts, completions, pad_id))
    if cfg.length_normalize:
        logps = logps / counts.clamp(min=1)
    return logps.view(index.shape)


def representation_scores(
    model: torch.nn.Module,
    rows: list[TokenizedPair],
    index: torch.Tensor,
    pad_id: int,
    cfg: ContrastiveConfig,
) -> torch.Tensor:
    """(B, 1 + N) cosine similarity of row i's prompt embedding and each candidate's embedding.

    Prompts and answers are encoded separately (a dual encoder, as in CLIP, Radford et al. 2021):
    each embedding is the mean over the sequence's tokens of the last hidden layer. One forward of
    ``B`` prompts and ``2B`` answers gives a (B, 2B) similarity matrix that ``index`` picks from.
    """
    answers = _answers(rows)
    texts = [r.prompt_ids for r in rows] + answers
    # pad_sequences marks the "completion" in loss_mask: here that is the whole text.
    batch = pad_sequences([[] for _ in texts], texts, pad_id)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
        logits_to_keep=1,  # the LM head is not needed
    )
    hidden = out.hidden_states[-1].float()
    embeddings = F.normalize(masked_mean(hidden, batch["loss_mask"].unsqueeze(-1), dim=1), dim=-1)
    prompts, candidates = embeddings[: len(rows)], embeddings[len(rows) :]
    return (prompts @ candidates.T).gather(1, index)


ScoreFn = Callable[[torch.nn.Module, list[TokenizedPair], torch.Tensor, int, ContrastiveConfig], torch.Tensor]

SCORES: dict[str, ScoreFn] = {"likelihood": likelihood_scores, "representation": representation_scores}
"""Score variants by name: ``fn(model, rows, index, pad_id, cfg) -> (B, 1 + N) scores``."""


def batch_scores(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[TokenizedPair],
    pad_id: int,
    cfg: ContrastiveConfig,
    score_fn: ScoreFn,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B, 1 + N), valid negatives (B, N)) of one micro-batch, minus the reference's scores
    when ``cfg.reference`` (the reference is ``reference``, or ``policy`` with adapters off)."""
    index, valid = candidate_layout(rows, cfg.in_batch_negatives)
    scores = score_fn(policy, rows, index, pad_id, cfg)
    if cfg.reference:
        model, context = reference_scope(policy, reference)  # with LoRA: the policy, adapters off
        with context:
            ref_scores = score_fn(model, rows, index, pad_id, cfg)
        scores = scores - ref_scores
    return scores, valid


def contrastive_step(
    scores: torch.Tensor, valid: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCE on a (B, 1 + N) score matrix, plus ``pair_accuracy`` (positive above its own rejected)."""
    losses, metrics = info_nce_loss(scores[:, 0], scores[:, 1:], temperature=temperature, negative_mask=valid)
    pair_accuracy = (scores[:, 0] > scores[:, 1]).detach().float().mean()
    return losses, {"loss": losses.detach().mean(), **metrics, "pair_accuracy": pair_accuracy}


def evaluate(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    rows: list[TokenizedPair],
    pad_id: int,
    cfg: ContrastiveConfig,
    score_fn: ScoreFn,
) -> dict[str, float]:
    """Held-out InfoNCE loss and accuracies, over micro-batches of the eval rows in file order."""
    policy.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start : start + cfg.train.micro_batch_size]
            scores, valid = batch_scores(policy, reference, chunk, pad_id, cfg, score_fn)
            parts.append((len(chunk), contrastive_step(scores, valid, cfg.temperature)[1]))
    policy.train()
    return {f"eval/{k}": v for k, v in mean_metrics(parts).items()}


def _check(cfg: ContrastiveConfig, custom_score: bool) -> None:
    if not custom_score and cfg.score not in SCORES:
        raise ConfigError(f"score: unknown {cfg.score!r}; choose from {sorted(SCORES)}")
    if cfg.reference and not custom_score and cfg.score != "likelihood":
        raise ConfigError(f"reference: true applies to score 'likelihood' only, not {cfg.score!r}")
    if cfg.temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {cfg.temperature}")


def train(cfg: ContrastiveConfig, *, score_fn: ScoreFn | None = None) -> RunResult:
    """Run contrastive alignment as configured; ``score_fn`` overrides ``cfg.score`` (same signature)."""
    _check(cfg, score_fn is not None)
    score_fn = score_fn or SCORES[cfg.score]
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup -------------------------------------------------------------------------------
    policy, reference, tokenizer = load_policy_and_reference(
        cfg.model, cfg.reference_model, need_reference=cfg.reference
    )
    pad_id = tokenizer.pad_token_id
    train_rows, eval_rows = load_tokenized_pairs(tokenizer, cfg.data, cfg.train.seed, run.output_dir)
    plan = step_plan(len(train_rows), cfg.train)
    optimizer, scheduler = build_optimizer(policy, cfg.train, len(plan))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    policy.train()
    start = run.restore(policy, optimizer, scheduler)
    console.print(
        f"contrastive: score {cfg.score}{' (log-ratio to reference)' if cfg.reference else ''}, "
        f"{'in-batch' if cfg.in_batch_negatives else 'own rejected only'} negatives, tau {cfg.temperature}"
    )

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), "contrastive"):
        indices = plan[step]
        scale = loss_scale(len(indices), accelerator)
        parts = []
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            rows = [train_rows[i] for i in micro]
            scores, valid = batch_scores(policy, reference, rows, pad_id, cfg, score_fn)
            losses, metrics = contrastive_step(scores, valid, cfg.temperature)
            accelerator.backward(losses.sum() * scale)
            parts.append((len(micro), metrics))
        grad_norm = clip_and_step(policy, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {**mean_metrics(parts), "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]}
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_rows:
            last.update(evaluate(policy, reference, eval_rows, pad_id, cfg, score_fn))
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f} acc {last['accuracy']:.2f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(policy), optimizer, scheduler)

    # ---- save --------------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(policy)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    eval_metrics = evaluate(policy, reference, eval_rows, pad_id, cfg, score_fn) if eval_rows else {}
    return save_final(run, unwrapped, tokenizer, steps=len(plan), last=last, eval_metrics=eval_metrics)


__all__ = [
    "SCORES",
    "ContrastiveConfig",
    "batch_scores",
    "candidate_layout",
    "contrastive_step",
    "evaluate",
    "likelihood_scores",
    "representation_scores",
    "train",
]
