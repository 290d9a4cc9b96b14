"""Hypothesis profiles for the fuzz suite: "ci" (default, quick) and "long" (`make fuzz`), chosen
by JOBMESH_FUZZ_PROFILE. At the end of the session the number of inputs given to each decoder is
printed, for the figures in docs/RELIABILITY.md."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.fuzz.tally import TRIED

# No example database: failures print a reproduction blob, and CI checkouts stay clean.
settings.register_profile("ci", max_examples=200, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("JOBMESH_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)


def pytest_terminal_summary(terminalreporter):
    if not TRIED:
        return
    terminalreporter.section(f"fuzz inputs per decoder (profile {PROFILE}: "
                             f"{settings().max_examples} examples per test)")
    for decoder, count in sorted(TRIED.items()):
        terminalreporter.write_line(f"{decoder:<48} {count:>8}")
