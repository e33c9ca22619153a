"""UltraFeedback rows -> prefalign records (one source of :mod:`prefalign.feedback.importers`).

**UltraFeedback** (:func:`load_ultrafeedback`): the raw ``openbmb/UltraFeedback`` rows
(https://github.com/OpenBMB/UltraFeedback README "Dataset Format": ``instruction``, optional
``prompt_id``/``source``, ``completions: [{model, response, annotations: {helpfulness | honesty |
instruction_following | truthfulness: {Rating: "1".."5" or "N/A", Rationale}}, overall_score (1-10),
fine-grained_score (1-5)}]``) give one :class:`Rating` per completion (a ``"N/A"`` aspect rating gives
none); the binarized rows (``HuggingFaceH4/ultrafeedback_binarized``: ``prompt``, ``prompt_id``,
``chosen``, ``rejected`` as text or message lists, ``score_chosen``, ``score_rejected``) give two.
The rater is GPT-4 (``rater_id="gpt-4"``), the item the ``prompt_id`` or a hash of the prompt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prefalign.feedback.importers.common import item_id_of
from prefalign.feedback.rowio import LoadedRows, OnError, load_records
from prefalign.feedback.schema import Rating, RatingScale, text_id
from prefalign.feedback.validate import (
    FieldError,
    Text,
    check_list,
    check_mapping,
    check_number,
    check_row,
    optional_str,
    require_text,
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

ULTRAFEEDBACK_ASPECTS: tuple[str, ...] = ("helpfulness", "honesty", "instruction_following", "truthfulness")
#: The scale of each UltraFeedback value (``aspect=`` of :func:`load_ultrafeedback`; ``"score"`` is the
#: binarized ``score_chosen``/``score_rejected``), for aggregation with the right range.
ULTRAFEEDBACK_SCALES: dict[str, RatingScale] = {
    "overall": RatingScale(1, 10),
    "fine-grained": RatingScale(1, 5),
    "score": RatingScale(1, 10),
    **{aspect: RatingScale(1, 5) for aspect in ULTRAFEEDBACK_ASPECTS},
}


def _uf_value(base: str, completion: Mapping[str, Any], aspect: str) -> float | None:
    if aspect == "overall":
        return check_number(f"{base}.overall_score", completion.get("overall_score"), low=1, high=10)
    if aspect == "fine-grained":
        return check_number(f"{base}.fine-grained_score", completion.get("fine-grained_score"), low=1, high=5)
    annotations = check_mapping(f"{base}.annotations", completion.get("annotations"))
    path = f"{base}.annotations.{aspect}"
    rating = check_mapping(path, annotations.get(aspect)).get("Rating")
    if isinstance(rating, str) and rating.strip().upper() == "N/A":
        return None  # the annotator judged the aspect not applicable
    return check_number(f"{path}.Rating", rating, low=1, high=5)


def _uf_raw(row: Mapping[str, Any], aspect: str, rater_id: str) -> list[Rating]:
    prompt = require_text("instruction", row.get("instruction"))
    item_id = item_id_of(row, prompt, "prompt_id", "id")
    completions = check_list("completions", row.get("completions"), "a list of completions")
    ratings = []
    for index, completion in enumerate(completions):
        base = f"completions[{index}]"
        completion = check_mapping(base, completion)
        response = require_text(f"{base}.response", completion.get("response"))
        model = optional_str(f"{base}.model", completion.get("model"))
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
        raise FieldError(field, "expected the conversation to end with the assistant's reply")
    if cut == 0:
        raise FieldError(field, "expected the user's turn before the assistant's reply")
    return messages[:cut], messages[cut:]


def _uf_binarized(row: Mapping[str, Any], rater_id: str) -> list[Rating]:
    texts = {f: require_text(f, row.get(f)) for f in ("chosen", "rejected")}
    if isinstance(texts["chosen"], list) != isinstance(texts["rejected"], list):
        raise FieldError("rejected", "'chosen' and 'rejected' must both be text or both message lists")
    if isinstance(texts["chosen"], list):
        prompt, chosen = _answer_after_prompt("chosen", texts["chosen"])
        rejected_prompt, rejected = _answer_after_prompt("rejected", texts["rejected"])
        if rejected_prompt != prompt:
            raise FieldError("rejected", "does not share the conversation before the reply with 'chosen'")
        responses: dict[str, Text] = {"chosen": chosen, "rejected": rejected}
    else:
        prompt = require_text("prompt", row.get("prompt"))
        responses = dict(texts)
    item_id = item_id_of(row, prompt, "prompt_id")
    return [
        Rating(
            rater_id=rater_id,
            item_id=item_id,
            prompt=prompt,
            response_id=text_id(responses[label]),
            response=responses[label],
            value=check_number(f"score_{label}", row.get(f"score_{label}"), low=1, high=10),
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
        row = check_row(row, "'instruction' and 'completions', or 'chosen'/'rejected' with scores")
        if "completions" in row or "instruction" in row:
            return _uf_raw(row, aspect, rater_id)
        if "score_chosen" in row or "score_rejected" in row or "chosen" in row:
            return _uf_binarized(row, rater_id)
        raise FieldError(
            "<row>",
            "expected 'instruction' + 'completions' (raw) or 'chosen'/'rejected' + scores (binarized)",
        )

    return load_records(source, parse, split=split, on_error=on_error, report_path=report_path)
