"""Manifest parsing: every bad line reported with its editor line number, nothing partial."""

from __future__ import annotations

import json

import pytest

from shared.batch.manifest import ManifestError, describe, parse


def jl(*objs) -> bytes:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs).encode()


def test_good_lines_keep_their_numbers_across_blank_lines():
    lines, errors = parse(jl({"custom_id": "a", "body": {}}, "", {"custom_id": "b", "body": {
        "x": 1}}), max_lines=10, max_bytes=1 << 20)
    assert not errors
    assert [(x.number, x.custom_id, x.body) for x in lines] == [(1, "a", {}), (3, "b", {"x": 1})]


@pytest.mark.parametrize("line, problem", [
    ("{not json", "is not JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"body": {}}), "custom_id must be a non-empty string"),
    (json.dumps({"custom_id": "", "body": {}}), "custom_id must be a non-empty string"),
    (json.dumps({"custom_id": "x" * 65, "body": {}}), "longer than 64"),
    (json.dumps({"custom_id": "a"}), "body must be a JSON object"),
    (json.dumps({"custom_id": "a", "body": "text"}), "body must be a JSON object"),
    (json.dumps({"custom_id": "a", "file": "x.png"}), "`file` lines are for the CLI"),
    (json.dumps({"custom_id": "a", "body": {}, "extra": 1}), "unknown keys ['extra']"),
])
def test_each_bad_line_is_named(line, problem):
    _, errors = parse(jl({"custom_id": "ok", "body": {}}, line), max_lines=10,
                      max_bytes=1 << 20)
    assert len(errors) == 1 and errors[0].number == 2 and problem in errors[0].message


def test_repeated_custom_id_names_the_first_line():
    _, errors = parse(jl({"custom_id": "a", "body": {}}, {"custom_id": "b", "body": {}},
                         {"custom_id": "a", "body": {}}), max_lines=10, max_bytes=1 << 20)
    assert [(e.number, e.message) for e in errors] == [(3, "custom_id 'a' repeats line 1")]


def test_all_bad_lines_are_reported_together():
    _, errors = parse(jl("x", {"custom_id": "a", "body": {}}, "y", "z"), max_lines=10,
                      max_bytes=1 << 20)
    assert [e.number for e in errors] == [1, 3, 4]
    assert describe(errors).startswith("3 bad lines: line 1: is not JSON")


def test_limits_refuse_the_whole_manifest():
    with pytest.raises(ManifestError, match="limit is 2"):
        parse(jl(*({"custom_id": str(k), "body": {}} for k in range(3))), max_lines=2,
              max_bytes=1 << 20)
    with pytest.raises(ManifestError, match="bytes; the limit is 1024"):
        parse(b"x" * 2000, max_lines=10, max_bytes=1024)
    with pytest.raises(ManifestError, match="not UTF-8"):
        parse(b"\xff\xfe", max_lines=10, max_bytes=1024)
    with pytest.raises(ManifestError, match="no lines"):
        parse(b"\n\n", max_lines=10, max_bytes=1024)
