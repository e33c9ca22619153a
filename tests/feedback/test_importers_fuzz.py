"""Fuzz the importers with malformed rows: only DataError may escape, every rejection names its line,
and the valid rows mixed into the file are never dropped.

Each example writes one file of ROWS_PER_FILE rows: VALID_PER_FILE untouched valid rows (from the
fixtures) at random places, the rest malformed -- valid rows mutated 1-3 times (fields removed,
retyped, emptied, swapped, junk added) by a seeded RNG, plus hypothesis-drawn arbitrary JSON values,
non-object JSON, broken JSON and binary junk. With MAX_EXAMPLES examples for each of the VARIANTS that
is MAX_EXAMPLES * len(VARIANTS) * (ROWS_PER_FILE - VALID_PER_FILE) = 10,368 malformed rows, of which
:func:`test_mutated_rows_reach_the_validators` checks that most are really rejected.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefalign.feedback.formats import PreferencePair
from prefalign.feedback.importers import (
    load_argilla,
    load_hh_rlhf,
    load_label_studio,
    load_shp,
    load_trl,
    load_ultrafeedback,
)
from prefalign.feedback.validate import DataError

EXTERNAL = Path(__file__).resolve().parents[1] / "fixtures" / "feedback" / "external"
MAX_EXAMPLES = 12
ROWS_PER_FILE = 120
VALID_PER_FILE = 12


def _rows(name: str) -> list[Any]:
    text = (EXTERNAL / name).read_text()
    if name.endswith(".json"):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# name: (loader, valid rows, write as a JSON array export)
VARIANTS: dict[str, tuple[Any, list[Any], bool]] = {
    "hh-rlhf": (load_hh_rlhf, _rows("hh_rlhf.jsonl"), False),
    "ultrafeedback-raw": (load_ultrafeedback, _rows("ultrafeedback.jsonl"), False),
    "ultrafeedback-binarized": (load_ultrafeedback, _rows("ultrafeedback_binarized.jsonl"), False),
    "shp": (load_shp, _rows("shp.jsonl"), False),
    "argilla-nested": (load_argilla, _rows("argilla.json"), True),
    "argilla-flat": (load_argilla, _rows("argilla_flat.jsonl"), False),
    "label-studio": (load_label_studio, _rows("label_studio.json"), True),
    "trl": (load_trl, _rows("trl.jsonl"), False),
}

JUNK: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    -3,
    11,
    10**400,
    1e308,
    float("nan"),
    float("inf"),
    2.5,
    "",
    " ",
    "N/A",
    "5",
    "left",
    "right",
    "tie",
    "a",
    "submitted",
    "draft",
    "response_1",
    "rank",
    "_",
    "\n\nHuman: hi\n\nAssistant: yo",
    "\n\nAssistant:",
    "x" * 50,
    [],
    {},
    [1, 2],
    ["a", "b"],
    [None],
    [[]],
    {"a": 1},
    {"role": "user", "content": "hi"},
    [{"role": "user", "content": "hi"}],
    [{"role": "assistant", "content": "yo"}],
    [{"role": "wizard", "content": 3}],
    {"selected": "left"},
    {"rating": 3},
    {"ranker": ["a", "b"]},
    {"text": ["t"]},
    [{"value": "x", "user_id": "u"}],
    [{"value": "response_1", "rank": 0}],
]


def _slots(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) in a nested JSON value."""
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            _slots(value[key], out)
    elif isinstance(value, list):
        for index in range(len(value)):
            out.append((value, index))
            _slots(value[index], out)
    return out


def _mutate_once(row: Any, rng: random.Random) -> Any:
    slots = _slots(row, [])
    if not slots:
        return rng.choice(JUNK)
    container, key = rng.choice(slots)
    op = rng.randrange(8)
    if op == 0:  # remove the field / list item
        del container[key]
    elif op == 1:  # junk value
        container[key] = copy.deepcopy(rng.choice(JUNK))
    elif op == 2:  # null / empty of the same kind
        value = container[key]
        container[key] = type(value)() if isinstance(value, (str, list, dict)) else None
    elif op == 3:  # retype: wrap in a list, or stringify
        value = container[key]
        container[key] = [value] if rng.random() < 0.5 else json.dumps(value)
    elif op == 4:  # value of another slot
        other, other_key = rng.choice(slots)
        container[key] = copy.deepcopy(other[other_key])
    elif op == 5 and isinstance(container, dict):  # an unknown extra field
        container[f"extra_{rng.randrange(5)}"] = copy.deepcopy(rng.choice(JUNK))
    elif op == 6 and isinstance(container, list):  # duplicate an item
        container.append(copy.deepcopy(container[key]))
    else:  # a number in place of anything
        container[key] = rng.choice([0, -1, 7, 0.5, 1e400 if rng.random() < 0.1 else 3])
    return row


def _malformed(valid: list[Any], rng: random.Random) -> Any:
    row = copy.deepcopy(rng.choice(valid))
    for _ in range(rng.randint(1, 3)):
        row = _mutate_once(row, rng)
    return row


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(["chosen", "rejected", "fields", "data", "annotations", "completions"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "chosen",
                    "rejected",
                    "prompt",
                    "fields",
                    "responses",
                    "data",
                    "annotations",
                    "result",
                    "value",
                ]
            )
            | st.text(max_size=4),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
garbage_lines = st.sampled_from(['{"chosen": ', "not json", "[" * 3000, "{'single': 1}", "\x00\x01", "NaN,"])


def _comparable(record: Any) -> str:
    if isinstance(record, PreferencePair):
        record = dataclasses.replace(record, source=None)
    return repr(record)


def _check(variant: str, seed: int, extra: list[Any], garbage: list[str]) -> None:
    loader, valid, as_array = VARIANTS[variant]
    rng = random.Random(seed)
    rows: list[Any] = [_malformed(valid, rng) for _ in range(ROWS_PER_FILE - VALID_PER_FILE - len(extra))]
    rows += extra
    positions = sorted(rng.sample(range(ROWS_PER_FILE), VALID_PER_FILE))
    for position in positions:
        rows.insert(position, copy.deepcopy(rng.choice(valid)))
    assert len(rows) == ROWS_PER_FILE
    lines = [json.dumps(row) for row in rows]
    if not as_array:  # JSONL can also hold lines that are not JSON at all
        for text in garbage:
            slot = rng.randrange(len(lines))
            if slot + 1 not in {p + 1 for p in positions}:
                lines[slot] = text
    valid_lines = {p + 1 for p in positions}
    suffix = ".json" if as_array else ".jsonl"
    fd, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("[\n" + ",\n".join(lines) + "\n]\n" if as_array else "\n".join(lines) + "\n")
        result = loader(path, on_error="skip")  # anything raised here fails the test
        seen_lines = set()
        for error in result.errors:
            assert isinstance(error, DataError) and error.file == path
            assert 1 <= error.line <= ROWS_PER_FILE and error.line not in valid_lines
            assert isinstance(error.field, str) and error.field
            assert f"line {error.line}, field '{error.field}'" in str(error)
            assert error.line not in seen_lines  # one rejection per row
            seen_lines.add(error.line)
        # valid rows are never dropped: their records are all in the result
        expected = Counter(_comparable(r) for p in positions for r in loader([rows[p]]))
        got = Counter(_comparable(r) for r in result)
        assert not expected - got
        # raise mode stops at the first rejected row, or returns the same records
        try:
            strict = loader(path)
        except DataError as error:
            assert result.errors and (error.line, error.field) == (
                result.errors[0].line,
                result.errors[0].field,
            )
        else:
            assert not result.errors and [_comparable(r) for r in strict] == [_comparable(r) for r in result]
    finally:
        os.unlink(path)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mutated_rows_reach_the_validators(variant: str) -> None:
    """The mutations exercise the validators, not only the happy path: of one file's worth of mutated
    rows, a good share is rejected, on more than one field (a mutation may leave a row valid -- an
    extra field, a value swapped for another of the same kind -- but most must not)."""
    loader, valid, _ = VARIANTS[variant]
    rng = random.Random(0)
    rows = [_malformed(valid, rng) for _ in range(ROWS_PER_FILE - VALID_PER_FILE)]
    result = loader(rows, on_error="skip")
    assert len(result.errors) >= len(rows) // 4
    assert len({error.field for error in result.errors}) >= 2
    assert sorted({error.line for error in result.errors}) == sorted(error.line for error in result.errors)
    assert all(error.file == "<rows>" and 1 <= error.line <= len(rows) for error in result.errors)


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    extra=st.lists(json_values, max_size=8),
    garbage=st.lists(garbage_lines, max_size=3),
)
def test_importers_survive_malformed_rows(
    variant: str, seed: int, extra: list[Any], garbage: list[str]
) -> None:
    _check(variant, seed, extra, garbage)
