"""Importers for the feedback formats people already have, into prefalign's records.

Every importer reads the same sources as :func:`prefalign.feedback.formats.load_pairs` (JSON Lines, a
``.json`` array, CSV, Parquet, a ``datasets`` dataset or folder, a list of row dicts), validates every
row and, on a bad one, raises :class:`~prefalign.feedback.formats.DataError` naming the file, the line
(JSONL/CSV line; index + 1 for a JSON array export such as Label Studio's or Argilla's ``to_json``; row
index + 1 for Parquet/datasets) and the field as a dotted path (``completions[2].overall_score``,
``annotations[0].result[1].value.selected``). With ``on_error="skip"`` the valid rows are kept, the
rejected ones are listed on the result's ``errors`` (and written to ``report_path`` as JSONL). A row is
the unit of rejection: one bad annotation rejects its whole task, so that a report line can be fixed
and the file re-imported without double counting.

Formats and the fields each importer reads (everything else is ignored):

* **Anthropic HH-RLHF** (:func:`load_hh_rlhf`, https://huggingface.co/datasets/Anthropic/hh-rlhf):
  ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``. The prompt is the
  transcript up to and including the last ``"\\n\\nAssistant:"``; it must be the same in both. Returns
  :class:`~prefalign.feedback.formats.PreferencePair` (conversational by default, with user/assistant
  messages; ``as_text=True`` keeps the transcript text, the answer keeping its leading space so that
  ``prompt + chosen`` is the original transcript).
* **UltraFeedback** (:func:`load_ultrafeedback`): the raw ``openbmb/UltraFeedback`` rows
  (https://github.com/OpenBMB/UltraFeedback README "Dataset Format": ``instruction``, optional
  ``prompt_id``/``source``, ``completions: [{model, response, annotations: {helpfulness | honesty |
  instruction_following | truthfulness: {Rating: "1".."5" or "N/A", Rationale}}, overall_score (1-10),
  fine-grained_score (1-5)}]``) give one :class:`Rating` per completion (a ``"N/A"`` aspect rating gives
  none); the binarized rows (``HuggingFaceH4/ultrafeedback_binarized``: ``prompt``, ``prompt_id``,
  ``chosen``, ``rejected`` as text or message lists, ``score_chosen``, ``score_rejected``) give two.
  The rater is GPT-4 (``rater_id="gpt-4"``), the item the ``prompt_id`` or a hash of the prompt.
* **Stanford SHP** (:func:`load_shp`, https://huggingface.co/datasets/stanfordnlp/SHP): ``post_id``,
  ``history``, ``human_ref_A``, ``human_ref_B``, ``labels`` (1 = A preferred, 0 = B), ``score_ratio``,
  optional ``c_root_id_A``/``c_root_id_B`` (response ids), ``domain``, ``score_A``, ``score_B``. One
  :class:`Comparison` per row, ``strength = score_ratio``; ``min_score_ratio`` drops weaker pairs (the
  SHP paper trains on ratio >= 2).
* **Argilla v2** (:func:`load_argilla`): ``rg.Dataset.records.to_list(flatten=False)`` / ``to_json``
  records ``{"id", "fields": {...}, "metadata", "suggestions", "responses": {question: [{"value",
  "user_id", "status"?}]}, "status", "_server_id"}`` and the ``flatten=True`` / ``to_datasets`` rows
  (fields at top level, ``"<question>.responses"``, ``"<question>.responses.users"``,
  ``"<question>.responses.status"``) -- see argilla-io/argilla ``argilla/src/argilla/records/_resource.py``
  (``Record.to_dict``, ``RecordResponses.to_dict``) and ``records/_io/_generic.py``
  (``GenericIO._record_to_dict``). Only submitted responses count: a response whose ``status`` is given
  and is not ``"submitted"`` (draft, discarded) is ignored; SDK versions whose export carries no status
  are read as submitted. Values: RatingQuestion an int, LabelQuestion a string label, RankingQuestion the
  SDK's list of option names best first (``responses.py``: ``[v["value"] for v in value]``) or the
  server's ``[{"value", "rank"}]``, TextQuestion a string. ``mapping`` says which fields/questions mean
  what (see :data:`ARGILLA_MAPPING`).
* **Label Studio** (:func:`load_label_studio`): the JSON export, a list of tasks ``{"id", "data": {...},
  "annotations": [{"id", "completed_by", "created_at", "was_cancelled", "result": [{"from_name",
  "to_name", "type", "value"}]}]}`` (https://labelstud.io/guide/task_format). Result types read:
  ``pairwise`` ``{"selected": "left" | "right"}`` (HumanSignal/label-studio-frontend
  ``src/tags/control/Pairwise.js``), ``rating`` ``{"rating": n}``, ``ranker`` ``{"ranker": {name: [ids
  best first]}}`` or with buckets ``{"ranker": {bucket: [ids], "_": [unranked ids]}}`` (older exports:
  ``{"ranker": [ids]}``; HumanSignal/label-studio ``web/libs/editor/src/tags/control/Ranker.js``) over
  the List items ``data.items = [{"id", "title", "body"}]``, and ``textarea`` ``{"text": [str, ...]}``
  (an :class:`Edit` of ``data.response`` when the task has one, else a :class:`Demonstration`; several
  texts are joined by newlines). Other result types are ignored, cancelled annotations skipped, and
  ``completed_by`` (a user id, or an object with ``id``, else ``email``) is the rater. ``mapping`` names the
  ``data`` keys (see :data:`LABEL_STUDIO_MAPPING`).
* **TRL** preference rows (:func:`load_trl`): standard, conversational or implicit-prompt rows as read by
  :func:`~prefalign.feedback.formats.load_pairs`, as :class:`Comparison` records with ``a`` = chosen and
  ``winner="a"`` (TRL rows do not record which answer was shown first), ``strength`` = ``margin``.
  Writing TRL rows is :func:`prefalign.feedback.formats.save_pairs`.

:func:`detect_format` sniffs the first rows; :func:`import_feedback` is the single entry point.
Response ids are derived from the response text (:func:`~prefalign.feedback.schema.text_id`) unless the
source gives one (SHP's comment ids), so the same answer seen in several tasks is one response.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prefalign.feedback.formats import (
    DataError,
    LoadedRows,
    OnError,
    PreferencePair,
    Text,
    _check_text,
    _FieldError,
    _open_source,
    _type_name,
    finish_loading,
    parse_pair,
)
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    Feedback,
    RankedResponse,
    Ranking,
    Rating,
    RatingScale,
    load_feedback,
    text_id,
)

FORMATS: tuple[str, ...] = (
    "prefalign",
    "hh-rlhf",
    "ultrafeedback",
    "shp",
    "argilla",
    "label-studio",
    "trl",
)

ULTRAFEEDBACK_ASPECTS: tuple[str, ...] = ("helpfulness", "honesty", "instruction_following", "truthfulness")
#: The scale of each UltraFeedback value (``aspect=`` of :func:`load_ultrafeedback`; ``"score"`` is the
#: binarized ``score_chosen``/``score_rejected``), for aggregation with the right range.
ULTRAFEEDBACK_SCALES: dict[str, RatingScale] = {
    "overall": RatingScale(1, 10),
    "fine-grained": RatingScale(1, 5),
    "score": RatingScale(1, 10),
    **{aspect: RatingScale(1, 5) for aspect in ULTRAFEEDBACK_ASPECTS},
}

#: Default Argilla mapping. ``prompt``/``response`` name record fields; ``responses`` names the response
#: fields a preference label chooses between (two of them; ``None`` = the fields ``response_1`` and
#: ``response_2``, ``response1``/``response2`` or ``response_a``/``response_b``, whichever exist); the
#: others name questions: ``rating`` (RatingQuestion -> Rating of ``response``), ``label``
#: (LabelQuestion -> Rating whose value is the label), ``preference`` (LabelQuestion whose label is one of
#: the ``responses`` field names, ``"a"``, ``"b"`` or ``"tie"`` -> Comparison), ``ranking``
#: (RankingQuestion whose options are response field names -> Ranking) and ``edit`` (TextQuestion -> Edit
#: of ``response``, or Demonstration when the record has no ``response`` field). ``rating``, ``label`` and
#: ``edit`` may also be a dict ``{question: response_field}`` for one question per response. ``None``
#: switches an entry off.
ARGILLA_MAPPING: dict[str, Any] = {
    "prompt": "prompt",
    "response": "response",
    "responses": None,
    "rating": "rating",
    "label": "label",
    "preference": "preference",
    "ranking": "ranking",
    "edit": "edit",
}

#: Default Label Studio mapping: the ``data`` keys holding the prompt, the Pairwise left/right responses,
#: the response that a Rating or TextArea is about, and the List items a Ranker orders; each is a key
#: or a list of keys tried in order. ``buckets`` (Ranker with Bucket tags) lists the bucket names best
#: first; ``None`` = the order of the buckets in the result.
LABEL_STUDIO_MAPPING: dict[str, Any] = {
    "prompt": ["prompt", "instruction", "question", "input"],
    "left": ["answer1", "text1", "response_a", "response1", "left"],
    "right": ["answer2", "text2", "response_b", "response2", "right"],
    "response": ["response", "answer", "completion", "output"],
    "items": ["items"],
    "buckets": None,
}

_MAX_SHOWN = 40


# ----------------------------------------------------------------------------------------- helpers


def _show(value: Any) -> str:
    """A short description of a bad value for an error message."""
    if isinstance(value, str) and value.strip():
        text = repr(value)
        return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + "...'"
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        text = repr(value)
        return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    return _type_name(value)


def _mapping(field: str, value: Any, what: str = "an object") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _FieldError(field, f"expected {what}, got {_type_name(value)}")
    return value


def _list(field: str, value: Any, what: str = "a list") -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _FieldError(field, f"expected {what}, got {_type_name(value)}")


def _number(field: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """A finite number (CSV/JSON strings holding one are read too), optionally within [low, high]."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _FieldError(field, f"expected a number, got {_show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(field, f"expected a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _FieldError(field, "expected a number, got an integer too large for a float") from None
    if not math.isfinite(number):
        raise _FieldError(field, f"expected a finite number, got {_show(number)}")
    too_low, too_high = low is not None and number < low, high is not None and number > high
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise _FieldError(field, f"{number:g} is outside the range [{lo}, {hi}]")
    return number


def _id(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _FieldError(field, f"expected a string or integer id, got {_type_name(value)}")
    text = str(value).strip()
    if not text:
        raise _FieldError(field, "expected a non-empty id, got a blank string")
    return text


def _optional_id(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None or value == "":
        return None
    return _id(name, value)


def _text(field: str, value: Any) -> Text:
    """A non-empty string or a list of chat messages (errors name ``field``)."""
    if value is None:
        raise _FieldError(field, "missing")
    return _check_text(field, value)


def _row(row: Any, expected: str) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise _FieldError("<row>", f"expected an object with {expected}, got {_type_name(row)}")
    return row


# ----------------------------------------------------------------------------------------- loading


def _load_records(
    source: Any,
    parse: Callable[[Mapping[str, Any] | Any, str], list[Any]],
    *,
    split: str | None,
    on_error: OnError,
    report_path: str | os.PathLike | None,
) -> LoadedRows:
    """Like :func:`formats._load`, but one row may give any number of records (a task with several
    annotations; a task with none gives none, which is not an error)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    rows, label = _open_source(source, split)
    kept: list[Any] = []
    errors: list[DataError] = []
    seen = good = 0
    for line, raw in rows:
        seen += 1
        if isinstance(raw, DataError):
            error = raw
        else:
            try:
                records = parse(raw, f"{label}:{line}")
            except _FieldError as exc:
                error = DataError(label, line, exc.field, exc.message)
            except RecursionError:
                error = DataError(label, line, "<row>", "nested too deeply")
            else:
                kept.extend(records)
                good += 1
                continue
        if on_error == "raise":
            raise error
        errors.append(error)
    return finish_loading(label, kept, errors, seen=seen, good=good, report_path=report_path)


# ---------------------------------------------------------------------------------------- HH-RLHF

_ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def _split_transcript(field: str, value: Any) -> tuple[str, str]:
    """(prompt up to and including the last '\\n\\nAssistant:', final answer) of an HH transcript."""
    if not isinstance(value, str) or not value.strip():
        raise _FieldError(field, f"expected a non-empty HH-RLHF transcript string, got {_show(value)}")
    cut = value.rfind(_ASSISTANT)
    if cut < 0:
        raise _FieldError(field, "has no '\\n\\nAssistant:' turn; expected an HH-RLHF transcript")
    cut += len(_ASSISTANT)
    return value[:cut], value[cut:]


def _transcript_messages(field: str, prompt: str) -> list[dict[str, str]]:
    body = prompt[: -len(_ASSISTANT)]
    if body.startswith(("Human:", "Assistant:")):  # a transcript without the leading blank lines
        body = "\n\n" + body
    parts = _TURN.split(body)
    if parts[0].strip():
        raise _FieldError(field, "has text before the first '\\n\\nHuman:' turn")
    messages = []
    for index in range(1, len(parts), 2):
        content = parts[index + 1].strip()
        if not content:
            raise _FieldError(field, f"turn {index // 2} ({parts[index]}) is empty")
        messages.append({"role": _ROLE[parts[index]], "content": content})
    if not messages:
        raise _FieldError(field, "has no '\\n\\nHuman:' turn before the final '\\n\\nAssistant:' reply")
    return messages


def _parse_hh(row: Any, source: str, *, as_text: bool) -> list[PreferencePair]:
    row = _row(row, "fields chosen, rejected")
    prompts, answers = {}, {}
    for field in ("chosen", "rejected"):
        if row.get(field) is None:
            raise _FieldError(field, "missing")
        prompts[field], answers[field] = _split_transcript(field, row[field])
        if not answers[field].strip():
            raise _FieldError(field, "the final '\\n\\nAssistant:' reply is empty")
    if prompts["chosen"] != prompts["rejected"]:
        raise _FieldError(
            "rejected",
            "does not share the conversation before the final '\\n\\nAssistant:' reply with 'chosen'",
        )
    if answers["chosen"].strip() == answers["rejected"].strip():
        raise _FieldError("rejected", "identical to 'chosen'; a preference pair needs two different answers")
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
    return _load_records(
        source,
        lambda row, where: _parse_hh(row, where, as_text=as_text),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# ----------------------------------------------------------------------------------- UltraFeedback


def _item_id(row: Mapping[str, Any], prompt: Text, *names: str) -> str:
    for name in names:
        found = _optional_id(row, name)
        if found is not None:
            return found
    return text_id(prompt)


def _optional_str(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _FieldError(field, f"expected a string or null, got {_type_name(value)}")
    return value


def _uf_value(base: str, completion: Mapping[str, Any], aspect: str) -> float | None:
    if aspect == "overall":
        return _number(f"{base}.overall_score", completion.get("overall_score"), low=1, high=10)
    if aspect == "fine-grained":
        return _number(f"{base}.fine-grained_score", completion.get("fine-grained_score"), low=1, high=5)
    annotations = _mapping(f"{base}.annotations", completion.get("annotations"))
    path = f"{base}.annotations.{aspect}"
    rating = _mapping(path, annotations.get(aspect)).get("Rating")
    if isinstance(rating, str) and rating.strip().upper() == "N/A":
        return None  # the annotator judged the aspect not applicable
    return _number(f"{path}.Rating", rating, low=1, high=5)


def _uf_raw(row: Mapping[str, Any], aspect: str, rater_id: str) -> list[Rating]:
    prompt = _text("instruction", row.get("instruction"))
    item_id = _item_id(row, prompt, "prompt_id", "id")
    completions = _list("completions", row.get("completions"), "a list of completions")
    ratings = []
    for index, completion in enumerate(completions):
        base = f"completions[{index}]"
        completion = _mapping(base, completion)
        response = _text(f"{base}.response", completion.get("response"))
        model = _optional_str(f"{base}.model", completion.get("model"))
        value = _uf_value(base, completion, aspect)
        if value is None:
            continue
        metadata: dict[str, Any] = {"aspect": aspect}
        if model is not None:
            metadata["model"] = model
        ratings.append(
            Rating(
                rater_id=rater_id,
                item_id=item_id,
                prompt=prompt,
                response_id=text_id(response),
                response=response,
                value=value,
                metadata=metadata,
            )
        )
    return ratings


def _answer_after_prompt(field: str, messages: list[dict[str, Any]]) -> tuple[list, list]:
    """(prompt messages, final assistant messages) of a conversation."""
    cut = len(messages)
    while cut > 0 and messages[cut - 1]["role"] == "assistant":
        cut -= 1
    if cut == len(messages):
        raise _FieldError(field, "expected the conversation to end with the assistant's reply")
    if cut == 0:
        raise _FieldError(field, "expected the user's turn before the assistant's reply")
    return messages[:cut], messages[cut:]


def _uf_binarized(row: Mapping[str, Any], rater_id: str) -> list[Rating]:
    texts = {f: _text(f, row.get(f)) for f in ("chosen", "rejected")}
    if isinstance(texts["chosen"], list) != isinstance(texts["rejected"], list):
        raise _FieldError("rejected", "'chosen' and 'rejected' must both be text or both message lists")
    if isinstance(texts["chosen"], list):
        prompt, chosen = _answer_after_prompt("chosen", texts["chosen"])
        rejected_prompt, rejected = _answer_after_prompt("rejected", texts["rejected"])
        if rejected_prompt != prompt:
            raise _FieldError("rejected", "does not share the conversation before the reply with 'chosen'")
        responses: dict[str, Text] = {"chosen": chosen, "rejected": rejected}
    else:
        prompt = _text("prompt", row.get("prompt"))
        responses = dict(texts)
    item_id = _item_id(row, prompt, "prompt_id")
    return [
        Rating(
            rater_id=rater_id,
            item_id=item_id,
            prompt=prompt,
            response_id=text_id(responses[label]),
            response=responses[label],
            value=_number(f"score_{label}", row.get(f"score_{label}"), low=1, high=10),
            metadata={"label": label},
        )
        for label in ("chosen", "rejected")
    ]


def load_ultrafeedback(
    source: Any,
    *,
    aspect: str = "overall",
    rater_id: str = "gpt-4",
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """UltraFeedback rows (raw or binarized) -> Rating records, one per rated completion.

    ``aspect`` picks the raw value: ``"overall"`` (``overall_score``, 1-10), ``"fine-grained"``
    (``fine-grained_score``, 1-5) or one of :data:`ULTRAFEEDBACK_ASPECTS` (that annotation's ``Rating``,
    1-5); binarized rows always give ``score_chosen``/``score_rejected`` (1-10). Scales:
    :data:`ULTRAFEEDBACK_SCALES`.
    """
    if aspect not in ("overall", "fine-grained", *ULTRAFEEDBACK_ASPECTS):
        choices = ", ".join(("overall", "fine-grained", *ULTRAFEEDBACK_ASPECTS))
        raise ValueError(f"unknown UltraFeedback aspect {aspect!r}; choose one of {choices}")

    def parse(row: Any, where: str) -> list[Rating]:
        row = _row(row, "'instruction' and 'completions', or 'chosen'/'rejected' with scores")
        if "completions" in row or "instruction" in row:
            return _uf_raw(row, aspect, rater_id)
        if "score_chosen" in row or "score_rejected" in row or "chosen" in row:
            return _uf_binarized(row, rater_id)
        raise _FieldError(
            "<row>",
            "expected 'instruction' + 'completions' (raw) or 'chosen'/'rejected' + scores (binarized)",
        )

    return _load_records(source, parse, split=split, on_error=on_error, report_path=report_path)


# --------------------------------------------------------------------------------------------- SHP


def _parse_shp(row: Any, rater_id: str, min_score_ratio: float | None) -> list[Comparison]:
    row = _row(row, "fields post_id, history, human_ref_A, human_ref_B, labels")
    ratio = _number("score_ratio", row.get("score_ratio"), low=0)
    prompt = _text("history", row.get("history"))
    a = _text("human_ref_A", row.get("human_ref_A"))
    b = _text("human_ref_B", row.get("human_ref_B"))
    label = _number("labels", row.get("labels"))
    if label not in (0.0, 1.0):
        raise _FieldError("labels", f"expected 1 (A preferred) or 0 (B preferred), got {_show(label)}")
    if row.get("post_id") is None:
        raise _FieldError("post_id", "missing")
    item_id = _id("post_id", row.get("post_id"))
    metadata: dict[str, Any] = {}
    domain = _optional_str("domain", row.get("domain"))
    if domain is not None:
        metadata["domain"] = domain
    for name in ("score_A", "score_B"):
        if row.get(name) is not None and row.get(name) != "":
            metadata[name] = _number(name, row[name])
    a_id = _optional_id(row, "c_root_id_A") or text_id(a)
    b_id = _optional_id(row, "c_root_id_B") or text_id(b)
    if a_id == b_id:
        raise _FieldError("human_ref_B", "the same response as human_ref_A")
    if min_score_ratio is not None and ratio < min_score_ratio:
        return []
    return [
        Comparison(
            rater_id=rater_id,
            item_id=item_id,
            prompt=prompt,
            a_id=a_id,
            a=a,
            b_id=b_id,
            b=b,
            winner="a" if label == 1.0 else "b",
            strength=ratio,
            metadata=metadata,
        )
    ]


def load_shp(
    source: Any,
    *,
    min_score_ratio: float | None = None,
    rater_id: str = "reddit",
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Stanford SHP rows -> Comparison records (``strength`` = ``score_ratio``).

    Rows with ``score_ratio < min_score_ratio`` are validated, then left out (the SHP paper uses 2).
    """
    return _load_records(
        source,
        lambda row, where: _parse_shp(row, rater_id, min_score_ratio),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# ------------------------------------------------------------------------------------------- Argilla


def _merge_mapping(defaults: Mapping[str, Any], mapping: Mapping[str, Any] | None, what: str) -> dict:
    merged = dict(defaults)
    for key, value in (mapping or {}).items():
        if key not in defaults:
            raise ValueError(f"unknown {what} mapping key {key!r}; expected one of {', '.join(defaults)}")
        merged[key] = value
    return merged


class _ArgillaResponse:
    __slots__ = ("value", "user", "path")

    def __init__(self, value: Any, user: str, path: str):
        self.value = value
        self.user = user
        self.path = path


def _argilla_status_ok(path: str, status: Any) -> bool:
    if status is None:
        return True  # exports without a status: read as submitted
    if not isinstance(status, str):
        raise _FieldError(path, f"expected a response status string, got {_type_name(status)}")
    return status == "submitted"


def _argilla_user(path: str, user: Any) -> str:
    if user is None:
        raise _FieldError(path, "missing; the responding user is the rater")
    return _id(path, user)


def _argilla_nested(row: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, dict[str, list]]:
    fields = row["fields"]
    responses = row.get("responses")
    out: dict[str, list[_ArgillaResponse]] = {}
    if responses is None:
        return fields, "fields.", out
    responses = _mapping("responses", responses, "an object of question -> responses")
    for question, answers in responses.items():
        base = f"responses.{question}"
        if answers is None:
            continue
        for index, answer in enumerate(_list(base, answers, "a list of responses")):
            path = f"{base}[{index}]"
            answer = _mapping(path, answer, "a response object with 'value' and 'user_id'")
            if not _argilla_status_ok(f"{path}.status", answer.get("status")):
                continue
            user = _argilla_user(f"{path}.user_id", answer.get("user_id"))
            out.setdefault(str(question), []).append(
                _ArgillaResponse(answer.get("value"), user, f"{path}.value")
            )
    return fields, "fields.", out


def _argilla_flat(row: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, dict[str, list]]:
    out: dict[str, list[_ArgillaResponse]] = {}
    for key, values in row.items():
        if not isinstance(key, str) or not key.endswith(".responses") or values is None:
            continue
        question = key[: -len(".responses")]
        values = _list(key, values, "a list of response values")
        users = row.get(f"{key}.users")
        users = _list(f"{key}.users", users, "a list of user ids, one per response")
        if len(users) != len(values):
            raise _FieldError(f"{key}.users", f"has {len(users)} entries for {len(values)} responses")
        statuses = row.get(f"{key}.status")
        if statuses is not None:
            statuses = _list(f"{key}.status", statuses, "a list of statuses, one per response")
            if len(statuses) != len(values):
                raise _FieldError(f"{key}.status", f"has {len(statuses)} entries for {len(values)} responses")
        for index, value in enumerate(values):
            if statuses is not None and not _argilla_status_ok(f"{key}.status[{index}]", statuses[index]):
                continue
            user = _argilla_user(f"{key}.users[{index}]", users[index])
            out.setdefault(question, []).append(_ArgillaResponse(value, user, f"{key}[{index}]"))
    return row, "", out


def _per_response(spec: Any, response_field: Any) -> list[tuple[str, Any]]:
    """(question, response field) pairs of a mapping entry that is a question name or a dict."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        return [(str(q), f) for q, f in spec.items()]
    return [(str(spec), response_field)]


def _argilla_field(fields: Mapping[str, Any], prefix: str, name: Any) -> Text:
    if not isinstance(name, str) or fields.get(name) is None:
        raise _FieldError(f"{prefix}{name}", "missing")
    return _text(f"{prefix}{name}", fields[name])


def _preference_fields(fields: Mapping[str, Any], spec: Any) -> list[str]:
    if spec is not None:
        return [str(s) for s in spec]
    for pair in (("response_1", "response_2"), ("response1", "response2"), ("response_a", "response_b")):
        if all(fields.get(p) is not None for p in pair):
            return list(pair)
    return []


def _argilla_ranking(
    answer: _ArgillaResponse, fields: Mapping[str, Any], prefix: str, common: dict[str, Any], question: str
) -> Ranking:
    entries = _list(answer.path, answer.value, "a list of ranked options")
    names: list[str] = []
    ranks: list[int | None] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping):  # server form {"value": option, "rank": n}
            option, rank = entry.get("value"), entry.get("rank")
            if rank is not None:
                if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                    raise _FieldError(
                        f"{answer.path}[{index}].rank",
                        f"expected a positive integer or null, got {_show(rank)}",
                    )
        else:  # SDK form: option names best first
            option, rank = entry, index + 1
        if not isinstance(option, str) or not option.strip():
            raise _FieldError(f"{answer.path}[{index}]", f"expected an option name, got {_show(option)}")
        if option in names:
            raise _FieldError(f"{answer.path}[{index}]", f"option {_show(option)} is ranked twice")
        names.append(option)
        ranks.append(rank)
    if sum(r is not None for r in ranks) < 2:
        raise _FieldError(answer.path, "at least two options must be ranked")
    responses = []
    for index, name in enumerate(names):
        if fields.get(name) is None:
            raise _FieldError(
                f"{answer.path}[{index}]",
                f"option {_show(name)} names no field of the record ({prefix}{name})",
            )
        text = _text(f"{prefix}{name}", fields[name])
        responses.append(RankedResponse(text_id(text), text))
    if len({r.id for r in responses}) != len(responses):
        raise _FieldError(answer.path, "two ranked options hold the same text")
    return Ranking(**common, responses=tuple(responses), ranks=tuple(ranks), metadata={"question": question})


def _parse_argilla(row: Any, mapping: dict[str, Any]) -> list[Feedback]:
    row = _row(row, "'fields' and 'responses' (an Argilla v2 export)")
    if "fields" in row and row["fields"] is not None:
        _mapping("fields", row["fields"])
        fields, prefix, responses = _argilla_nested(row)
    else:
        fields, prefix, responses = _argilla_flat(row)
    prompt = _argilla_field(fields, prefix, mapping["prompt"])
    item_id = _item_id(row, prompt, "id", "_server_id")
    records: list[Feedback] = []

    def common(answer: _ArgillaResponse) -> dict[str, Any]:
        return {"rater_id": answer.user, "item_id": item_id, "prompt": prompt}

    for kind in ("rating", "label"):
        for question, field in _per_response(mapping[kind], mapping["response"]):
            for answer in responses.get(question, []):
                if kind == "rating":
                    value: float | str = _number(answer.path, answer.value)
                else:
                    if not isinstance(answer.value, str) or not answer.value.strip():
                        raise _FieldError(answer.path, f"expected a label string, got {_show(answer.value)}")
                    value = answer.value.strip()
                response = _argilla_field(fields, prefix, field)
                records.append(
                    Rating(
                        **common(answer),
                        response_id=text_id(response),
                        response=response,
                        value=value,
                        metadata={"question": question},
                    )
                )
    if mapping["preference"] is not None:
        question = str(mapping["preference"])
        answers = responses.get(question, [])
        names = _preference_fields(fields, mapping["responses"]) if answers else []
        if answers and len(names) != 2:
            raise _FieldError(
                f"{prefix}response_1",
                "a preference needs two response fields (response_1/response_2); name them with "
                "mapping={'responses': [field_a, field_b]}",
            )
        for answer in answers:
            label = answer.value.strip().lower() if isinstance(answer.value, str) else None
            winners = {names[0].lower(): "a", names[1].lower(): "b", "a": "a", "b": "b", "tie": "tie"}
            if label not in winners:
                raise _FieldError(
                    answer.path, f"expected {names[0]!r}, {names[1]!r} or 'tie', got {_show(answer.value)}"
                )
            a, b = (_argilla_field(fields, prefix, n) for n in names)
            records.append(
                Comparison(
                    **common(answer),
                    a_id=text_id(a),
                    a=a,
                    b_id=text_id(b),
                    b=b,
                    winner=winners[label],
                    metadata={"question": question},
                )
            )
    if mapping["ranking"] is not None:
        question = str(mapping["ranking"])
        for answer in responses.get(question, []):
            records.append(_argilla_ranking(answer, fields, prefix, common(answer), question))
    for question, field in _per_response(mapping["edit"], mapping["response"]):
        for answer in responses.get(question, []):
            if not isinstance(answer.value, str) or not answer.value.strip():
                raise _FieldError(answer.path, f"expected the written text, got {_show(answer.value)}")
            if isinstance(field, str) and fields.get(field) is not None:
                original = _argilla_field(fields, prefix, field)
                records.append(
                    Edit(
                        **common(answer),
                        response_id=text_id(original),
                        original=original,
                        edited=answer.value,
                        metadata={"question": question},
                    )
                )
            else:
                records.append(
                    Demonstration(**common(answer), response=answer.value, metadata={"question": question})
                )
    return records


def load_argilla(
    source: Any,
    *,
    mapping: Mapping[str, Any] | None = None,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """Argilla v2 record exports (nested or flattened) -> feedback records of submitted responses.

    ``mapping`` overrides entries of :data:`ARGILLA_MAPPING` (which fields hold the prompt and responses,
    which questions are ratings, labels, preferences, rankings and edits).
    """
    merged = _merge_mapping(ARGILLA_MAPPING, mapping, "Argilla")
    return _load_records(
        source,
        lambda row, where: _parse_argilla(row, merged),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# -------------------------------------------------------------------------------------- Label Studio


def _keys(spec: Any) -> list[str]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) else [str(s) for s in spec]


class _Task:
    """Lazy access to a Label Studio task's data (a task without annotations needs none of it)."""

    def __init__(self, row: Mapping[str, Any], mapping: dict[str, Any]):
        self.data = _mapping("data", row.get("data"))
        self.mapping = mapping
        self.task_id = _optional_id(row, "id")
        self._prompt: Text | None = None

    def find(self, role: str, *, required: bool = True) -> tuple[str, Any] | None:
        keys = _keys(self.mapping[role])
        for key in keys:
            if self.data.get(key) is not None:
                return key, self.data[key]
        if not required:
            return None
        shown = ", ".join(f"data.{k}" for k in keys) or "(none)"
        raise _FieldError(
            f"data.{keys[0]}" if keys else "data",
            f"missing (looked for {shown}); name the key with mapping={{'{role}': ...}}",
        )

    def text(self, role: str) -> Text:
        key, value = self.find(role)  # type: ignore[misc]
        return _text(f"data.{key}", value)

    @property
    def prompt(self) -> Text:
        if self._prompt is None:
            self._prompt = self.text("prompt")
        return self._prompt

    @property
    def item_id(self) -> str:
        return self.task_id if self.task_id is not None else text_id(self.prompt)


def _ls_rater(path: str, value: Any) -> str:
    if isinstance(value, Mapping):  # some exports expand the user: {"id", "email", ...}
        # The id first: the plain form of the same export holds only the id, and one annotator must be
        # one rater whichever form an annotation uses (the e-mail is also personal data).
        for key in ("id", "email"):
            if value.get(key) not in (None, ""):
                return _id(f"{path}.{key}", value[key])
        raise _FieldError(path, "expected a user id, or an object with 'email' or 'id'")
    if value is None:
        raise _FieldError(path, "missing; the annotator is the rater")
    return _id(path, value)


def _ls_items(task: _Task) -> tuple[dict[str, int], list[RankedResponse]]:
    key, items = task.find("items")  # type: ignore[misc]
    base = f"data.{key}"
    items = _list(base, items, "a list of {id, title, body} items")
    index: dict[str, int] = {}
    responses: list[RankedResponse] = []
    for i, item in enumerate(items):
        item = _mapping(f"{base}[{i}]", item, "an item object with 'id' and 'body'")
        item_id = _id(f"{base}[{i}].id", item.get("id"))
        for text_key in ("body", "title", "html"):
            if item.get(text_key) is not None:
                text = _text(f"{base}[{i}].{text_key}", item[text_key])
                break
        else:
            raise _FieldError(f"{base}[{i}].body", "missing")
        if item_id in index:
            raise _FieldError(f"{base}[{i}].id", f"id {_show(item_id)} is used twice")
        index[item_id] = i
        responses.append(RankedResponse(text_id(text), text))
    if len({r.id for r in responses}) != len(responses):
        raise _FieldError(base, "two items hold the same text")
    return index, responses


def _ls_ranking(
    task: _Task, path: str, value: Mapping[str, Any], common: dict[str, Any], meta: dict[str, Any]
) -> Ranking:
    ranker = value.get("ranker")
    rpath = f"{path}.ranker"
    index, responses = _ls_items(task)
    ranks: list[int | None] = [None] * len(responses)

    def place(ids: Any, rank_of: Callable[[int], int], where: str) -> None:
        for position, item in enumerate(_list(where, ids, "a list of item ids")):
            if isinstance(item, bool) or not isinstance(item, (str, int)) or str(item) not in index:
                raise _FieldError(
                    f"{where}[{position}]", f"{_show(item)} is not the id of an item of the task"
                )
            slot = index[str(item)]
            if ranks[slot] is not None:
                raise _FieldError(f"{where}[{position}]", f"item {_show(item)} is placed twice")
            ranks[slot] = rank_of(position)

    if isinstance(ranker, (list, tuple)):  # older exports: the ids in the new order
        place(ranker, lambda p: p + 1, rpath)
    else:
        ranker = _mapping(rpath, ranker, "a list of ids, or an object of bucket -> ids")
        buckets = [str(b) for b in ranker if b != "_"]
        order = _keys(task.mapping["buckets"])
        if order:
            for bucket in buckets:
                if bucket not in order:
                    raise _FieldError(
                        f"{rpath}.{bucket}", f"bucket not in mapping['buckets'] ({', '.join(order)})"
                    )
            buckets = [b for b in order if b in ranker]
        plain = "_" not in ranker and len(buckets) == 1 and meta.get("from_name") in (None, buckets[0])
        if plain:  # a Ranker without buckets: {ranker name: ids best first}
            place(ranker[buckets[0]], lambda p: p + 1, f"{rpath}.{buckets[0]}")
        else:  # buckets, best first; items within a bucket tie; "_" holds the unsorted ones
            for rank, bucket in enumerate(buckets, start=1):
                place(ranker[bucket], lambda p, r=rank: r, f"{rpath}.{bucket}")
    if sum(r is not None for r in ranks) < 2:
        raise _FieldError(rpath, "at least two items must be ranked")
    return Ranking(**common, responses=tuple(responses), ranks=tuple(ranks), metadata=meta)


def _ls_result(
    task: _Task, path: str, result: Any, common_of: Callable[[], dict], meta: dict
) -> Feedback | None:
    result = _mapping(path, result, "a result object with 'type' and 'value'")
    kind = result.get("type")
    if kind not in ("pairwise", "rating", "ranker", "textarea"):
        return None  # Choices, Labels... carry no preference that these records hold
    value = _mapping(f"{path}.value", result.get("value"))
    vpath = f"{path}.value"
    from_name = result.get("from_name")
    meta = {**meta, "from_name": from_name} if isinstance(from_name, str) else dict(meta)
    common = common_of()
    if kind == "pairwise":
        selected = value.get("selected")
        if selected not in ("left", "right"):
            raise _FieldError(f"{vpath}.selected", f"expected 'left' or 'right', got {_show(selected)}")
        a, b = task.text("left"), task.text("right")
        return Comparison(
            **common,
            a_id=text_id(a),
            a=a,
            b_id=text_id(b),
            b=b,
            winner="a" if selected == "left" else "b",
            metadata=meta,
        )
    if kind == "rating":
        rating = _number(f"{vpath}.rating", value.get("rating"), low=0)
        response = task.text("response")
        return Rating(**common, response_id=text_id(response), response=response, value=rating, metadata=meta)
    if kind == "ranker":
        return _ls_ranking(task, vpath, value, common, meta)
    texts = value.get("text")
    if isinstance(texts, str):
        texts = [texts]
    texts = _list(f"{vpath}.text", texts, "a list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _FieldError(f"{vpath}.text[{i}]", f"expected a string, got {_type_name(text)}")
    written = "\n".join(t for t in texts if t.strip())
    if not written:
        raise _FieldError(f"{vpath}.text", "expected the written text, got none")
    found = task.find("response", required=False)
    if found is None:
        return Demonstration(**common, response=written, metadata=meta)
    original = _text(f"data.{found[0]}", found[1])
    return Edit(**common, response_id=text_id(original), original=original, edited=written, metadata=meta)


def _parse_label_studio(row: Any, mapping: dict[str, Any]) -> list[Feedback]:
    row = _row(row, "'data' and 'annotations' (a Label Studio task)")
    task = _Task(row, mapping)
    name = "annotations" if row.get("annotations") is not None or "completions" not in row else "completions"
    annotations = row.get(name)
    if annotations is None:
        return []
    records: list[Feedback] = []
    for i, annotation in enumerate(_list(name, annotations, "a list of annotations")):
        base = f"{name}[{i}]"
        annotation = _mapping(base, annotation, "an annotation object")
        cancelled = annotation.get("was_cancelled")
        if cancelled not in (None, True, False):
            raise _FieldError(f"{base}.was_cancelled", f"expected true or false, got {_show(cancelled)}")
        if cancelled:
            continue
        results = annotation.get("result")
        if results is None:
            continue
        results = _list(f"{base}.result", results, "a list of results")
        if not results:
            continue
        rater = _ls_rater(f"{base}.completed_by", annotation.get("completed_by"))
        created = annotation.get("created_at")
        if created is not None and not isinstance(created, str):
            raise _FieldError(f"{base}.created_at", f"expected an ISO 8601 string, got {_type_name(created)}")
        meta: dict[str, Any] = {}
        if annotation.get("id") is not None and not isinstance(annotation.get("id"), (dict, list)):
            meta["annotation_id"] = annotation["id"]

        def common(rater: str = rater, created: Any = created) -> dict[str, Any]:
            return {
                "rater_id": rater,
                "item_id": task.item_id,
                "prompt": task.prompt,
                "timestamp": created or None,
            }

        for j, result in enumerate(results):
            record = _ls_result(task, f"{base}.result[{j}]", result, common, meta)
            if record is not None:
                records.append(record)
    return records


def load_label_studio(
    source: Any,
    *,
    mapping: Mapping[str, Any] | None = None,
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """A Label Studio JSON export -> Comparison (Pairwise), Rating, Ranking (Ranker), Edit/Demonstration
    (TextArea) records, one per result of each annotation that was not cancelled.

    ``mapping`` overrides entries of :data:`LABEL_STUDIO_MAPPING` (the ``data`` keys of the prompt and
    responses, and the Ranker bucket order).
    """
    merged = _merge_mapping(LABEL_STUDIO_MAPPING, mapping, "Label Studio")
    return _load_records(
        source,
        lambda row, where: _parse_label_studio(row, merged),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# ---------------------------------------------------------------------------------------------- TRL


def pair_to_comparison(pair: PreferencePair, rater_id: str, item_id: str | None = None) -> Comparison:
    """A preference pair as one comparison: ``a`` = chosen, ``winner="a"``, ``strength`` = margin.

    ``item_id`` defaults to the prompt's :func:`text_id`; a pair's ``subset`` goes to the metadata.
    """
    return Comparison(
        rater_id=rater_id,
        item_id=item_id if item_id is not None else text_id(pair.prompt),
        prompt=pair.prompt,
        a_id=text_id(pair.chosen),
        a=pair.chosen,
        b_id=text_id(pair.rejected),
        b=pair.rejected,
        winner="a",
        strength=pair.margin,
        metadata={"subset": pair.subset} if pair.subset is not None else {},
    )


def _parse_trl(row: Any, where: str, rater_id: str) -> list[Comparison]:
    pair = parse_pair(row, where)
    if pair.margin is not None and pair.margin < 0:
        raise _FieldError(
            "margin", f"expected a non-negative margin (chosen beats rejected), got {pair.margin:g}"
        )
    rater = _optional_id(row, "rater_id") or rater_id
    item_id = _optional_id(row, "item_id") or _optional_id(row, "prompt_id")
    return [pair_to_comparison(pair, rater, item_id)]


def load_trl(
    source: Any,
    *,
    rater_id: str = "trl",
    split: str | None = None,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
) -> LoadedRows:
    """TRL preference rows -> Comparison records (``a`` = chosen, ``winner="a"``, ``strength`` = margin).

    A ``rater_id`` / ``item_id`` (or ``prompt_id``) column is used when present; otherwise the rater is
    ``rater_id`` and the item a hash of the prompt.
    """
    return _load_records(
        source,
        lambda row, where: _parse_trl(row, where, rater_id),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )


# ------------------------------------------------------------------------------------ detect / import


def _sniff(keys: set[str], rows: Sequence[Mapping[str, Any]]) -> str | None:
    if "data" in keys and ({"annotations", "completions", "predictions"} & keys):
        return "label-studio"
    if "fields" in keys and ("responses" in keys or "suggestions" in keys):
        return "argilla"
    if any(k.endswith((".responses", ".suggestion")) for k in keys):
        return "argilla"
    if "kind" in keys and "rater_id" in keys:
        return "prefalign"
    if {"human_ref_A", "human_ref_B"} <= keys:
        return "shp"
    if "completions" in keys and "instruction" in keys:
        return "ultrafeedback"
    if {"score_chosen", "score_rejected"} <= keys:
        return "ultrafeedback"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and all(
            isinstance(r.get("chosen"), str) and _ASSISTANT in r["chosen"] for r in rows if "chosen" in r
        ):
            return "hh-rlhf"
        return "trl"
    return None


def detect_format(source: Any, *, split: str | None = None, rows: int = 5) -> str:
    """The format of ``source`` (one of :data:`FORMATS`), from the keys of its first object rows."""
    raw_rows, label = _open_source(source, split)
    sample: list[Mapping[str, Any]] = []
    for _, raw in raw_rows:
        if isinstance(raw, Mapping):
            sample.append(raw)
            if len(sample) >= rows:
                break
    keys = {str(k) for row in sample for k in row}
    found = _sniff(keys, sample)
    if found is None:
        shown = ", ".join(sorted(keys)[:12]) or "(no object rows)"
        raise DataError(
            label, 1, "<file>", f"cannot tell the feedback format from the fields {shown}; pass format=..."
        )
    return found


_LOADERS: dict[str, Callable[..., LoadedRows]] = {
    "prefalign": load_feedback,
    "hh-rlhf": load_hh_rlhf,
    "ultrafeedback": load_ultrafeedback,
    "shp": load_shp,
    "argilla": load_argilla,
    "label-studio": load_label_studio,
    "trl": load_trl,
}


def import_feedback(
    source: Any,
    format: str = "auto",
    *,
    on_error: OnError = "raise",
    report_path: str | os.PathLike | None = None,
    split: str | None = None,
    **options: Any,
) -> LoadedRows:
    """Import ``source`` in ``format`` (``"auto"`` detects it) into records, or pairs for HH-RLHF.

    ``options`` go to the format's loader (``aspect=`` for UltraFeedback, ``mapping=`` for Argilla and
    Label Studio, ``min_score_ratio=`` for SHP, ``as_text=`` for HH-RLHF, ``scale=`` for prefalign...).
    The result is a list with ``errors`` (the rows skipped with ``on_error="skip"``).
    """
    name = format.strip().lower().replace("_", "-")
    if name == "auto":
        name = detect_format(source, split=split)
    elif name == "labelstudio":
        name = "label-studio"
    elif name == "hh":
        name = "hh-rlhf"
    if name not in _LOADERS:
        raise ValueError(f"unknown feedback format {format!r}; choose auto or one of {', '.join(FORMATS)}")
    return _LOADERS[name](source, split=split, on_error=on_error, report_path=report_path, **options)


__all__ = [
    "ARGILLA_MAPPING",
    "FORMATS",
    "LABEL_STUDIO_MAPPING",
    "ULTRAFEEDBACK_ASPECTS",
    "ULTRAFEEDBACK_SCALES",
    "detect_format",
    "import_feedback",
    "load_argilla",
    "load_hh_rlhf",
    "load_label_studio",
    "load_shp",
    "load_trl",
    "load_ultrafeedback",
    "pair_to_comparison",
]
