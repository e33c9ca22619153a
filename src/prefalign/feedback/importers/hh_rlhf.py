"""Anthropic HH-RLHF rows -> prefalign records (one source of :mod:`prefalign.feedback.importers`).

**Anthropic HH-RLHF** (:func:`load_hh_rlhf`, https://huggingface.co/datasets/Anthropic/hh-rlhf):
``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``. The prompt is the
transcript up to and including the last ``"\\n\\nAssistant:"``; it must be the same in both. Returns
:class:`~prefalign.feedback.formats.PreferencePair` (conversational by default, with user/assistant
messages; ``as_text=True`` keeps the transcript text, the answer keeping its leading space so that
``prompt + chosen`` is the original transcript).
"""

from __future__ import annotations

import os
import re
from typing import Any

from prefalign.feedback.formats import PreferencePair
from prefalign.feedback.rowio import LoadedRows, OnError, load_records
from prefalign.feedback.validate import FieldError, check_row, show

ASSISTANT_TURN = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def _split_transcript(field: str, value: Any) -> tuple[str, str]:
    """(prompt up to and including the last '\\n\\nAssistant:', final answer) of an HH transcript."""
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, f"expected a non-empty HH-RLHF transcript string, got {show(value)}")
    cut = value.rfind(ASSISTANT_TURN)
    if cut < 0:
        raise FieldError(field, "has no '\\n\\nAssistant:' turn; expected an HH-RLHF transcript")
    cut += len(ASSISTANT_TURN)
    return value[:cut], value[cut:]


def _transcript_messages(field: str, prompt: str) -> list[dict[str, str]]:
    body = prompt[: -len(ASSISTANT_TURN)]
    if body.startswith(("Human:", "Assistant:")):  # a transcript without the leading blank lines
        body = "\n\n" + body
    parts = _TURN.split(body)
    if parts[0].strip():
        raise FieldError(field, "has text before the first '\\n\\nHuman:' turn")
    messages = []
    for index in range(1, len(parts), 2):
        content = parts[index + 1].strip()
        if not content:
            raise FieldError(field, f"turn {index // 2} ({parts[index]}) is empty")
        messages.append({"role": _ROLE[parts[index]], "content": content})
    if not messages:
        raise FieldError(field, "has no '\\n\\nHuman:' turn before the final '\\n\\nAssistant:' reply")
    return messages


def _parse_hh(row: Any, source: str, *, as_text: bool) -> list[PreferencePair]:
    row = check_row(row, "fields chosen, rejected")
    prompts, answers = {}, {}
    for field in ("chosen", "rejected"):
        if row.get(field) is None:
            raise FieldError(field, "missing")
        prompts[field], answers[field] = _split_transcript(field, row[field])
        if not answers[field].strip():
            raise FieldError(field, "the final '\\n\\nAssistant:' reply is empty")
    if prompts["chosen"] != prompts["rejected"]:
        raise FieldError(
            "rejected",
            "does not share the conversation before the final '\\n\\nAssistant:' reply with 'chosen'",
        )
    if answers["chosen"].strip() == answers["rejected"].strip():
        raise FieldError("rejected", "identical to 'chosen'; a preference pair needs two different answers")
    if as_text:
        return [PreferencePair(prompts["chosen"], answers["chosen"], answers["rejected"], source=source)]
    messages = _transcript_messages("chosen", prompts["chosen"])
    chosen, rejected = (
        [{"role": "assistant", "content": answers[f].strip()}] for f in ("chosen", "rejected")
    )
    return [PreferencePair(messages, chosen, rejected, source=source)]


def load_hh_rlhf(
    source: Any,
    *,
    as_text: bool = False,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Anthropic HH-RLHF rows -> preference pairs (conversational; ``as_text=True`` for transcript text)."""
    return load_records(
        source,
        lambda row, where: _parse_hh(row, where, as_text=as_text),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
