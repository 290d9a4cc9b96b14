"""The drain_templates step's logic: Loghub presets and overrides, header stripping, one Drain
pass giving templates and parameters, dedup by template in input order, the report's template
counts; and the spec's validation."""

from __future__ import annotations

import importlib.util
import typing

import pytest

from workers.curation import log_steps, loghub
from workers.curation.documents import Document
from workers.curation.steps import DrainTemplatesStep, LogSystem, PipelineError, parse_pipeline

needs_drain3 = pytest.mark.skipif(importlib.util.find_spec("drain3") is None,
                                  reason="drain3 not installed (pip install drain3==0.9.11)")

HDFS = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
    "blk_38865049064139660 terminating",
    "081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block "
    "blk_-6952295868487656571 terminating",
    "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
    "081109 204015 308 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block "
    "blk_8229193803249955061 terminating",
]


def test_log_systems_are_loghubs():
    assert set(typing.get_args(LogSystem)) == set(loghub.SYSTEMS)


def test_settings_take_the_preset_then_the_overrides():
    hdfs = loghub.SYSTEMS["HDFS"]
    step = DrainTemplatesStep(system="HDFS")
    assert log_steps.miner_settings(step) == hdfs.miner_settings()
    custom = log_steps.miner_settings(DrainTemplatesStep(system="HDFS", depth=6,
                                                         masks=[r"\d+"]))
    assert (custom.similarity, custom.depth, custom.masks) == (hdfs.similarity, 6,
                                                               ((r"\d+", "*"),))
    assert log_steps.miner_settings(DrainTemplatesStep(similarity=0.7)).similarity == 0.7


def test_contents_strip_the_systems_header_only_when_it_matches():
    docs = [Document("1", HDFS[0]), Document("2", "no header here\n  at second line"),
            Document("3", HDFS[1] + "\ncontinued")]
    got = log_steps.contents(DrainTemplatesStep(system="HDFS"), docs)
    assert got[0] == "PacketResponder 1 for block blk_38865049064139660 terminating"
    assert got[1] == docs[1].text  # mined whole
    assert got[2].endswith("terminating\ncontinued") and got[2].startswith("PacketResponder 0")
    assert log_steps.contents(DrainTemplatesStep(system="HDFS", strip_header=False), docs) == \
        [d.text for d in docs]


@needs_drain3
def test_mine_gives_templates_parameters_and_keeps_the_first_per_template():
    step = DrainTemplatesStep(system="HDFS", dedup_by_template=True)
    contents = dict(zip(["s1/a", "s1/b", "s2/a", "s2/b"],
                        log_steps.contents(step, [Document(str(n), t)
                                                  for n, t in enumerate(HDFS)]), strict=True))
    removed, metadata, report = log_steps.mine(step, contents)
    responder = "PacketResponder <*> for block <*> terminating"
    assert metadata["s1/a"]["template"] == responder
    assert metadata["s1/a"]["parameters"] == ["1", "blk_38865049064139660"]
    tid = metadata["s1/a"]["template_id"]
    # Records 2 and 4 share record 1's template; only the first in input order stays.
    dup = ("duplicate_template", f"duplicate_template:{tid}")
    assert removed == {"s1/b": dup, "s2/b": dup}
    assert set(metadata) == {"s1/a", "s2/a"}
    assert report["templates_total"] == 2
    assert report["templates"][0] == {"id": tid, "template": responder, "count": 3, "kept": 1}
    assert report["templates"][1]["count"] == report["templates"][1]["kept"] == 1

    removed_none, metadata_all, _ = log_steps.mine(
        DrainTemplatesStep(system="HDFS", keep_per_template=2), contents)
    assert removed_none == {} and len(metadata_all) == 4  # no dedup_by_template: annotate only


@needs_drain3
def test_keep_per_template_keeps_n():
    lines = {f"d{n}": f"user u{n} logged in from host h{n}" for n in range(5)}
    removed, metadata, _ = log_steps.mine(
        DrainTemplatesStep(dedup_by_template=True, keep_per_template=2), lines)
    assert sorted(metadata) == ["d0", "d1"] and sorted(removed) == ["d2", "d3", "d4"]


def test_spec_refuses_bad_parameters_naming_them():
    with pytest.raises(PipelineError) as err:
        parse_pipeline([{"step": "drain_templates", "system": "hdfs", "depth": 2,
                         "keep_per_template": 0, "masks": ["[a-"]},
                        {"step": "embed_dedup", "threshold": 1.5, "batch_size": 0}])
    assert {f for f, _ in err.value.violations} == {
        "pipeline[0].system", "pipeline[0].depth", "pipeline[0].masks",
        "pipeline[0].keep_per_template", "pipeline[1].threshold", "pipeline[1].batch_size"}
