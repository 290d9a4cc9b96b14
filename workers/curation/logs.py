"""Log template mining: group log lines by the template that printed them (Drain, through
drain3), so that repeated events can be counted, deduplicated or sampled per template.

A line's *content* (the message without its timestamp/level header) is first masked (each
`(regex, name)` of `MinerSettings.masks` replaces its matches by `<name>`), then split on
whitespace (and `extra_delimiters`) and placed in Drain's fixed-depth prefix tree: lines with
the same token count and the same first `depth - 2` tokens are compared token by token, and a
line joins the most similar template when at least `similarity` of its tokens agree; the
template's differing tokens become `<*>`. Tokens that contain a digit are routed as wildcards in
the tree, so numbers never split groups by themselves.

The miner lives in memory only: no ini file, no persistence, no snapshots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

WILDCARD = "<*>"


@dataclass(frozen=True)
class MinerSettings:
    """How Drain groups lines. `masks` are `(regex, mask name)` pairs applied in order before
    tokenizing (name `*` gives the plain wildcard `<*>`, as the Loghub benchmark does);
    `extra_delimiters` are literal strings split on like whitespace."""

    similarity: float = 0.4
    depth: int = 4
    masks: Sequence[tuple[str, str]] = ()
    extra_delimiters: Sequence[str] = ()
    max_children: int = 100
    parametrize_numeric_tokens: bool = True

    def __post_init__(self):
        if not 0.0 <= self.similarity <= 1.0:
            raise ValueError(f"similarity must be in [0, 1], got {self.similarity}")
        if self.depth < 3:
            raise ValueError(f"depth must be at least 3 (root and length levels), got {self.depth}")
        if self.max_children < 2:
            raise ValueError(f"max_children must be at least 2, got {self.max_children}")


@dataclass
class ParsedLine:
    """One line's final template: `template_id` is the miner's cluster id, `parameters` the
    values the template's masks and wildcards stand for, in order (empty when the line cannot be
    aligned with its template token by token, e.g. a mask regex that swallowed a space)."""

    template_id: int
    template: str
    parameters: list[str]


class TemplateMiner:
    """Drain over log contents, in memory. `add` learns one line; `parse_all` learns a batch and
    then gives every line the final template of its group."""

    def __init__(self, settings: MinerSettings | None = None):
        try:
            from drain3.masking import MaskingInstruction
            from drain3.template_miner import TemplateMiner as Drain3Miner
            from drain3.template_miner_config import TemplateMinerConfig
        except ImportError as e:  # not a base dependency of the mesh
            raise ImportError("log template mining needs drain3: pip install drain3==0.9.11") from e

        self.settings = settings = settings or MinerSettings()
        config = TemplateMinerConfig()
        config.drain_sim_th = settings.similarity
        config.drain_depth = settings.depth
        config.drain_max_children = settings.max_children
        config.drain_extra_delimiters = list(settings.extra_delimiters)
        config.parametrize_numeric_tokens = settings.parametrize_numeric_tokens
        config.masking_instructions = [MaskingInstruction(regex, name)
                                       for regex, name in settings.masks]
        config.mask_prefix, config.mask_suffix = "<", ">"
        self._miner = Drain3Miner(persistence_handler=None, config=config)
        # Drain splits on the delimiters literally (str.replace) but drain3's parameter extraction
        # would apply them as regexes (re.sub): Drain keeps its own copy, so extraction gets none
        # and `_as_drain_reads` replaces them literally before it.
        config.drain_extra_delimiters = []

    def add(self, content: str) -> int:
        """Learn one line's content; returns the id of the template group it joined (or began).
        The group's template may still change as later lines arrive."""
        return self._miner.add_log_message(content)["cluster_id"]

    def parse_all(self, contents: Sequence[str]) -> list[ParsedLine]:
        """Learn every line first, then give each line its group's final template (an early
        line gets the template as generalised by the lines after it) and its parameters. Group
        membership is the one decided when the line was learned, as in Drain itself."""
        ids = [self.add(c) for c in contents]
        clusters = self._miner.drain.id_to_cluster
        out = []
        for content, cid in zip(contents, ids, strict=True):
            template = clusters[cid].get_template()
            out.append(ParsedLine(cid, template, self.parameters(template, content)))
        return out

    def parameters(self, template: str, content: str) -> list[str]:
        """The values in `content` that `template`'s masks and wildcards stand for, in order;
        empty when they cannot be aligned."""
        found = self._miner.extract_parameters(template, self._as_drain_reads(content),
                                               exact_matching=True)
        return [p.value for p in found] if found else []

    def templates(self) -> list[dict]:
        """Every template learned so far: `{id, template, count}` in order of creation."""
        clusters = self._miner.drain.id_to_cluster
        return [{"id": cid, "template": c.get_template(), "count": c.size}
                for cid, c in sorted(clusters.items())]

    def _as_drain_reads(self, content: str) -> str:
        """Delimiters as spaces and the ends trimmed, as Drain tokenizes (the extraction regex is
        anchored at both ends)."""
        for delimiter in self.settings.extra_delimiters:
            content = content.replace(delimiter, " ")
        return content.strip()


def dedup_by_template(lines: Sequence[ParsedLine], keep: int = 1) -> tuple[list[int], list[int]]:
    """(kept, removed) indices into `lines`: the first `keep` lines of each template are kept,
    the rest removed; both lists ascending."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    seen: Counter[int] = Counter()
    kept, removed = [], []
    for i, line in enumerate(lines):
        seen[line.template_id] += 1
        (kept if seen[line.template_id] <= keep else removed).append(i)
    return kept, removed
