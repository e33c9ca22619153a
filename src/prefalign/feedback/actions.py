"""The ``prefalign data inspect|convert|aggregate`` commands as plain functions, for programs.

:func:`inspect_data`, :func:`convert_data` and :func:`aggregate_data` take the input files and typed
keyword options, write what they are asked to write and return a result object
(:class:`InspectResult`, :class:`ConvertResult`, :class:`AggregateResult`, each with a JSON-ready
``as_dict()``), so that a program (a web service, a notebook) runs a command without argparse. Their
``say`` argument receives the progress lines the CLI prints (``None``: silent).
:mod:`prefalign.feedback.commands` is the argparse layer over them.

Inputs are read with :func:`prefalign.feedback.importers.import_feedback` (any supported format,
several files concatenated; preference-pair files become
:class:`~prefalign.feedback.schema.Comparison` records with ``a`` = chosen); the input keywords every
command shares are those of :func:`read_inputs`. A bad row raises
:class:`~prefalign.feedback.validate.DataError` (file, line, field); ``on_error="skip"`` keeps the
valid rows and ``report`` writes the rejected ones as JSONL. Problems that are not a bad row (an
off-scale rating for the given ``scale``, a missing pseudonymisation key, an unsupported output
suffix, an unknown option value) raise :class:`CommandError`, a one-line message.

Only the stdlib-only layers (``validate``, ``rowio``) are imported at module level, so that building
the CLI parser stays instant; the functions import the feedback layer (numpy, scipy) when they run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefalign.feedback.rowio import write_report, write_rows
from prefalign.feedback.validate import DataError
from prefalign.utils import atomic_write_text

if TYPE_CHECKING:
    from prefalign.feedback.formats import PreferencePair
    from prefalign.feedback.inspect import InspectReport
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
CALIBRATIONS = ("none", "zscore", "ordinal")
CONVERT_TARGETS = ("pairs", "sft", "listwise")
RATING_STRATEGIES = ("best_vs_worst", "all", "adjacent", "outside_in")
RANKING_STRATEGIES = ("all", "adjacent")
OUTPUT_SUFFIXES = (".jsonl", ".parquet", ".pq", ".csv")

Say = Callable[[str], None]
"""Where a command's progress lines go (the CLI passes ``print``)."""


class CommandError(Exception):
    """A problem with a ``prefalign data`` command's input or options that is not one bad row."""


def _quiet(_: str) -> None:
    pass


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise CommandError(f"{name} {value!r}: choose one of {', '.join(choices)}")


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


def parse_scale(scale: RatingScale | str | None) -> RatingScale | None:
    """A :class:`~prefalign.feedback.schema.RatingScale` from its spec (``"0-10"``, ``"bad,medium,good"``)."""
    if scale is None or not isinstance(scale, str):
        return scale
    from prefalign.feedback.schema import RatingScale

    try:
        return RatingScale.parse(scale)
    except ValueError as exc:
        raise CommandError(f"--scale {scale}: {exc}") from None


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
    from prefalign.feedback.formats import PreferencePair
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


def apply_privacy(
    records: list[Feedback],
    *,
    pseudonymize: bool = False,
    pseudonym_key: str | None = None,
    scrub: bool = False,
) -> list[Feedback]:
    """``pseudonymize`` (keyed rater pseudonyms; a ``pseudonym_key`` implies it; without one the key
    comes from ``$PREFALIGN_PSEUDONYM_KEY``) and ``scrub`` (e-mails, phone numbers)."""
    if pseudonymize or pseudonym_key is not None:
        from prefalign.feedback.privacy import KEY_ENV, PseudonymKeyError, pseudonymize_records

        if pseudonym_key is None and not os.environ.get(KEY_ENV):
            raise CommandError(
                f"--pseudonymize needs a secret key: set {KEY_ENV} (at least 16 bytes, e.g. "
                "`export PREFALIGN_PSEUDONYM_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')`) "
                "or pass --pseudonym-key; keep the key to map the same raters to the same pseudonyms later"
            )
        try:
            records = pseudonymize_records(records, pseudonym_key)
        except PseudonymKeyError as exc:
            raise CommandError(f"--pseudonymize: {exc}") from None
    if scrub:
        from prefalign.feedback.privacy import scrub_records

        records = scrub_records(records)
    return records


def write_rejected(path: str | os.PathLike, errors: Sequence[DataError], *, scrub: bool = False) -> Path:
    """The rejected rows as JSONL (file, line, field, message); messages scrubbed with ``scrub``."""
    if scrub:
        from prefalign.feedback.privacy import scrub_text

        errors = [DataError(e.file, e.line, e.field, scrub_text(e.message)) for e in errors]
    return write_report(path, errors)


def read_inputs(
    files: Sequence[str | os.PathLike],
    *,
    format: str = "auto",
    scale: RatingScale | str | None = None,
    on_error: str = "raise",
    report: str | os.PathLike | None = None,
    pseudonymize: bool = False,
    pseudonym_key: str | None = None,
    scrub: bool = False,
) -> Inputs:
    """Load the files, write the rejected-rows ``report``, apply the privacy options.

    The keywords are the input options every ``data`` command shares (``--format``, ``--scale``,
    ``--on-error``, ``--report``, ``--pseudonymize``, ``--pseudonym-key``, ``--scrub``).
    """
    if not files:
        raise CommandError("no input files")
    inputs = load_inputs(files, format=format, on_error=on_error, scale=parse_scale(scale))
    if report:
        write_rejected(report, inputs.errors, scrub=scrub)
    inputs.records = apply_privacy(
        inputs.records, pseudonymize=pseudonymize, pseudonym_key=pseudonym_key, scrub=scrub
    )
    if pseudonymize or pseudonym_key is not None:
        inputs.privacy.append("rater ids replaced by keyed pseudonyms")
    if scrub:
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


def _rejected_lines(inputs: Inputs, report: str | os.PathLike | None) -> list[str]:
    if not inputs.errors:
        return []
    where = f"; all in {os.fspath(report)}" if report else "; --report FILE writes them all"
    n = len(inputs.errors)
    lines = [f"rejected {n} row{'s' if n != 1 else ''} (kept the valid ones){where}"]
    lines.extend(f"  {error}" for error in inputs.errors[:5])
    return lines


# ------------------------------------------------------------------------------------------- writing


def _check_output(path: str | os.PathLike, what: str = "--output") -> Path:
    out = Path(path)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CommandError(
            f"{what} {os.fspath(path)}: use a .jsonl, .parquet or .csv file name (the format follows the suffix)"
        )
    return out


def _row_as_messages(row: Any) -> Any:
    """A text pair / SFT row / listwise row as chat messages: prompt = user, answers = assistant."""
    from prefalign.feedback.convert import as_messages

    if hasattr(row, "responses"):  # ListwiseRow
        answers = {"responses": [as_messages(r, "assistant") for r in row.responses]}
    elif hasattr(row, "completion"):  # SFTRow
        answers = {"completion": as_messages(row.completion, "assistant")}
    else:  # PreferencePair
        answers = {
            "chosen": as_messages(row.chosen, "assistant"),
            "rejected": as_messages(row.rejected, "assistant"),
        }
    return dataclasses.replace(row, prompt=as_messages(row.prompt, "user"), **answers)


def _one_shape(rows: list[Any]) -> tuple[list[Any], int]:
    """Rows of one kind: when some rows are conversational, the text rows become messages too, since a
    file holds one kind (``save_pairs`` refuses a mix). Returns the rows and how many changed."""
    chat = [isinstance(r.prompt, list) for r in rows]
    if all(chat) or not any(chat):
        return rows, 0
    return [r if c else _row_as_messages(r) for r, c in zip(rows, chat)], chat.count(False)


def _save_pairs(pairs: list[PreferencePair], path: Path) -> tuple[list[PreferencePair], int]:
    from prefalign.feedback.formats import save_pairs

    pairs, changed = _one_shape(pairs)
    save_pairs(pairs, path)
    return pairs, changed


def _counts_line(report: Mapping[str, int]) -> str:
    return (
        f"ties {report['ties']}, self-pairs {report['self_pairs']}, duplicates merged {report['duplicates_merged']}, "
        f"contradictions {report['contradictions']} (even splits dropped {report['split_dropped']}, "
        f"minority votes dropped {report['minority_votes']}), unpaired {report['unpaired']}, "
        f"filtered {report['filtered']}"
    )


def _path_or_none(path: Path | None) -> str | None:
    return None if path is None else os.fspath(path)


def _input_summary(inputs: Inputs) -> dict[str, Any]:
    return {
        "sources": dict(inputs.sources),
        "counts": dict(inputs.counts),
        "records": len(inputs.records),
        "kinds": dict(Counter(r.kind for r in inputs.records)),
        "rejected": [e.to_dict() for e in inputs.errors],
        "privacy": list(inputs.privacy),
    }


# ------------------------------------------------------------------------------------------- inspect


@dataclass
class InspectResult:
    """What :func:`inspect_data` found and wrote."""

    report: InspectReport
    inputs: Inputs
    json_path: Path | None = None
    plot_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready: the report (as ``--json`` writes it) and the paths written."""
        return {
            "report": self.report.as_dict(),
            "json_path": _path_or_none(self.json_path),
            "plot_path": _path_or_none(self.plot_path),
        }


def inspect_data(
    files: Sequence[str | os.PathLike],
    *,
    format: str = "auto",
    scale: RatingScale | str | None = None,
    on_error: str = "raise",
    report: str | os.PathLike | None = None,
    pseudonymize: bool = False,
    pseudonym_key: str | None = None,
    scrub: bool = False,
    json_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    min_overlap: int = 5,
    say: Say | None = None,
) -> InspectResult:
    """``prefalign data inspect``: a data-quality report of the feedback in ``files``.

    Counts, rater agreement, suspected spammers (raters sharing at least ``min_overlap`` judgments
    with others), position and length bias, duplicates and contradictions; see
    :func:`prefalign.feedback.inspect.inspect_feedback`. ``json_path`` also writes the whole report as
    JSON, ``plot_path`` a PNG of per-rater agreement, bias and lengths (needs matplotlib). ``say``
    receives the rendered report and what was written. The input keywords are those of
    :func:`read_inputs`.
    """
    from prefalign.feedback.inspect import inspect_feedback, plot_report, render_report

    say = say or _quiet
    given = parse_scale(scale)
    inputs = read_inputs(
        files,
        format=format,
        scale=given,
        on_error=on_error,
        report=report,
        pseudonymize=pseudonymize,
        pseudonym_key=pseudonym_key,
        scrub=scrub,
    )
    resolved, note = resolve_scale(given, inputs)
    found = inspect_feedback(
        inputs.records,
        scale=resolved,
        order_known=inputs.order_known,
        sources=inputs.sources,
        rejected=inputs.errors,
        min_overlap=min_overlap,
        notes=([note] if note else []) + inputs.privacy,
    )
    say(render_report(found).removesuffix("\n"))
    result = InspectResult(found, inputs)
    if json_path:
        text = json.dumps(found.as_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        atomic_write_text(json_path, text)
        result.json_path = Path(json_path)
        say(f"\nwrote the report to {os.fspath(json_path)}")
    if plot_path:
        try:
            plot_report(found, plot_path)
        except ImportError as exc:
            raise CommandError(str(exc)) from None
        result.plot_path = Path(plot_path)
        say(f"wrote the plots to {os.fspath(plot_path)}")
    return result


# ------------------------------------------------------------------------------------------- convert


@dataclass
class ConvertResult:
    """What :func:`convert_data` wrote."""

    to: str
    """The row kind: ``pairs``, ``sft`` or ``listwise``."""
    output: Path
    rows: list[Any]
    """The rows written (:class:`~prefalign.feedback.formats.PreferencePair`, ``SFTRow`` or ``ListwiseRow``)."""
    counts: dict[str, int]
    """The conversion report: records in, rows out, and what was dropped, and why."""
    inputs: Inputs
    reshaped: int = 0
    """Text rows written as chat messages so that the file holds one kind of row."""
    feedback_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the rows themselves are in ``output``)."""
        return {
            "to": self.to,
            "output": os.fspath(self.output),
            "rows": len(self.rows),
            "counts": dict(self.counts),
            "reshaped": self.reshaped,
            "feedback_path": _path_or_none(self.feedback_path),
            "inputs": _input_summary(self.inputs),
        }


def convert_data(
    files: Sequence[str | os.PathLike],
    *,
    output: str | os.PathLike,
    to: str = "pairs",
    format: str = "auto",
    scale: RatingScale | str | None = None,
    on_error: str = "raise",
    report: str | os.PathLike | None = None,
    pseudonymize: bool = False,
    pseudonym_key: str | None = None,
    scrub: bool = False,
    strategy: str = "best_vs_worst",
    ranking_strategy: str = "all",
    min_margin: float = 0.0,
    min_strength: float | None = None,
    include_ties: bool = False,
    dedupe: bool = True,
    keep_feedback: str | os.PathLike | None = None,
    say: Say | None = None,
) -> ConvertResult:
    """``prefalign data convert``: training rows from the feedback in ``files``, written to ``output``.

    ``to`` picks the rows: ``pairs`` (TRL preference pairs; ratings need a scale, given or inferred,
    and ``strategy``, ``ranking_strategy``, ``min_margin``, ``min_strength``, ``include_ties`` and
    ``dedupe`` are the options of :class:`~prefalign.feedback.convert.ConversionConfig`), ``sft``
    (edits and demonstrations) or ``listwise`` (rankings). ``output`` is a ``.jsonl``, ``.parquet`` or
    ``.csv`` file; ``keep_feedback`` also writes the records read (after the privacy options). The
    input keywords are those of :func:`read_inputs`. Raises :class:`CommandError` when no row comes out.
    """
    from prefalign.feedback.convert import (
        ConversionConfig,
        feedback_to_pairs,
        feedback_to_sft,
        rankings_to_listwise,
    )
    from prefalign.feedback.schema import Ranking, Rating, save_feedback

    say = say or _quiet
    _choice("--to", to, CONVERT_TARGETS)
    out = _check_output(output)
    if keep_feedback:
        _check_output(keep_feedback, "--keep-feedback")
    given = parse_scale(scale)
    inputs = read_inputs(
        files,
        format=format,
        scale=given,
        on_error=on_error,
        report=report,
        pseudonymize=pseudonymize,
        pseudonym_key=pseudonym_key,
        scrub=scrub,
    )
    records = inputs.records
    for line in [*_describe(inputs), *_rejected_lines(inputs, report)]:
        say(line)
    try:
        if to == "pairs":
            resolved, note = resolve_scale(given, inputs)
            if note:
                say(note)
            if resolved is None and any(isinstance(r, Rating) for r in records):
                raise CommandError(note or "ratings need --scale")
            config = ConversionConfig(
                scale=resolved,
                rating_strategy=strategy,  # type: ignore[arg-type]
                ranking_strategy=ranking_strategy,  # type: ignore[arg-type]
                min_margin=min_margin,
                include_ties=include_ties,
                min_strength=min_strength,
                dedupe=dedupe,
            )
            rows, conversion = feedback_to_pairs(records, config)
        elif to == "sft":
            rows, conversion = feedback_to_sft(records, dedupe=dedupe)
        else:
            rankings = [r for r in records if isinstance(r, Ranking)]
            rows, conversion = rankings_to_listwise(rankings)
            conversion.records = len(records)
            conversion.filtered += len(records) - len(rankings)  # other kinds hold no ranking
    except ValueError as exc:
        raise CommandError(f"cannot convert: {exc}") from None
    counts = conversion.as_dict()
    noun = {"pairs": "pairs", "sft": "SFT rows", "listwise": "listwise rows"}[to]
    say(f"converted {len(records)} records to {len(rows)} {noun}")
    say(f"  {_counts_line(counts)}")
    if not rows:
        raise CommandError(f"no {noun} came out of the input; nothing written to {os.fspath(output)}")
    if to == "pairs":
        rows, changed = _save_pairs(rows, out)
    else:
        rows, changed = _one_shape(rows)
        write_rows([r.to_dict() for r in rows], out)
    if changed:
        say(f"  {changed} text rows written as chat messages so the file holds one kind of row")
    say(f"wrote {len(rows)} {noun} to {os.fspath(output)}")
    result = ConvertResult(to, out, rows, counts, inputs, reshaped=changed)
    if keep_feedback:
        result.feedback_path = save_feedback(records, keep_feedback)
        say(f"wrote {len(records)} feedback records to {os.fspath(keep_feedback)}")
    return result


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
    from prefalign.feedback.convert import match_shape
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
        prompt, chosen, rejected = match_shape(prompts[item], texts[(item, best)], texts[(item, worst)])
        if chosen == rejected:
            counts["self_pairs"] += 1
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected, margin=gap, source=f"{kind}:{item}"))
    counts["pairs"] = len(pairs)
    return pairs, counts


@dataclass
class AggregateResult:
    """What :func:`aggregate_data` found and wrote."""

    output: Path
    pairs: list[PreferencePair]
    """The consensus pairs written to ``output`` (one best-vs-worst pair per item)."""
    scores: list[dict[str, Any]]
    """Per-response consensus scores: kind, item_id, response_id, score, n, response (and label)."""
    raters: list[dict[str, Any]]
    """The rater table: rater_id, kind, n, shared, weight, skill, agreement, position_bias, spammer,
    reason, action (``"dropped"`` or ``""``)."""
    methods: dict[str, str]
    """Kind -> consensus method used, for the kinds present."""
    counts: dict[str, dict[str, int]]
    """Kind -> items, pairs, ties, unpaired, self_pairs of :func:`consensus_pairs`."""
    dropped: dict[str, list[str]]
    """Kind -> raters left out as suspected spammers (``drop_spammers``)."""
    inputs: Inputs
    reshaped: int = 0
    scores_path: Path | None = None
    feedback_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the pairs themselves are in ``output``)."""
        return {
            "output": os.fspath(self.output),
            "pairs": len(self.pairs),
            "scores": self.scores,
            "raters": self.raters,
            "methods": dict(self.methods),
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "dropped": {k: list(v) for k, v in self.dropped.items()},
            "reshaped": self.reshaped,
            "scores_path": _path_or_none(self.scores_path),
            "feedback_path": _path_or_none(self.feedback_path),
            "inputs": _input_summary(self.inputs),
        }


def aggregate_data(
    files: Sequence[str | os.PathLike],
    *,
    output: str | os.PathLike,
    format: str = "auto",
    scale: RatingScale | str | None = None,
    on_error: str = "raise",
    report: str | os.PathLike | None = None,
    pseudonymize: bool = False,
    pseudonym_key: str | None = None,
    scrub: bool = False,
    method: str | None = None,
    calibrate: str | None = None,
    scores: str | os.PathLike | None = None,
    drop_spammers: bool = False,
    min_margin: float = 0.0,
    min_overlap: int = 5,
    keep_feedback: str | os.PathLike | None = None,
    say: Say | None = None,
) -> AggregateResult:
    """``prefalign data aggregate``: consensus of many raters, one best-vs-worst pair per item.

    Ratings, comparisons and rankings are aggregated separately: ratings with ``method`` in
    :data:`RATING_METHODS` (default ``weighted``; ``calibrate`` ``zscore`` or ``ordinal`` first),
    comparisons with one of :data:`COMPARISON_METHODS` (default ``bt``), rankings with Plackett-Luce.
    ``drop_spammers`` leaves out the raters flagged as spammers (sharing at least ``min_overlap``
    judgments with others) and aggregates again. The pairs go to ``output`` (``margin`` = the score
    difference, at least ``min_margin``); ``scores`` also writes every response's consensus score,
    ``keep_feedback`` the records kept. The input keywords are those of :func:`read_inputs`.
    """
    from prefalign.feedback.inspect import consensus, plural, rater_rows
    from prefalign.feedback.schema import Comparison, Ranking, Rating, save_feedback

    say = say or _quiet
    if method is not None:
        _choice("--method", method, (*RATING_METHODS, *COMPARISON_METHODS))
    if calibrate is not None:
        _choice("--calibrate", calibrate, CALIBRATIONS)
    out = _check_output(output)
    if scores:
        _check_output(scores, "--scores")
    if keep_feedback:
        _check_output(keep_feedback, "--keep-feedback")
    given = parse_scale(scale)
    inputs = read_inputs(
        files,
        format=format,
        scale=given,
        on_error=on_error,
        report=report,
        pseudonymize=pseudonymize,
        pseudonym_key=pseudonym_key,
        scrub=scrub,
    )
    for line in [*_describe(inputs), *_rejected_lines(inputs, report)]:
        say(line)
    records = inputs.records
    resolved, note = resolve_scale(given, inputs)
    calibration = None if calibrate == "none" else calibrate
    groups: dict[str, list[Any]] = {
        "rating": [r for r in records if isinstance(r, Rating)],
        "comparison": [r for r in records if isinstance(r, Comparison) and r.a_id != r.b_id and r.a != r.b],
        "ranking": [r for r in records if isinstance(r, Ranking)],
    }
    methods = {
        "rating": method if method in RATING_METHODS else "weighted",
        "comparison": method if method in COMPARISON_METHODS else "bt",
        "ranking": "plackett_luce",
    }
    if note:
        say(note)
    if groups["rating"] and resolved is None:
        raise CommandError(note or "ratings need --scale")
    if not any(groups.values()):
        raise CommandError("no ratings, comparisons or rankings to aggregate")
    if method is not None and not groups["rating" if method in RATING_METHODS else "comparison"]:
        say(f"note: --method {method} has no records of its kind; defaults used for the rest")
    others = len(records) - sum(len(g) for g in groups.values())
    if others:
        say(
            f"note: {others} records (edits, demonstrations, self-pairs) are not aggregated; see `data convert`"
        )

    table: list[tuple[Any, Any, str]] = []  # (RaterRow, RaterSummary, action)
    all_pairs: list[PreferencePair] = []
    score_rows: list[dict[str, Any]] = []
    dropped_raters: dict[str, set[str]] = {}
    kind_counts: dict[str, dict[str, int]] = {}
    for kind, group in groups.items():
        if not group:
            continue
        used = methods[kind]
        options = {
            "scale": resolved,
            "method": None if kind == "ranking" else used,
            "calibrate": calibration if kind == "rating" else None,
        }
        try:
            result = consensus(kind, group, **options)
            rows = rater_rows(kind, result, group, min_overlap=min_overlap)
            drop = {r.rater_id for r in rows if r.spammer} if drop_spammers else set()
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
        pairs, counts = consensus_pairs(kind, result.scores, group, min_margin=min_margin)
        kind_counts[kind] = counts
        all_pairs.extend(pairs)
        say(
            f"{kind}s: {used} consensus over {plural(counts['items'], 'item')} -> {plural(counts['pairs'], 'pair')} "
            f"(ties {counts['ties']}, unpaired {counts['unpaired']}, self-pairs {counts['self_pairs']})"
        )
        score_rows.extend(_score_rows(kind, result, group))

    for line in _rater_table_lines(table):
        say(line)
    for kind, raters in dropped_raters.items():
        say(f"dropped the {kind}s of {len(raters)} suspected spammer(s): {', '.join(sorted(raters))}")
    if not all_pairs:
        raise CommandError(
            "no consensus pairs came out (every item tied or had one response); "
            f"nothing written to {os.fspath(output)}"
        )
    all_pairs, changed = _save_pairs(all_pairs, out)
    if changed:
        say(f"{changed} text pairs written as chat messages so the file holds one kind of row")
    units = {"rating": "scale units", "comparison": "log-strength", "ranking": "log-strength"}
    kinds_used = sorted({p.source.split(":", 1)[0] for p in all_pairs if p.source})
    say(
        f"wrote {len(all_pairs)} consensus pairs to {os.fspath(output)} (margin = score difference: "
        + ", ".join(f"{k}s in {units[k]}" for k in kinds_used)
        + ")"
    )
    aggregated = AggregateResult(
        output=out,
        pairs=all_pairs,
        scores=score_rows,
        raters=[_rater_dict(row, summary, action) for row, summary, action in table],
        methods={kind: methods[kind] for kind in kind_counts},
        counts=kind_counts,
        dropped={kind: sorted(raters) for kind, raters in dropped_raters.items()},
        inputs=inputs,
        reshaped=changed,
    )
    if scores:
        aggregated.scores_path = write_rows(score_rows, scores)
        say(f"wrote {len(score_rows)} consensus scores to {os.fspath(scores)}")
    if keep_feedback:
        kept_records = [r for r in records if r.rater_id not in dropped_raters.get(r.kind, set())]
        aggregated.feedback_path = save_feedback(kept_records, keep_feedback)
        say(f"wrote {len(kept_records)} feedback records to {os.fspath(keep_feedback)}")
    return aggregated


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


def _rater_dict(row: Any, summary: Any, action: str) -> dict[str, Any]:
    """One line of the rater table as a JSON-ready dict (NaN -> None)."""

    def num(x: Any) -> float | None:
        return None if x is None or x != x else float(x)

    return {
        "rater_id": row.rater_id,
        "kind": row.kind,
        "n": int(row.n),
        "shared": int(row.shared),
        "weight": num(row.weight),
        "skill": num(getattr(summary, "skill", None)),
        "agreement": num(row.agreement),
        "position_bias": num(getattr(summary, "position_bias", None)),
        "spammer": None if row.spammer is None else bool(row.spammer),
        "reason": row.reason,
        "action": action,
    }


def _rater_table_lines(table: Sequence[tuple[Any, Any, str]]) -> list[str]:
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
    header = ["rater", "kind", "n", "shared", "weight", "skill", "agreement", "first-bias", "spammer", ""]
    return ["raters:", *text_table(header, rows, "llrrrrrrll")]


__all__ = [
    "AggregateResult",
    "CommandError",
    "ConvertResult",
    "InspectResult",
    "Inputs",
    "aggregate_data",
    "apply_privacy",
    "check_scale",
    "consensus_pairs",
    "convert_data",
    "inspect_data",
    "load_inputs",
    "parse_scale",
    "read_inputs",
    "resolve_scale",
    "response_texts",
    "write_rejected",
]
