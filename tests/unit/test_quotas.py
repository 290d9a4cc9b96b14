"""Which limits a call is held to: per-key YAML overrides over the gateway's defaults."""

import pytest

from shared.auth import KeyRing, Principal
from shared.config import Settings
from shared.server.quotas import TenantLimits, limits_for


def test_defaults_are_off():
    assert limits_for(Principal("a"), Settings()) == TenantLimits(0.0, 1, 0)


def test_burst_defaults_to_one_second_of_calls():
    s = Settings(tenant_rate_per_s=2.5, tenant_max_active_jobs=7)
    assert limits_for(Principal("a"), s) == TenantLimits(2.5, 3, 7)
    assert limits_for(Principal("a"), Settings(tenant_rate_per_s=2.5,
                                               tenant_rate_burst=10)).burst == 10


def test_key_overrides_win_and_zero_exempts(tmp_path):
    f = tmp_path / "keys.yaml"
    f.write_text("k1: {tenant: team-a, role: tenant, rate_per_s: 50, rate_burst: 100,"
                 " max_active_jobs: 3}\n"
                 "k2: {tenant: ops, role: admin, rate_per_s: 0, max_active_jobs: 0}\n"
                 "k3: {tenant: team-b, role: tenant}\n")
    ring = KeyRing.load(f)
    s = Settings(tenant_rate_per_s=5, tenant_max_active_jobs=10)
    assert limits_for(ring.lookup("k1"), s) == TenantLimits(50.0, 100, 3)
    assert limits_for(ring.lookup("k2"), s) == TenantLimits(0.0, 1, 0)
    assert limits_for(ring.lookup("k3"), s) == TenantLimits(5.0, 5, 10)


@pytest.mark.parametrize("entry", ["rate_per_s: -1", "max_active_jobs: 1.5",
                                   "rate_burst: many", "max_active_jobs: true"])
def test_bad_limits_fail_fast(tmp_path, entry):
    f = tmp_path / "keys.yaml"
    f.write_text(f"k1: {{tenant: team-a, {entry}}}\n")
    with pytest.raises(ValueError, match=entry.split(":")[0]):
        KeyRing.load(f)
