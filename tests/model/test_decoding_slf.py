"""HTK SLF lattices (model/decoding/slf.py): HTK and Kaldi conventions, errors by line, decoding."""

from __future__ import annotations

import math

import pytest

from model.decoding import DecodeOptions, decode_slf, lattice_graph, parse_slf
from model.inference.scoring import score_candidates
from model.models.lm import RNNLanguageModel

from ..conftest import build_tiny_model

# HTK style: words on nodes, !NULL at both ends, log base e.
HTK = """\
VERSION=1.0
UTTERANCE=utt-01
lmname=bigram lmscale=12.00 wdpenalty=0.00
N=6 L=8
I=0 t=0.00 W=!NULL
I=1 t=0.20 W=厨
I=2 t=0.20 W=出
I=3 t=0.40 W=房
I=4 t=0.40 W=方
I=5 t=0.60 W=!NULL
J=0 S=0 E=1 a=-10.0 l=-2.0
J=1 S=0 E=2 a=-9.5 l=-1.0
J=2 S=1 E=3 a=-5.0 l=-0.5
J=3 S=1 E=4 a=-4.8 l=-3.0
J=4 S=2 E=3 a=-5.0 l=-0.5
J=5 S=2 E=4 a=-4.8 l=-3.0
J=6 S=3 E=5 a=0.0 l=0.0
J=7 S=4 E=5 a=0.0 l=0.0
"""

# Kaldi style (words on arcs, <s> and </s>, long field names, base 10, header start/end, quoting).
KALDI = """\
# converted from a Kaldi lattice
VERSION=1.1
base=10.0 start=0 end=3
NODES=4 LINKS=4
I=0 time=0.0
I=1 time=0.3
I=2 time=0.5
I=3 time=0.9
J=0 START=0 END=1 WORD=<s> acoustic=0 language=0
J=1 START=1 END=2 WORD="厨房" acoustic=-2.0 language=-1.0
J=2 START=1 END=2 WORD=出访 acoustic=-1.0 language=-0.5
J=3 START=2 END=3 WORD=</s> acoustic=0 language=-0.1
"""


@pytest.fixture(scope="module")
def rnn() -> RNNLanguageModel:
    net, tok = build_tiny_model(steps=40)
    return RNNLanguageModel(net, tok)


def test_words_on_nodes_become_the_words_of_the_arcs_entering_them():
    lat = parse_slf(HTK)
    assert (lat.start, lat.end) == (0, 5)
    assert lat.header["UTTERANCE"] == "utt-01" and lat.header["lmscale"] == "12.00"
    assert [lat.arc_word(a) for a in lat.arcs] == ["厨", "出", "房", "方", "房", "方", "", ""]
    graph = lattice_graph(lat)
    assert [a.score for a in graph.arcs[:2]] == [-10.0, -9.5]
    assert [a.score for a in lattice_graph(lat, 0.5, 1.0).arcs[:2]] == [-7.0, -5.75]
    assert graph.arcs[0].line == 11


def test_kaldi_conventions_words_on_arcs_long_names_base_ten():
    lat = parse_slf(KALDI)
    assert (lat.start, lat.end) == (0, 3)
    assert [lat.arc_word(a) for a in lat.arcs] == ["", "厨房", "出访", ""]
    assert lat.arcs[1].acoustic == pytest.approx(-2.0 * math.log(10))
    assert lat.arcs[3].lm == pytest.approx(-0.1 * math.log(10))


def test_probabilities_with_base_zero():
    text = "base=0\nN=2 L=1\nI=0\nI=1 W=好\nJ=0 S=0 E=1 a=0.25 l=1\n"
    lat = parse_slf(text)
    assert lat.arcs[0].acoustic == pytest.approx(math.log(0.25)) and lat.arcs[0].lm == 0.0


def test_decoding_a_lattice_gives_exact_scores(rnn):
    paths = decode_slf(rnn, HTK, DecodeOptions(beam=8, nbest=4, lm_weight=1.0))
    assert sorted(p.text for p in paths) == ["出房", "出方", "厨房", "厨方"]
    for p in paths:
        assert p.lm_logprob == score_candidates(rnn, [p.text]).results[0].logprob
        assert p.score == pytest.approx(p.acoustic + p.lm_logprob)
    acoustic = {"厨房": -15.0, "厨方": -14.8, "出房": -14.5, "出方": -14.3}
    assert {p.text: p.acoustic for p in paths} == pytest.approx(acoustic)


def test_multi_character_words_feed_every_token(rnn):
    paths = decode_slf(rnn, KALDI, DecodeOptions(beam=4, nbest=2))
    assert sorted(p.text for p in paths) == ["出访", "厨房"]
    for p in paths:
        assert p.lm_logprob == score_candidates(rnn, [p.text]).results[0].logprob
        assert p.num_tokens == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("VERSION=1.0\nI=0\n", "line 2: a node or arc before the size line"),
        ("N=2 L=1\nI=0\nI=1\nJ=0 S=0 E=7\n", "line 4: E=7 names node 7, but there are 2"),
        ("N=2 L=1\nI=0\nI=1\nJ=0 S=0 E=1 a=abc\n", "line 4: a='abc' is not a number"),
        ("N=2 L=1\nI=0\nI=0\nJ=0 S=0 E=1\n", "line 3: node 0 is defined twice"),
        ("N=2 L=2\nI=0\nI=1\nJ=0 S=0 E=1\n", "line 4: 1 arcs defined, line 1 announces L=2"),
        ("N=2\nI=0\n", "line 1: the size line needs both N= and L="),
        ('N=2 L=1\nI=0\nI=1 W="open\nJ=0 S=0 E=1\n', "line 3: No closing quotation"),
        ("N=2 L=1\nI=0 junk\nI=1\nJ=0 S=0 E=1\n", "line 2: 'junk' is not a name=value field"),
        ("N=2 L=1\nI=0\nI=1\nJ=0 E=1\n", "line 4: missing S="),
        ("SUBLAT=x\nN=1 L=0\nI=0\n", "line 1: sub-lattices"),
        ("base=1\nN=1 L=0\nI=0\n", "line 1: base must be"),
        ("N=3 L=1\nI=0\nI=1\nI=2\nJ=0 S=0 E=1\n", "give start= in the header"),
        ("hello world\n", "line 1: 'hello' is not a name=value field"),
        ("", "no size line"),
    ],
)
def test_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_slf(text)


def test_a_cycle_is_refused_naming_an_arc_line(rnn):
    text = "start=0 end=2\nN=3 L=3\nI=0\nI=1 W=a\nI=2\nJ=0 S=0 E=1\nJ=1 S=1 E=1\nJ=2 S=1 E=2\n"
    with pytest.raises(ValueError, match=r"line \d+: the graph has a cycle"):
        decode_slf(rnn, text)
