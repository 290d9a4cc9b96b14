"""The Loghub 2k samples (https://github.com/logpai/loghub) as a yardstick for log template
mining: per system the header format, masking regexes, similarity threshold and tree depth of the
published Drain benchmark (logparser's `Drain_benchmark.py`, Zhu et al., "Tools and Benchmarks for
Automated Log Parsing", ICSE-SEIP 2019), the loader, and the two accuracy measures.

`load` parses the raw `<System>_2k.log` lines with the system's header format, as a user of the
miner would, and takes the ground truth (EventTemplate) from `<System>_2k.log_structured.csv`,
line by line; it refuses data where the two disagree in line count or content.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.curation.logs import WILDCARD, MinerSettings


@dataclass(frozen=True)
class LoghubSystem:
    """One system's benchmark settings. `log_format` names header fields as `<Field>` between
    literal text (regex syntax, a space standing for any run of whitespace); `<Content>` is the
    message. Each of `masks` replaces its matches with `<*>` before Drain sees the line."""

    log_format: str
    masks: tuple[str, ...]
    similarity: float
    depth: int

    def miner_settings(self) -> MinerSettings:
        return MinerSettings(similarity=self.similarity, depth=self.depth,
                             masks=tuple((m, "*") for m in self.masks))

    def header_regex(self) -> re.Pattern[str]:
        """The whole line as a regex with one named group per field."""
        parts = re.split(r"(<[^<>]+>)", self.log_format)
        out = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(f"(?P<{part[1:-1]}>.*?)")
            else:
                out.append(re.sub(" +", r"\\s+", part))
        return re.compile("^" + "".join(out) + "$")


SYSTEMS: dict[str, LoghubSystem] = {
    "HDFS": LoghubSystem("<Date> <Time> <Pid> <Level> <Component>: <Content>",
                         (r"blk_-?\d+", r"(\d+\.){3}\d+(:\d+)?"), 0.5, 4),
    "Hadoop": LoghubSystem(r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
                           (r"(\d+\.){3}\d+",), 0.5, 4),
    "BGL": LoghubSystem("<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> "
                        "<Component> <Level> <Content>", (r"core\.\d+",), 0.5, 4),
    "HPC": LoghubSystem("<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
                        (r"=\d+",), 0.5, 4),
    "Thunderbird": LoghubSystem(r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> "
                                r"<Location> <Component>(\[<PID>\])?: <Content>",
                                (r"(\d+\.){3}\d+",), 0.5, 4),
    "Windows": LoghubSystem("<Date> <Time>, <Level> <Component> <Content>",
                            (r"0x.*?\s",), 0.7, 5),
    "Linux": LoghubSystem(r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
                          (r"(\d+\.){3}\d+", r"\d{2}:\d{2}:\d{2}"), 0.39, 6),
    "Android": LoghubSystem("<Date> <Time> <Pid> <Tid> <Level> <Component>: <Content>",
                            (r"(/[\w-]+)+", r"([\w-]+\.){2,}[\w-]+",
                             r"\b(\-?\+?\d+)\b|\b0[Xx][a-fA-F\d]+\b|\b[a-fA-F\d]{4,}\b"),
                            0.2, 6),
    "HealthApp": LoghubSystem(r"<Time>\|<Component>\|<Pid>\|<Content>", (), 0.2, 4),
    "Proxifier": LoghubSystem(r"\[<Time>\] <Program> - <Content>",
                              (r"<\d+\ssec", r"([\w-]+\.)+[\w-]+(:\d+)?", r"\d{2}:\d{2}(:\d{2})*",
                               r"[KGTM]B"), 0.6, 3),
    "OpenStack": LoghubSystem(r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] "
                              "<Content>", (r"((\d+\.){3}\d+,?)+", r"/.+?\s", r"\d+"), 0.5, 5),
    "Mac": LoghubSystem(r"<Month> <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: "
                        "<Content>", (r"([\w-]+\.){2,}[\w-]+",), 0.7, 6),
}


def default_root() -> Path:
    """`JOBMESH_LOGHUB_DIR`, else `shared/data/loghub` beside the repository (the checkout and
    `shared` are siblings, here and in CI)."""
    env = os.environ.get("JOBMESH_LOGHUB_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "loghub"


def load(system: str, root: Path | None = None) -> tuple[list[str], list[str]]:
    """(contents, ground-truth templates) of a system's 2k sample, one entry per log line, in
    file order. Contents come from the raw log through the system's header format."""
    if system not in SYSTEMS:
        raise KeyError(f"unknown Loghub system {system!r}; known: {', '.join(SYSTEMS)}")
    folder = (root or default_root()) / system
    raw, structured = folder / f"{system}_2k.log", folder / f"{system}_2k.log_structured.csv"
    for path in (raw, structured):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the Loghub 2k samples belong in "
                                    f"<root>/<System>/ (set JOBMESH_LOGHUB_DIR to their root)")
    header = SYSTEMS[system].header_regex()
    contents = []
    with raw.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            m = header.match(line.strip())
            if m is None:
                raise ValueError(f"{raw}:{number} does not match the {system} header format")
            contents.append(m.group("Content"))
    with structured.open(encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(contents):
        raise ValueError(f"{system}: {len(contents)} raw lines but {len(rows)} labelled rows")
    for number, (content, row) in enumerate(zip(contents, rows, strict=True), 1):
        if content != row["Content"]:
            raise ValueError(f"{system} line {number}: parsed content {content!r} differs from "
                             f"the labelled {row['Content']!r}")
    return contents, [row["EventTemplate"] for row in rows]


def grouping_accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Fraction of lines whose predicted group is exactly their ground-truth group, as a set of
    lines (Zhu et al. 2019): a group that merges two events, or an event split over two groups,
    makes all of their lines wrong. Labels are only compared for equality."""
    _check_lengths(truth, predicted)
    truth_sizes = Counter(truth)
    members: dict[Hashable, list[Hashable]] = defaultdict(list)
    for t, p in zip(truth, predicted, strict=True):
        members[p].append(t)
    correct = 0
    for labels in members.values():
        first = labels[0]
        if truth_sizes[first] == len(labels) and all(t == first for t in labels):
            correct += len(labels)
    return correct / len(truth)


_SPACES = re.compile(r"\s+")


def normalize_template(template: str, wildcards: Iterable[str] = (WILDCARD,)) -> str:
    """Each of `wildcards` written as `<*>`, runs of adjacent wildcards with nothing between them
    (`<*><*>`) as one, runs of whitespace as one space, no leading or trailing space."""
    for w in wildcards:
        template = template.replace(w, WILDCARD)
    while WILDCARD + WILDCARD in template:
        template = template.replace(WILDCARD + WILDCARD, WILDCARD)
    return _SPACES.sub(" ", template).strip()


def parsing_accuracy(truth_templates: Sequence[str], predicted_templates: Sequence[str],
                     wildcards: Iterable[str] = (WILDCARD,)) -> float:
    """Fraction of lines whose predicted template equals the ground-truth template after
    `normalize_template` on both (each of `wildcards`, e.g. a miner's named masks such as `<IP>`,
    counts as `<*>`; adjacent wildcards merge; whitespace runs become one space; ends trimmed).
    Nothing else is forgiven: `blk_<*>` and `<*>` differ."""
    _check_lengths(truth_templates, predicted_templates)
    wildcards = tuple(wildcards)
    cache: dict[str, str] = {}

    def norm(t: str) -> str:
        if t not in cache:
            cache[t] = normalize_template(t, wildcards)
        return cache[t]

    same = sum(norm(t) == norm(p) for t, p in zip(truth_templates, predicted_templates,
                                                   strict=True))
    return same / len(truth_templates)


def _check_lengths(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} ground-truth labels but {len(b)} predictions")
    if not a:
        raise ValueError("no lines to score")
