"""``prefalign data inspect|convert|aggregate``: the argparse layer.

Each handler unpacks the parsed options, calls the plain function of :mod:`prefalign.feedback.actions`
(:func:`~prefalign.feedback.actions.inspect_data`, :func:`~prefalign.feedback.actions.convert_data`,
:func:`~prefalign.feedback.actions.aggregate_data`) with ``say=print`` and returns the exit status. A
bad row raises :class:`~prefalign.feedback.validate.DataError` (file, line, field) and any other
problem with the input or options :class:`CommandError`; ``prefalign.cli.main`` prints either as a
one-line error with exit status 2.

Only argparse and the stdlib-only ``actions`` module are imported here, so building the CLI parser
stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefalign.feedback.actions import (
    CALIBRATIONS,
    COMPARISON_METHODS,
    CONVERT_TARGETS,
    FORMAT_CHOICES,
    RANKING_STRATEGIES,
    RATING_METHODS,
    RATING_STRATEGIES,
    CommandError,
    aggregate_data,
    convert_data,
    inspect_data,
)

if TYPE_CHECKING:
    from prefalign.feedback.schema import RatingScale


# ----------------------------------------------------------------------------------- argparse layer


def _input_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every ``data`` command shares, as :func:`~prefalign.feedback.actions.read_inputs` keywords."""
    return {
        "format": args.format,
        "scale": args.scale,
        "on_error": args.on_error,
        "report": args.report,
        "pseudonymize": args.pseudonymize,
        "pseudonym_key": args.pseudonym_key,
        "scrub": args.scrub,
    }


def _inspect(args: argparse.Namespace) -> int:
    inspect_data(
        args.files,
        **_input_options(args),
        json_path=args.json,
        plot_path=args.plot,
        min_overlap=args.min_overlap,
        say=print,
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    convert_data(
        args.files,
        **_input_options(args),
        output=args.output,
        to=args.to,
        strategy=args.strategy,
        ranking_strategy=args.ranking_strategy,
        min_margin=args.min_margin,
        min_strength=args.min_strength,
        include_ties=args.include_ties,
        dedupe=not args.no_dedupe,
        keep_feedback=args.keep_feedback,
        say=print,
    )
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    aggregate_data(
        args.files,
        **_input_options(args),
        output=args.output,
        method=args.method,
        calibrate=args.calibrate,
        scores=args.scores,
        drop_spammers=args.drop_spammers,
        min_margin=args.min_margin,
        min_overlap=args.min_overlap,
        keep_feedback=args.keep_feedback,
        say=print,
    )
    return 0


def _scale_arg(text: str) -> RatingScale:
    from prefalign.feedback.schema import RatingScale

    try:
        return RatingScale.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="feedback files; several are read one after another"
    )
    p.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        default="auto",
        help="input format (default: detected per file from its fields)",
    )
    p.add_argument(
        "--scale",
        type=_scale_arg,
        metavar="SCALE",
        help="how ratings are read: LOW-HIGH (e.g. 0-10) or labels worst first (e.g. bad,medium,good)",
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="raise: stop at the first bad row (file, line, field); skip: keep the valid rows",
    )
    p.add_argument(
        "--report", metavar="REJECTED.jsonl", help="write the rejected rows (file, line, field, message)"
    )
    p.add_argument(
        "--pseudonymize",
        action="store_true",
        help="replace rater ids with keyed pseudonyms (key: $PREFALIGN_PSEUDONYM_KEY or --pseudonym-key)",
    )
    p.add_argument(
        "--pseudonym-key",
        metavar="KEY",
        help="pseudonymisation key (implies --pseudonymize; prefer the environment variable: "
        "command lines end up in shell history)",
    )
    p.add_argument(
        "--scrub", action="store_true", help="replace e-mail addresses and phone numbers in all texts"
    )


def _subcommand(
    sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help_text: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(handler=handler, command=f"data {name}")
    _add_inputs(p)
    return p


def add_data_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``data inspect|convert|aggregate`` on the CLI's subparsers."""
    data = sub.add_parser(
        "data",
        help="inspect, convert and aggregate human feedback (Label Studio, Argilla, HH-RLHF, ...)",
        description="Human feedback files: a quality report, training-ready rows, consensus of many raters.",
    )
    data.set_defaults(handler=lambda args: (data.print_help(), 0)[1])
    dsub = data.add_subparsers(dest="data_command", metavar="<subcommand>")

    inspect = _subcommand(
        dsub,
        "inspect",
        _inspect,
        "report counts, rater agreement, spammers, position and length bias, duplicates",
    )
    inspect.add_argument("--json", metavar="OUT.json", help="write the whole report as JSON")
    inspect.add_argument("--plot", metavar="OUT.png", help="write per-rater agreement, bias and length plots")
    inspect.add_argument(
        "--min-overlap", type=int, default=5, help="judgments shared with others before a spammer call (5)"
    )

    convert = _subcommand(
        dsub,
        "convert",
        _convert,
        "write training rows: preference pairs (TRL format), SFT rows or listwise rankings",
    )
    convert.add_argument(
        "--output", "-o", required=True, metavar="OUT", help="OUT.jsonl, OUT.parquet or OUT.csv"
    )
    convert.add_argument("--to", choices=CONVERT_TARGETS, default="pairs", help="row kind (pairs)")
    convert.add_argument(
        "--strategy",
        choices=RATING_STRATEGIES,
        default="best_vs_worst",
        help="which pairs a rated item gives (best_vs_worst)",
    )
    convert.add_argument(
        "--ranking-strategy", choices=RANKING_STRATEGIES, default="all", help="pairs from a ranking (all)"
    )
    convert.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="smallest rating gap, in scale units, that makes a pair (0)",
    )
    convert.add_argument(
        "--min-strength", type=float, default=None, help="drop comparisons with a strength below this"
    )
    convert.add_argument(
        "--include-ties", action="store_true", help="keep tied comparisons as two margin-0 rows"
    )
    convert.add_argument(
        "--no-dedupe", action="store_true", help="one row per judgment (no merging, no majority vote)"
    )
    convert.add_argument(
        "--keep-feedback", metavar="OUT", help="also write the (pseudonymised/scrubbed) feedback records"
    )

    aggregate = _subcommand(
        dsub,
        "aggregate",
        _aggregate,
        "aggregate many raters into consensus scores and write one best-vs-worst pair per item",
    )
    aggregate.add_argument(
        "--output", "-o", required=True, metavar="OUT", help="consensus pairs: .jsonl/.parquet/.csv"
    )
    aggregate.add_argument(
        "--method",
        choices=(*RATING_METHODS, *COMPARISON_METHODS),
        default=None,
        help="ratings: weighted (default), mean, median, dawid_skene; comparisons: bt (default), noisy_bt; "
        "rankings always use Plackett-Luce",
    )
    aggregate.add_argument(
        "--calibrate",
        choices=CALIBRATIONS,
        default="none",
        help="per-rater calibration of ratings before the consensus (none)",
    )
    aggregate.add_argument(
        "--scores", metavar="SCORES.jsonl", help="write the consensus score of every response"
    )
    aggregate.add_argument(
        "--drop-spammers",
        action="store_true",
        help="leave out raters flagged as spammers and aggregate again",
    )
    aggregate.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="smallest consensus score difference that makes a pair (0)",
    )
    aggregate.add_argument(
        "--min-overlap", type=int, default=5, help="judgments shared with others before a spammer call (5)"
    )
    aggregate.add_argument(
        "--keep-feedback", metavar="OUT", help="also write the feedback records kept (after --drop-spammers)"
    )
    return data


__all__ = [
    "FORMAT_CHOICES",
    "CommandError",
    "add_data_parser",
]
