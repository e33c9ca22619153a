"""Pretraining with human feedback (PHF): MLE, filtering, conditional training, unlikelihood, RWR, AWR.

Korbak et al. 2023, "Pretraining Language Models with Human Preferences" (arXiv 2302.08582). A text
corpus is split into segments (sentences), each scored by an automatic scorer standing in for
human judgement (:mod:`prefalign.feedback.scorers`); a segment is good when its score is at least
``threshold``. The objective (:data:`prefalign.losses.phf.PHF_OBJECTIVES`) decides how the scores
are used: not at all (``mle``), to drop documents (``filtering``), as control tokens
(``conditional``), or as token-level weights or penalties (``unlikelihood``, ``rwr``, ``awr``).

Reads top to bottom: load and score the corpus, prepare it for the objective, load the model (add
the control tokens / a value head when the objective needs them), the optimizer loop, then save and
evaluate. The evaluation samples ``generation.num_samples`` documents from the trained model (from
``<bos><|good|>`` for conditional training, from ``<bos>`` otherwise), scores them with the same
scorer, and writes the mean score and the share of undesirable generations (score < threshold) to
``DIR/eval.json``, the paper's main alignment measure (section 4, "score" of unconditional samples).

Conditional training, as in the paper (section 2, "Conditional training") and its code: every
segment is prefixed by ``<|good|>`` or ``<|bad|>`` (special tokens added to the tokenizer, the
embeddings grown to match), the control tokens are ordinary targets of the likelihood (the paper's
objective is ``log pi(c^1, x^1, ..., c^n, x^n)``; ``control_token_loss: false`` masks them out of the
targets instead), and a small share of segments (``drop_control_fraction``, 1% as in Korbak's
configs) carries no control token so the model also learns unconditional text. Generation starts
from ``<|good|>`` and ``<|bad|>`` is banned (Korbak ban both control tokens; banning only
``<|bad|>`` lets the model open every further segment with ``<|good|>``, i.e. samples from
``pi(x | c^i = <|good|> for all i)``). ``final/`` keeps the control tokens in its tokenizer and
bans ``<|bad|>`` in its generation config, so ``generate`` on a ``<|good|>``-prefixed prompt
reproduces this. With ``model.lora`` the control tokens' embedding rows (new, randomly
initialised) are trained in full beside the adapters (peft's ``trainable_token_indices``), and
merged into ``final/``.

Sequences are one document each (no packing), right-padded; the loss is the token mean over the
optimizer step (``reduce_token_loss`` with the step's token count), so micro-batching does not
change the gradient. AWR's value head is a linear layer on the last hidden state, trained jointly
(its gradient reaches the LM body, as in Korbak's configs); it is checkpointed with the model but
not exported to ``final/``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import torch

from prefalign.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from prefalign.feedback.corpus import SEGMENTERS, ScoredDocument, load_corpus, score_threshold
from prefalign.feedback.formats import Text
from prefalign.feedback.scorers import Scorer, ScorerConfig, build_scorer
from prefalign.losses.phf import PHF_OBJECTIVES
from prefalign.losses.reduction import reduce_token_loss
from prefalign.models import apply_lora, load_causal_lm, merge_and_save
from prefalign.ops import shift_for_causal_lm, token_logps
from prefalign.recipes.common import (
    build_optimizer,
    clip_and_step,
    disable_dropout,
    lora_settings,
    make_accelerator,
    micro_batches,
    step_plan,
)
from prefalign.rollout import SamplingConfig, generate, prompt_token_ids
from prefalign.run import Run, RunResult
from prefalign.utils import seed_everything


@dataclasses.dataclass
class PHFGenerationConfig:
    """How the final evaluation samples and scores generations."""

    num_samples: int = 64
    """Generations to sample and score; 0 skips the generation evaluation."""
    max_new_tokens: int = 48
    """Cap on tokens per generation (a generation also stops at EOS)."""
    temperature: float = 1.0
    """Sampling temperature (1 samples the model's own distribution; Korbak used 0.7)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 disables; Korbak used 0.9)."""
    batch_size: int = 64
    """Generations per ``generate`` call."""
    seed: int = 0
    """Sampling seed (batch b uses seed + b); the global RNG is left untouched."""
    keep_samples: int = 16
    """How many generations (text and score) to store in eval.json."""


@dataclasses.dataclass
class PHFConfig:
    """Configuration of ``prefalign phf``."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """data.train / data.eval: a corpus (.jsonl with text/segments/scores, or .txt one document per
    line; see prefalign.feedback.corpus); data.max_length truncates documents (in tokens);
    data.max_prompt_length is not used."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    objective: str = "conditional"
    """One of prefalign.losses.phf.PHF_OBJECTIVES: mle, filtering, conditional, unlikelihood, rwr, awr."""
    scorer: ScorerConfig = dataclasses.field(default_factory=ScorerConfig)
    """Scores segments without a score in the corpus, and the evaluation's generations."""
    segmentation: str = "sentence"
    """How 'text' rows are cut into segments: 'sentence', 'line' or 'document'."""
    threshold: float = 0.0
    """A segment is good when its score >= threshold (blocklist: 0 flags matches; VADER: negative)."""
    threshold_percentile: float = 0.0
    """If > 0, set the threshold to this percentile of the training scores instead, so about that
    share is bad (of document mean scores for filtering, of segment scores otherwise)."""
    good_token: str = "<|good|>"
    """Control token of good segments (conditional training)."""
    bad_token: str = "<|bad|>"
    """Control token of bad segments (conditional training)."""
    control_token_loss: bool = True
    """Conditional: the control tokens are targets of the likelihood, as in the paper's objective and
    code, so the model also learns to open each new segment with one. false masks them out of the
    targets (they only condition the segment after them); the model then never learns to start a
    second segment, so generations are one segment long. On tiny models with tied embeddings false
    learns the conditioning faster and more reliably: as targets, the two tokens' shared output
    role pulls their (tied) embeddings together, so the inputs become hard to tell apart. Measured
    on the test corpus of tests/recipes/test_phf_recipe.py (tiny-causal-lm, 300 steps, seeds 0-9): MLE
    samples 32-52% undesirable; conditional 0-1% with false, but with true 0-3% on 8 seeds, 10%
    and 38% on the other two."""
    control_token_init: str = "random"
    """Conditional: how the control tokens' new embedding rows start: 'random' (the model's init,
    as when pretraining from scratch) or 'words' (the mean embedding of the words in the token's
    name, " good" and " bad": for fine-tuning a pretrained model, whose random new rows are far
    smaller than its word embeddings and barely move at fine-tuning learning rates)."""
    drop_control_fraction: float = 0.01
    """Conditional: share of segments left without a control token (Korbak: 0.01)."""
    unlikelihood_weight: float = 1.0
    """Unlikelihood: weight alpha of -log(1 - p) on tokens of bad segments (Korbak: 1)."""
    beta: float = 1.0
    """RWR/AWR: temperature of the weights exp(score / beta) and exp(advantage / beta)."""
    max_weight: float = 1000.0
    """RWR/AWR: upper clip of the weights (Korbak: 1000)."""
    awr_alpha: float = 0.5
    """AWR: weight of the advantage-weighted NLL; 1 - awr_alpha weighs the value head's MSE (Korbak: 0.5)."""
    generation: PHFGenerationConfig = dataclasses.field(default_factory=PHFGenerationConfig)
    output_dir: str = "runs/phf"
    """Where config.yaml, metrics.jsonl, checkpoints/, final/ and eval.json go."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """Replace an earlier run in output_dir instead of refusing to start."""


# ---- model -------------------------------------------------------------------------------------
class PHFPolicy(torch.nn.Module):
    """The LM, plus AWR's value head (a linear layer on the last hidden state) when asked.

    ``forward`` returns ``(logits (B, T, V), values (B, T) or None)``; ``values[:, t]`` is the value
    of the prefix ``input_ids[:, :t+1]``, i.e. of the state in which token t+1 is predicted.
    """

    def __init__(self, lm: torch.nn.Module, value_head: bool) -> None:
        super().__init__()
        self.lm = lm
        self.value_head: torch.nn.Linear | None = None
        if value_head:
            self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: AWR starts as RWR
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        wants_values = self.value_head is not None
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=wants_values)
        if self.value_head is None:
            return out.logits, None
        return out.logits, self.value_head(out.hidden_states[-1].float()).squeeze(-1)


CONTROL_TOKEN_INITS = ("random", "words")


def add_control_tokens(
    model: Any, tokenizer: Any, good: str, bad: str, init: str = "random"
) -> tuple[int, int]:
    """Add ``good``/``bad`` as special tokens (kept if present) and grow the embeddings; returns their ids.

    ``init``: ``random`` leaves new rows at the model's random initialisation (as when pretraining
    from scratch); ``words`` sets each new token's input (and output) row to the mean of the rows
    of the words in its name (``<|good|>`` -> " good"), so a pretrained model reads the control
    token at the scale and with the meaning of a word it knows instead of as a small random vector.
    """
    known = set(tokenizer.get_vocab())
    tokenizer.add_tokens([good, bad], special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = int(tokenizer.convert_tokens_to_ids(good)), int(tokenizer.convert_tokens_to_ids(bad))
    if init == "words":
        tables = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight is not tables[0]:
            tables.append(output.weight)
        for token, token_id in zip((good, bad), ids, strict=True):
            if token in known:
                continue  # the model already has a row for it
            word = " ".join(re.findall(r"[A-Za-z0-9]+", token))
            pieces = list(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) if word else []
            if not pieces:
                raise ConfigError(
                    f"control_token_init=words: {token!r} has no word in its name to start from"
                )
            with torch.no_grad():
                for table in tables:
                    table[token_id] = table[pieces].mean(dim=0)
    return ids


# ---- data --------------------------------------------------------------------------------------
@dataclasses.dataclass
class EncodedDocument:
    """Token ids of one document and, per position, whether it is a target, its segment score, good/bad."""

    input_ids: list[int]
    loss_mask: list[int]
    scores: list[float]
    good: list[bool]


def encode_document(
    tokenizer: Any,
    doc: ScoredDocument,
    *,
    threshold: float,
    start_id: int,
    end_id: int | None,
    control_ids: tuple[int, int] | None = None,
    keep_control: list[bool] | None = None,
    control_token_loss: bool = True,
    max_length: int = 0,
) -> EncodedDocument:
    """``start [c^1] x^1 [c^2] x^2 ... end``, truncated to ``max_length`` tokens (0: no limit).

    Segments after the first are tokenised with a leading space, so the document reads as the
    segments joined by spaces. ``control_ids`` = (good id, bad id) puts a control token before
    each segment whose ``keep_control`` entry is true. Every token except ``start`` is a target
    (``loss_mask`` 1), control tokens only with ``control_token_loss``; each token carries its
    segment's score (the end token: the last segment's). A document with a ``prompt`` starts with
    the prompt's tokens instead of ``start``, exactly as :func:`prefalign.rollout.generate` encodes
    it (the chat template with a generation prompt), none of them a target.
    """
    head = [start_id] if doc.prompt is None else prompt_token_ids(tokenizer, doc.prompt)
    ids, mask = list(head), [0] * len(head)
    scores, good = [doc.scores[0]] * len(head), [doc.scores[0] >= threshold] * len(head)
    for i, (text, score) in enumerate(zip(doc.segments, doc.scores, strict=True)):
        is_good = score >= threshold
        if control_ids is not None and (keep_control is None or keep_control[i]):
            ids.append(control_ids[0] if is_good else control_ids[1])
            mask.append(int(control_token_loss))
            scores.append(score)
            good.append(is_good)
        piece = list(tokenizer((" " if i else "") + text, add_special_tokens=False)["input_ids"])
        ids += piece
        mask += [1] * len(piece)
        scores += [score] * len(piece)
        good += [is_good] * len(piece)
    if end_id is not None:
        ids.append(end_id)
        mask.append(1)
        scores.append(doc.scores[-1])
        good.append(doc.scores[-1] >= threshold)
    if max_length > 0:
        ids, mask, scores, good = ids[:max_length], mask[:max_length], scores[:max_length], good[:max_length]
    return EncodedDocument(ids, mask, scores, good)


def collate(rows: list[EncodedDocument], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) ``input_ids``, ``attention_mask``, ``loss_mask``, ``scores``, ``good``."""
    width = max(len(r.input_ids) for r in rows)
    batch = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
        "loss_mask": torch.zeros((len(rows), width), dtype=torch.long),
        "scores": torch.zeros((len(rows), width), dtype=torch.float32),
        "good": torch.zeros((len(rows), width), dtype=torch.bool),
    }
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        batch["input_ids"][i, :n] = torch.tensor(r.input_ids)
        batch["attention_mask"][i, :n] = 1
        batch["loss_mask"][i, :n] = torch.tensor(r.loss_mask)
        batch["scores"][i, :n] = torch.tensor(r.scores)
        batch["good"][i, :n] = torch.tensor(r.good)
    return batch


def token_tensors(policy: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward: target log-probs, mask, scores, good flags and values (B, T-1), aligned with the targets."""
    logits, values = policy(batch["input_ids"], batch["attention_mask"])
    logits, labels, mask = shift_for_causal_lm(logits, batch["input_ids"], batch["loss_mask"])
    out = {
        "policy_logps": token_logps(logits.float(), labels),
        "mask": mask,
        "scores": batch["scores"][:, 1:],
        "good": batch["good"][:, 1:],
    }
    if values is not None:
        out["values"] = values[:, :-1]
    return out


def split_documents(
    docs: list[ScoredDocument], fraction: float, seed: int
) -> tuple[list[ScoredDocument], list[ScoredDocument]]:
    """(train, held-out): a seeded random ``fraction`` of the documents held out."""
    if fraction <= 0:
        return docs, []
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(fraction * len(docs)))
    return [docs[i] for i in sorted(order[held:])], [docs[i] for i in sorted(order[:held])]


# ---- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def heldout_nll(
    policy: torch.nn.Module, encoded: list[EncodedDocument], pad_id: int, batch_size: int
) -> float:
    """Token-mean NLL of the held-out documents' targets (in the training format)."""
    was_training = policy.training
    policy.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        t = token_tensors(policy, collate(encoded[start : start + batch_size], pad_id))
        keep = t["mask"].bool()
        total += float(-t["policy_logps"][keep].sum())
        count += int(keep.sum())
    policy.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def sample_documents(
    lm: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    cfg: PHFGenerationConfig,
    *,
    end_id: int | None,
    banned_ids: list[int],
) -> list[str]:
    """``cfg.num_samples`` generations from ``prompt_ids`` (seeded), decoded without special tokens."""
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    sampling: dict[str, Any] = {"do_sample": cfg.temperature > 0}
    if cfg.temperature > 0:
        sampling.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
    if banned_ids:
        sampling["bad_words_ids"] = [[i] for i in banned_ids]
    texts: list[str] = []
    for b, start in enumerate(range(0, cfg.num_samples, cfg.batch_size)):
        n = min(cfg.batch_size, cfg.num_samples - start)
        input_ids = torch.tensor([prompt_ids] * n, device=device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + b)
            out = lm.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=cfg.max_new_tokens,
                eos_token_id=end_id,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        for row in out[:, len(prompt_ids) :].tolist():
            if end_id is not None and end_id in row:
                row = row[: row.index(end_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    lm.train(was_training)
    return texts


def sample_replies(
    lm: Any, tokenizer: Any, prompts: list[Text], cfg: PHFGenerationConfig, prefix: str
) -> list[str]:
    """``cfg.num_samples`` replies, one per prompt in turn (cycling), each opened by ``prefix``
    (the good control token after conditional training); the generation config bans ``<|bad|>``."""
    chosen = [prompts[i % len(prompts)] for i in range(cfg.num_samples)]
    sampling = SamplingConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        response_prefix=prefix,
    )
    return [s.completion for s in generate(lm, tokenizer, chosen, sampling)]


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
def _check_config(cfg: PHFConfig) -> None:
    if cfg.objective not in PHF_OBJECTIVES:
        raise ConfigError(f"objective: unknown {cfg.objective!r}; choose from {sorted(PHF_OBJECTIVES)}")
    if cfg.segmentation not in SEGMENTERS:
        raise ConfigError(f"segmentation: unknown {cfg.segmentation!r}; choose from {sorted(SEGMENTERS)}")
    if not 0 <= cfg.threshold_percentile < 100:
        raise ConfigError(f"threshold_percentile must lie in [0, 100), got {cfg.threshold_percentile}")
    if not 0 <= cfg.drop_control_fraction <= 1:
        raise ConfigError(f"drop_control_fraction must lie in [0, 1], got {cfg.drop_control_fraction}")
    if cfg.beta <= 0 or cfg.max_weight <= 0:
        raise ConfigError(f"beta and max_weight must be positive, got {cfg.beta} and {cfg.max_weight}")
    if not 0 <= cfg.awr_alpha <= 1:
        raise ConfigError(f"awr_alpha must lie in [0, 1], got {cfg.awr_alpha}")
    if cfg.control_token_init not in CONTROL_TOKEN_INITS:
        raise ConfigError(
            f"control_token_init: unknown {cfg.control_token_init!r}; choose from {CONTROL_TOKEN_INITS}"
        )
    if cfg.good_token == cfg.bad_token:
        raise ConfigError("good_token and bad_token must differ")
    if not cfg.data.train:
        raise ConfigError("data.train is empty: name a .jsonl or .txt corpus")
    if cfg.generation.num_samples < 0 or cfg.generation.batch_size < 1:
        raise ConfigError("generation.num_samples must be >= 0 and generation.batch_size >= 1")


def train(cfg: PHFConfig) -> RunResult:
    """Pretrain (or continue training) a causal LM on a scored corpus with a PHF objective."""
    _check_config(cfg)
    objective = PHF_OBJECTIVES[cfg.objective]
    try:
        scorer = build_scorer(cfg.scorer)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    run = Run.open(cfg.output_dir, cfg, resume=cfg.resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    accelerator = make_accelerator()

    # ---- setup: corpus -----------------------------------------------------------------------
    load = functools.partial(
        load_corpus,
        scorer=scorer,
        segmentation=cfg.segmentation,
        on_error=cfg.data.on_error,
        report_path=run.output_dir / "rejected_rows.jsonl",
    )
    docs = list(load(cfg.data.train))
    if cfg.data.eval:
        eval_docs = list(load(cfg.data.eval))
    else:
        docs, eval_docs = split_documents(docs, cfg.data.eval_fraction, cfg.train.seed)
    by_document = objective.corpus == "filter"
    pool = [d.mean_score for d in docs] if by_document else [s for d in docs for s in d.scores]
    threshold = score_threshold(pool, cfg.threshold, cfg.threshold_percentile)
    corpus_stats = {
        "documents": len(docs),
        "segments": sum(len(d.segments) for d in docs),
        "bad_segment_fraction": sum(s < threshold for d in docs for s in d.scores)
        / max(1, sum(len(d.segments) for d in docs)),
    }
    if by_document:
        docs = [d for d in docs if d.mean_score >= threshold]
        corpus_stats["documents_kept"] = len(docs)
        if not docs:
            raise ConfigError(f"filtering at threshold {threshold:g} leaves no training documents")

    # ---- setup: model ------------------------------------------------------------------------
    lm, tokenizer = load_causal_lm(cfg.model.name)
    control_ids = None
    if objective.corpus == "condition":
        control_ids = add_control_tokens(lm, tokenizer, cfg.good_token, cfg.bad_token, cfg.control_token_init)
        # Banned in final/'s generation config too: sampling from a <|good|> prompt stays conditioned.
        lm.generation_config.bad_words_ids = [[control_ids[1]]]
    settings = lora_settings(cfg.model)
    if settings is not None:
        # The control tokens' rows are new: trained in full, since LoRA leaves embeddings frozen.
        lm = apply_lora(lm, settings, "CAUSAL_LM", trainable_token_ids=control_ids or ())
    disable_dropout(lm)
    policy = PHFPolicy(lm, value_head="values" in objective.inputs)
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    end_id = tokenizer.eos_token_id
    if start_id is None:
        raise ConfigError(
            f"{cfg.model.name}: the tokenizer has neither a BOS nor an EOS token to start documents"
        )
    encode = functools.partial(
        encode_document,
        tokenizer,
        threshold=threshold,
        start_id=start_id,
        end_id=end_id,
        control_ids=control_ids,
        control_token_loss=cfg.control_token_loss,
        max_length=cfg.data.max_length,
    )
    # Which segments keep their control token: drawn once from the seed, so a resumed run agrees.
    drop = torch.Generator().manual_seed(cfg.train.seed)
    encoded = [
        encode(
            d,
            keep_control=(torch.rand(len(d.segments), generator=drop) >= cfg.drop_control_fraction).tolist(),
        )
        for d in docs
    ]
    eval_encoded = [encode(d) for d in eval_docs]
    pad_id = tokenizer.pad_token_id
    plan = step_plan(len(encoded), cfg.train)
    optimizer, scheduler = build_optimizer(policy, cfg.train, len(plan))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    policy.train()
    start = run.restore(accelerator.unwrap_model(policy), optimizer, scheduler)
    options = {name: getattr(cfg, name) for name in objective.options}

    # ---- loop --------------------------------------------------------------------------------
    last: dict[str, float] = {}
    for step, bar, task in run.progress(start, len(plan), f"phf {cfg.objective}"):
        indices = plan[step]
        # Target tokens of the whole step (all processes): the denominator of the token mean.
        step_tokens = sum(sum(encoded[i].loss_mask) for i in indices)
        total = 0.0
        sums: dict[str, float] = {}  # metric x tokens, for token-weighted step means
        for micro in micro_batches(indices, cfg.train.micro_batch_size, accelerator):
            tensors = token_tensors(policy, collate([encoded[i] for i in micro], pad_id))
            per_token, metrics = objective.loss(
                tensors["policy_logps"],
                tensors["mask"],
                **{name: tensors[name] for name in objective.inputs},
                **options,
            )
            loss = reduce_token_loss(per_token, tensors["mask"], mode="token_mean", total_tokens=step_tokens)
            accelerator.backward(loss * accelerator.num_processes)
            total += float(loss.detach())
            tokens = int(tensors["mask"].sum())
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) * tokens
        grad_norm = clip_and_step(policy, optimizer, scheduler, accelerator, cfg.train.max_grad_norm)
        last = {
            "loss": total * accelerator.num_processes,
            "tokens": step_tokens,
            "grad_norm": grad_norm,
            "learning_rate": scheduler.get_last_lr()[0],
            **{key: value / max(1, step_tokens) for key, value in sums.items()},
        }
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and eval_encoded:
            last["eval/nll"] = heldout_nll(policy, eval_encoded, pad_id, cfg.train.micro_batch_size)
        run.log(step + 1, last)
        bar.update(task, info=f"loss {last['loss']:.4f}")
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < len(plan):
            run.save_checkpoint(step + 1, accelerator.unwrap_model(policy), optimizer, scheduler)

    # ---- save and evaluate -------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(policy)
    if len(plan) > start:
        run.save_checkpoint(len(plan), unwrapped, optimizer, scheduler)
    final_dir = run.output_dir / "final"
    merge_and_save(unwrapped.lm, tokenizer, final_dir)
    eval_metrics: dict[str, Any] = {
        "objective": cfg.objective,
        "threshold": threshold,
        "corpus": corpus_stats,
    }
    if eval_encoded:
        eval_metrics["heldout_nll"] = heldout_nll(unwrapped, eval_encoded, pad_id, cfg.train.micro_batch_size)
    prompts = [d.prompt for d in (eval_docs or docs) if d.prompt is not None]
    if cfg.generation.num_samples > 0 and accelerator.is_main_process:
        if prompts:  # replies to the corpus's prompts (held-out ones when there are any)
            prefix = cfg.good_token if control_ids is not None else ""
            texts = sample_replies(unwrapped.lm, tokenizer, prompts, cfg.generation, prefix)
            eval_metrics["prefix"] = prefix
        else:  # documents from scratch, as Korbak et al. evaluate
            prompt = [start_id] + ([control_ids[0]] if control_ids is not None else [])
            texts = sample_documents(
                unwrapped.lm,
                tokenizer,
                prompt,
                cfg.generation,
                end_id=end_id,
                banned_ids=[control_ids[1]] if control_ids is not None else [],
            )
            eval_metrics["prefix"] = tokenizer.decode(prompt)
        eval_metrics.update(generation_report(texts, scorer, threshold, cfg.generation.keep_samples))
    if accelerator.is_main_process:
        run.write_json("eval.json", eval_metrics)
    return RunResult(run.output_dir, final_dir, len(plan), last, eval_metrics)
