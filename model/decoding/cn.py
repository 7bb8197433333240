"""Confusion networks ("sausages"): a sentence as slots of scored alternatives.

A confusion network (Mangu et al. 2000) is what a recognizer hands on when it is unsure: one slot
per position, each holding the words it might have heard there with a score (a log posterior or
an acoustic log-likelihood: natural log, higher is better). An empty word is a deletion ("nothing
was said here")::

    slot 0            slot 1            slot 2
    我   -0.1         们   -0.2         走 -0.05
    卧   -2.3         ""   -1.7         ...

In JSON (``rnnlm decode``'s input and the service's) it is a list of slots, each a list of
``[word, score]`` pairs: ``[[["我", -0.1], ["卧", -2.3]], [["们", -0.2], ["", -1.7]], …]``.

As a word graph (:mod:`model.decoding.graph`) slot k is the arcs from node k to node k + 1, so a
path picks exactly one alternative per slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from model.decoding.graph import Arc, WordGraph

Slot = list[tuple[str, float]]  # (word, score); "" is a deletion
ConfusionNetwork = list[Slot]


def parse_confusion_network(slots: Any) -> ConfusionNetwork:
    """Check and convert JSON-shaped slots; ValueError naming the slot and alternative at fault."""
    if not isinstance(slots, Sequence) or isinstance(slots, str) or not slots:
        raise ValueError("slots must be a non-empty list of slots")
    out: ConfusionNetwork = []
    for k, slot in enumerate(slots):
        if not isinstance(slot, Sequence) or isinstance(slot, str) or not slot:
            raise ValueError(f"slots[{k}] must be a non-empty list of [word, score] pairs")
        parsed: Slot = []
        for j, alt in enumerate(slot):
            if not (isinstance(alt, Sequence) and not isinstance(alt, str) and len(alt) == 2):
                raise ValueError(f"slots[{k}][{j}] must be a [word, score] pair")
            word, score = alt
            if not isinstance(word, str):
                raise ValueError(f"slots[{k}][{j}]: the word must be a string")
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise ValueError(f"slots[{k}][{j}]: the score must be a finite number")
            parsed.append((word, float(score)))
        out.append(parsed)
    return out


def cn_graph(cn: ConfusionNetwork) -> WordGraph:
    """The word graph of a confusion network: node k -> k + 1 for each alternative of slot k.

    The same word twice in a slot keeps its best score (two arcs would only duplicate paths)."""
    arcs = []
    for k, slot in enumerate(cn):
        best: dict[str, float] = {}
        for word, score in slot:
            best[word] = max(score, best.get(word, -math.inf))
        arcs += [Arc(k, k + 1, word, score) for word, score in best.items()]
    return WordGraph(num_nodes=len(cn) + 1, start=0, end=len(cn), arcs=arcs)
