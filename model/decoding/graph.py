"""The one shape every search input takes: a word graph (a DAG of scored word arcs).

A confusion network and an HTK lattice both become a :class:`WordGraph` before the search
(:mod:`model.decoding.beam`) sees them::

    confusion network (slots)           lattice (SLF)              word graph
    [我 -0.1 | 卧 -2.3]  [们 | ε]   ─▶   I=0 … J=0 S=0 E=1 W=我   ─▶   nodes 0..N-1, start, end,
                                                                     arcs (src, dst, word, score)

An arc's ``word`` is the text it adds ("" is an epsilon arc: a deletion, ``!NULL``, ``<s>``);
its ``score`` is what the first pass said about it (natural log, higher is better: an acoustic
log-likelihood, a posterior), added to a path's total as it is. Every path runs from ``start`` to
``end``; the graph must be acyclic.

The search walks the graph in *levels*: a node's level is the length of the longest arc path from
``start`` to it, so every arc goes from a lower level to a higher one, and all the nodes of one
level can be stepped through the model together (for a confusion network, level k is slot k).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arc:
    src: int  # the node it leaves
    dst: int  # the node it enters
    word: str  # the text it adds; "" is an epsilon arc (a deletion, a null node)
    score: float  # the first pass's score of the arc (natural log, higher is better)
    line: int = 0  # where it was read (an SLF line number; 0 when built in memory)


@dataclass
class WordGraph:
    num_nodes: int
    start: int
    end: int
    arcs: list[Arc]
    leaving: list[list[int]] = field(init=False, repr=False)  # arc indices out of each node

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            node = getattr(self, name)
            if not 0 <= node < self.num_nodes:
                raise ValueError(f"{name} node {node} is not one of the graph's {self.num_nodes} nodes")
        self.leaving = [[] for _ in range(self.num_nodes)]
        for i, arc in enumerate(self.arcs):
            if not (0 <= arc.src < self.num_nodes and 0 <= arc.dst < self.num_nodes):
                raise ValueError(
                    f"{where(arc)}arc {arc.src}->{arc.dst} names a node outside 0..{self.num_nodes - 1}"
                )
            self.leaving[arc.src].append(i)

    def levels(self) -> list[list[int]]:
        """The nodes on some path from start to end, grouped by level (longest distance from
        start), lowest first; ValueError if the graph has a cycle or no path reaches the end."""
        entering: list[list[int]] = [[] for _ in range(self.num_nodes)]
        for i, arc in enumerate(self.arcs):
            entering[arc.dst].append(i)
        forward = reachable(self.start, [[self.arcs[i].dst for i in out] for out in self.leaving])
        backward = reachable(self.end, [[self.arcs[i].src for i in into] for into in entering])
        alive = forward & backward
        if self.end not in alive:
            raise ValueError(f"no path leads from the start node {self.start} to the end node {self.end}")
        # Kahn's algorithm on the live part, computing each node's longest distance from start.
        waiting = {n: sum(1 for i in entering[n] if self.arcs[i].src in alive) for n in alive}
        level = dict.fromkeys(alive, 0)
        ready = deque(n for n in alive if waiting[n] == 0)
        done = 0
        while ready:
            node = ready.popleft()
            done += 1
            for i in self.leaving[node]:
                dst = self.arcs[i].dst
                if dst not in alive:
                    continue
                level[dst] = max(level[dst], level[node] + 1)
                waiting[dst] -= 1
                if waiting[dst] == 0:
                    ready.append(dst)
        if done < len(alive):
            stuck = next(a for a in self.arcs if a.src in alive and a.dst in alive and waiting[a.dst] > 0)
            raise ValueError(f"{where(stuck)}the graph has a cycle through node {stuck.dst}")
        out: list[list[int]] = [[] for _ in range(max(level.values()) + 1)]
        for node in sorted(alive):
            out[level[node]].append(node)
        return out

    def live_arcs(self, node: int, max_arcs: int = 0) -> list[Arc]:
        """The arcs leaving ``node``, best-scored first, only the ``max_arcs`` best (0: all)."""
        arcs = sorted((self.arcs[i] for i in self.leaving[node]), key=lambda a: -a.score)
        return arcs[:max_arcs] if max_arcs else arcs


def reachable(origin: int, neighbours: Sequence[Sequence[int]]) -> set[int]:
    seen = {origin}
    todo = [origin]
    while todo:
        for nxt in neighbours[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def where(arc: Arc) -> str:
    return f"line {arc.line}: " if arc.line else ""
