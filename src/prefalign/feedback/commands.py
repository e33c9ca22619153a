"""``prefalign data inspect|convert|aggregate``: argparse wiring and handlers.

Only argparse is imported at module level, so building the CLI parser stays instant; the handlers
import the feedback layer (numpy, scipy) when they run. Inputs are read with
:func:`prefalign.feedback.importers.import_feedback` (any supported format, several files
concatenated; preference-pair files become :class:`~prefalign.feedback.schema.Comparison` records with
``a`` = chosen). A bad row raises :class:`~prefalign.feedback.formats.DataError` (file, line, field),
which ``prefalign.cli.main`` prints with exit status 2; ``--on-error skip`` keeps the valid rows and
``--report`` writes the rejected ones as JSONL. Problems that are not a bad row (an off-scale rating
for the given ``--scale``, a missing pseudonymisation key, an unsupported output suffix) raise
:class:`CommandError`, reported the same way.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefalign.feedback.formats import DataError, PreferencePair
    from prefalign.feedback.schema import Feedback, RatingScale

FORMAT_CHOICES = ("auto", "prefalign", "hh-rlhf", "ultrafeedback", "shp", "argilla", "label-studio", "trl")
"""``--format`` values: ``auto`` plus :data:`prefalign.feedback.importers.FORMATS`."""
ORDER_UNKNOWN_FORMATS = frozenset({"trl", "hh-rlhf", "shp"})
"""Formats whose pairs do not record which answer was shown first (left out of position bias)."""
DEFAULT_SCALES: dict[str, str] = {"ultrafeedback": "1-10", "label-studio": "1-5"}
"""Rating scale assumed for a format when ``--scale`` is not given and the values fit (UltraFeedback's
``overall_score``; Label Studio's ``<Rating>`` tag, whose ``maxRating`` defaults to 5)."""
RATING_METHODS = ("weighted", "mean", "median", "dawid_skene")
COMPARISON_METHODS = ("bt", "noisy_bt")
OUTPUT_SUFFIXES = (".jsonl", ".parquet", ".pq", ".csv")


class CommandError(Exception):
    """A problem with a ``prefalign data`` command's input or options that is not one bad row."""


# ------------------------------------------------------------------------------------------ loading


@dataclass
class Inputs:
    """Records read from the command's files, with the format each came from."""

    records: list[Feedback]
    formats: list[str]
    """Format of each record's file (parallel to ``records``)."""
    sources: dict[str, str] = field(default_factory=dict)
    """File -> format."""
    counts: dict[str, int] = field(default_factory=dict)
    """File -> records read."""
    errors: list[DataError] = field(default_factory=list)
    privacy: list[str] = field(default_factory=list)
    """What ``--pseudonymize`` / ``--scrub`` did, in words."""

    @property
    def order_known(self) -> list[bool]:
        return [f not in ORDER_UNKNOWN_FORMATS for f in self.formats]


def check_scale(records: Sequence[Feedback], scale: RatingScale, label: str) -> None:
    """Raise :class:`CommandError` naming file, rater, item and field for a rating off ``scale``."""
    from prefalign.feedback.inspect import scale_spec
    from prefalign.feedback.schema import Rating

    for record in records:
        if isinstance(record, Rating):
            try:
                scale.to_number(record.value)
            except ValueError as exc:
                raise CommandError(
                    f"{label}: rating by rater {record.rater_id!r} of item {record.item_id!r}, field 'value': "
                    f"{exc} (--scale {scale_spec(scale)})"
                ) from None


def load_inputs(
    paths: Sequence[str | os.PathLike],
    *,
    format: str = "auto",
    on_error: str = "raise",
    scale: RatingScale | None = None,
) -> Inputs:
    """Import every file (format detected per file unless given) and concatenate the records."""
    from prefalign.feedback.formats import DataError, PreferencePair
    from prefalign.feedback.importers import detect_format, import_feedback, pair_to_comparison

    inputs = Inputs([], [])
    for path in paths:
        label = os.fspath(path)
        try:
            fmt = detect_format(path) if format == "auto" else format
            options: dict[str, Any] = {"scale": scale} if fmt == "prefalign" and scale is not None else {}
            rows = import_feedback(path, fmt, on_error=on_error, **options)  # type: ignore[arg-type]
        except (DataError, FileNotFoundError):
            raise
        except ValueError as exc:  # e.g. a folder that is not a saved dataset
            raise CommandError(f"{label}: {exc}") from None
        records = [pair_to_comparison(r, fmt) if isinstance(r, PreferencePair) else r for r in rows]
        if scale is not None:
            check_scale(records, scale, label)
        inputs.records.extend(records)
        inputs.formats.extend([fmt] * len(records))
        inputs.sources[label] = fmt
        inputs.counts[label] = inputs.counts.get(label, 0) + len(records)
        inputs.errors.extend(rows.errors)
    return inputs


def resolve_scale(given: RatingScale | None, inputs: Inputs) -> tuple[RatingScale | None, str | None]:
    """The rating scale to use and a note saying where it came from (None when there are no ratings).

    ``--scale`` wins; else the format's default (:data:`DEFAULT_SCALES`) when every rating fits it;
    else the observed numeric range; labels without ``--scale`` give ``(None, note)``.
    """
    from prefalign.feedback.inspect import infer_scale, scale_spec
    from prefalign.feedback.schema import Rating, RatingScale

    if given is not None:
        return given, None
    ratings = [(r, f) for r, f in zip(inputs.records, inputs.formats) if isinstance(r, Rating)]
    if not ratings:
        return None, None
    defaults = {DEFAULT_SCALES.get(f) for _, f in ratings}
    if len(defaults) == 1 and None not in defaults:
        spec = defaults.pop()
        scale = RatingScale.parse(spec)  # type: ignore[arg-type]
        try:
            for r, _ in ratings:
                scale.to_number(r.value)
        except ValueError:
            pass
        else:
            fmt = ratings[0][1]
            return scale, f"rating scale {spec} (the {fmt} default; pass --scale to change it)"
    inferred = infer_scale([r for r, _ in ratings])
    if inferred is None:
        if any(not isinstance(r.value, str) for r, _ in ratings):
            return None, (
                "ratings mix numbers and labels (e.g. an Argilla rating and a label question): pass --scale "
                "for the one you want; the other's rows are then reported as off the scale"
            )
        return (
            None,
            "ratings are labels: pass their order with --scale, worst first (e.g. --scale bad,medium,good)",
        )
    return (
        inferred,
        f"rating scale {scale_spec(inferred)} read off the observed values; pass --scale to set it",
    )


def apply_privacy(records: list[Feedback], args: argparse.Namespace) -> list[Feedback]:
    """``--pseudonymize`` (keyed rater pseudonyms) and ``--scrub`` (e-mails, phone numbers)."""
    if args.pseudonymize or args.pseudonym_key is not None:
        from prefalign.feedback.privacy import KEY_ENV, PseudonymKeyError, pseudonymize_records

        if args.pseudonym_key is None and not os.environ.get(KEY_ENV):
            raise CommandError(
                f"--pseudonymize needs a secret key: set {KEY_ENV} (at least 16 bytes, e.g. "
                "`export PREFALIGN_PSEUDONYM_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')`) "
                "or pass --pseudonym-key; keep the key to map the same raters to the same pseudonyms later"
            )
        try:
            records = pseudonymize_records(records, args.pseudonym_key)
        except PseudonymKeyError as exc:
            raise CommandError(f"--pseudonymize: {exc}") from None
    if args.scrub:
        from prefalign.feedback.privacy import scrub_records

        records = scrub_records(records)
    return records


def write_rejected(path: str | os.PathLike, errors: Sequence[DataError], *, scrub: bool = False) -> Path:
    """The rejected rows as JSONL (file, line, field, message); messages scrubbed with ``scrub``."""
    from prefalign.feedback.formats import _atomic_write_bytes
    from prefalign.feedback.privacy import scrub_text

    lines = []
    for error in errors:
        row = error.to_dict()
        if scrub:
            row["message"] = scrub_text(row["message"])
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    path = Path(path)
    _atomic_write_bytes(path, "".join(lines).encode("utf-8"))
    return path


def _read(args: argparse.Namespace) -> Inputs:
    """Load, write the rejected-rows report, apply privacy options."""
    inputs = load_inputs(args.files, format=args.format, on_error=args.on_error, scale=args.scale)
    if args.report:
        write_rejected(args.report, inputs.errors, scrub=args.scrub)
    inputs.records = apply_privacy(inputs.records, args)
    if args.pseudonymize or args.pseudonym_key is not None:
        inputs.privacy.append("rater ids replaced by keyed pseudonyms")
    if args.scrub:
        inputs.privacy.append("e-mail addresses and phone numbers scrubbed from the texts")
    return inputs


def _describe(inputs: Inputs) -> list[str]:
    from prefalign.feedback.inspect import plural

    lines = []
    for path, fmt in inputs.sources.items():
        lines.append(f"read {plural(inputs.counts[path], 'record')} from {path} ({fmt})")
    kinds = Counter(r.kind for r in inputs.records)
    if len(inputs.sources) > 1:
        lines.append(f"read {len(inputs.records)} records in all")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    lines.extend(f"  {line}" for line in inputs.privacy)
    return lines


def _print_rejected(inputs: Inputs, args: argparse.Namespace) -> None:
    if not inputs.errors:
        return
    where = f"; all in {args.report}" if args.report else "; --report FILE writes them all"
    print(
        f"rejected {len(inputs.errors)} row{'s' if len(inputs.errors) != 1 else ''} (kept the valid ones){where}"
    )
    for error in inputs.errors[:5]:
        print(f"  {error}")


# ------------------------------------------------------------------------------------------- writing


def _check_output(path: str, what: str = "--output") -> Path:
    out = Path(path)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CommandError(
            f"{what} {path}: use a .jsonl, .parquet or .csv file name (the format follows the suffix)"
        )
    return out


def _as_messages(row: Any) -> Any:
    """A text pair / SFT row / listwise row as chat messages: prompt = user, answers = assistant."""
    import dataclasses

    from prefalign.feedback.convert import _as_messages as messages

    if hasattr(row, "responses"):  # ListwiseRow
        answers = {"responses": [messages(r, "assistant") for r in row.responses]}
    elif hasattr(row, "completion"):  # SFTRow
        answers = {"completion": messages(row.completion, "assistant")}
    else:  # PreferencePair
        answers = {
            "chosen": messages(row.chosen, "assistant"),
            "rejected": messages(row.rejected, "assistant"),
        }
    return dataclasses.replace(row, prompt=messages(row.prompt, "user"), **answers)


def _one_shape(rows: list[Any]) -> tuple[list[Any], int]:
    """Rows of one kind: when some rows are conversational, the text rows become messages too, since a
    file holds one kind (``save_pairs`` refuses a mix). Returns the rows and how many changed."""
    chat = [isinstance(r.prompt, list) for r in rows]
    if all(chat) or not any(chat):
        return rows, 0
    return [r if c else _as_messages(r) for r, c in zip(rows, chat)], chat.count(False)


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Plain rows as JSONL, CSV (nested values as JSON cells) or Parquet, by suffix; atomic."""
    import csv
    import io

    from prefalign.feedback.formats import _atomic_write_bytes

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(list(rows)), buffer)
        _atomic_write_bytes(path, buffer.getvalue())
    elif suffix == ".csv":
        out = io.StringIO()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                    for k, v in row.items()
                }
            )
        _atomic_write_bytes(path, out.getvalue().encode("utf-8"))
    else:
        text = "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows)
        _atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _save_pairs(pairs: list[PreferencePair], path: Path) -> int:
    from prefalign.feedback.formats import save_pairs

    pairs, changed = _one_shape(pairs)
    save_pairs(pairs, path)
    return changed


def _counts_line(report: Mapping[str, int]) -> str:
    return (
        f"ties {report['ties']}, self-pairs {report['self_pairs']}, duplicates merged {report['duplicates_merged']}, "
        f"contradictions {report['contradictions']} (even splits dropped {report['split_dropped']}, "
        f"minority votes dropped {report['minority_votes']}), unpaired {report['unpaired']}, "
        f"filtered {report['filtered']}"
    )


# ------------------------------------------------------------------------------------------- inspect


def _inspect(args: argparse.Namespace) -> int:
    from prefalign.feedback.inspect import inspect_feedback, plot_report, render_report

    inputs = _read(args)
    scale, note = resolve_scale(args.scale, inputs)
    report = inspect_feedback(
        inputs.records,
        scale=scale,
        order_known=inputs.order_known,
        sources=inputs.sources,
        rejected=inputs.errors,
        min_overlap=args.min_overlap,
        notes=([note] if note else []) + inputs.privacy,
    )
    print(render_report(report), end="")
    if args.json:
        from prefalign.feedback.formats import _atomic_write_bytes

        text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        _atomic_write_bytes(Path(args.json), text.encode("utf-8"))
        print(f"\nwrote the report to {args.json}")
    if args.plot:
        try:
            plot_report(report, args.plot)
        except ImportError as exc:
            raise CommandError(str(exc)) from None
        print(f"wrote the plots to {args.plot}")
    return 0


# ------------------------------------------------------------------------------------------- convert


def _convert(args: argparse.Namespace) -> int:
    from prefalign.feedback.convert import (
        ConversionConfig,
        feedback_to_pairs,
        feedback_to_sft,
        rankings_to_listwise,
    )
    from prefalign.feedback.schema import Ranking, Rating, save_feedback

    output = _check_output(args.output)
    if args.keep_feedback:
        _check_output(args.keep_feedback, "--keep-feedback")
    inputs = _read(args)
    records = inputs.records
    for line in _describe(inputs):
        print(line)
    _print_rejected(inputs, args)
    try:
        if args.to == "pairs":
            scale, note = resolve_scale(args.scale, inputs)
            if note:
                print(note)
            if scale is None and any(isinstance(r, Rating) for r in records):
                raise CommandError(note or "ratings need --scale")
            config = ConversionConfig(
                scale=scale,
                rating_strategy=args.strategy,
                ranking_strategy=args.ranking_strategy,
                min_margin=args.min_margin,
                include_ties=args.include_ties,
                min_strength=args.min_strength,
                dedupe=not args.no_dedupe,
            )
            rows, report = feedback_to_pairs(records, config)
        elif args.to == "sft":
            rows, report = feedback_to_sft(records, dedupe=not args.no_dedupe)
        else:
            rankings = [r for r in records if isinstance(r, Ranking)]
            rows, report = rankings_to_listwise(rankings)
            report.records = len(records)
            report.filtered += len(records) - len(rankings)  # other kinds hold no ranking
    except ValueError as exc:
        raise CommandError(f"cannot convert: {exc}") from None
    counts = report.as_dict()
    noun = {"pairs": "pairs", "sft": "SFT rows", "listwise": "listwise rows"}[args.to]
    print(f"converted {len(records)} records to {len(rows)} {noun}")
    print(f"  {_counts_line(counts)}")
    if not rows:
        raise CommandError(f"no {noun} came out of the input; nothing written to {output}")
    if args.to == "pairs":
        changed = _save_pairs(rows, output)
    elif args.to == "sft":
        rows, changed = _one_shape(rows)
        write_rows([r.to_dict() for r in rows], output)
    else:
        rows, changed = _one_shape(rows)
        write_rows([r.to_dict() for r in rows], output)
    if changed:
        print(f"  {changed} text rows written as chat messages so the file holds one kind of row")
    print(f"wrote {len(rows)} {noun} to {output}")
    if args.keep_feedback:
        save_feedback(records, args.keep_feedback)
        print(f"wrote {len(records)} feedback records to {args.keep_feedback}")
    return 0


# ----------------------------------------------------------------------------------------- aggregate


def response_texts(records: Sequence[Feedback]) -> dict[tuple[str, str], Any]:
    """``(item_id, response_id) -> text`` of every judged response (the first text seen wins)."""
    from prefalign.feedback.schema import Comparison, Edit, Ranking, Rating

    texts: dict[tuple[str, str], Any] = {}
    for r in records:
        if isinstance(r, Rating):
            texts.setdefault((r.item_id, r.response_id), r.response)
        elif isinstance(r, Comparison):
            texts.setdefault((r.item_id, r.a_id), r.a)
            texts.setdefault((r.item_id, r.b_id), r.b)
        elif isinstance(r, Ranking):
            for resp in r.responses:
                texts.setdefault((r.item_id, resp.id), resp.text)
        elif isinstance(r, Edit):
            texts.setdefault((r.item_id, r.response_id), r.original)
    return texts


def consensus_pairs(
    kind: str,
    scores: Mapping[str, Mapping[str, float]],
    records: Sequence[Feedback],
    *,
    min_margin: float = 0.0,
) -> tuple[list[PreferencePair], dict[str, int]]:
    """One pair per item: the best against the worst response by consensus score, ``margin`` = the
    score difference (scale units for ratings, log-strength for comparisons and rankings).

    Items with one scored response are ``unpaired``; a difference of 0 or below ``min_margin`` is a
    ``tie``. Equal scores are broken by response id, so the result is deterministic.
    """
    from prefalign.feedback.convert import _shape
    from prefalign.feedback.formats import PreferencePair

    texts = response_texts(records)
    prompts: dict[str, Any] = {}
    for r in records:
        prompts.setdefault(r.item_id, r.prompt)
    counts = {"items": 0, "pairs": 0, "ties": 0, "unpaired": 0, "self_pairs": 0}
    pairs = []
    for item in prompts:  # first-seen order of the records
        if item not in scores:
            continue
        counts["items"] += 1
        ranked = sorted(scores[item].items(), key=lambda kv: (-kv[1], kv[0]))
        if len(ranked) < 2:
            counts["unpaired"] += 1
            continue
        (best, high), (worst, low) = ranked[0], ranked[-1]
        gap = float(high - low)
        if gap <= 0 or gap < min_margin:
            counts["ties"] += 1
            continue
        prompt, chosen, rejected = _shape(prompts[item], texts[(item, best)], texts[(item, worst)])
        if chosen == rejected:
            counts["self_pairs"] += 1
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected, margin=gap, source=f"{kind}:{item}"))
    counts["pairs"] = len(pairs)
    return pairs, counts


def _aggregate(args: argparse.Namespace) -> int:
    from prefalign.feedback.inspect import consensus, plural, rater_rows
    from prefalign.feedback.schema import Comparison, Ranking, Rating, save_feedback

    output = _check_output(args.output)
    if args.scores:
        _check_output(args.scores, "--scores")
    if args.keep_feedback:
        _check_output(args.keep_feedback, "--keep-feedback")
    inputs = _read(args)
    for line in _describe(inputs):
        print(line)
    _print_rejected(inputs, args)
    records = inputs.records
    scale, note = resolve_scale(args.scale, inputs)
    calibrate = None if args.calibrate == "none" else args.calibrate
    groups: dict[str, list[Any]] = {
        "rating": [r for r in records if isinstance(r, Rating)],
        "comparison": [r for r in records if isinstance(r, Comparison) and r.a_id != r.b_id and r.a != r.b],
        "ranking": [r for r in records if isinstance(r, Ranking)],
    }
    methods = {
        "rating": args.method if args.method in RATING_METHODS else "weighted",
        "comparison": args.method if args.method in COMPARISON_METHODS else "bt",
        "ranking": "plackett_luce",
    }
    if note:
        print(note)
    if groups["rating"] and scale is None:
        raise CommandError(note or "ratings need --scale")
    if not any(groups.values()):
        raise CommandError("no ratings, comparisons or rankings to aggregate")
    if args.method is not None and not groups["rating" if args.method in RATING_METHODS else "comparison"]:
        print(f"note: --method {args.method} has no records of its kind; defaults used for the rest")
    others = len(records) - sum(len(g) for g in groups.values())
    if others:
        print(
            f"note: {others} records (edits, demonstrations, self-pairs) are not aggregated; see `data convert`"
        )

    table: list[tuple[Any, Any, str]] = []  # (RaterRow, RaterSummary, action)
    all_pairs: list[PreferencePair] = []
    score_rows: list[dict[str, Any]] = []
    dropped_raters: dict[str, set[str]] = {}
    for kind, group in groups.items():
        if not group:
            continue
        method = methods[kind]
        options = {
            "scale": scale,
            "method": None if kind == "ranking" else method,
            "calibrate": calibrate if kind == "rating" else None,
        }
        try:
            result = consensus(kind, group, **options)
            rows = rater_rows(kind, result, group, min_overlap=args.min_overlap)
            drop = {r.rater_id for r in rows if r.spammer} if args.drop_spammers else set()
            if drop:
                group = [r for r in group if r.rater_id not in drop]
                if not group:
                    raise CommandError(f"--drop-spammers: every {kind} rater was flagged; nothing left")
                dropped_raters[kind] = drop
                result = consensus(kind, group, **options)
        except ValueError as exc:
            raise CommandError(f"cannot aggregate the {kind}s: {exc}") from None
        groups[kind] = group
        for row in rows:
            table.append((row, result.raters.get(row.rater_id), "dropped" if row.rater_id in drop else ""))
        pairs, counts = consensus_pairs(kind, result.scores, group, min_margin=args.min_margin)
        all_pairs.extend(pairs)
        print(
            f"{kind}s: {method} consensus over {plural(counts['items'], 'item')} -> {plural(counts['pairs'], 'pair')} "
            f"(ties {counts['ties']}, unpaired {counts['unpaired']}, self-pairs {counts['self_pairs']})"
        )
        score_rows.extend(_score_rows(kind, result, group))

    _print_rater_table(table)
    if dropped_raters:
        for kind, raters in dropped_raters.items():
            print(f"dropped the {kind}s of {len(raters)} suspected spammer(s): {', '.join(sorted(raters))}")
    if not all_pairs:
        raise CommandError(
            f"no consensus pairs came out (every item tied or had one response); nothing written to {output}"
        )
    changed = _save_pairs(all_pairs, output)
    if changed:
        print(f"{changed} text pairs written as chat messages so the file holds one kind of row")
    units = {"rating": "scale units", "comparison": "log-strength", "ranking": "log-strength"}
    used = sorted({p.source.split(":", 1)[0] for p in all_pairs if p.source})
    print(
        f"wrote {len(all_pairs)} consensus pairs to {output} (margin = score difference: "
        + ", ".join(f"{k}s in {units[k]}" for k in used)
        + ")"
    )
    if args.scores:
        write_rows(score_rows, args.scores)
        print(f"wrote {len(score_rows)} consensus scores to {args.scores}")
    if args.keep_feedback:
        kept_records = [r for r in records if r.rater_id not in dropped_raters.get(r.kind, set())]
        save_feedback(kept_records, args.keep_feedback)
        print(f"wrote {len(kept_records)} feedback records to {args.keep_feedback}")
    return 0


def _score_rows(kind: str, result: Any, records: Sequence[Feedback]) -> list[dict[str, Any]]:
    """Per-response consensus scores, with the response text and how many judgments back each."""
    texts = response_texts(records)
    counts = getattr(
        result, {"rating": "n_ratings", "comparison": "n_comparisons", "ranking": "n_rankings"}[kind]
    )
    labels = getattr(result, "labels", None)
    rows = []
    for item, scored in result.scores.items():
        for response_id, score in scored.items():
            row = {
                "kind": kind,
                "item_id": item,
                "response_id": response_id,
                "score": float(score),
                "n": int(counts[item][response_id]),
                "response": texts.get((item, response_id)),
            }
            if labels is not None:
                row["label"] = labels[item][response_id]
            rows.append(row)
    return rows


def _print_rater_table(table: Sequence[tuple[Any, Any, str]]) -> None:
    from prefalign.feedback.inspect import text_table

    def f(x: float | None, spec: str = ".2f") -> str:
        return "-" if x is None else format(x, spec)

    rows = []
    for row, summary, action in table:
        skill = getattr(summary, "skill", None)
        bias = getattr(summary, "position_bias", None)
        rows.append(
            [
                row.rater_id,
                row.kind,
                str(row.n),
                str(row.shared),
                f(row.weight),
                f(skill),
                f(row.agreement, "+.2f"),
                f(bias, "+.2f"),
                {True: "YES", False: "no", None: "n/a"}[row.spammer],
                action,
            ]
        )
    print("raters:")
    header = ["rater", "kind", "n", "shared", "weight", "skill", "agreement", "first-bias", "spammer", ""]
    for line in text_table(header, rows, "llrrrrrrll"):
        print(line)


# --------------------------------------------------------------------------------------------- wiring


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
    convert.add_argument(
        "--to", choices=("pairs", "sft", "listwise"), default="pairs", help="row kind (pairs)"
    )
    convert.add_argument(
        "--strategy",
        choices=("best_vs_worst", "all", "adjacent", "outside_in"),
        default="best_vs_worst",
        help="which pairs a rated item gives (best_vs_worst)",
    )
    convert.add_argument(
        "--ranking-strategy", choices=("all", "adjacent"), default="all", help="pairs from a ranking (all)"
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
        choices=("none", "zscore", "ordinal"),
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
    "CommandError",
    "Inputs",
    "add_data_parser",
    "apply_privacy",
    "check_scale",
    "consensus_pairs",
    "load_inputs",
    "resolve_scale",
    "response_texts",
    "write_rejected",
    "write_rows",
]
