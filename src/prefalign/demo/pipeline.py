"""``prefalign demo``: steer SmolLM2-135M-Instruct towards positive movie reviews with simulated raters.

Stages (each timed; the times land in ``summary.json`` under ``stage_seconds``):

1. **prompts** — movie titles from ``movies.txt`` are shuffled with the seed and split into
   disjoint training and held-out evaluation titles; every prompt reads
   ``PROMPT_TEMPLATE.format(title=...)``.
2. **generate** — the base policy samples ``samples_per_prompt`` completions per training prompt
   (pure sampling at temperature 1; chat template; stop at ``<|im_end|>``).
3. **rate** — five simulated raters (:mod:`prefalign.demo.raters`) rate every completion 0-10 from
   the hidden VADER compound plus their own noise, bias or randomness; the
   :class:`~prefalign.feedback.schema.Rating` records are written to ``feedback.jsonl`` and read
   back, validated, with :func:`prefalign.feedback.schema.load_feedback`, as real annotations would be.
4. **aggregate** — :func:`prefalign.feedback.aggregate.aggregate_ratings` (``weighted``):
   reliability-weighted consensus per completion, weights learned from each rater's agreement with
   the leave-one-out consensus; a rater whose agreement is not significantly above zero is flagged
   as a suspected spammer and gets weight 0. Rater agreement (Krippendorff's alpha, pairwise
   Cohen's kappa) from :func:`prefalign.feedback.agreement.ratings_agreement`.
5. **pairs** — :func:`prefalign.feedback.convert.ratings_to_pairs` on the consensus scores, per
   prompt over completions that ended with EOS, outside-in (best vs worst, 2nd best vs 2nd worst,
   ...) up to ``pairs_per_prompt``, keeping pairs whose consensus gap is at least ``min_margin``.
   Written as chat-format JSONL (``pairs.jsonl``) and a plain-text copy for the encoder reward
   model (``reward_pairs.jsonl``), both read back with :func:`prefalign.feedback.formats.load_pairs`.
6. **reward** — ``minilm-l6`` reward model (:mod:`prefalign.recipes.reward`), 20% of pairs held out.
7. **align** — for each ``--method`` (:data:`DEMO_METHODS`; default DPO), LoRA training of the
   policy on all pairs (``rankings.jsonl``, each prompt's finished samples ranked by consensus, for
   ``listwise``; ``phf_corpus.jsonl``, every finished sample with its consensus score, for ``phf``
   and ``phf-filtering``).
8. **evaluate** — before (base) vs after (each merged policy) on the held-out prompts: VADER,
   TextBlob, reward-model mean, KL to the reference (k1 on the policy's samples), distinct-2,
   length, EOS rate; printed as a rich table and written to ``summary.json`` and ``report.html``.

Measured on 2 CPU cores (torch 2.13, seed 0): the full run took 377 s — load 4 s, generate 400
training samples 141 s, rate/aggregate/pairs 0.1 s, reward model 17 s, DPO (90 pairs, 24 steps,
reference scoring included) 139 s, evaluate before 30 s, evaluate after (with KL) 46 s — and moved
VADER 0.30 -> 0.64, share >= 0.8 22% -> 55%, TextBlob 0.15 -> 0.23 at KL 3.1 nats, reward-model
held-out accuracy 0.83, EOS 87% -> 83% (96-token cap). ``--quick`` took 107 s (VADER 0.14 -> 0.54).
Those figures predate the switch to :mod:`prefalign.feedback` aggregation; with it (same seed,
same 90-pair count, pairs' gold agreement 100% and mean gold gap 0.93 vs 0.93 before) the full run
moved VADER 0.30 -> 0.56, share >= 0.8 22% -> 45%, TextBlob 0.15 -> 0.23 at KL 2.5 nats, reward-model
accuracy 0.83, EOS 87% -> 85%; rater agreement: Krippendorff's alpha (interval) 0.43, only the
spammer flagged (agreement 0.05; the others 0.81-0.94). Different pairs, so a different DPO run:
the gain per nat of KL is the same (0.10 VADER per nat either way). ``--method
dpo,ipo,kto,orpo,simpo`` on the same pairs (VADER / share >= 0.8 / KL): dpo 0.56 / 45% / 2.5,
ipo 0.50 / 37% / 1.0, kto 0.69 / 60% / 5.0, orpo 0.40 / 28% / 0.5, simpo 0.80 / 78% / 9.5 (SimPO
stops ending its reviews: 3% EOS). The table is in the README.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

PROMPT_TEMPLATE = "Write a short review of the movie {title} in one sentence."
POLICY = "smollm2-135m-instruct"
REWARD_BACKBONE = "minilm-l6"


@dataclasses.dataclass
class DemoSettings:
    """Sizes and hyper-parameters of one demo run (see :data:`FULL` and :data:`QUICK`).

    Defaults come from a sweep on SmolLM2-135M-Instruct (2 CPU cores; held-out 30 titles x 2
    samples at temperature 1; base: VADER 0.29, 22% >= 0.8, TextBlob 0.15, 87% EOS at 72 tokens).
    With 100 training prompts x 4 samples, best-vs-worst pairs (93 pairs), LoRA r=16, beta 0.1,
    2 epochs of batch 8 (24 steps):

    ==========  ======  ========  ========  =====  ========
    DPO lr      VADER   >= 0.8    TextBlob  KL     EOS@72
    ==========  ======  ========  ========  =====  ========
    1e-4        0.50    30%       0.22      1.2    75%
    2e-4 [*]    0.64    55%       0.23      3.1    83% [96]
    2.5e-4      0.74    62%       0.29      5.6    60%
    5e-4        0.88    85%       0.35      15.9   53%
    ==========  ======  ========  ========  =====  ========

    60 prompts x 8 samples with 2 outside-in pairs per prompt (119 pairs, 30 steps) at 2.5e-4 gave
    0.84 / 80% / 0.35 at KL 7.6: about the same gain per nat of KL, for more generation time.
    [*] the default, measured in a full ``prefalign demo`` run (other rows: the same pipeline on
    cached samples); with the :mod:`prefalign.feedback` aggregation it measured 0.56 / 45% / 0.23
    at KL 2.5 (85% EOS).
    """

    train_prompts: int = 100
    samples_per_prompt: int = 4
    eval_prompts: int = 30
    eval_samples_per_prompt: int = 2
    max_new_tokens: int = 72
    """Cap for training samples (87% of base reviews end with EOS within it)."""
    eval_max_new_tokens: int = 96
    """Cap for the held-out before/after samples: aligned reviews run longer, let them finish."""
    temperature: float = 1.0
    gen_batch_size: int = 64
    pairs_per_prompt: int = 1
    min_margin: float = 1.0
    reward_epochs: float = 4.0
    reward_lr: float = 2e-4
    dpo_beta: float = 0.1
    dpo_lr: float = 2e-4
    dpo_epochs: float = 2.0
    dpo_batch_size: int = 8
    dpo_micro_batch_size: int = 4
    lora_r: int = 16
    lora_alpha: int = 32
    num_examples: int = 8
    rl_steps: int = 40
    """Optimizer steps of the RL methods (grpo, rloo, ppo, online-dpo)."""
    rl_prompts_per_step: int = 4
    rl_group: int = 4
    """Completions per prompt and step (PPO: one each of rl_prompts_per_step x rl_group prompts)."""
    rl_lr: float = 2e-4
    rl_kl_coef: float = 0.05
    """KL weight of grpo (k3 in the loss), rloo (in the reward) and ppo (per token, in the reward)."""
    rl_missing_eos_penalty: float = 1.0
    """Subtracted from the reward-model score of a review that hits the token cap (RL methods)."""


FULL = DemoSettings()
QUICK = DemoSettings(
    train_prompts=32,
    samples_per_prompt=4,
    eval_prompts=12,
    eval_samples_per_prompt=2,
    max_new_tokens=48,
    eval_max_new_tokens=64,
    reward_epochs=8.0,
    dpo_lr=5e-4,
    dpo_epochs=2.0,
    dpo_batch_size=4,
    num_examples=4,
    rl_steps=8,
    rl_lr=5e-4,
)


def load_titles() -> list[str]:
    """The shipped movie titles, one per line, in file order."""
    text = resources.files("prefalign.demo").joinpath("movies.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def load_eval_prompts(path: str | Path) -> list[Any]:
    """Held-out prompts from the user: titles (``.txt``, one per line) in the demo's prompt, or
    ``prompt`` rows (JSONL, JSON, CSV, Parquet; text or chat messages) as they are."""
    from prefalign.feedback.formats import load_prompts

    prompts = load_prompts(path)
    if Path(path).suffix == ".txt":
        return [PROMPT_TEMPLATE.format(title=t) for t in prompts]
    return prompts


def split_titles(titles: Sequence[str], n_train: int, n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Disjoint (train, eval) title lists drawn from a seeded shuffle."""
    if n_train + n_eval > len(titles):
        raise ValueError(f"asked for {n_train}+{n_eval} titles but only {len(titles)} are shipped")
    order = list(titles)
    random.Random(seed).shuffle(order)
    return order[n_eval : n_eval + n_train], order[:n_eval]


def rate_and_pair(samples: Sequence[Any], cfg: DemoSettings, out: Path, seed: int) -> dict[str, Any]:
    """Raters -> ``feedback.jsonl`` -> aggregate -> pairs -> ``pairs.jsonl`` + ``reward_pairs.jsonl``.

    Returns counts, rater agreement and per-rater statistics for the summary.
    """
    from prefalign.demo.raters import DEFAULT_PANEL, SCALE, Item, position_effects, simulate_ratings
    from prefalign.eval.metrics import vader_compound
    from prefalign.feedback.aggregate import aggregate_ratings
    from prefalign.feedback.agreement import ratings_agreement
    from prefalign.feedback.convert import ratings_to_pairs
    from prefalign.feedback.formats import PreferencePair, load_pairs, save_pairs
    from prefalign.feedback.schema import load_feedback, save_feedback

    items = [
        Item(
            f"p{s.prompt_index:03d}-s{s.sample_index}", f"p{s.prompt_index:03d}", str(s.prompt), s.completion
        )
        for s in samples
    ]
    save_feedback(simulate_ratings(items, DEFAULT_PANEL, seed=seed), out / "feedback.jsonl")
    records = list(load_feedback(out / "feedback.jsonl", scale=SCALE))  # validated, as real feedback
    consensus = aggregate_ratings(records, SCALE, method="weighted")
    agreement = ratings_agreement(records, SCALE)
    effects = position_effects(records, consensus.scores)
    # Only completions that ended with EOS take part in pairs: a truncated review would teach the
    # policy to stop mid-sentence, since the chat format appends the end-of-turn token to every one.
    finished = {it.item_id for it, s in zip(items, samples, strict=True) if s.finished}
    raw, report = ratings_to_pairs(
        [r for r in records if r.response_id in finished],
        scale=SCALE,
        scores={rid: v for by_id in consensus.scores.values() for rid, v in by_id.items()},
        strategy="outside_in",
        min_margin=cfg.min_margin,
        max_pairs_per_item=cfg.pairs_per_prompt,
    )
    chat = [
        PreferencePair(
            prompt=[{"role": "user", "content": p.prompt}],
            chosen=[{"role": "assistant", "content": p.chosen}],
            rejected=[{"role": "assistant", "content": p.rejected}],
            margin=p.margin,
        )
        for p in raw
    ]
    save_pairs(chat, out / "pairs.jsonl")
    pairs = load_pairs(out / "pairs.jsonl")  # what the DPO recipe will read, round-tripped
    plain = [
        PreferencePair(
            prompt=p.prompt[-1]["content"], chosen=p.chosen[-1]["content"], rejected=p.rejected[-1]["content"]
        )
        for p in pairs
    ]
    save_pairs(plain, out / "reward_pairs.jsonl")
    rankings = write_rankings(items, finished, consensus.scores, out / "rankings.jsonl")
    corpus = write_phf_corpus(items, finished, consensus.scores, out / "phf_corpus.jsonl")
    chosen_gold = vader_compound([str(p.chosen) for p in raw])
    rejected_gold = vader_compound([str(p.rejected) for p in raw])
    raters = [
        {
            "rater_id": name,
            "num_ratings": summary.n,
            "weight": summary.weight,
            "agreement": summary.agreement,
            "position_effect": effects.get(name, 0.0),
            "suspected_spammer": summary.spammer,
        }
        for name, summary in sorted(consensus.raters.items())
    ]
    return {
        "num_feedback_records": len(records),
        "num_pairs": len(pairs),
        "num_rankings": rankings,
        "num_phf_documents": corpus,
        "pairs_skipped_as_ties": report.ties,
        "pair_gold_agreement": sum(c > r for c, r in zip(chosen_gold, rejected_gold, strict=True))
        / max(1, len(raw)),
        "pair_gold_margin": sum(c - r for c, r in zip(chosen_gold, rejected_gold, strict=True))
        / max(1, len(raw)),
        "rater_agreement": {
            "krippendorff_alpha_interval": agreement.alpha.get("interval"),
            "krippendorff_alpha_ordinal": agreement.alpha.get("ordinal"),
            "mean_pairwise_cohen_kappa": agreement.mean_pairwise_kappa,
            "percent_agreement": agreement.percent_agreement,
            "per_rater": agreement.per_rater,
        },
        "suspected_spammers": [r["rater_id"] for r in raters if r["suspected_spammer"]],
        "raters": raters,
    }


def write_rankings(
    items: Sequence[Any], finished: set[str], scores: dict[str, dict[str, float]], path: Path
) -> int:
    """Each prompt's finished completions ranked by consensus score (best first, equal scores tied)
    as chat-format listwise rows for ``prefalign listwise``; returns the number of rows written."""
    import json as _json

    from prefalign.feedback.formats import load_listwise_rows

    by_prompt: dict[str, list[Any]] = {}
    for item in items:
        if item.item_id in finished:
            by_prompt.setdefault(item.prompt_id, []).append(item)
    lines = []
    for prompt_id, group in by_prompt.items():
        if len(group) < 2:
            continue
        ordered = sorted(group, key=lambda it: -scores[prompt_id][it.item_id])
        levels = sorted({scores[prompt_id][it.item_id] for it in ordered}, reverse=True)
        row = {
            "prompt": [{"role": "user", "content": ordered[0].prompt}],
            "responses": [[{"role": "assistant", "content": it.response}] for it in ordered],
            "ranks": [levels.index(scores[prompt_id][it.item_id]) + 1 for it in ordered],
        }
        lines.append(_json.dumps(row) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return len(load_listwise_rows(path))  # validated, as the listwise recipe will read it


def write_phf_corpus(
    items: Sequence[Any], finished: set[str], scores: dict[str, dict[str, float]], path: Path
) -> int:
    """Every finished completion with its consensus score, as a scored corpus of replies for
    ``prefalign phf`` (one segment per reply, the prompt as context); returns the row count."""
    from prefalign.feedback.corpus import load_corpus

    lines = [
        json.dumps(
            {
                "prompt": [{"role": "user", "content": it.prompt}],
                "text": it.response,
                "score": scores[it.prompt_id][it.item_id],
            }
        )
        + "\n"
        for it in items
        if it.item_id in finished and it.response.strip()
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return len(load_corpus(path, scorer=None))  # validated, as the phf recipe will read it


def train_reward_model(out: Path, cfg: DemoSettings, seed: int) -> Any:
    """``prefalign.recipes.reward`` on ``reward_pairs.jsonl`` (20% held out) into ``out/reward``."""
    from prefalign.config import DataConfig, ModelConfig, TrainConfig
    from prefalign.recipes import reward

    rm_cfg = reward.RewardConfig(
        model=ModelConfig(name=REWARD_BACKBONE),
        data=DataConfig(train=str(out / "reward_pairs.jsonl"), eval_fraction=0.2, max_length=160),
        train=TrainConfig(
            learning_rate=cfg.reward_lr,
            batch_size=16,
            micro_batch_size=16,
            epochs=cfg.reward_epochs,
            warmup_steps=2,
            seed=seed,
        ),
        output_dir=str(out / "reward"),
        overwrite=True,
    )
    return reward.train(rm_cfg)


# Each demo method: the recipe module, its config class, and the method's own settings. All train
# LoRA on the same pairs with the same optimiser settings, so the report compares objectives only.
# Method settings follow each paper's recommended regime (SimPO: beta 2, gamma/beta 0.5; ORPO:
# lambda 0.1; IPO: tau = beta; KTO: beta 0.1, equal class weights for balanced pairs).
_PHF_OPTIONS: dict[str, Any] = {
    "objective": "conditional",
    "scorer": {"name": "precomputed"},
    "threshold_percentile": 50.0,
    "control_token_loss": False,
    "control_token_init": "words",
    "drop_control_fraction": 0.0,
    "num_samples": 0,  # the demo evaluates every method itself
}
DEMO_METHODS: dict[str, dict[str, Any]] = {
    "dpo": {"recipe": "dpo", "options": {"loss": "sigmoid"}},
    "ipo": {"recipe": "dpo", "options": {"loss": "ipo"}},
    "hinge": {"recipe": "dpo", "options": {"loss": "hinge"}},
    "rpo": {"recipe": "dpo", "options": {"loss": "sigmoid", "sft_coef": 1.0}},
    "simpo": {"recipe": "dpo", "options": {"loss": "simpo", "beta": 2.0, "gamma": 1.0}},
    "orpo": {"recipe": "dpo", "options": {"loss": "orpo", "beta": 0.1}},
    "kto": {"recipe": "kto", "options": {}},
    "listwise": {"recipe": "listwise", "options": {}, "data": "rankings.jsonl"},
    "contrastive": {
        "recipe": "contrastive",
        "options": {"score": "likelihood", "reference": True, "length_normalize": False, "temperature": 10.0},
    },
    # Conditional training (Korbak et al. 2023) on every finished sample, <|good|> when its consensus
    # rating is in the top half; the evaluation opens each reply with <|good|>. One segment per
    # reply, so the control token needs no loss of its own (control_token_loss false); the tokens
    # start from the embeddings of " good" and " bad" (control_token_init words): SmolLM2's random
    # new rows (norm 0.5 against 3.2 for its words) barely moved in 84 LoRA steps at lr 2e-4
    # (VADER 0.30 -> 0.25). With either start, 332 scored replies are too few to learn the
    # conditioning here (0.28 with words; see the README's method table).
    "phf": {
        "recipe": "phf",
        "options": _PHF_OPTIONS,
        "data": "phf_corpus.jsonl",
        "response_prefix": "<|good|>",
    },
    # Filtering: plain likelihood on the top half only (rejection-sampling fine-tuning).
    "phf-filtering": {
        "recipe": "phf",
        "options": {**_PHF_OPTIONS, "objective": "filtering"},
        "data": "phf_corpus.jsonl",
    },
    # Reinforcement learning: the policy samples on the training titles (prompts.txt) and the
    # reward model trained on the raters' pairs scores it (rl_config adds both); no pairs used.
    "grpo": {"recipe": "grpo", "options": {}, "rl": True},
    "rloo": {"recipe": "rloo", "options": {}, "rl": True},
    "ppo": {
        "recipe": "ppo",
        # Huang et al.: the reward standardised on the reference's samples; one prompt per sample.
        "options": {"normalize_on_reference": 64, "reward": {"normalize": "standardize"}},
        "rl": True,
    },
    "online-dpo": {"recipe": "online-dpo", "options": {}, "rl": True},
}
RL_KL_FIELD = {"grpo": "beta", "rloo": "beta", "ppo": "kl_coef"}
"""Which field of each RL recipe takes ``DemoSettings.rl_kl_coef`` (online DPO keeps dpo_beta)."""


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """``"dpo,ipo"`` (or a list) -> checked method names, in order, without repeats."""
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    unknown = [m for m in names if m not in DEMO_METHODS]
    if unknown or not names:
        raise ValueError(f"--method: unknown {unknown or spec!r}; choose from {', '.join(DEMO_METHODS)}")
    return list(dict.fromkeys(names))


def kl_field(method: str) -> str:
    """The config field that sets ``method``'s strength of the KL to the reference."""
    spec = DEMO_METHODS[method]
    return RL_KL_FIELD.get(spec["recipe"], "beta") if spec.get("rl") else "beta"


def run_name(method: str, beta: float | None) -> str:
    """``dpo`` or, in a sweep over the KL strength, ``dpo@0.1``: the run's folder and report label."""
    return method if beta is None else f"{method}@{beta:g}"


def train_policy(
    out: Path, cfg: DemoSettings, seed: int, method: str = "dpo", beta: float | None = None
) -> Any:
    """Align the policy with LoRA by ``method`` into ``out/<run_name>`` (merged model in ``final/``):
    offline methods on ``pairs.jsonl`` (or its rankings / corpus), RL methods on ``prompts.txt``
    with the demo's reward model. ``beta`` overrides the method's KL strength (:func:`kl_field`)."""
    from prefalign.config import build_config
    from prefalign.recipes import RECIPES

    spec = DEMO_METHODS[method]
    module, config_cls = RECIPES[spec["recipe"]].load()
    # The demo's beta is the preference losses' temperature, offered to every recipe with such a
    # beta (PHF's beta weighs RWR/AWR rewards instead); a method's own options are all passed, so
    # an option its config lacks is an error, never dropped.
    options = dict(spec["options"])
    if beta is not None:
        options[kl_field(method)] = beta
    if spec.get("rl"):
        values = rl_config(out, cfg, seed, spec["recipe"], options)
    else:
        values = pairs_config(out, cfg, seed, spec, options, config_cls)
    config = build_config(
        config_cls,
        {**values, "output_dir": str(out / run_name(method, beta)), "overwrite": True},
        f"demo method {method}",
    )
    return module.train(config)


def _lora(cfg: DemoSettings) -> dict[str, Any]:
    return {"name": POLICY, "lora": True, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha}


def pairs_config(
    out: Path, cfg: DemoSettings, seed: int, spec: dict[str, Any], options: dict[str, Any], config_cls: type
) -> dict[str, Any]:
    """Config values of an offline method: LoRA on the rated pairs (or their rankings / corpus)."""
    # The demo's beta is the preference losses' temperature, offered to every recipe with such a
    # beta (PHF's beta weighs RWR/AWR rewards instead); a method's own options are all passed, so
    # an option its config lacks is an error, never dropped.
    has_beta = any(f.name == "beta" for f in dataclasses.fields(config_cls))
    if has_beta and spec["recipe"] != "phf":
        options.setdefault("beta", cfg.dpo_beta)
    return {
        "model": _lora(cfg),
        "data": {
            "train": str(out / spec.get("data", "pairs.jsonl")),
            "max_length": cfg.max_new_tokens + 96,
            "max_prompt_length": 96,
        },
        "train": {
            "learning_rate": cfg.dpo_lr,
            "batch_size": cfg.dpo_batch_size,
            "micro_batch_size": cfg.dpo_micro_batch_size,
            "epochs": cfg.dpo_epochs,
            "warmup_steps": 2,
            "lr_scheduler": "linear",
            "seed": seed,
        },
        **options,
    }


def rl_config(
    out: Path, cfg: DemoSettings, seed: int, recipe: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Config values of an RL method: LoRA, the training prompts, the demo's reward model."""
    ppo = recipe == "ppo"
    if recipe in RL_KL_FIELD:
        options.setdefault(RL_KL_FIELD[recipe], cfg.rl_kl_coef)
    else:
        options.setdefault("beta", cfg.dpo_beta)
    reward = {
        "model": [str(out / "reward" / "final")],
        "missing_eos_penalty": cfg.rl_missing_eos_penalty,
        **options.pop("reward", {}),
    }
    completions = cfg.rl_prompts_per_step * cfg.rl_group
    return {
        "model": _lora(cfg),
        "data": {"train": str(out / "prompts.txt"), "eval_fraction": 0.0},
        "train": {
            "learning_rate": cfg.rl_lr,
            "batch_size": completions if ppo else cfg.rl_prompts_per_step,
            # 8 completions a forward: 16 took 1.5x the time a step and 7.7 GB instead of 5.2 here.
            "micro_batch_size": 8,
            "max_steps": cfg.rl_steps,
            "warmup_steps": 2,
            "lr_scheduler": "linear",
            "seed": seed,
            "log_every": 5,
            # RL spends most of its time in forward/backward passes: bf16 autocast where the
            # hardware runs bf16 natively (~2.4x faster here), fp32 elsewhere.
            "precision": "native",
        },
        "sampling": {
            "n": 1 if ppo else cfg.rl_group,
            "max_new_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "batch_size": cfg.gen_batch_size,
        },
        "reward": reward,
        "eval_samples": 0,  # the demo evaluates every method itself
        **options,
    }


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        from prefalign.train.run import console

        console.print(f"[bold]demo[/bold] {name} ...")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - start, 2)
            console.print(f"[bold]demo[/bold] {name} done in {self.stages[name]:.1f}s")


def _evaluate(
    samples: list[Any], rm: Any, rm_tokenizer: Any
) -> tuple[dict[str, float], list[float], list[float]]:
    """Metrics of one set of held-out samples, plus per-sample VADER and reward scores."""
    from prefalign.eval.metrics import mean, reward_scores, text_metrics, vader_compound

    texts = [s.completion for s in samples]
    metrics = text_metrics(texts, [s.num_tokens for s in samples])
    rewards = reward_scores(rm, rm_tokenizer, [s.prompt for s in samples], texts)
    metrics["reward_mean"] = mean(rewards)
    metrics["eos_rate"] = mean([float(s.finished) for s in samples])
    return metrics, vader_compound(texts), rewards


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from prefalign.eval.report import METRIC_LABELS

    methods = summary.get("methods") or {
        summary.get("method", "after"): {**summary["after"], "kl": summary["kl"]}
    }
    table = Table(title="prefalign demo: positive-sentiment steering (held-out prompts)")
    table.add_column("metric", justify="left")
    for col in ("before", *methods):
        table.add_column(col, justify="right")
    for key, label in METRIC_LABELS.items():
        b = summary["before"].get(key)
        values = [m.get(key) for m in methods.values()]
        if b is None or any(v is None for v in values):
            continue
        table.add_row(label, f"{b:.3f}", *(f"{v:.3f} ({v - b:+.3f})" for v in values))
    table.add_row("KL(policy || reference), nats", "0", *(f"{m['kl']:.3f}" for m in methods.values()))
    table.add_row(
        "reward model held-out accuracy", f"{summary['reward_model_accuracy']:.3f}", *[""] * len(methods)
    )
    Console().print(table)
    Console().print(_raters_line(summary))
    Console().print(f"total {summary['seconds']:.0f}s; stages {summary['stage_seconds']}")


def _raters_line(summary: dict[str, Any]) -> str:
    """One line on the simulated raters: their agreement and who was flagged."""
    agreement = summary["rater_agreement"]
    spam = ", ".join(summary["suspected_spammers"]) or "none"
    per_rater = ", ".join(f"{r['rater_id']} {r['agreement']:.2f}" for r in summary["raters"])
    return (
        f"raters: Krippendorff's alpha (interval) {agreement['krippendorff_alpha_interval']:.3f}, "
        f"mean pairwise Cohen's kappa {agreement['mean_pairwise_cohen_kappa']:.3f}; "
        f"agreement with consensus: {per_rater}; flagged as spammer: {spam}"
    )


def run_demo(
    output_dir: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    settings: DemoSettings | None = None,
    methods: str | Sequence[str] = "dpo",
    eval_prompts_file: str | Path | None = None,
    betas: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``output_dir``; returns the summary (also ``summary.json``).

    ``methods`` (e.g. ``"dpo,ipo,kto,orpo,simpo"``, see :data:`DEMO_METHODS`) each align the same
    base policy on the same pairs; every one is evaluated on the same held-out prompts, and the
    summary's ``methods`` and the report put them side by side. ``before``/``after``/``kl`` keep the
    first method's numbers. ``betas`` trains each method once per KL strength (``dpo@0.1``, ...;
    :func:`kl_field`) and the report draws each method's reward-vs-KL frontier. ``eval_prompts_file`` replaces the held-out titles: a ``.txt`` file of
    movie titles (one per line, put into the demo's prompt) or rows with a ``prompt`` field.
    """
    import torch

    from prefalign.eval.metrics import kl_to_reference, pearson
    from prefalign.eval.report import bars_png, curve_png, frontier_png, histogram_png, write_report
    from prefalign.models import load_causal_lm, load_reward_model
    from prefalign.rollout import GenerationStats, SamplingConfig, generate
    from prefalign.train import read_metrics
    from prefalign.utils import seed_everything

    cfg = settings or (QUICK if quick else FULL)
    method_names = parse_methods(methods)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    started = time.perf_counter()
    seed_everything(seed)

    with timer.stage("prompts + load policy"):
        train_titles, eval_titles = split_titles(load_titles(), cfg.train_prompts, cfg.eval_prompts, seed)
        train_prompts = [PROMPT_TEMPLATE.format(title=t) for t in train_titles]
        eval_prompts = [PROMPT_TEMPLATE.format(title=t) for t in eval_titles]
        if eval_prompts_file is not None:
            eval_prompts = load_eval_prompts(eval_prompts_file)
        (out / "prompts.txt").write_text("".join(p + "\n" for p in train_prompts), encoding="utf-8")
        base, tokenizer = load_causal_lm(POLICY)
    sampling = SamplingConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        batch_size=cfg.gen_batch_size,
        seed=seed,
    )
    gen_stats = GenerationStats()

    with timer.stage("generate train completions"):
        train_samples = generate(
            base, tokenizer, train_prompts, sampling, n=cfg.samples_per_prompt, stats=gen_stats
        )

    with timer.stage("rate + aggregate + pairs"):
        feedback = rate_and_pair(train_samples, cfg, out, seed)

    with timer.stage("reward model"):
        rm_result = train_reward_model(out, cfg, seed)
        rm, rm_tokenizer = load_reward_model(rm_result.final_dir)
        rm.eval()

    eval_sampling = dataclasses.replace(
        sampling, n=cfg.eval_samples_per_prompt, max_new_tokens=cfg.eval_max_new_tokens, seed=seed + 10_000
    )
    with timer.stage("evaluate before"):
        before_samples = generate(base, tokenizer, eval_prompts, eval_sampling, stats=gen_stats)
        before, before_gold, before_rm = _evaluate(before_samples, rm, rm_tokenizer)
    base_prompt_ids = {s.prompt_index: s.prompt_ids for s in before_samples}

    results: dict[str, dict[str, Any]] = {}
    runs = [(m, b) for m in method_names for b in (betas or [None])]
    for method, beta in runs:
        name = run_name(method, beta)
        with timer.stage(name):
            result = train_policy(out, cfg, seed, method, beta)
            losses = [row["loss"] for row in read_metrics(out / name)]
        with timer.stage(f"evaluate {name}"):
            # The policy's own tokenizer: conditional training adds control tokens to it.
            policy, policy_tokenizer = load_causal_lm(result.final_dir)
            prefix = DEMO_METHODS[method].get("response_prefix", "")
            sampling_m = dataclasses.replace(eval_sampling, response_prefix=prefix)
            samples = generate(policy, policy_tokenizer, eval_prompts, sampling_m, stats=gen_stats)
            metrics, gold, rm_scores = _evaluate(samples, rm, rm_tokenizer)
            kl = kl_to_reference(
                policy,
                samples,
                reference=base,
                pad_id=tokenizer.pad_token_id,
                # The reference reads the bare prompt (it knows no control token).
                reference_prompt_ids=[base_prompt_ids[s.prompt_index] for s in samples] if prefix else None,
            )
            del policy
        # Each run's figures as soon as they exist: a long sweep stopped early keeps them.
        (out / name / "demo_eval.json").write_text(
            json.dumps({"method": method, "beta": beta, "metrics": metrics, **kl}, indent=2) + "\n"
        )
        results[name] = {
            "method": method,
            "beta": beta,
            "metrics": metrics,
            "gold": gold,
            "rm": rm_scores,
            "samples": samples,
            "kl": kl,
            "steps": result.steps,
            "losses": losses,
        }
    first = results[run_name(*runs[0])]
    after, after_gold, after_rm, after_samples = (
        first["metrics"],
        first["gold"],
        first["rm"],
        first["samples"],
    )
    kl, dpo_losses = first["kl"], first["losses"]

    rm_eval = rm_result.eval_metrics or {}
    summary: dict[str, Any] = {
        "before": before,
        "after": after,
        "kl": kl["kl"],
        "kl_stderr": kl["kl_stderr"],
        "reward_model_accuracy": float(rm_eval.get("accuracy", float("nan"))),
        "reward_model_heldout_pairs": rm_eval.get("num_pairs", 0),
        "reward_gold_correlation": pearson(before_rm + after_rm, before_gold + after_gold),
        "seconds": round(time.perf_counter() - started, 1),
        "quick": quick,
        "seed": seed,
        "num_train_prompts": len(train_prompts),
        "num_eval_samples": len(after_samples),
        **{k: v for k, v in feedback.items() if k not in ("raters", "suspected_spammers")},
        "train_eos_rate": sum(s.finished for s in train_samples) / max(1, len(train_samples)),
        "generation_tokens_per_second": round(gen_stats.tokens_per_second, 1),
        "method": run_name(*runs[0]),
        "dpo_steps": first["steps"],
        "dpo_final_loss": dpo_losses[-1] if dpo_losses else float("nan"),
        "methods": {
            name: {
                **r["metrics"],
                "kl": r["kl"]["kl"],
                "kl_stderr": r["kl"]["kl_stderr"],
                "steps": r["steps"],
                "final_loss": r["losses"][-1] if r["losses"] else float("nan"),
                "train_seconds": timer.stages.get(name, float("nan")),
                "kl_field": kl_field(r["method"]),
                "beta": r["beta"],
            }
            for name, r in results.items()
        },
        "suspected_spammers": feedback["suspected_spammers"],
        "raters": feedback["raters"],
        "stage_seconds": timer.stages,
        "settings": dataclasses.asdict(cfg),
        "prompt_template": PROMPT_TEMPLATE,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "samples.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "phase": phase,
                    "prompt": s.prompt,
                    "completion": s.completion,
                    "finished": s.finished,
                    "vader": g,
                }
            )
            + "\n"
            for phase, group, golds in (
                ("before", before_samples, before_gold),
                *((name, r["samples"], r["gold"]) for name, r in results.items()),
            )
            for s, g in zip(group, golds, strict=True)
        ),
        encoding="utf-8",
    )
    examples = [
        {
            "prompt": b.prompt,
            "before": b.completion,
            "after": a.completion,
            "before_score": bg,
            "after_score": ag,
        }
        for b, a, bg, ag in list(zip(before_samples, after_samples, before_gold, after_gold, strict=True))[
            :: max(1, cfg.eval_samples_per_prompt)
        ][: cfg.num_examples]
    ]
    plots = [
        (
            f"VADER compound of held-out completions, before vs after {run_name(*runs[0])}",
            histogram_png(before_gold, after_gold, title="VADER compound (gold)", xlabel="compound"),
        ),
        (
            "Metrics before vs after",
            bars_png(
                before,
                after,
                ["gold_mean", "gold_strong_rate", "judge2_mean", "distinct2", "eos_rate"],
                title="before vs after",
            ),
        ),
    ]
    for name, r in results.items():
        if r["losses"]:
            plots.append(
                (
                    f"{name} training loss per step",
                    curve_png(r["losses"], title=f"{name} loss", ylabel="loss"),
                )
            )
    if len(results) > 1:
        frontier: dict[str, list[tuple[float, float, str]]] = {}
        for name, r in results.items():
            label = f"{r['beta']:g}" if r["beta"] is not None else name
            frontier.setdefault(r["method"], []).append((r["kl"]["kl"], r["metrics"]["gold_mean"], label))
        plots.insert(
            0,
            (
                "Reward-vs-KL frontier: gold score (VADER mean) against KL to the reference, one line "
                "per method" + (", points labelled by the KL strength" if betas else ""),
                frontier_png(
                    frontier,
                    title="gold vs KL",
                    xlabel="KL(policy || reference), nats",
                    ylabel="VADER compound mean",
                    baseline=("base", before["gold_mean"]),
                ),
            ),
        )
    write_report(
        out / "report.html",
        title="prefalign demo: positive-sentiment steering of SmolLM2-135M-Instruct",
        summary=summary,
        plots=plots,
        examples=examples,
        notes=[
            f"Prompts: '{PROMPT_TEMPLATE}' with held-out movie titles disjoint from the training titles.",
            "Gold judge: VADER compound (hidden truth of the simulated raters); second judge: TextBlob polarity.",
            "KL: k1 estimator, mean over each aligned policy's own samples of sum_t log pi - log ref.",
            _raters_line(summary),
        ],
    )
    _print_table(summary)
    return summary
