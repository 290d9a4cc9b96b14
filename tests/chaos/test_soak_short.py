"""The soak's code (bench/soak.py) for SOAK_S seconds at a low rate, on the chaos suite's stack
with a textgen worker and gateway added: no request fails, every due request is sent, RSS is
sampled for every process (prefork children included) and the report renders.

The 5% RSS-growth limit is NOT asserted here: 20 s is too short to tell growth from warm-up
noise. `make soak` (10 minutes by default) asserts it through its exit code."""

from __future__ import annotations

import pytest

from bench import machine
from bench.soak import measure, report_lines, start_domains
from tests.conftest import auth

pytestmark = pytest.mark.chaos

SOAK_S = 20.0
RATE = 1.0  # requests/s, OCR and Generate alternating
TEXTGEN = ("worker-textgen", "gateway-textgen")


@pytest.fixture
def soak_addresses(chaos_stack):
    """{ocr, textgen} addresses: the chaos stack's OCR gateway, and textgen started here."""
    from shared.config import Settings

    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v
                           for k, v in chaos_stack.env.items()})
    try:
        yield {**start_domains(chaos_stack, settings, ("textgen",)), "ocr": chaos_stack.gateway}
    finally:
        for name in TEXTGEN:
            chaos_stack.stop(name)


def test_soak_short_run_has_no_errors_and_reports(chaos_stack, soak_addresses):
    result = measure(soak_addresses, chaos_stack.procs, SOAK_S, RATE, sample_s=2.0,
                     metadata=auth())
    report = "\n".join(report_lines({"machine": machine.describe(), "load": {}, **result}))
    print("\n" + report)
    assert result["errors"] == 0, result["methods"]
    assert result["sent"] == result["due"] == int(SOAK_S * RATE) and result["not_sent"] == 0
    assert set(result["methods"]) == {"ocr.Recognize", "textgen.Generate"}
    assert all(m["differing_answers"] == 0 for m in result["methods"].values())
    sampled = set(result["rss"])
    assert {"gateway-ocr", "worker-ocr", "worker-ocr/child1", "worker-textgen/child1",
            "gateway-textgen", "s3"} <= sampled, sampled
    assert result["rss_samples"] >= SOAK_S / 2.0
    for row in ("| ocr.Recognize |", "| textgen.Generate |", "| worker-textgen/child1 |",
                "Growth after warm-up"):
        assert row in report
