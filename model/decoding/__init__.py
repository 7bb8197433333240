"""Search with the language model in the loop: confusion networks, HTK lattices, CTC decoders.

Rescoring an n-best list can never beat the best sentence in the list; searching the first pass's
alternatives with the model can. The pieces, each small:

* :mod:`~model.decoding.graph`: the word graph (a DAG of scored word arcs) every search reads;
* :mod:`~model.decoding.cn`: confusion networks (slots of ``[word, score]`` alternatives);
* :mod:`~model.decoding.slf`: HTK SLF lattices (what HTK and Kaldi export);
* :mod:`~model.decoding.beam`: the beam search (batched model steps, recombination, pruning,
  the n best paths, scored exactly as ``/score`` scores a text) and its cost bound (``search_cost``);
* :mod:`~model.decoding.ctc`: our model as the token-level LM of flashlight-text's CTC decoder.

Typical use::

    from model.decoding import DecodeOptions, decode_cn
    paths = decode_cn(lm, [[["我", -0.1], ["卧", -2.3]], [["们", -0.2], ["", -1.7]]],
                      DecodeOptions(beam=16, nbest=5, lm_weight=1.0))
    paths[0].text, paths[0].score, paths[0].lm_logprob, paths[0].acoustic
"""

from __future__ import annotations

from typing import Any

from model.decoding.beam import (
    DecodedPath,
    DecodeOptions,
    DecodeStats,
    context_width,
    decode_graph,
    search_cost,
)
from model.decoding.cn import ConfusionNetwork, cn_graph, parse_confusion_network
from model.decoding.graph import Arc, WordGraph
from model.decoding.slf import Lattice, lattice_graph, parse_slf
from model.models.lm import LanguageModel

__all__ = [
    "Arc",
    "ConfusionNetwork",
    "DecodeOptions",
    "DecodeStats",
    "DecodedPath",
    "Lattice",
    "WordGraph",
    "cn_graph",
    "context_width",
    "decode_cn",
    "decode_graph",
    "decode_slf",
    "lattice_graph",
    "parse_confusion_network",
    "parse_slf",
    "search_cost",
]


def decode_cn(
    lm: LanguageModel, slots: Any, options: DecodeOptions | None = None, stats: DecodeStats | None = None
) -> list[DecodedPath]:
    """The best paths through a confusion network given as JSON-shaped slots (or parsed ones)."""
    return decode_graph(lm, cn_graph(parse_confusion_network(slots)), options, stats)


def decode_slf(
    lm: LanguageModel,
    text: str,
    options: DecodeOptions | None = None,
    acoustic_scale: float = 1.0,
    lattice_lm_weight: float = 0.0,
    stats: DecodeStats | None = None,
) -> list[DecodedPath]:
    """The best paths through an SLF lattice's text (:func:`~model.decoding.slf.lattice_graph`)."""
    graph = lattice_graph(parse_slf(text), acoustic_scale, lattice_lm_weight)
    return decode_graph(lm, graph, options, stats)
