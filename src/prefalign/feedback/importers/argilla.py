"""Argilla v2 rows -> prefalign records (one source of :mod:`prefalign.feedback.importers`).

**Argilla v2** (:func:`load_argilla`): ``rg.Dataset.records.to_list(flatten=False)`` / ``to_json``
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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prefalign.feedback.importers.common import item_id_of, merge_mapping
from prefalign.feedback.rowio import LoadedRows, OnError, load_records
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    Feedback,
    RankedResponse,
    Ranking,
    Rating,
    text_id,
)
from prefalign.feedback.validate import (
    FieldError,
    Text,
    check_id,
    check_list,
    check_mapping,
    check_number,
    check_row,
    require_text,
    show,
    type_name,
)

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
        raise FieldError(path, f"expected a response status string, got {type_name(status)}")
    return status == "submitted"


def _argilla_user(path: str, user: Any) -> str:
    if user is None:
        raise FieldError(path, "missing; the responding user is the rater")
    return check_id(path, user)


def _argilla_nested(row: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, dict[str, list]]:
    fields = row["fields"]
    responses = row.get("responses")
    out: dict[str, list[_ArgillaResponse]] = {}
    if responses is None:
        return fields, "fields.", out
    responses = check_mapping("responses", responses, "an object of question -> responses")
    for question, answers in responses.items():
        base = f"responses.{question}"
        if answers is None:
            continue
        for index, answer in enumerate(check_list(base, answers, "a list of responses")):
            path = f"{base}[{index}]"
            answer = check_mapping(path, answer, "a response object with 'value' and 'user_id'")
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
        values = check_list(key, values, "a list of response values")
        users = row.get(f"{key}.users")
        users = check_list(f"{key}.users", users, "a list of user ids, one per response")
        if len(users) != len(values):
            raise FieldError(f"{key}.users", f"has {len(users)} entries for {len(values)} responses")
        statuses = row.get(f"{key}.status")
        if statuses is not None:
            statuses = check_list(f"{key}.status", statuses, "a list of statuses, one per response")
            if len(statuses) != len(values):
                raise FieldError(f"{key}.status", f"has {len(statuses)} entries for {len(values)} responses")
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
        raise FieldError(f"{prefix}{name}", "missing")
    return require_text(f"{prefix}{name}", fields[name])


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
    entries = check_list(answer.path, answer.value, "a list of ranked options")
    names: list[str] = []
    ranks: list[int | None] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping):  # server form {"value": option, "rank": n}
            option, rank = entry.get("value"), entry.get("rank")
            if rank is not None:
                if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                    raise FieldError(
                        f"{answer.path}[{index}].rank",
                        f"expected a positive integer or null, got {show(rank)}",
                    )
        else:  # SDK form: option names best first
            option, rank = entry, index + 1
        if not isinstance(option, str) or not option.strip():
            raise FieldError(f"{answer.path}[{index}]", f"expected an option name, got {show(option)}")
        if option in names:
            raise FieldError(f"{answer.path}[{index}]", f"option {show(option)} is ranked twice")
        names.append(option)
        ranks.append(rank)
    if sum(r is not None for r in ranks) < 2:
        raise FieldError(answer.path, "at least two options must be ranked")
    responses = []
    for index, name in enumerate(names):
        if fields.get(name) is None:
            raise FieldError(
                f"{answer.path}[{index}]",
                f"option {show(name)} names no field of the record ({prefix}{name})",
            )
        text = require_text(f"{prefix}{name}", fields[name])
        responses.append(RankedResponse(text_id(text), text))
    if len({r.id for r in responses}) != len(responses):
        raise FieldError(answer.path, "two ranked options hold the same text")
    return Ranking(**common, responses=tuple(responses), ranks=tuple(ranks), metadata={"question": question})


def _parse_argilla(row: Any, mapping: dict[str, Any]) -> list[Feedback]:
    row = check_row(row, "'fields' and 'responses' (an Argilla v2 export)")
    if "fields" in row and row["fields"] is not None:
        check_mapping("fields", row["fields"])
        fields, prefix, responses = _argilla_nested(row)
    else:
        fields, prefix, responses = _argilla_flat(row)
    prompt = _argilla_field(fields, prefix, mapping["prompt"])
    item_id = item_id_of(row, prompt, "id", "_server_id")
    records: list[Feedback] = []

    def common(answer: _ArgillaResponse) -> dict[str, Any]:
        return {"rater_id": answer.user, "item_id": item_id, "prompt": prompt}

    for kind in ("rating", "label"):
        for question, field in _per_response(mapping[kind], mapping["response"]):
            for answer in responses.get(question, []):
                if kind == "rating":
                    value: float | str = check_number(answer.path, answer.value)
                else:
                    if not isinstance(answer.value, str) or not answer.value.strip():
                        raise FieldError(answer.path, f"expected a label string, got {show(answer.value)}")
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
            raise FieldError(
                f"{prefix}response_1",
                "a preference needs two response fields (response_1/response_2); name them with "
                "mapping={'responses': [field_a, field_b]}",
            )
        for answer in answers:
            label = answer.value.strip().lower() if isinstance(answer.value, str) else None
            winners = {names[0].lower(): "a", names[1].lower(): "b", "a": "a", "b": "b", "tie": "tie"}
            if label not in winners:
                raise FieldError(
                    answer.path, f"expected {names[0]!r}, {names[1]!r} or 'tie', got {show(answer.value)}"
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
                raise FieldError(answer.path, f"expected the written text, got {show(answer.value)}")
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
    merged = merge_mapping(ARGILLA_MAPPING, mapping, "Argilla")
    return load_records(
        source,
        lambda row, where: _parse_argilla(row, merged),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
