"""Train-free drafters for lossless speculative decoding: Token Recycling and prompt lookup.

Both produce a `DraftTree` rooted at the last accepted token (the one not yet in the KV cache).
The decoder verifies the whole tree in one forward pass with a tree attention mask and accepts
the longest root-to-leaf path whose every token equals the model's greedy choice at its parent,
plus the model's own next token after it. The output is therefore the greedy output (up to float
near-ties, see `decoding.py`), whatever the drafts were.

Token Recycling ("Turning Trash into Treasure", Luo et al. 2024)
    `TokenRecycler` holds an adjacency matrix `succ[V, K]`: for every token, the K most likely
    successors the model proposed the last time that token was fed to it (the top-K of the
    logits at that position, from every forward pass: prefill chunks, verified trees, rejected
    branches included). Each step a static tree template (parent, rank) is instantiated
    breadth-first from the matrix: the child of rank r of a node holding token t holds
    `succ[t, r]`. Unknown rows (-1) prune their subtree.

    State and memory: one recycler per model per process (`shared_recycler`), kept across
    requests so later requests start warm; its size is fixed at V x K int32 (49152 x 8 x 4 B =
    1.5 MiB for SmolLM2), independent of traffic. Rows are overwritten, never appended. Writes
    from concurrent threads may interleave row by row; that can only change which drafts are
    proposed, never the output.

Prompt lookup (HF `prompt_lookup_num_tokens`, retrieval drafting as in RASD)
    The last n tokens (n = 3, 2, 1) are searched for in the prompt plus the text generated so
    far; the tokens that followed the most recent earlier occurrence form a chain draft.

AUTO
    Per step: when prompt lookup finds a match of at least `AUTO_MIN_NGRAM` tokens, its chain
    (adaptive length, see `Drafter`) goes into the tree first and the Token-Recycling template
    fills the rest of the node budget in order of path probability (shared prefixes merge, so
    the two never compete for the same node); otherwise the step is pure Token Recycling.

Sampling (temperature > 0): speculation is OFF (`decoding.py`); no accept/reject rule is
implemented, so the sampled distribution is exactly the model's.

Tree size: forward cost versus tokens fed, measured on this CPU
    2-core Intel Xeon VM (the dev machine), SmolLM2-135M fp32, ORT 1.32 CPU EP, 2 intra-op
    threads, batch 1, past = 200 tokens, median of 9 interleaved runs, in a quiet minute
    (foreign load 0.15 cores); n = 1 took 40.9 ms (~24 tok/s greedy; ARCHITECTURE.md's 25 ms
    was not reproduced here):

        n      1     2     4     6     8     10    12    16    24    32    48    64
        cost   1.00  1.09  1.15  1.25  1.37  1.46  1.41  1.67  1.78  2.13  2.55  3.00

    At past = 1000, n = 1 takes 61.9 ms (the KV concat and attention grow with the past) and
    the curve is flatter (8: 1.40, 16: 1.64, 32: 2.06). Under load from other sessions the
    whole curve is 2-4x slower but its shape holds (8: 1.2-1.5, 16: 1.5-1.6, 32: 2.0-2.3).
    A decoding step reads all 0.54 GB of weights whatever n is, so up to ~12 tokens cost little
    more than one; then the cost climbs almost linearly.

    Accepted tokens per step (bonus included; matrices warmed on 27 other prompts, 48 new tokens,
    8 prompts per set from bench/textgen.py), by template size:

        nodes              4     6     8     10    12    16
        TR code           1.45  1.55  1.61  1.63  1.78  1.76
        TR grounded       1.39  1.48  1.57  1.61  1.66  1.78
        TR chat           1.25  1.35  1.39  1.40  1.49  1.55
        AUTO (8, 12)      code 1.69, 1.89   grounded 1.87, 2.01   chat 1.41, 1.53
        prompt lookup 12  code 1.35   grounded 1.47   chat 1.14

    `expected_accepted` under ACCEPT_PROBS predicts the TR rows within ~0.05 up to 8 nodes.
    Tokens per step / cost(n) is flat at ~1.25 for 4-12 nodes and drops beyond 12 (16: 1.05,
    32: ~0.85), and AUTO gains most from a larger budget, so `CPU_TREE_NODES` = 12 (root + 11
    drafts). `Generator.calibrate()` re-measures the curve on the machine it runs on and sizes
    the tree with `size_tree` (~3 s). With a GPU provider the forward cost stays flat much
    further (the paper's ~80-node trees); `GPU_TREE_NODES` = 64 is a starting point that has not
    been measured here (no GPU was available): call `calibrate()` there.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

SUCCESSORS = 8  # K: candidates kept per token in the adjacency matrix
CPU_TREE_NODES = 12  # nodes fed per verification step on CPU, root included
GPU_TREE_NODES = 64
AUTO_MIN_NGRAM = 2
LOOKUP_MAX_NGRAM = 3
LOOKUP_TOKENS = 8  # default chain length of `prompt_lookup()`
LOOKUP_START = 4  # a request's first prompt-lookup chain length (then adaptive, see Drafter)

# P(the rank-r successor in the matrix is the greedy next token | its parent was accepted),
# measured online (the matrix warmed on 26 prompts, then 1,079 greedy steps over 26 others: code,
# chat, QA, repetitive, the lossless test's prompts): 48.7% of the time the token was not among
# the 8.
# Taken as depth-independent (a node's row is the same matrix whatever its depth).
ACCEPT_PROBS = (0.314, 0.068, 0.041, 0.028, 0.021, 0.020, 0.008, 0.012)


def accept_prob(depth: int, rank: int) -> float:
    return ACCEPT_PROBS[rank] if rank < len(ACCEPT_PROBS) else 0.0


def build_template(nodes: int, successors: int = SUCCESSORS,
                   max_depth: int = 12) -> list[tuple[int, int]]:
    """A static tree template with `nodes` nodes (root included): [(parent, rank)], node 0 the
    root with parent -1. Grown greedily by the expected acceptance of each path (product of
    `accept_prob` along it), which maximises the expected number of accepted tokens for a given
    size under that model. Nodes come in decreasing path probability, a topological order
    (parents first), so any prefix of the template is the best smaller tree: AUTO fills what
    prompt lookup leaves of the budget in this order."""
    chosen: list[tuple[int, int, int, float]] = [(-1, 0, 0, 1.0)]  # parent, rank, depth, prob
    heap = [(-accept_prob(1, 0), 0, 0, 1)]  # (-prob, parent, rank, depth): candidate nodes
    while len(chosen) < nodes and heap:
        neg_prob, parent, rank, depth = heapq.heappop(heap)
        prob = -neg_prob
        chosen.append((parent, rank, depth, prob))
        if rank + 1 < successors:  # its next sibling becomes a candidate
            sibling = chosen[parent][3] * accept_prob(depth, rank + 1)
            heapq.heappush(heap, (-sibling, parent, rank + 1, depth))
        if depth < max_depth:  # and so does its first child
            child = prob * accept_prob(depth + 1, 0)
            heapq.heappush(heap, (-child, len(chosen) - 1, 0, depth + 1))
    return [(parent, rank) for parent, rank, _, _ in chosen]


def expected_accepted(nodes: int) -> float:
    """Expected draft tokens accepted per step by `build_template(nodes)` under ACCEPT_PROBS."""
    template = build_template(nodes)
    prob = [1.0] * len(template)
    depth = [0] * len(template)
    for i in range(1, len(template)):
        parent, rank = template[i]
        depth[i] = depth[parent] + 1
        prob[i] = prob[parent] * accept_prob(depth[i], rank)
    return sum(prob[1:])


def size_tree(cost: dict[int, float], max_nodes: int = 128, slack: float = 0.10) -> int:
    """The node count (root included) for a measured cost curve (`cost`: tokens fed -> forward
    time, any unit; linearly interpolated, no extrapolation past the last point).

    The modelled rate is (1 + expected_accepted(n)) / cost(n); the largest n within `slack` of
    the best rate is chosen, because the model undervalues large trees (measured at 12 nodes:
    1.78 tokens per step on code against 1.68 modelled) and AUTO also places prompt-lookup
    chains in the same budget. On this CPU's curves this gives 12."""
    points = sorted(cost.items())
    xs = np.array([p[0] for p in points], float)
    ys = np.array([p[1] for p in points], float)
    sizes = range(1, min(max_nodes, int(xs[-1])) + 1)
    rates = {n: (1.0 + expected_accepted(n)) / float(np.interp(n, xs, ys)) for n in sizes}
    best = max(rates.values())
    return max(n for n, rate in rates.items() if rate >= (1.0 - slack) * best)


@dataclass
class DraftTree:
    """Nodes in topological order; node 0 is the root (the last accepted token, not in the KV
    cache yet). `parents[0] == -1`; `depth[0] == 0`."""

    tokens: np.ndarray  # int64 [m]
    parents: np.ndarray  # int64 [m]
    depth: np.ndarray  # int64 [m]
    source: str = "none"  # "none" | "token_recycling" | "prompt_lookup" | "auto"

    @classmethod
    def root_only(cls, token: int) -> DraftTree:
        return cls(np.array([token], np.int64), np.array([-1], np.int64),
                   np.zeros(1, np.int64))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def drafts(self) -> int:
        return len(self.tokens) - 1

    def ancestors(self) -> np.ndarray:
        """bool [m, m]: [j, i] is True when node i is node j or one of its ancestors."""
        m = len(self.tokens)
        anc = np.zeros((m, m), bool)
        for j in range(m):
            if self.parents[j] >= 0:
                anc[j] = anc[self.parents[j]]
            anc[j, j] = True
        return anc

    def accept(self, greedy: np.ndarray) -> list[int]:
        """Walks from the root along children whose token equals the greedy token at their
        parent (`greedy[j]` = argmax of node j's logits). Returns the accepted node indices,
        root first; the caller appends `greedy[last]` as the bonus token."""
        children: dict[int, list[int]] = {}
        for j in range(1, len(self.tokens)):
            children.setdefault(int(self.parents[j]), []).append(j)
        path = [0]
        while True:
            want = greedy[path[-1]]
            nxt = next((c for c in children.get(path[-1], ()) if self.tokens[c] == want), None)
            if nxt is None:
                return path
            path.append(nxt)


class _TreeBuilder:
    """A trie of token paths under a root, keeping insertion order and a node budget."""

    def __init__(self, root: int, budget: int):
        self.tokens, self.parents, self.depth = [root], [-1], [0]
        self.child: dict[tuple[int, int], int] = {}
        self.budget = budget

    def add(self, parent: int, token: int) -> int | None:
        key = (parent, token)
        if key in self.child:
            return self.child[key]
        if len(self.tokens) >= self.budget:
            return None
        self.tokens.append(token)
        self.parents.append(parent)
        self.depth.append(self.depth[parent] + 1)
        self.child[key] = len(self.tokens) - 1
        return self.child[key]

    def add_chain(self, chain) -> None:
        node = 0
        for token in chain:
            node = self.add(node, int(token))
            if node is None:
                return

    def tree(self, source: str) -> DraftTree:
        return DraftTree(np.array(self.tokens, np.int64), np.array(self.parents, np.int64),
                         np.array(self.depth, np.int64), source)


class TokenRecycler:
    """The adjacency matrix of Token Recycling (see the module docstring)."""

    def __init__(self, vocab_size: int, successors: int = SUCCESSORS):
        self.successors = successors
        self.succ = np.full((vocab_size, successors), -1, np.int32)

    @property
    def nbytes(self) -> int:
        return self.succ.nbytes

    def update(self, tokens: np.ndarray, logits: np.ndarray) -> None:
        """`tokens` [n] were fed, `logits` [n, V] came out: row t of the matrix becomes the
        top-K of the logits at t's position (later positions win for repeated tokens)."""
        k = self.successors
        top = np.argpartition(logits, -k, axis=-1)[:, -k:]
        vals = np.take_along_axis(logits, top, axis=-1)
        top = np.take_along_axis(top, np.argsort(-vals, axis=-1, kind="stable"), axis=-1)
        self.succ[np.asarray(tokens, np.int64)] = top

    def draft(self, root: int, template: list[tuple[int, int]],
              builder: _TreeBuilder | None = None, max_depth: int | None = None) -> DraftTree:
        """Instantiates `template` under `root`; nodes deeper than `max_depth` or below an
        unknown row are dropped. With `builder`, adds into that tree (AUTO's merge)."""
        b = builder or _TreeBuilder(root, len(template))
        placed = [0] + [None] * (len(template) - 1)  # template index -> tree node
        for i in range(1, len(template)):
            parent, rank = template[i]
            at = placed[parent]
            if at is None or (max_depth is not None and b.depth[at] >= max_depth):
                continue
            token = int(self.succ[b.tokens[at], rank])
            if token < 0:
                continue
            placed[i] = b.add(at, token)
        return b.tree("token_recycling")


_SHARED: dict[tuple, TokenRecycler] = {}


def shared_recycler(key: tuple, vocab_size: int) -> TokenRecycler:
    """The process-wide recycler for a model (key: name and version), created on first use."""
    recycler = _SHARED.get(key)
    if recycler is None:
        recycler = _SHARED[key] = TokenRecycler(vocab_size)
    return recycler


def prompt_lookup(context: np.ndarray, max_ngram: int = LOOKUP_MAX_NGRAM, min_ngram: int = 1,
                  num_tokens: int = LOOKUP_TOKENS) -> tuple[np.ndarray, int]:
    """Finds the last `n` tokens of `context` (n from `max_ngram` down to `min_ngram`) earlier
    in it; returns (the up to `num_tokens` tokens after the most recent earlier occurrence, n),
    or (empty, 0) when nothing matches."""
    length = len(context)
    for n in range(max_ngram, min_ngram - 1, -1):
        if length <= n:
            continue
        tail = context[length - n:]
        # candidate starts i in [0, length - n - 1]: an occurrence that ends before the tail's
        # last token, so at least one token follows it
        hits = np.ones(length - n, bool)
        for j in range(n):
            hits &= context[j:length - n + j] == tail[j]
        found = np.flatnonzero(hits)
        if found.size:
            start = int(found[-1]) + n
            return context[start:start + num_tokens], n
    return context[:0], 0


class Drafter:
    """Per-request drafting policy over a shared `TokenRecycler`.

    Prompt lookup's chain length adapts per request like HF's assisted-generation heuristic:
    it starts at `LOOKUP_START` tokens, grows by 2 after a step that accepted the whole chain and
    shrinks by 1 otherwise, within [1, nodes - 1], so unproductive lookups stop paying for long
    chains (every node costs forward time on a CPU)."""

    MODES = ("off", "token_recycling", "prompt_lookup", "auto")

    def __init__(self, mode: str, recycler: TokenRecycler, nodes: int):
        self.mode = mode
        self.recycler = recycler
        self.nodes = max(1, nodes)
        self.template = build_template(self.nodes, recycler.successors)
        self.lookup_len = min(LOOKUP_START, self.nodes - 1)
        self._chain = 0  # chain nodes placed in the last tree (indices 1.._chain)

    def draft(self, context: np.ndarray, max_depth: int) -> DraftTree:
        """The tree for the next step. `context` ends with the root token; `max_depth` bounds
        how many tokens past the root may still be used (remaining budget of the request)."""
        root = int(context[-1])
        self._chain = 0
        if self.mode == "off" or max_depth <= 0 or self.nodes == 1:
            return DraftTree.root_only(root)
        if self.mode == "token_recycling":
            return self.recycler.draft(root, self.template, max_depth=max_depth)
        chain, n = prompt_lookup(context, num_tokens=min(max_depth, self.lookup_len))
        if self.mode == "auto" and n < AUTO_MIN_NGRAM:
            return self.recycler.draft(root, self.template, max_depth=max_depth)
        b = _TreeBuilder(root, self.nodes)
        b.add_chain(chain)
        self._chain = len(b.tokens) - 1
        if self.mode == "prompt_lookup":
            return b.tree("prompt_lookup")
        tree = self.recycler.draft(root, self.template, builder=b, max_depth=max_depth)
        tree.source = "auto"
        return tree

    def feedback(self, path: list[int]) -> None:
        """Tells the drafter which nodes the last verification accepted (root first)."""
        if not self._chain:
            return
        accepted = sum(1 for node in path[1:] if node <= self._chain)
        if accepted == self._chain:
            self.lookup_len = min(self.lookup_len + 2, self.nodes - 1)
        else:
            self.lookup_len = max(1, self.lookup_len - 1)
