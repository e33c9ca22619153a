"""``prefalign <command>``: each training command maps to one recipe's ``train(config)``.

Heavy libraries are imported inside the handlers so ``prefalign --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from prefalign.recipes import RECIPES


def _recipe_command(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from prefalign.config import ConfigError, load_config

        module, config_cls = RECIPES[name].load()
        # Flags are typed values, not override text: a path stays the path it is ('1e3', 'a #1').
        values: dict[str, object] = {}
        if args.output_dir is not None:
            values["output_dir"] = args.output_dir
        if args.resume:
            values["resume"] = True
        if args.overwrite:
            values["overwrite"] = True
        # Every value is checked here, before any model or data loads and before anything is written.
        config = load_config(config_cls, args.config, args.overrides, section=name, values=values)
        if config.resume and config.overwrite:
            raise ConfigError(
                "resume and overwrite: pick one (resume continues the run, overwrite starts over)"
            )
        result = module.train(config)
        print(f"{name}: {result.steps} steps; final model in {result.final_dir}")
        if result.eval_metrics:
            shown = {k: v for k, v in result.eval_metrics.items() if isinstance(v, float)}
            print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
        return 0

    return handler


def _check_args(*checks: tuple[str, object, object]) -> None:
    """Raise ConfigError ``FLAG: problem`` for the first ``(flag, value, Check)`` that fails."""
    from prefalign.config import ConfigError

    for flag, value, check in checks:
        problem = check.problem(value)  # type: ignore[attr-defined]
        if problem is not None:
            raise ConfigError(f"{flag}: {problem}")


def _demo(args: argparse.Namespace) -> int:
    from prefalign.config import AtLeast, ConfigError, OutputDir

    _check_args(("--output-dir", args.output_dir, OutputDir()), ("--seed", args.seed, AtLeast(0)))
    from prefalign.demo.pipeline import parse_methods, run_demo

    try:
        methods = parse_methods(args.method)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    betas = None
    if args.betas:
        try:
            betas = [float(b) for b in args.betas.split(",") if b.strip()]
        except ValueError:
            raise ConfigError(f"--betas: expected numbers separated by commas, got {args.betas!r}") from None
        if not betas or any(not b > 0 for b in betas):
            raise ConfigError(f"--betas: every KL strength must be > 0, got {args.betas!r}")
    if args.eval_prompts is not None:
        from prefalign.feedback.formats import load_prompts

        load_prompts(args.eval_prompts)  # a missing file or bad row fails here, before any work
    run_demo(
        args.output_dir,
        quick=args.quick,
        seed=args.seed,
        methods=methods,
        betas=betas,
        eval_prompts_file=args.eval_prompts,
    )
    return 0


def _reward_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from prefalign.config import AtLeast, DataSource, ModelName, OutputFile

    # Checked before any model loads, so a typo costs nothing.
    _check_args(
        *(("--model", path, ModelName()) for path in args.model),
        ("--data", args.data, DataSource()),
        ("--max-length", args.max_length, AtLeast(1)),
        ("--batch-size", args.batch_size, AtLeast(1)),
    )
    if args.out:
        _check_args(("--out", args.out, OutputFile()))
    from prefalign.eval.reward import format_report
    from prefalign.feedback.formats import load_pairs
    from prefalign.models import load_reward_model
    from prefalign.models.reward import evaluate_pairs

    models, tokenizer = [], None
    for path in args.model:
        model, tokenizer = load_reward_model(path)
        models.append(model)
    pairs = list(load_pairs(args.data))
    report = {"data": args.data, "models": args.model}
    report.update(
        evaluate_pairs(models, tokenizer, pairs, max_length=args.max_length, batch_size=args.batch_size)
    )
    print(format_report(report))
    if args.out:
        from prefalign.utils import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import typing

    from prefalign.config import AtLeast, Check, DataSource, ModelName, OutputFile
    from prefalign.rollout.sampling import SamplingConfig

    hints = typing.get_type_hints(SamplingConfig, include_extras=True)
    sampling = {name: getattr(args, name) for name in _SAMPLING_FLAGS}
    _check_args(
        ("--model", args.model, ModelName()),
        ("--prompts", args.prompts, DataSource()),
        ("--output", args.output, OutputFile()),
        *(
            (f"--{name.replace('_', '-')}", value, check)
            for name, value in sampling.items()
            for check in getattr(hints[name], "__metadata__", ())
            if isinstance(check, Check)
        ),
        ("--seed", args.seed, AtLeast(0)),
    )
    from prefalign.feedback.formats import load_prompts

    prompts = load_prompts(args.prompts)  # a bad row stops us before the model loads
    from prefalign.rollout.cli import write_samples

    cfg = SamplingConfig(**sampling, seed=args.seed, stop=args.stop or [], system_prompt=args.system_prompt)
    stats = write_samples(args.model, prompts, cfg, args.output)
    print(
        f"generate: {stats.rows} samples, {stats.generated_tokens} tokens in {stats.seconds:.1f}s "
        f"({stats.tokens_per_second:.1f} tokens/s, backend {cfg.backend}); wrote {args.output}"
    )
    return 0


_SAMPLING_FLAGS = (
    "n",
    "max_new_tokens",
    "min_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "batch_size",
    "backend",
)


def _models(args: argparse.Namespace) -> int:
    from prefalign.catalog import BUILTIN_MODEL_NAMES
    from prefalign.config import ConfigError

    if args.prepare is not None and args.prepare not in BUILTIN_MODEL_NAMES:
        raise ConfigError(
            f"--prepare: unknown model {args.prepare!r}; expected one of {', '.join(BUILTIN_MODEL_NAMES)}"
        )
    from prefalign.models import BUILTIN_MODELS, resolve_model_path

    if args.prepare:
        print(resolve_model_path(args.prepare))
        return 0
    for name, info in BUILTIN_MODELS.items():
        print(f"{name:24s} {info}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefalign",
        description="Align language models with human preferences: feedback -> reward -> policy -> evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, recipe in RECIPES.items():
        p = sub.add_parser(name, help=recipe.help, description=recipe.help)
        p.add_argument("--config", help="YAML config (a flat config, or one with a section per command)")
        p.add_argument("--output-dir", help="run folder: config.yaml, metrics.jsonl, checkpoints/, final/")
        p.add_argument(
            "--resume", action="store_true", help="continue from the latest checkpoint in the run folder"
        )
        p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run folder")
        p.add_argument(
            "overrides", nargs="*", help="dotted key=value overrides, e.g. train.learning_rate=1e-4"
        )
        p.set_defaults(handler=_recipe_command(name))
    demo = sub.add_parser(
        "demo", help="end-to-end positive-sentiment steering of SmolLM2 with simulated raters"
    )
    demo.add_argument("--output-dir", default="runs/demo", help="where summary.json and report.html go")
    demo.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes) for smoke tests")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--method",
        default="dpo",
        help="alignment method(s), comma-separated, compared side by side in the report: "
        "dpo, ipo, hinge, rpo, simpo, orpo, kto, listwise, contrastive, phf, phf-filtering, "
        "grpo, rloo, ppo, online-dpo (default: dpo)",
    )
    demo.add_argument(
        "--betas",
        metavar="LIST",
        help="train every method once per KL strength (e.g. 0.03,0.1,0.3: DPO's beta, GRPO/RLOO's "
        "beta, PPO's kl_coef) and draw the reward-vs-KL frontier in the report",
    )
    demo.add_argument(
        "--eval-prompts",
        metavar="FILE",
        help="evaluate on your own prompts: a .txt file of movie titles (one per line) or rows "
        "with a 'prompt' field (default: held-out titles of the shipped list)",
    )
    demo.set_defaults(handler=_demo)
    reward_eval = sub.add_parser(
        "reward-eval",
        help="score a reward model (or an ensemble of several) on a pair file, RewardBench-style",
        description="Accuracy (r(chosen) > r(rejected)) overall and per subset, beside the "
        "longer-answer baseline, with calibration error; several --model give an ensemble.",
    )
    reward_eval.add_argument(
        "--model", action="append", required=True, help="a reward model folder (repeatable)"
    )
    reward_eval.add_argument("--data", default="hhh", help="pair file or built-in set (default: hhh)")
    reward_eval.add_argument("--out", help="also write the report as JSON here")
    reward_eval.add_argument("--max-length", type=int, default=512)
    reward_eval.add_argument("--batch-size", type=int, default=32)
    reward_eval.set_defaults(handler=_reward_eval)
    gen = sub.add_parser(
        "generate",
        help="sample completions for a prompt file and write them as JSONL (candidates for raters)",
        description="Each output line: prompt, prompt_index, sample_index, completion, finished, "
        "stop_reason, num_tokens, logprob (sum at the sampling temperature).",
    )
    gen.add_argument("--model", required=True, help="built-in name, model folder or hub id")
    gen.add_argument("--prompts", required=True, help=".txt (one per line) or rows with a 'prompt' field")
    gen.add_argument("--output", required=True, help="JSONL file to write")
    gen.add_argument("--n", type=int, default=1, help="samples per prompt")
    gen.add_argument("--max-new-tokens", type=int, default=96)
    gen.add_argument("--min-new-tokens", type=int, default=0)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=64, help="rows decoded together")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--backend", default="native", help="native (default) or hf (model.generate)")
    gen.add_argument("--stop", action="append", help="a stop string (repeatable)")
    gen.add_argument("--system-prompt", help="system message for chat templates")
    gen.set_defaults(handler=_generate)
    models = sub.add_parser("models", help="list built-in models, or prepare (convert and cache) one")
    models.add_argument(
        "--prepare", metavar="NAME", help="convert/cache a built-in model and print its folder"
    )
    models.set_defaults(handler=_models)
    from prefalign.feedback.commands import add_data_parser  # argparse only: keeps --help instant

    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except Exception as err:
        if not isinstance(err, _known_errors()):
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"prefalign {args.command}: error: {message}", file=sys.stderr)
        return 2


# Errors that are the user's input, not a bug: printed as one line with exit status 2. Only modules
# already imported are consulted (an error of a module never imported cannot have been raised), so
# a command that fails its checks early never pays for importing torch.
_KNOWN_ERRORS = (
    ("prefalign.config", "ConfigError"),
    ("prefalign.train.run", "RunDirError"),
    ("prefalign.feedback.commands", "CommandError"),
    ("prefalign.feedback.formats", "DataError"),
)


def _known_errors() -> tuple[type[BaseException], ...]:
    known: list[type[BaseException]] = [FileNotFoundError]
    for module, name in _KNOWN_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            known.append(cls)
    return tuple(known)


if __name__ == "__main__":
    sys.exit(main())
