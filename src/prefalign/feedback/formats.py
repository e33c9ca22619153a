"""Preference and SFT data in TRL's formats: load, validate, save, split.

Preference rows (``load_pairs``) follow TRL's preference formats:

* standard text: ``{"prompt": str, "chosen": str, "rejected": str}``;
* conversational: ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`` where a
  message is ``{"role": ..., "content": ...}``; the prompt holds the turns up to the last user turn
  and chosen/rejected the assistant turn(s);
* implicit prompt: ``{"chosen": ..., "rejected": ...}`` only, both full texts or conversations that
  share a prefix; the shared prefix becomes the prompt (as TRL's ``extract_prompt`` does).

An optional string ``subset`` column is kept (used to stratify :func:`split_pairs`), and so is an
optional numeric ``margin`` column (how much better chosen is than rejected, e.g. a rating gap from
:mod:`prefalign.feedback.convert`; TRL's reward trainer reads a column of that name); other columns
are ignored.

SFT rows (``load_sft_rows``) follow TRL's SFT formats: ``{"prompt", "completion"}`` (text or
conversational), ``{"messages": [...]}`` (prompt = every message but the final assistant one,
completion = that final assistant message) and ``{"text": ...}`` (prompt ``""``).

Unpaired rows (``load_unpaired_rows``, for KTO) follow TRL's unpaired preference format
``{"prompt", "completion", "label": bool}`` (True = desirable). Listwise rows
(``load_listwise_rows``) are ``{"prompt", "responses": [...], "ranks": [...]}`` as
``prefalign data convert --to listwise`` writes them (rank 1 = best, equal ranks = ties). Both also
read pair rows, so one pair file trains every method: a pair becomes a desirable and an undesirable
row, or a ranking of two.

Sources: ``.jsonl`` (``.json`` holding a list of rows is also read), ``.parquet``, ``.csv`` (cells
holding a JSON list of messages are read as conversations), a folder written by
``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, an in-memory ``datasets.Dataset``
or ``DatasetDict``, a list of row dicts (all read by :mod:`prefalign.feedback.rowio`), or a built-in
dataset name (``"hhh"``, ``"hhh:harmless"``..., fetched by :mod:`prefalign.feedback.hhh`).

Every rejected row raises a :class:`~prefalign.feedback.validate.DataError` naming file, line and
field; with ``on_error="skip"`` the valid rows are kept, the rejected ones are collected on the
returned list's ``errors`` attribute, logged as a warning and (with ``report_path``) written to a JSONL
report. The row parsers (``parse_*``) raise :class:`~prefalign.feedback.validate.FieldError`, which
the loaders place in its file and line.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefalign.feedback import hhh
from prefalign.feedback.rowio import (
    LoadedRows,
    OnError,
    load_rows,
    write_rows,
)
from prefalign.feedback.validate import (
    DataError,
    FieldError,
    Text,
    check_message,
    check_row,
    check_text,
    require_assistant,
    same_kind,
    type_name,
)

PAIR_FIELDS = ("prompt", "chosen", "rejected")


# --------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class PreferencePair:
    """One preference example in TRL's format (text, or conversational lists of messages)."""

    prompt: Text
    chosen: Text
    rejected: Text
    subset: str | None = None
    margin: float | None = None  # how much chosen beats rejected (rating gap, strength); None = unknown
    source: str | None = None  # "file.jsonl:12"

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def to_dict(self) -> dict[str, Any]:
        """The TRL row: ``prompt``/``chosen``/``rejected`` (plus ``subset`` and ``margin`` when set)."""
        row: dict[str, Any] = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.subset is not None:
            row["subset"] = self.subset
        if self.margin is not None:
            row["margin"] = self.margin
        return row


@dataclass(frozen=True)
class SFTRow:
    """One SFT example in TRL's prompt-completion form (text, or conversational lists of messages)."""

    prompt: Text
    completion: Text
    source: str | None = None

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.completion, list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion}


@dataclass(frozen=True)
class ListwiseRow:
    """One ranking as a list, best first, for a listwise (Plackett-Luce) loss.

    ``ranks[i]`` is the rank of ``responses[i]``: 1 for the best, and consecutive (1, 1, 2 rather than
    1, 1, 3) so that equal ranks mark ties whatever numbering the rater's interface used.
    """

    prompt: Text
    responses: list[Text]
    ranks: list[int]
    source: str | None = None

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "responses": self.responses, "ranks": self.ranks}


# ------------------------------------------------------------------------------------ field checks


def _common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _split_implicit_prompt(chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """TRL's implicit prompt: the shared prefix of chosen and rejected (whole messages, or characters)."""
    n = _common_prefix_len(chosen, rejected)
    if isinstance(chosen, str) and 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1  # as TRL: the separating space stays with the answers
    if n == 0:
        raise FieldError(
            "prompt", "missing, and 'chosen' and 'rejected' share no prefix to use as the implicit prompt"
        )
    prompt, chosen_rest, rejected_rest = chosen[:n], chosen[n:], rejected[n:]
    for field, rest in (("chosen", chosen_rest), ("rejected", rejected_rest)):
        if not rest or (isinstance(rest, str) and not rest.strip()):
            raise FieldError(field, "nothing is left after removing the prompt shared with the other answer")
    return prompt, chosen_rest, rejected_rest


def _subset_of(row: Mapping[str, Any]) -> str | None:
    subset = row.get("subset")
    if subset is None or subset == "":  # "" is an empty CSV cell: a file where only some pairs have one
        return None
    if not isinstance(subset, str) or not subset.strip():
        raise FieldError("subset", f"expected a non-empty string or null, got {type_name(subset)}")
    return subset


def _margin_of(row: Mapping[str, Any]) -> float | None:
    margin = row.get("margin")
    if margin is None or (isinstance(margin, str) and not margin.strip()):
        return None  # absent, null, or an empty CSV cell (a file where only some pairs have a margin)
    if isinstance(margin, str):  # CSV cells are strings
        try:
            margin = float(margin)
        except ValueError:
            raise FieldError("margin", f"expected a number or null, got {margin!r}") from None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise FieldError("margin", f"expected a finite number or null, got {type_name(margin)}")
    try:
        as_float = float(margin)  # an int beyond float range raises OverflowError
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        shown = repr(margin) if isinstance(margin, float) else "an integer too large for a float"
        raise FieldError("margin", f"expected a finite number or null, got {shown}")
    return as_float


def parse_pair(row: Any, source: str | None = None) -> PreferencePair:
    """Validate one preference row; raises :class:`FieldError` (a :class:`DataError` once a loader places it)."""
    row = check_row(row, f"fields {', '.join(PAIR_FIELDS)}")
    for field in ("chosen", "rejected"):
        if field not in row or row[field] is None:
            raise FieldError(field, "missing")
    chosen = check_text("chosen", row["chosen"])
    rejected = check_text("rejected", row["rejected"])
    same_kind("rejected", rejected, "chosen", chosen)
    if row.get("prompt") is None:
        prompt, chosen, rejected = _split_implicit_prompt(chosen, rejected)
    else:
        prompt = check_text("prompt", row["prompt"])
        same_kind("chosen", chosen, "prompt", prompt)
        same_kind("rejected", rejected, "prompt", prompt)
    if isinstance(chosen, list):
        require_assistant("chosen", chosen)
        require_assistant("rejected", rejected)
    if chosen == rejected:
        raise FieldError("rejected", "identical to 'chosen'; a preference pair needs two different answers")
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        subset=_subset_of(row),
        margin=_margin_of(row),
        source=source,
    )


def parse_sft_row(row: Any, source: str | None = None) -> SFTRow:
    """Validate one SFT row (prompt/completion, messages or text)."""
    row = check_row(row, "'prompt'+'completion', 'messages' or 'text'")
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, (list, tuple)) or not messages:
            raise FieldError("messages", f"expected a non-empty list of messages, got {type_name(messages)}")
        checked = [check_message("messages", i, m) for i, m in enumerate(messages)]
        if checked[-1]["role"] != "assistant":
            raise FieldError(
                "messages",
                f"the last message must be the assistant's reply, got role {checked[-1]['role']!r}",
            )
        return SFTRow(prompt=checked[:-1], completion=checked[-1:], source=source)
    if row.get("completion") is not None:
        if row.get("prompt") is None:
            raise FieldError("prompt", "missing")
        prompt = check_text("prompt", row["prompt"])
        completion = check_text("completion", row["completion"])
        same_kind("completion", completion, "prompt", prompt)
        if isinstance(completion, list):
            require_assistant("completion", completion)
        return SFTRow(prompt=prompt, completion=completion, source=source)
    if row.get("text") is not None:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise FieldError("text", f"expected a non-empty string, got {type_name(text)}")
        return SFTRow(prompt="", completion=text, source=source)
    if row.get("prompt") is not None:
        raise FieldError("completion", "missing")
    raise FieldError(
        "<row>", "expected fields 'prompt'+'completion', 'messages' or 'text'; found none of them"
    )


# ---------------------------------------------------------------------------------------- loading


def _builtin(source: Any) -> tuple[str, str | None] | None:
    """``("hhh", "harmless")`` for a built-in dataset name, unless a file of that name exists."""
    if not isinstance(source, str) or os.path.exists(source):
        return None
    name, _, subset = source.partition(":")
    if name == "hhh":
        return name, subset or None
    return None


def load_pairs(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[PreferencePair]:
    """Load and validate preference pairs (see the module docstring for formats and sources).

    ``split`` picks a split of a ``DatasetDict`` (needed when it has several). With
    ``on_error="skip"`` invalid rows are skipped, logged, listed on the result's ``errors`` and written
    to ``report_path`` (JSONL: file, line, field, message); with ``"raise"`` the first one raises
    :class:`DataError`.
    """
    builtin = _builtin(source)
    if builtin is not None:
        path = hhh.ensure_hhh()
        pairs = load_rows(path, parse_pair, split=split, on_error=on_error, report_path=report_path)
        subset = builtin[1]
        if subset is None:
            return pairs
        if subset not in hhh.SUBSETS:
            raise ValueError(f"unknown hhh subset {subset!r}; choose one of {', '.join(hhh.SUBSETS)}")
        return LoadedRows([p for p in pairs if p.subset == subset], pairs.errors)
    return load_rows(source, parse_pair, split=split, on_error=on_error, report_path=report_path)


def load_sft_rows(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[SFTRow]:
    """Load and validate SFT rows in TRL's formats; same sources and error handling as :func:`load_pairs`."""
    return load_rows(source, parse_sft_row, split=split, on_error=on_error, report_path=report_path)


def parse_prompt(row: Any, source: str | None = None) -> Text:
    """One prompt row: ``{"prompt": text or chat messages}`` (other fields are ignored)."""
    row = check_row(row, "'prompt'")
    if row.get("prompt") is None:
        raise FieldError("prompt", "missing")
    return check_text("prompt", row["prompt"])


def load_prompts(source: str | os.PathLike) -> list[Text]:
    """Prompts to sample from: a ``.txt`` file (one prompt per non-empty line) or rows with a
    ``prompt`` field (JSONL, JSON, CSV, Parquet). A bad row raises :class:`DataError` naming the
    file, line and field; a source with no prompt is an error too."""
    path = Path(source)
    if path.suffix == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        prompts: list[Text] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise DataError(str(path), 1, "<file>", "no prompts (one per non-empty line)")
        return prompts
    return list(load_rows(path, parse_prompt))


def load_hhh(subset: str | None = None) -> list[PreferencePair]:
    """The built-in hhh pairs (all 221, or one subset); same as ``load_pairs("hhh")`` /
    ``load_pairs("hhh:SUBSET")`` (see :mod:`prefalign.feedback.hhh`)."""
    return load_pairs("hhh" if subset is None else f"hhh:{subset}")


# ------------------------------------------------------------------------- unpaired and listwise rows


@dataclass(frozen=True)
class UnpairedRow:
    """One completion judged on its own (TRL's unpaired preference format), for KTO.

    ``label`` is True for a desirable completion, False for an undesirable one.
    """

    prompt: Text
    completion: Text
    label: bool
    source: str | None = None  # "file.jsonl:12"; both halves of a pair row share it

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label}


def _label_of(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # CSV cells are strings
        return value.strip().lower() == "true"
    raise FieldError("label", f"expected true (desirable) or false (undesirable), got {type_name(value)}")


def _answer(field: str, value: Any, prompt: Text) -> Text:
    """A completion: text or messages of the prompt's kind, with an assistant turn when messages."""
    if value is None:
        raise FieldError(field, "missing")
    answer = check_text(field, value)
    same_kind(field, answer, "prompt", prompt)
    if isinstance(answer, list):
        require_assistant(field, answer)
    return answer


def parse_unpaired_rows(row: Any, source: str | None = None) -> list[UnpairedRow]:
    """Validate one unpaired row (one record) or one pair row (two records: desirable, undesirable)."""
    row = check_row(row, "'prompt', 'completion' and 'label'")
    if row.get("completion") is None and row.get("label") is None:
        if row.get("chosen") is None and row.get("rejected") is None:
            raise FieldError(
                "<row>",
                "expected 'prompt'+'completion'+'label' (unpaired) or 'chosen'+'rejected' (a pair); found neither",
            )
        pair = parse_pair(row, source)
        return [
            UnpairedRow(pair.prompt, pair.chosen, True, source),
            UnpairedRow(pair.prompt, pair.rejected, False, source),
        ]
    if row.get("prompt") is None:
        raise FieldError("prompt", "missing")
    prompt = check_text("prompt", row["prompt"])
    completion = _answer("completion", row.get("completion"), prompt)
    if row.get("label") is None:
        raise FieldError("label", "missing; true for a desirable completion, false for an undesirable one")
    return [UnpairedRow(prompt, completion, _label_of(row["label"]), source)]


def parse_listwise_row(row: Any, source: str | None = None) -> ListwiseRow:
    """Validate one listwise row (or a pair row, a ranking of two); responses come back best first.

    Ranks are integers >= 1, lower is better, equal ranks are ties; they are renumbered densely
    (1, 1, 2 for 1, 1, 3) and the responses sorted by rank (stably, so tied responses keep their order).
    A row whose responses all tie is kept (``data convert`` can write one); it adds nothing to a
    Plackett-Luce loss.
    """
    row = check_row(row, "'prompt', 'responses' and 'ranks'")
    if row.get("responses") is None:
        if row.get("chosen") is None and row.get("rejected") is None:
            raise FieldError(
                "<row>",
                "expected 'prompt'+'responses'+'ranks' (a ranking) or 'chosen'+'rejected' (a pair); found neither",
            )
        pair = parse_pair(row, source)
        return ListwiseRow(pair.prompt, [pair.chosen, pair.rejected], [1, 2], source)
    if row.get("prompt") is None:
        raise FieldError("prompt", "missing")
    prompt = check_text("prompt", row["prompt"])
    raw = row["responses"]
    if not isinstance(raw, (list, tuple)) or len(raw) < 2:
        shown = f"{len(raw)} response" if isinstance(raw, (list, tuple)) else type_name(raw)
        raise FieldError("responses", f"expected a list of at least two responses, got {shown}")
    responses: list[Text] = []
    for index, value in enumerate(raw):
        try:
            responses.append(_answer("responses", value, prompt))
        except FieldError as exc:
            raise FieldError("responses", f"response {index}: {exc.message}") from None
        for earlier in range(index):
            if responses[earlier] == responses[index]:
                raise FieldError("responses", f"responses {earlier} and {index} are identical")
    ranks = row.get("ranks")
    if ranks is None:
        raise FieldError("ranks", "missing; give each response's rank (1 = best, equal ranks for ties)")
    if not isinstance(ranks, (list, tuple)) or len(ranks) != len(responses):
        shown = f"{len(ranks)} ranks" if isinstance(ranks, (list, tuple)) else type_name(ranks)
        raise FieldError("ranks", f"expected one rank per response ({len(responses)}), got {shown}")
    for index, rank in enumerate(ranks):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise FieldError("ranks", f"rank {index} must be an integer >= 1, got {rank!r}")
    dense = {rank: level for level, rank in enumerate(sorted(set(ranks)), start=1)}
    order = sorted(range(len(responses)), key=lambda i: ranks[i])
    return ListwiseRow(prompt, [responses[i] for i in order], [dense[ranks[i]] for i in order], source)


def _load_expanded(
    source: Any,
    parse: Any,
    expand_pair: Any,
    *,
    split: str | None,
    on_error: OnError,
    report_path: str | os.PathLike | None,
) -> LoadedRows:
    """``load_rows`` with the built-in datasets (pairs) routed through ``expand_pair``."""
    if _builtin(source) is not None:
        pairs = load_pairs(source, split=split, on_error=on_error, report_path=report_path)
        return LoadedRows([r for p in pairs for r in expand_pair(p)], pairs.errors)
    return load_rows(source, parse, split=split, on_error=on_error, report_path=report_path)


def load_unpaired_rows(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[UnpairedRow]:
    """Load and validate unpaired rows ``{prompt, completion, label}`` (TRL's unpaired format).

    Pair rows (and built-in pair datasets) are read too: each gives a desirable row (chosen) and an
    undesirable row (rejected) with the same ``source``. Same sources and error handling as
    :func:`load_pairs`: a bad row raises :class:`DataError` naming file, line and field.
    """

    def expand(pair: PreferencePair) -> list[UnpairedRow]:
        return parse_unpaired_rows(pair.to_dict(), pair.source)

    nested = _load_expanded(
        source,
        parse_unpaired_rows,  # one list of records per row, flattened below
        lambda pair: [expand(pair)],
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
    return LoadedRows([r for group in nested for r in group], nested.errors)


def load_listwise_rows(
    source: str | os.PathLike | Any,
    *,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> list[ListwiseRow]:
    """Load and validate listwise rows ``{prompt, responses, ranks}`` (best first after loading).

    Pair rows (and built-in pair datasets) are read as rankings of two. Same sources and error
    handling as :func:`load_pairs`: a bad row raises :class:`DataError` naming file, line and field.
    """
    return _load_expanded(
        source,
        parse_listwise_row,
        lambda pair: [parse_listwise_row(pair.to_dict(), pair.source)],
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# ------------------------------------------------------------------------------------------- saving


def _rows_for_saving(pairs: Sequence[PreferencePair]) -> list[dict[str, Any]]:
    kinds = {p.is_conversational for p in pairs}
    if len(kinds) > 1:
        raise ValueError("cannot save a mix of text and conversational pairs in one file")
    with_subset = any(p.subset is not None for p in pairs)
    with_margin = any(p.margin is not None for p in pairs)
    rows = []
    for p in pairs:
        row: dict[str, Any] = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
        if with_subset:
            row["subset"] = p.subset
        if with_margin:
            # Floats for every row (None where unknown) so Parquet infers one double column.
            row["margin"] = None if p.margin is None else float(p.margin)
        rows.append(row)
    return rows


def save_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> Path:
    """Write pairs in TRL's format (prompt/chosen/rejected, plus subset and margin when any pair has one).

    The format follows the suffix: ``.parquet``, ``.csv`` (conversations as JSON cells) or JSON Lines
    (anything else). The file is written to a temp file and renamed into place.
    """
    return write_rows(_rows_for_saving(list(pairs)), path, columns=PAIR_FIELDS)


# ------------------------------------------------------------------------------------------ splitting


def split_pairs(
    pairs: Sequence[PreferencePair], *, eval_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic train/eval split of pairs, stratified by ``subset`` (see :func:`split_rows`)."""
    return split_rows(pairs, eval_fraction=eval_fraction, seed=seed, stratum=lambda pair: pair.subset)


RowT = TypeVar("RowT")


def split_rows(
    rows: Sequence[RowT],
    *,
    eval_fraction: float,
    seed: int,
    stratum: Callable[[RowT], str | None] = lambda row: None,
) -> tuple[list[RowT], list[RowT]]:
    """Deterministic train/eval split of any rows, stratified by ``stratum(row)`` (e.g. the subset).

    The eval set has ``round(len(rows) * eval_fraction)`` rows (at least one, and leaving at least one
    for training, when ``0 < eval_fraction`` and there are two or more rows), shared out between the
    strata in proportion to their sizes (largest remainders). Both halves keep the input order. The
    result depends only on the rows' order, ``eval_fraction`` and ``seed``.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    rows = list(rows)
    total = len(rows)
    n_eval = round(total * eval_fraction)
    if eval_fraction > 0 and total >= 2:
        n_eval = min(max(n_eval, 1), total - 1)
    groups: dict[str | None, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(stratum(row), []).append(index)
    # Largest-remainder allocation of n_eval across the subsets, ties broken by subset name.
    keys = sorted(groups, key=lambda k: (k is not None, k or ""))
    quotas = {k: n_eval * len(groups[k]) / total for k in keys} if total else {}
    counts = {k: int(quotas[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(quotas[k] - counts[k]), keys.index(k)))
    for k in by_remainder[: n_eval - sum(counts.values())]:
        counts[k] += 1
    eval_indices: set[int] = set()
    for k in keys:
        members = list(groups[k])
        random.Random(f"prefalign-split/{seed}/{k}").shuffle(members)
        eval_indices.update(members[: counts[k]])
    train = [r for i, r in enumerate(rows) if i not in eval_indices]
    held_out = [r for i, r in enumerate(rows) if i in eval_indices]
    return train, held_out


__all__ = [
    "PAIR_FIELDS",
    "DataError",  # re-exported from validate (where it is defined): the loaders' error
    "ListwiseRow",
    "PreferencePair",
    "SFTRow",
    "Text",  # re-exported from validate
    "UnpairedRow",
    "load_hhh",
    "load_listwise_rows",
    "load_pairs",
    "load_sft_rows",
    "load_unpaired_rows",
    "parse_listwise_row",
    "parse_pair",
    "parse_sft_row",
    "parse_unpaired_rows",
    "save_pairs",
    "split_pairs",
    "split_rows",
]
