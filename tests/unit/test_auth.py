import pytest

from shared.auth import KeyRing


def test_keys_from_file_and_inline(tmp_path):
    f = tmp_path / "keys.yaml"
    f.write_text("k1: {tenant: team-a, role: tenant}\nk2: {tenant: ops, role: admin}\n")
    ring = KeyRing.load(f, "k3=team-b:tenant")
    assert ring.lookup("k1").tenant == "team-a" and not ring.lookup("k1").is_admin
    assert ring.lookup("k2").is_admin
    assert ring.lookup("k3").tenant == "team-b"
    assert ring.lookup("nope") is None and ring.lookup("") is None


@pytest.mark.parametrize("inline", ["k=Bad Tenant:tenant", "k=team:root", "k=../x:tenant"])
def test_bad_entries_fail_fast(inline):
    with pytest.raises(ValueError):
        KeyRing.load(None, inline)
