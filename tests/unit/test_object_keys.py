"""`check_key`: object keys sent by clients (ArtifactRef.key) are plain relative paths."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidArgument
from shared.storage.artifacts import check_key, tenant_key

CLIMBING = ["tenants/a/../b/x", "tenants/a/%2e%2e/b/x", "tenants/a/..%2fb", "/tenants/a/x",
            "tenants\\a\\x", "tenants/a/x\x00", "tenants//a/x", "tenants/a/./x", "tenants/a/",
            "", "tenants/a/x\n", "tenants/a/\uff0e\uff0e/x", "tenants/a/x y"]


@pytest.mark.parametrize("key", CLIMBING)
def test_refused_naming_the_field(key):
    with pytest.raises(InvalidArgument) as e:
        check_key(key, "image_ref.key")
    assert e.value.field_violations[0][0] == "image_ref.key"


@pytest.mark.parametrize("key", ["tenants/a/uploads/0123abcd", "tenants/a/uploads/x.jsonl",
                                 "tenants/a/data/_part-0.jsonl.gz", "tenants/a/data/v=1/a..b"])
def test_keys_the_mesh_hands_out_pass(key):
    check_key(key, "f")


@given(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,20}", fullmatch=True),
                max_size=4))
def test_every_tenant_key_passes(names):
    try:
        key = tenant_key("tenant-a", *names)
    except InvalidArgument:
        return
    check_key(key, "f")


@given(st.text(alphabet="a./\\%\x00\n-_", max_size=16))
def test_what_passes_has_no_dot_segments_or_escapes(key):
    try:
        check_key(key, "f")
    except InvalidArgument:
        return
    parts = key.split("/")
    assert all(p and p not in (".", "..") for p in parts)
    assert not any(c in key for c in "\\%\x00\n")
