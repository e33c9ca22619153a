"""Scored text corpora for pretraining with human feedback (``prefalign phf``).

A corpus is a list of documents, each split into segments with one score (reward, higher is
better) per segment, as in Korbak et al. 2023 (arXiv 2302.08582, section 2: documents are split
into sentences, each scored by the task's scoring function).

Sources:

* ``.txt``: one document per non-blank line; segmented and scored by the configured scorer.
* ``.jsonl``: one document per line, in one of these forms (other keys are ignored):

  - ``{"text": "First sentence. Second one."}``: segmented and scored by the scorer;
  - ``{"text": "...", "score": -1.0}``: one segment with a given score (not split, since the
    score belongs to the whole text);
  - ``{"segments": ["First sentence.", "Second one."]}``: already segmented; scored by the scorer;
  - ``{"segments": [...], "scores": [0.0, -1.0]}``: segmented and scored, one score per segment.

  Any of these may add ``"prompt"`` (a string, or chat messages as in pair files): context the
  document continues, e.g. the request a reply answers. The prompt is rendered as generation
  renders it (the chat template with a generation prompt), conditioned on, never a target, never
  scored and never given a control token, so PHF fine-tunes a chat model on scored replies.

Segmentation (``segmentation``): ``sentence`` splits after ``.``, ``!`` or ``?`` followed by
white space (a dependency-free stand-in for the spaCy splitter Korbak used), ``line`` splits at
line breaks, ``document`` keeps the text whole.

Every bad row raises :class:`prefalign.feedback.validate.DataError` naming file, line and field;
with ``on_error="skip"`` valid rows are kept and the rejected ones reported as for pair files.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefalign.feedback.rowio import LoadedRows, finish_loading
from prefalign.feedback.scorers import Scorer
from prefalign.feedback.validate import DataError, FieldError, Text, check_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

SEGMENTERS: dict[str, Callable[[str], list[str]]] = {
    "sentence": lambda text: [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()],
    "line": lambda text: [s.strip() for s in text.splitlines() if s.strip()],
    "document": lambda text: [text.strip()] if text.strip() else [],
}


@dataclass(frozen=True)
class ScoredDocument:
    """One document: its segments, one score per segment, where it came from ("file:line"), and the
    prompt it continues (None for plain text)."""

    segments: tuple[str, ...]
    scores: tuple[float, ...]
    source: str = ""
    prompt: Text | None = None

    @property
    def mean_score(self) -> float:
        """The document's score for filtering: the mean of its segment scores (Korbak et al. 2023, section 2)."""
        return sum(self.scores) / len(self.scores)

    @property
    def text(self) -> str:
        return " ".join(self.segments)


@dataclass
class _Pending:
    """A parsed row whose segments may still need scores."""

    line: int
    segments: list[str]
    scores: list[float] | None
    prompt: Text | None = None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_row(row: Any, file: str, line: int, segment: Callable[[str], list[str]]) -> _Pending:
    if not isinstance(row, dict):
        raise DataError(file, line, "<row>", f"expected a JSON object, got {type(row).__name__}")
    parsed = _parse_body(row, file, line, segment)
    if "prompt" in row:
        try:
            parsed.prompt = check_text("prompt", row["prompt"])
        except FieldError as err:
            raise DataError(file, line, err.field, err.message) from None
    return parsed


def _parse_body(row: dict[str, Any], file: str, line: int, segment: Callable[[str], list[str]]) -> _Pending:
    """The segments and scores of a row (everything but its prompt)."""
    if "text" in row and "segments" in row:
        raise DataError(file, line, "segments", "give either 'text' or 'segments', not both")
    if "segments" in row:
        segments = row["segments"]
        if not isinstance(segments, list) or not segments:
            raise DataError(file, line, "segments", "expected a non-empty list of strings")
        for i, s in enumerate(segments):
            if not isinstance(s, str) or not s.strip():
                raise DataError(file, line, f"segments[{i}]", "expected a non-empty string")
        if "score" in row:
            raise DataError(file, line, "score", "with 'segments' give per-segment 'scores', not 'score'")
        scores = row.get("scores")
        if scores is None:
            return _Pending(line, list(segments), None)
        if not isinstance(scores, list) or len(scores) != len(segments):
            raise DataError(
                file, line, "scores", f"expected a list of {len(segments)} numbers, one per segment"
            )
        for i, s in enumerate(scores):
            if not _number(s):
                raise DataError(file, line, f"scores[{i}]", f"expected a finite number, got {s!r}")
        return _Pending(line, list(segments), [float(s) for s in scores])
    if "text" not in row:
        raise DataError(file, line, "text", "missing: give 'text' or 'segments'")
    text = row["text"]
    if not isinstance(text, str) or not text.strip():
        raise DataError(file, line, "text", "expected a non-empty string")
    if "scores" in row:
        raise DataError(file, line, "scores", "per-segment 'scores' need 'segments'; use 'score' with 'text'")
    if "score" in row:
        if not _number(row["score"]):
            raise DataError(file, line, "score", f"expected a finite number, got {row['score']!r}")
        return _Pending(line, [text.strip()], [float(row["score"])])
    segments = segment(text)
    if not segments:
        raise DataError(file, line, "text", "no segments after splitting")
    return _Pending(line, segments, None)


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed row or DataError) for every non-blank line."""
    file = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".txt"):
        raise DataError(file, 1, "<file>", "expected a .jsonl file (one JSON object per line) or a .txt file")
    rows: list[tuple[int, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if suffix == ".txt":
                rows.append((number, {"text": raw.strip()}))
                continue
            try:
                rows.append((number, json.loads(raw)))
            except json.JSONDecodeError as err:
                rows.append((number, DataError(file, number, "<json>", f"not valid JSON: {err.msg}")))
    return rows


def load_corpus(
    source: str | os.PathLike,
    *,
    scorer: Scorer | None,
    segmentation: str = "sentence",
    on_error: str = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Read, segment and score a corpus; returns a list of :class:`ScoredDocument`.

    Segments without a score in the file are scored with ``scorer`` in one batch; when ``scorer``
    is None (the 'precomputed' scorer) they are an error naming the row's ``scores`` field.
    ``on_error``: 'raise' stops at the first bad row; 'skip' keeps the good rows, logs a warning
    and writes the rejected ones to ``report_path`` (the result's ``errors`` lists them too).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if segmentation not in SEGMENTERS:
        raise ValueError(f"segmentation must be one of {sorted(SEGMENTERS)}, got {segmentation!r}")
    path = Path(source)
    file = str(source)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {file}")
    pending: list[_Pending] = []
    errors: list[DataError] = []
    rows = _read_rows(path)
    for line, row in rows:
        try:
            if isinstance(row, DataError):
                raise row
            parsed = _parse_row(row, file, line, SEGMENTERS[segmentation])
            if parsed.scores is None and scorer is None:
                raise DataError(
                    file, line, "scores", "no scores given and the scorer is 'precomputed'; add scores"
                )
            pending.append(parsed)
        except DataError as err:
            if on_error == "raise":
                raise
            errors.append(err)
    unscored = [s for p in pending if p.scores is None for s in p.segments]
    computed = iter(scorer(unscored) if unscored and scorer is not None else [])
    documents = []
    for p in pending:
        scores = p.scores if p.scores is not None else [float(next(computed)) for _ in p.segments]
        documents.append(ScoredDocument(tuple(p.segments), tuple(scores), f"{file}:{p.line}", p.prompt))
    return finish_loading(
        file, documents, errors, seen=len(rows), good=len(documents), report_path=report_path
    )


def score_threshold(values: Sequence[float], threshold: float, percentile: float) -> float:
    """The good/bad threshold: ``threshold`` itself, or the ``percentile``-th percentile of ``values``.

    Korbak et al. 2023 pick the threshold so that a chosen share of the training data counts as
    bad (e.g. filtering at the median document score). With ``percentile`` p in (0, 100) the
    threshold is the value below which p% of ``values`` lie (linear interpolation), so about p%
    are bad (fewer when scores tie at the threshold, since a score equal to it counts as good).
    ``percentile`` 0 keeps ``threshold``.
    """
    if percentile == 0:
        return float(threshold)
    if not 0 < percentile < 100:
        raise ValueError(f"threshold_percentile must lie in [0, 100), got {percentile}")
    if not values:
        raise ValueError("cannot take a percentile of no scores")
    ordered = sorted(values)
    position = percentile / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
