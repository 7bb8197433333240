"""HTK Standard Lattice Format (SLF): what HTK's HVite and Kaldi's lattice export write.

A lattice file is a header, a size line, then one line per node and one per arc (link)::

    VERSION=1.0
    UTTERANCE=utt-01
    base=2.718 lmscale=12.0 wdpenalty=0.0     <- header fields, any order, several per line
    N=4 L=4                                   <- the size line: nodes, links (NODES=, LINKS=)
    I=0 t=0.00 W=!NULL                        <- node 0 (time, word: words may sit on nodes)
    I=1 t=0.30 W=我
    I=2 t=0.32 W=卧
    I=3 t=0.60 W=!NULL
    J=0 S=0 E=1 a=-120.5 l=-2.3               <- arc 0: start node, end node, acoustic, LM score
    J=1 S=0 E=2 a=-118.0 l=-6.1
    J=2 S=1 E=3 a=-40.0  l=-0.1  W=</s>       <- or words on arcs (W= here wins over the node's)
    J=3 S=2 E=3 a=-40.0  l=-0.2

What is read:

* a word on an arc (``W=``) or, failing that, on the node the arc enters (HTK puts words on
  nodes, Kaldi's converters on either); ``!NULL``, ``<s>``, ``</s>``, ``!SENT_START`` and
  ``!SENT_END`` (and a missing word) are epsilon: the model adds ``<bos>``/``<eos>`` itself;
* ``a=`` (acoustic) and ``l=`` (the first pass's LM) in the log base of the header's ``base=``
  (default e; ``base=0`` means plain probabilities), converted to natural logs;
* the start and end nodes from the header's ``start=``/``end=``, else the only node no arc enters
  and the only node no arc leaves;
* long field names (``NODES LINKS START END WORD acoustic language time``) as their short forms;
  quoted values and backslash escapes as a shell reads them; ``#`` comment lines.

Everything else (``lmscale``, ``wdpenalty``, times, ``v= d= r=``) is kept in the header or ignored.
Sub-lattices (``SUBLAT``) are refused. Every error is a ValueError naming its line.

:func:`lattice_graph` turns a lattice into the word graph the search reads: an arc's score is
``acoustic_scale × a + lattice_lm_weight × l`` (by default the acoustic score alone: the model
replaces the first pass's LM, as Kaldi's lattice rescoring subtracts the old LM before adding the
new one).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

from model.decoding.graph import Arc, WordGraph

NULL_WORDS = frozenset({"!NULL", "<s>", "</s>", "!SENT_START", "!SENT_END", ""})
LONG_NAMES = {
    "NODES": "N",
    "LINKS": "L",
    "START": "S",
    "END": "E",
    "WORD": "W",
    "acoustic": "a",
    "language": "l",
    "time": "t",
}


@dataclass
class SlfNode:
    word: str | None  # None: the node carries no word
    time: float | None
    line: int


@dataclass
class SlfArc:
    start: int
    end: int
    word: str | None  # None: the word is the end node's
    acoustic: float  # natural log
    lm: float  # natural log
    line: int


@dataclass
class Lattice:
    nodes: list[SlfNode]
    arcs: list[SlfArc]
    start: int
    end: int
    header: dict[str, str] = field(default_factory=dict)

    def arc_word(self, arc: SlfArc) -> str:
        """The arc's text ("" for the null words)."""
        word = arc.word if arc.word is not None else self.nodes[arc.end].word
        return "" if word is None or word in NULL_WORDS else word


def parse_slf(text: str) -> Lattice:
    """Read one SLF lattice; ValueError ``line k: …`` for anything it cannot use."""
    header: dict[str, str] = {}
    sizes: tuple[int, int] | None = None
    size_line = 0
    nodes: dict[int, SlfNode] = {}
    arcs: dict[int, SlfArc] = {}
    log_base = math.e
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _fields(line, number)
        if "I" in fields or "J" in fields:
            if sizes is None:
                raise ValueError(f"line {number}: a node or arc before the size line (N=… L=…)")
            if "I" in fields:
                index = _index(fields, "I", sizes[0], "node", number)
                if index in nodes:
                    raise ValueError(f"line {number}: node {index} is defined twice")
                time = _number(fields["t"], "t", number) if "t" in fields else None
                nodes[index] = SlfNode(word=fields.get("W"), time=time, line=number)
            else:
                index = _index(fields, "J", sizes[1], "arc", number)
                if index in arcs:
                    raise ValueError(f"line {number}: arc {index} is defined twice")
                arcs[index] = SlfArc(
                    start=_index(fields, "S", sizes[0], "node", number),
                    end=_index(fields, "E", sizes[0], "node", number),
                    word=fields.get("W"),
                    acoustic=_log(fields.get("a", "0"), "a", log_base, number),
                    lm=_log(fields.get("l", "0"), "l", log_base, number),
                    line=number,
                )
            continue
        if "SUBLAT" in fields:
            raise ValueError(f"line {number}: sub-lattices (SUBLAT) are not supported")
        if "N" in fields or "L" in fields:
            if sizes is not None:
                raise ValueError(f"line {number}: a second size line (the first is line {size_line})")
            if "N" not in fields or "L" not in fields:
                raise ValueError(f"line {number}: the size line needs both N= and L=")
            sizes = (_count(fields["N"], "N", number), _count(fields["L"], "L", number))
            size_line = number
            continue
        if "base" in fields:
            log_base = _number(fields["base"], "base", number)
            if log_base < 0 or log_base == 1:
                raise ValueError(
                    f"line {number}: base must be 0 (probabilities) or a log base above 0, not 1"
                )
        header.update(fields)
    if sizes is None:
        raise ValueError("no size line (N=… L=…): not an SLF lattice")
    last = len(text.splitlines())
    if len(nodes) != sizes[0]:
        raise ValueError(f"line {last}: {len(nodes)} nodes defined, line {size_line} announces N={sizes[0]}")
    if len(arcs) != sizes[1]:
        raise ValueError(f"line {last}: {len(arcs)} arcs defined, line {size_line} announces L={sizes[1]}")
    node_list = [nodes[i] for i in range(sizes[0])]
    arc_list = [arcs[i] for i in range(sizes[1])]
    start = _end_node(header, "start", node_list, arc_list, lambda a: a.end)
    end = _end_node(header, "end", node_list, arc_list, lambda a: a.start)
    return Lattice(nodes=node_list, arcs=arc_list, start=start, end=end, header=header)


def lattice_graph(lattice: Lattice, acoustic_scale: float = 1.0, lattice_lm_weight: float = 0.0) -> WordGraph:
    """The word graph of ``lattice``: arc score = ``acoustic_scale × a + lattice_lm_weight × l``."""
    arcs = [
        Arc(
            a.start,
            a.end,
            lattice.arc_word(a),
            acoustic_scale * a.acoustic + lattice_lm_weight * a.lm,
            a.line,
        )
        for a in lattice.arcs
    ]
    return WordGraph(num_nodes=len(lattice.nodes), start=lattice.start, end=lattice.end, arcs=arcs)


# -- reading fields ----------------------------------------------------------------------------------
def _fields(line: str, number: int) -> dict[str, str]:
    try:
        words = shlex.split(line, comments=False, posix=True)
    except ValueError as e:
        raise ValueError(f"line {number}: {e}") from None
    fields: dict[str, str] = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq or not name:
            raise ValueError(f"line {number}: {word!r} is not a name=value field")
        fields[LONG_NAMES.get(name, name)] = value
    return fields


def _number(value: str, name: str, number: int) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"line {number}: {name}={value!r} is not a number") from None
    if math.isnan(x):
        raise ValueError(f"line {number}: {name} is not a number")
    return x


def _count(value: str, name: str, number: int) -> int:
    if not value.isdigit():
        raise ValueError(f"line {number}: {name}={value!r} is not a count")
    return int(value)


def _index(fields: dict[str, str], name: str, size: int, what: str, number: int) -> int:
    if name not in fields:
        raise ValueError(f"line {number}: missing {name}=")
    index = _count(fields[name], name, number)
    if index >= size:
        raise ValueError(f"line {number}: {name}={index} names {what} {index}, but there are {size}")
    return index


def _log(value: str, name: str, base: float, number: int) -> float:
    """A score in the header's log base as a natural log (base 0: a probability)."""
    x = _number(value, name, number)
    if base == 0:
        if x < 0:
            raise ValueError(f"line {number}: {name}={value} is a negative probability (base=0)")
        return math.log(x) if x > 0 else -math.inf
    return x * math.log(base)


def _end_node(header: dict[str, str], name: str, nodes: list[SlfNode], arcs: list[SlfArc], side) -> int:
    """The start (or end) node: the header's, else the one node no arc enters (leaves)."""
    if name in header:
        value = header[name]
        if not value.isdigit() or int(value) >= len(nodes):
            raise ValueError(f"header {name}={value!r} names no node of the {len(nodes)}")
        return int(value)
    touched = {side(a) for a in arcs}
    free = [i for i in range(len(nodes)) if i not in touched]
    if len(free) != 1:
        what = "no arc enters" if name == "start" else "no arc leaves"
        lines = ", ".join(f"node {i} (line {nodes[i].line})" for i in free[:5]) or "none"
        raise ValueError(f"{len(free)} nodes that {what} ({lines}): give {name}= in the header")
    return free[0]
