"""Names that become storage keys and job ids: `shared.storage.artifacts.tenant_key`/`owned_by`
and `shared.jobs.convert.job_id_from_name`, fed path-traversal-looking strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shared  # noqa: F401 - puts the generated jobmesh.* stubs on sys.path
from shared.errors import InvalidArgument
from shared.jobs.convert import job_id_from_name
from shared.storage.artifacts import owned_by, tenant_key
from tests.fuzz.tally import tried

TRICKY = ["..", ".", "/", "//", "%2e%2e", "%2f", "..%2f", "\\..\\", "a/../b", "a\x00b",
          "\u2024\u2024", "\uff0e\uff0e", "\u2215", "a\n", "\n", "tenant-a", "t", "", " ", "~"]
parts = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from("aZ09._=-/%\\\n\x00\u2024\uff0e"), max_size=12),
    st.text(max_size=12),
    st.lists(st.sampled_from(TRICKY + ["a", "b"]), min_size=1, max_size=4).map("".join),
)


def check_key(tenant: str, names: list[str]) -> str | None:
    try:
        key = tenant_key(tenant, *names)
    except InvalidArgument as exc:
        assert exc.field_violations and exc.field_violations[0][0] == "key"
        return None
    assert key.startswith(f"tenants/{tenant}/") or (not names and key == f"tenants/{tenant}")
    assert ".." not in key.split("/") and "//" not in key
    assert key.split("/") == ["tenants", tenant, *names]
    if names:
        assert owned_by(tenant, key)
    return key


@given(parts, st.lists(parts, max_size=4))
def test_tenant_key(tenant, names):
    tried("storage tenant_key/owned_by")
    check_key(tenant, names)


@given(parts, st.lists(parts, min_size=1, max_size=4))
def test_owned_by_never_lets_one_tenant_read_another(tenant, names):
    tried("storage owned_by (cross-tenant)")
    key = check_key(tenant, names)
    if key is not None:
        assert not owned_by(tenant + "x", key)
        assert not any(owned_by(other, key) for other in ("", tenant[:-1]) if other != tenant)


def test_tenant_key_refuses_a_trailing_newline():
    with pytest.raises(InvalidArgument):
        tenant_key("tenant-a", "name\n")


@given(st.one_of(parts, parts.map(lambda p: "jobs/" + p),
                 st.text(alphabet="abcdef0123456789", min_size=60, max_size=70)))
def test_job_id_from_name(name):
    tried("jobs job_id_from_name")
    try:
        job_id = job_id_from_name(name)
    except InvalidArgument as exc:
        assert exc.field_violations[0][0] == "name"
        return
    assert job_id and len(job_id) <= 64 and job_id.isalnum()
    assert "/" not in job_id and "." not in job_id
