"""Fuzz load_pairs / load_sft_rows with random, mostly malformed JSONL: only DataError may escape."""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefalign.feedback import DataError, load_pairs, load_sft_rows

FIELDS = ["prompt", "chosen", "rejected", "subset", "messages", "completion", "text", "role", "content"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.sampled_from(["", " ", "ok", "user", "assistant", "robot"]),
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool", "wizard"]), scalars),
        "content": st.one_of(
            st.sampled_from(["hi", "yo", ""]),
            scalars,
            st.lists(st.dictionaries(st.text(max_size=4), scalars, max_size=2), max_size=2),
        ),
        "name": scalars,
    },
)
values = st.one_of(
    scalars,
    st.lists(st.one_of(messages, scalars), max_size=3),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
rows = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5)
json_lines = st.one_of(
    rows.map(json.dumps),
    values.map(json.dumps),
    st.text(max_size=20),  # arbitrary (mostly invalid) text
    rows.map(lambda r: json.dumps(r)[:-1]),  # truncated JSON
    st.sampled_from(  # valid rows, so skip mode has something to keep
        [
            json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}),
            json.dumps(
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
            ),
            json.dumps({"chosen": "same start, yes", "rejected": "same start, no", "subset": "s"}),
        ]
    ),
    st.sampled_from(["[" * 5000, '{"prompt": NaN}', "\ufeff{}", "", "   "]),
)
raw_lines = st.one_of(json_lines.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=12))
files = st.lists(raw_lines.map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")), min_size=1, max_size=6)


def _check(loader, lines: list[bytes], on_error: str) -> None:
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\n".join(lines) + b"\n")
        try:
            result = loader(path, on_error=on_error)
        except DataError as err:
            assert err.file == path
            assert 1 <= err.line <= len(lines)
            assert f"line {err.line}, field '{err.field}'" in str(err)
            return
        assert 1 <= len(result) <= len(lines)
        for err in result.errors:
            assert 1 <= err.line <= len(lines) and err.field
        stripped = [lines[0].removeprefix(b"\xef\xbb\xbf"), *lines[1:]]  # a BOM opens line 1 only
        non_blank = sum(bool(line.strip()) for line in stripped)
        assert len(result) + len(result.errors) == non_blank  # nothing dropped silently
    finally:
        os.unlink(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=files, on_error=st.sampled_from(["raise", "skip"]), sft=st.booleans())
def test_only_data_errors_escape(lines, on_error, sft):
    _check(load_sft_rows if sft else load_pairs, lines, on_error)
