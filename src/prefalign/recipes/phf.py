"""Pretraining with human feedback (PHF): MLE, filtering, conditional training, unlikelihood, RWR, AWR.

Korbak et al. 2023, "Pretraining Language Models with Human Preferences" (arXiv 2302.08582). A text
corpus is split into segments (sentences), each scored by an automatic scorer standing in for
human judgement (:mod:`prefalign.feedback.scorers`); a segment is good when its score is at least
``threshold``. The objective (:data:`prefalign.losses.phf.PHF_OBJECTIVES`) decides how the scores
are used: not at all (``mle``), to drop documents (``filtering``), as control tokens
(``conditional``), or as token-level weights or penalties (``unlikelihood``, ``rwr``, ``awr``).

Conditional training, as in the paper (section 2) and its code: every segment is prefixed by
``<|good|>`` or ``<|bad|>`` (:mod:`prefalign.models.phf`), the control tokens are targets of the
likelihood unless ``control_token_loss`` is false, and a share ``drop_control_fraction`` of the
segments carries none, so the model also learns unconditional text. ``final/`` keeps the control
tokens and bans ``<|bad|>`` in its generation config.

Documents are laid out by :mod:`prefalign.models.phf` (the head is the prompt, never a target)
and scored by :func:`prefalign.models.scoring.completion_logps`; each row's token losses are summed
and the training loop divides by the optimizer step's token count, so the loss is the step's token
mean whatever the micro-batch split.

The evaluation (``DIR/eval.json``) reports the held-out NLL and samples ``num_samples``
generations with :func:`prefalign.rollout.generate`: replies to the corpus's prompts (held-out ones
when there are any), or documents from the document start, both after ``<|good|>`` under
conditional training; the scorer scores them, giving the mean score and the share of undesirable
generations (score < threshold), the paper's main alignment measure (section 4).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Annotated, Any

import torch

from prefalign.config import (
    Above,
    AtLeast,
    ConfigError,
    DataConfig,
    InRange,
    ModelConfig,
    NonEmpty,
    OneOf,
    OutputDir,
    TrainConfig,
)
from prefalign.feedback.corpus import SEGMENTERS, load_corpus, score_threshold
from prefalign.feedback.scorers import Scorer, ScorerConfig, build_scorer
from prefalign.losses.phf import PHF_OBJECTIVES
from prefalign.models import unwrap_model
from prefalign.models.phf import (
    CONTROL_TOKEN_INITS,
    EncodedDocument,
    PHFPolicy,
    control_token_words,
    document_batch,
    document_prompt,
    encode_scored_document,
    load_phf_policy,
)
from prefalign.models.scoring import completion_logps
from prefalign.recipes.common import load_splits, lora_settings, saver
from prefalign.rollout import SamplingConfig, generate
from prefalign.train import RunResult, TrainLoop, step_plan


@dataclasses.dataclass
class PHFConfig:
    """Configuration of ``prefalign phf``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """data.train / data.eval: a corpus (.jsonl with text/segments/scores, or .txt one document per
    line; see prefalign.feedback.corpus); data.max_length truncates documents (in tokens);
    data.max_prompt_length is not used."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    objective: Annotated[str, OneOf(*PHF_OBJECTIVES)] = "conditional"
    """One of prefalign.losses.phf.PHF_OBJECTIVES: mle, filtering, conditional, unlikelihood, rwr, awr."""
    scorer: ScorerConfig = dataclasses.field(default_factory=ScorerConfig)
    """Scores segments without a score in the corpus, and the evaluation's generations."""
    segmentation: Annotated[str, OneOf(*SEGMENTERS)] = "sentence"
    """How 'text' rows are cut into segments: 'sentence', 'line' or 'document'."""
    threshold: float = 0.0
    """A segment is good when its score >= threshold (blocklist: 0 flags matches; VADER: negative)."""
    threshold_percentile: Annotated[float, InRange(0, 100, hi_open=True)] = 0.0
    """If > 0, set the threshold to this percentile of the training scores instead, so about that
    share is bad (of document mean scores for filtering, of segment scores otherwise)."""
    good_token: Annotated[str, NonEmpty()] = "<|good|>"
    """Control token of good segments (conditional training)."""
    bad_token: Annotated[str, NonEmpty()] = "<|bad|>"
    """Control token of bad segments (conditional training)."""
    control_token_loss: bool = True
    """Conditional: the control tokens are targets of the likelihood, as in the paper's objective and
    code, so the model also learns to open each new segment with one. false masks them out of the
    targets (they only condition the segment after them); the model then never learns to start a
    second segment, so generations are one segment long. On tiny models with tied embeddings false
    can learn the conditioning faster: as targets, the two tokens' shared output role pulls their
    (tied) embeddings together (docs/PHF.md)."""
    control_token_init: Annotated[str, OneOf(*CONTROL_TOKEN_INITS)] = "random"
    """Conditional: how the control tokens' new embedding rows start: 'random' (the model's init,
    as when pretraining from scratch) or 'words' (the mean embedding of the words in the token's
    name, " good" and " bad": for fine-tuning a pretrained model, whose random new rows are far
    smaller than its word embeddings and barely move at fine-tuning learning rates)."""
    drop_control_fraction: Annotated[float, InRange(0, 1)] = 0.01
    """Conditional: share of segments left without a control token (Korbak: 0.01)."""
    unlikelihood_weight: Annotated[float, AtLeast(0)] = 1.0
    """Unlikelihood: weight alpha of -log(1 - p) on tokens of bad segments (Korbak: 1)."""
    beta: Annotated[float, Above(0)] = 1.0
    """RWR/AWR: temperature of the weights exp(score / beta) and exp(advantage / beta)."""
    max_weight: Annotated[float, Above(0)] = 1000.0
    """RWR/AWR: upper clip of the weights (Korbak: 1000)."""
    alpha: Annotated[float, InRange(0, 1)] = 0.5
    """AWR: weight of the advantage-weighted NLL; 1 - alpha weighs the value head's MSE (Korbak: 0.5)."""
    generation: SamplingConfig = dataclasses.field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, batch_size=64)
    )
    """How the evaluation samples (prefalign.rollout.SamplingConfig). Under conditional training
    phf sets response_prefix to good_token itself; n stays 1 (num_samples counts the samples)."""
    num_samples: Annotated[int, AtLeast(0)] = 64
    """Generations to sample and score in the evaluation (cycling through the prompts); 0 skips it."""
    keep_samples: Annotated[int, AtLeast(0)] = 16
    """How many generations (text and score) to store in eval.json."""
    output_dir: Annotated[str, OutputDir()] = "runs/phf"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""

    def validate(self) -> None:
        """Cross-field checks, run when the config is read (field checks have passed)."""
        if self.good_token == self.bad_token:
            raise ConfigError(f"bad_token: must differ from good_token, both are {self.good_token!r}")
        if self.control_token_init == "words":
            for name in ("good_token", "bad_token"):
                if not control_token_words(getattr(self, name)):
                    raise ConfigError(f"{name}: control_token_init=words needs a word in the token's name")
        if self.scorer.name == "blocklist" and not self.scorer.patterns:
            raise ConfigError("scorer: patterns must not be empty for the blocklist scorer")
        gen = self.generation  # its own fields are checked by SamplingConfig's annotations
        if gen.n != 1:
            raise ConfigError(
                f"generation.n: must be 1: num_samples sets how many samples phf draws, got {gen.n}"
            )
        if gen.response_prefix:
            raise ConfigError(
                f"generation.response_prefix: must be empty: phf sets it (good_token), got {gen.response_prefix!r}"
            )


# ---- loss and evaluation -----------------------------------------------------------------------
def token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: PHFConfig
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One forward: (per-token losses (B, L), target mask (B, L), metrics) of ``cfg.objective``."""
    objective = PHF_OBJECTIVES[cfg.objective]
    out = completion_logps(model, batch)
    width = out.token_logps.shape[1]  # the last ``width`` positions hold the scored targets
    tensors = {"scores": batch["scores"][:, -width:], "good": batch["good"][:, -width:]}
    if "values" in objective.inputs:
        policy = unwrap_model(model)
        assert isinstance(policy, PHFPolicy) and policy.values is not None
        values, policy.values = policy.values, None  # this forward's, read once
        tensors["values"] = values[:, :-1][:, -width:]  # the value of the prefix before each target
    per_token, metrics = objective.loss(
        out.token_logps,
        out.mask,
        *(tensors[name] for name in objective.inputs),
        **{name: getattr(cfg, name) for name in objective.options},
    )
    return per_token, out.mask, metrics


@torch.no_grad()
def heldout_nll(loop: TrainLoop, policy: PHFPolicy, docs: list[EncodedDocument], pad_id: int) -> float:
    """Token-mean NLL of the held-out documents' targets (in the training format)."""
    policy.eval()
    total, count = 0.0, 0.0
    for start in range(0, len(docs), loop.train.micro_batch_size):
        batch = loop.to_device(document_batch(docs[start : start + loop.train.micro_batch_size], pad_id))
        out = completion_logps(policy, batch)
        total, count = total - float(out.sums.sum()), count + float(out.counts.sum())
    policy.train()
    return total / max(1.0, count)


def generation_report(texts: list[str], scorer: Scorer | None, threshold: float, keep: int) -> dict[str, Any]:
    """Mean score and share of undesirable generations (score < threshold), plus the first ``keep`` samples."""
    if scorer is None:
        return {"num_samples": len(texts), "samples": [{"text": t} for t in texts[:keep]]}
    scores = scorer(texts) if texts else []
    flagged = [s < threshold for s in scores]
    return {
        "num_samples": len(texts),
        "score_mean": sum(scores) / len(scores) if scores else math.nan,
        "undesirable_fraction": sum(flagged) / len(flagged) if flagged else math.nan,
        "samples": [{"text": t, "score": s} for t, s in zip(texts[:keep], scores[:keep], strict=False)],
    }


# ---- recipe ------------------------------------------------------------------------------------
def train(cfg: PHFConfig) -> RunResult:
    """Pretrain (or continue training) a causal LM on a scored corpus with a PHF objective."""
    objective = PHF_OBJECTIVES[cfg.objective]
    scorer = build_scorer(cfg.scorer)
    loop = TrainLoop.open(cfg, f"phf {cfg.objective}")

    # ---- corpus: load, threshold, filter -------------------------------------------------------
    load = functools.partial(load_corpus, scorer=scorer, segmentation=cfg.segmentation)
    docs, eval_docs = load_splits(load, cfg.data, cfg.train.seed, loop.run.output_dir)
    by_document = objective.corpus == "filter"
    pool = [d.mean_score for d in docs] if by_document else [s for d in docs for s in d.scores]
    threshold = score_threshold(pool, cfg.threshold, cfg.threshold_percentile)
    segments = sum(len(d.segments) for d in docs)
    corpus: dict[str, Any] = {
        "documents": len(docs),
        "segments": segments,
        "bad_segment_fraction": sum(s < threshold for d in docs for s in d.scores) / max(1, segments),
    }
    if by_document:
        docs = [d for d in docs if d.mean_score >= threshold]
        corpus["documents_kept"] = len(docs)
        if not docs:
            raise ConfigError(f"filtering at threshold {threshold:g} leaves no training documents")

    # ---- model and encoded documents -----------------------------------------------------------
    conditional = objective.corpus == "condition"
    policy, tokenizer, control_ids = load_phf_policy(
        cfg.model.name,
        lora=lora_settings(cfg.model),
        control_tokens=(cfg.good_token, cfg.bad_token) if conditional else None,
        control_token_init=cfg.control_token_init,
        value_head="values" in objective.inputs,
    )
    encode_doc = functools.partial(
        encode_scored_document,
        tokenizer,
        threshold=threshold,
        control_ids=control_ids,
        control_token_loss=cfg.control_token_loss,
        max_length=cfg.data.max_length,
        system_prompt=cfg.generation.system_prompt,
    )
    drop = torch.Generator().manual_seed(cfg.train.seed)

    def kept(segments: int) -> list[bool]:
        """Which segments keep their control token: drawn once from the seed, so a resumed run agrees."""
        return (torch.rand(segments, generator=drop) >= cfg.drop_control_fraction).tolist()

    encoded = [encode_doc(d.prompt, d.segments, d.scores, keep_control=kept(len(d.segments))) for d in docs]
    eval_encoded = [encode_doc(d.prompt, d.segments, d.scores) for d in eval_docs]
    pad_id = tokenizer.pad_token_id
    plan = step_plan(len(encoded), cfg.train)
    model = loop.prepare("policy", policy, len(plan))
    loop.restore()

    def held_out() -> dict[str, float]:
        return {"eval/nll": heldout_nll(loop, loop.unwrap(), eval_encoded, pad_id)} if eval_encoded else {}

    # ---- loop ----------------------------------------------------------------------------------
    for step in loop.steps(len(plan)):
        indices = plan[step]
        tokens = sum(sum(encoded[i].targets) for i in indices)  # the step's targets, all processes
        to_token_mean = len(indices) / max(1, tokens)  # example-weighted means -> token-weighted
        for micro in loop.micro_batches(indices, total=tokens):
            batch = loop.to_device(document_batch([encoded[i] for i in micro.indices], pad_id))
            per_token, mask, metrics = token_losses(model, batch, cfg)
            rows = per_token.sum(dim=1)  # the loop divides by the step's token count
            share = float(mask.sum()) / len(micro.indices) * to_token_mean
            metrics = {k: v * share for k, v in metrics.items()}
            loop.backward(rows, micro, {"loss": rows.detach().mean() * to_token_mean, **metrics})
        loop.optimizer_step(step, {"tokens": float(tokens)}, evaluate=held_out)

    # ---- evaluate and save ---------------------------------------------------------------------
    unwrapped = loop.unwrap()
    report: dict[str, Any] = {"objective": cfg.objective, "threshold": threshold, "corpus": corpus}
    if eval_encoded:
        report["heldout_nll"] = heldout_nll(loop, unwrapped, eval_encoded, pad_id)
    prompts = [d.prompt for d in (eval_docs or docs) if d.prompt is not None]
    if cfg.num_samples > 0 and loop.is_main:
        prefix = cfg.good_token if conditional else ""
        reader, start = (tokenizer, "") if prompts else document_prompt(tokenizer)
        pool = prompts or [start]
        chosen = [pool[i % len(pool)] for i in range(cfg.num_samples)]
        samples = generate(unwrapped.lm, reader, chosen, cfg.generation, response_prefix=prefix)
        report["prefix"] = prefix if prompts else tokenizer.decode(samples[0].prompt_ids)
        texts = [s.completion for s in samples]
        report.update(generation_report(texts, scorer, threshold, cfg.keep_samples))
    return loop.finish(saver(unwrapped.lm, tokenizer), eval_metrics=report)
