"""Label Studio rows -> prefalign records (one source of :mod:`prefalign.feedback.importers`).

**Label Studio** (:func:`load_label_studio`): the JSON export, a list of tasks ``{"id", "data": {...},
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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from prefalign.feedback.importers.common import merge_mapping
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
    optional_id,
    require_text,
    show,
    type_name,
)

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


def _keys(spec: Any) -> list[str]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) else [str(s) for s in spec]


class _Task:
    """Lazy access to a Label Studio task's data (a task without annotations needs none of it)."""

    def __init__(self, row: Mapping[str, Any], mapping: dict[str, Any]):
        self.data = check_mapping("data", row.get("data"))
        self.mapping = mapping
        self.task_id = optional_id(row, "id")
        self._prompt: Text | None = None

    def find(self, role: str, *, required: bool = True) -> tuple[str, Any] | None:
        keys = _keys(self.mapping[role])
        for key in keys:
            if self.data.get(key) is not None:
                return key, self.data[key]
        if not required:
            return None
        shown = ", ".join(f"data.{k}" for k in keys) or "(none)"
        raise FieldError(
            f"data.{keys[0]}" if keys else "data",
            f"missing (looked for {shown}); name the key with mapping={{'{role}': ...}}",
        )

    def text(self, role: str) -> Text:
        key, value = self.find(role)  # type: ignore[misc]
        return require_text(f"data.{key}", value)

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
                return check_id(f"{path}.{key}", value[key])
        raise FieldError(path, "expected a user id, or an object with 'email' or 'id'")
    if value is None:
        raise FieldError(path, "missing; the annotator is the rater")
    return check_id(path, value)


def _ls_items(task: _Task) -> tuple[dict[str, int], list[RankedResponse]]:
    key, items = task.find("items")  # type: ignore[misc]
    base = f"data.{key}"
    items = check_list(base, items, "a list of {id, title, body} items")
    index: dict[str, int] = {}
    responses: list[RankedResponse] = []
    for i, item in enumerate(items):
        item = check_mapping(f"{base}[{i}]", item, "an item object with 'id' and 'body'")
        item_id = check_id(f"{base}[{i}].id", item.get("id"))
        for text_key in ("body", "title", "html"):
            if item.get(text_key) is not None:
                text = require_text(f"{base}[{i}].{text_key}", item[text_key])
                break
        else:
            raise FieldError(f"{base}[{i}].body", "missing")
        if item_id in index:
            raise FieldError(f"{base}[{i}].id", f"id {show(item_id)} is used twice")
        index[item_id] = i
        responses.append(RankedResponse(text_id(text), text))
    if len({r.id for r in responses}) != len(responses):
        raise FieldError(base, "two items hold the same text")
    return index, responses


def _ls_ranking(
    task: _Task, path: str, value: Mapping[str, Any], common: dict[str, Any], meta: dict[str, Any]
) -> Ranking:
    ranker = value.get("ranker")
    rpath = f"{path}.ranker"
    index, responses = _ls_items(task)
    ranks: list[int | None] = [None] * len(responses)

    def place(ids: Any, rank_of: Callable[[int], int], where: str) -> None:
        for position, item in enumerate(check_list(where, ids, "a list of item ids")):
            if isinstance(item, bool) or not isinstance(item, (str, int)) or str(item) not in index:
                raise FieldError(f"{where}[{position}]", f"{show(item)} is not the id of an item of the task")
            slot = index[str(item)]
            if ranks[slot] is not None:
                raise FieldError(f"{where}[{position}]", f"item {show(item)} is placed twice")
            ranks[slot] = rank_of(position)

    if isinstance(ranker, (list, tuple)):  # older exports: the ids in the new order
        place(ranker, lambda p: p + 1, rpath)
    else:
        ranker = check_mapping(rpath, ranker, "a list of ids, or an object of bucket -> ids")
        buckets = [str(b) for b in ranker if b != "_"]
        order = _keys(task.mapping["buckets"])
        if order:
            for bucket in buckets:
                if bucket not in order:
                    raise FieldError(
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
        raise FieldError(rpath, "at least two items must be ranked")
    return Ranking(**common, responses=tuple(responses), ranks=tuple(ranks), metadata=meta)


def _ls_result(
    task: _Task, path: str, result: Any, common_of: Callable[[], dict], meta: dict
) -> Feedback | None:
    result = check_mapping(path, result, "a result object with 'type' and 'value'")
    kind = result.get("type")
    if kind not in ("pairwise", "rating", "ranker", "textarea"):
        return None  # Choices, Labels... carry no preference that these records hold
    value = check_mapping(f"{path}.value", result.get("value"))
    vpath = f"{path}.value"
    from_name = result.get("from_name")
    meta = {**meta, "from_name": from_name} if isinstance(from_name, str) else dict(meta)
    common = common_of()
    if kind == "pairwise":
        selected = value.get("selected")
        if selected not in ("left", "right"):
            raise FieldError(f"{vpath}.selected", f"expected 'left' or 'right', got {show(selected)}")
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
        rating = check_number(f"{vpath}.rating", value.get("rating"), low=0)
        response = task.text("response")
        return Rating(**common, response_id=text_id(response), response=response, value=rating, metadata=meta)
    if kind == "ranker":
        return _ls_ranking(task, vpath, value, common, meta)
    texts = value.get("text")
    if isinstance(texts, str):
        texts = [texts]
    texts = check_list(f"{vpath}.text", texts, "a list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise FieldError(f"{vpath}.text[{i}]", f"expected a string, got {type_name(text)}")
    written = "\n".join(t for t in texts if t.strip())
    if not written:
        raise FieldError(f"{vpath}.text", "expected the written text, got none")
    found = task.find("response", required=False)
    if found is None:
        return Demonstration(**common, response=written, metadata=meta)
    original = require_text(f"data.{found[0]}", found[1])
    return Edit(**common, response_id=text_id(original), original=original, edited=written, metadata=meta)


def _parse_label_studio(row: Any, mapping: dict[str, Any]) -> list[Feedback]:
    row = check_row(row, "'data' and 'annotations' (a Label Studio task)")
    task = _Task(row, mapping)
    name = "annotations" if row.get("annotations") is not None or "completions" not in row else "completions"
    annotations = row.get(name)
    if annotations is None:
        return []
    records: list[Feedback] = []
    for i, annotation in enumerate(check_list(name, annotations, "a list of annotations")):
        base = f"{name}[{i}]"
        annotation = check_mapping(base, annotation, "an annotation object")
        cancelled = annotation.get("was_cancelled")
        if cancelled not in (None, True, False):
            raise FieldError(f"{base}.was_cancelled", f"expected true or false, got {show(cancelled)}")
        if cancelled:
            continue
        results = annotation.get("result")
        if results is None:
            continue
        results = check_list(f"{base}.result", results, "a list of results")
        if not results:
            continue
        rater = _ls_rater(f"{base}.completed_by", annotation.get("completed_by"))
        created = annotation.get("created_at")
        if created is not None and not isinstance(created, str):
            raise FieldError(f"{base}.created_at", f"expected an ISO 8601 string, got {type_name(created)}")
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
    merged = merge_mapping(LABEL_STUDIO_MAPPING, mapping, "Label Studio")
    return load_records(
        source,
        lambda row, where: _parse_label_studio(row, merged),
        split=split,
        on_error=on_error,
        report_path=report_path,
    )
