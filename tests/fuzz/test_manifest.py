"""Batch manifests (`shared.batch.manifest.parse`): any bytes give (lines, errors) or a
ManifestError; line numbers are 1-based and real; accepted custom_ids are unique."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.batch.manifest import MAX_CUSTOM_ID, ManifestError, parse
from tests.fuzz.tally import tried

MAX_LINES, MAX_BYTES = 50, 8192

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)
custom_ids = st.one_of(st.sampled_from(["a", "b", "a" * MAX_CUSTOM_ID, "a" * (MAX_CUSTOM_ID + 1),
                                        "", "..", "line\n2", "\u2028"]),
                       st.text(max_size=70), json_values)
line_objects = st.one_of(
    st.fixed_dictionaries({"custom_id": custom_ids, "body": json_values}),
    st.fixed_dictionaries({"custom_id": custom_ids},
                          optional={"body": json_values, "file": st.text(), "extra": json_values}),
    json_values,
)
raw_lines = st.one_of(line_objects.map(json.dumps),
                      line_objects.map(lambda o: json.dumps(o, ensure_ascii=False)),
                      st.sampled_from(["", "   ", "{", "}", "[]", "null", "\x00",
                                       '{"custom_id":']),
                      st.text(max_size=40))
newlines = st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\x0b", "\x1c", "\x85"])


def check(data: bytes, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
    try:
        lines, errors = parse(data, max_lines=max_lines, max_bytes=max_bytes)
    except ManifestError:
        return
    numbered = data.decode("utf-8").splitlines()
    assert lines or errors
    assert len(lines) + len(errors) <= max_lines
    numbers = [x.number for x in lines] + [e.number for e in errors]
    assert len(set(numbers)) == len(numbers)
    for n in numbers:
        assert 1 <= n <= len(numbered) and numbered[n - 1].strip()
    ids = [x.custom_id for x in lines]
    assert len(set(ids)) == len(ids)
    for x in lines:
        assert isinstance(x.custom_id, str) and 0 < len(x.custom_id) <= MAX_CUSTOM_ID
        assert isinstance(x.body, dict)
    for e in errors:
        assert str(e).startswith(f"line {e.number}: ")


@given(st.binary(max_size=2048), st.integers(1, 60), st.integers(0, 4096))
def test_arbitrary_bytes(data, max_lines, max_bytes):
    tried("batch manifest (bytes)")
    check(data, max_lines, max_bytes)


@given(st.lists(st.tuples(raw_lines, newlines), max_size=40))
def test_structured_lines(pairs):
    tried("batch manifest (JSONL)")
    check("".join(line + nl for line, nl in pairs).encode("utf-8", "surrogatepass"))
