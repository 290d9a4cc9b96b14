"""Log template mining (Drain through drain3), template dedup, the Loghub loader and the two
accuracy measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from workers.curation import loghub
from workers.curation.logs import MinerSettings, ParsedLine, TemplateMiner, dedup_by_template

needs_drain3 = pytest.mark.skipif(importlib.util.find_spec("drain3") is None,
                                  reason="drain3 not installed (pip install drain3==0.9.11)")


@needs_drain3
def test_miner_groups_lines_that_differ_in_variables():
    users = ["alice", "bob", "carol", "dave"]
    lines = [f"session {i} opened for user {u}" for i, u in enumerate(users)]
    lines += [f"disk /dev/sd{c} is full" for c in "abc"]
    miner = TemplateMiner(MinerSettings())
    parsed = miner.parse_all(lines)
    assert len({p.template_id for p in parsed[:4]}) == 1
    assert len({p.template_id for p in parsed[4:]}) == 1
    assert parsed[0].template_id != parsed[4].template_id
    assert parsed[0].template == "session <*> opened for user <*>"
    assert parsed[2].parameters == ["2", "carol"]
    assert parsed[5].template == "disk <*> is full"
    assert sorted((t["template"], t["count"]) for t in miner.templates()) == [
        ("disk <*> is full", 3), ("session <*> opened for user <*>", 4)]


@needs_drain3
def test_masks_replace_block_ids_and_ip_addresses():
    settings = MinerSettings(masks=[(r"blk_-?\d+", "BLK"), (r"(\d+\.){3}\d+(:\d+)?", "IP")])
    miner = TemplateMiner(settings)
    [line] = miner.parse_all(["Received block blk_-1608999687919862906 from 10.250.19.102:54106"])
    assert line.template == "Received block <BLK> from <IP>"
    assert line.parameters == ["blk_-1608999687919862906", "10.250.19.102:54106"]
    # With the mask name `*` (as the Loghub settings use), the mask is Drain's own wildcard.
    [line] = TemplateMiner(MinerSettings(masks=[(r"(\d+\.){3}\d+", "*")])).parse_all(
        ["connect to 10.0.0.1 failed"])
    assert line.template == "connect to <*> failed"
    assert line.parameters == ["10.0.0.1"]


@needs_drain3
def test_parse_all_gives_early_lines_the_final_template():
    miner = TemplateMiner(MinerSettings())
    lines = ["user alice logged out", "user bob logged out", "user carol logged out"]
    parsed = miner.parse_all(lines)
    assert [p.template for p in parsed] == ["user <*> logged out"] * 3
    assert [p.parameters for p in parsed] == [["alice"], ["bob"], ["carol"]]
    # Learning line by line, the first line's group still had its literal template then.
    fresh = TemplateMiner(MinerSettings())
    first = fresh.add(lines[0])
    assert fresh.templates() == [{"id": first, "template": lines[0], "count": 1}]


@needs_drain3
def test_leading_space_and_extra_delimiters_keep_parameters():
    miner = TemplateMiner(MinerSettings(extra_delimiters=["="]))
    parsed = miner.parse_all([" retries=3 host=alpha", " retries=5 host=beta"])
    assert parsed[0].template == "retries <*> host <*>"
    assert parsed[1].parameters == ["5", "beta"]


def test_miner_settings_reject_bad_values():
    with pytest.raises(ValueError):
        MinerSettings(similarity=1.5)
    with pytest.raises(ValueError):
        MinerSettings(depth=2)


def _lines(ids: list[int]) -> list[ParsedLine]:
    return [ParsedLine(i, f"template {i}", []) for i in ids]


def test_dedup_by_template_keeps_the_first_lines_of_each_template():
    lines = _lines([1, 2, 1, 1, 3, 2])
    assert dedup_by_template(lines) == ([0, 1, 4], [2, 3, 5])
    assert dedup_by_template(lines, keep=2) == ([0, 1, 2, 4, 5], [3])
    assert dedup_by_template([]) == ([], [])
    with pytest.raises(ValueError):
        dedup_by_template(lines, keep=0)


def test_grouping_accuracy_perfect_whatever_the_labels():
    assert loghub.grouping_accuracy(["a", "a", "b", "c"], [7, 7, 3, 9]) == 1.0


def test_grouping_accuracy_merged_groups_are_all_wrong():
    # a and b merged into group 1: their four lines are wrong, c alone is right.
    assert loghub.grouping_accuracy(["a", "a", "b", "b", "c"], [1, 1, 1, 1, 2]) == 0.2


def test_grouping_accuracy_split_groups_are_all_wrong():
    # a split over groups 1 and 2: its three lines are wrong, b is right.
    assert loghub.grouping_accuracy(["a", "a", "a", "b"], [1, 1, 2, 3]) == 0.25
    # A predicted group that is a strict subset of one event is wrong even if pure.
    assert loghub.grouping_accuracy(["a", "a"], [1, 2]) == 0.0


def test_accuracies_reject_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        loghub.grouping_accuracy(["a"], [1, 2])
    with pytest.raises(ValueError):
        loghub.parsing_accuracy([], [])


def test_parsing_accuracy_normalises_wildcards_and_whitespace():
    truth = ["open <*> port <*>", "close  <*>", "block blk_<*> done", "peer <*>"]
    predicted = ["open <*><*> port <*> ", "close <*>", "block <*> done", "peer <IP>"]
    assert loghub.parsing_accuracy(truth, predicted) == 0.5  # blk_<*> and <IP> differ
    assert loghub.parsing_accuracy(truth, predicted, wildcards=("<*>", "<IP>")) == 0.75
    assert loghub.normalize_template("  a\t<*><*><*>  b ") == "a <*> b"


def test_header_regex_takes_the_content_after_the_header():
    line = ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
            "blk_38865049064139660 terminating")
    m = loghub.SYSTEMS["HDFS"].header_regex().match(line)
    assert m["Component"] == "dfs.DataNode$PacketResponder"
    assert m["Content"] == "PacketResponder 1 for block blk_38865049064139660 terminating"
    m = loghub.SYSTEMS["Linux"].header_regex().match(
        "Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown")
    assert (m["Component"], m["PID"], m["Content"]) == ("sshd(pam_unix)", "19937",
                                                        "check pass; user unknown")


def test_load_fails_clearly_without_data(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("JOBMESH_LOGHUB_DIR", str(tmp_path))
    assert loghub.default_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="HDFS_2k.log"):
        loghub.load("HDFS")
    with pytest.raises(KeyError):
        loghub.load("Nonesuch", tmp_path)


@needs_drain3
def test_hdfs_grouping_accuracy_with_its_settings():
    root = loghub.default_root()
    if not (root / "HDFS" / "HDFS_2k.log").is_file():
        pytest.skip(f"Loghub HDFS sample not at {root}")
    contents, truth = loghub.load("HDFS", root)
    assert len(contents) == len(truth) == 2000
    parsed = TemplateMiner(loghub.SYSTEMS["HDFS"].miner_settings()).parse_all(contents)
    assert loghub.grouping_accuracy(truth, [p.template_id for p in parsed]) > 0.95
