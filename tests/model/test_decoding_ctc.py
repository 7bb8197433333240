"""CTC shallow fusion (model/decoding/ctc.py): flashlight-text's decoder with our model as its LM."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("flashlight.lib.text.decoder")

from model.decoding.ctc import CtcDecoder, FlashlightLM, token_map
from model.models.lm import RNNLanguageModel
from model.models.ngram.model import build_ngram
from model.text.tokenizer import UNK_ID, Tokenizer

from ..conftest import build_tiny_model

LINES = ["厨房里食油用完了", "厨房里的食油不多了", "石油价格上涨了", "国际石油价格下跌"] * 3
SAID = "厨房里食油用完了"


@pytest.fixture(scope="module")
def kn3():
    return build_ngram(Tokenizer.build(LINES, kind="char"), LINES, order=3)


def emissions(tokens: list[str], frames: list[dict[str, float]]) -> torch.Tensor:
    """(T, N) log-probs: each frame's listed tokens get their probability, the rest share 1e-4."""
    out = torch.full((len(frames), len(tokens)), math.log(1e-4))
    for t, probs in enumerate(frames):
        for token, p in probs.items():
            out[t, tokens.index(token)] = math.log(p)
    return out.log_softmax(dim=-1)


def homophone_emissions(tokens: list[str]) -> torch.Tensor:
    """SAID, each character one frame then a blank; at 食 the acoustics prefer its homophone 石."""
    frames = []
    for ch in SAID:
        frames.append({"石": 0.55, "食": 0.4} if ch == "食" else {ch: 0.95})
        frames.append({"<blank>": 0.95})
    return emissions(tokens, frames)


def vocabulary(lm) -> list[str]:
    return ["<blank>", *lm.tokenizer.tokens[4:]]


def test_the_model_fixes_a_homophone_the_acoustics_got_wrong(kn3):
    tokens = vocabulary(kn3)
    em = homophone_emissions(tokens)
    acoustic_only = CtcDecoder(kn3, tokens, blank="<blank>", beam_size=8, lm_weight=0.0).decode(em)[0]
    assert acoustic_only.text == "厨房里石油用完了"
    fused = CtcDecoder(kn3, tokens, blank="<blank>", beam_size=8, lm_weight=1.0).decode(em, nbest=3)
    assert fused[0].text == SAID
    assert fused[0].lm_score < 0 and fused[0].score > fused[-1].score


def test_the_lm_scores_are_the_models_step_by_step(kn3):
    tokens = vocabulary(kn3)
    fl = FlashlightLM(kn3, token_map(kn3.tokenizer, tokens, "<blank>"))
    state = fl.start(False)
    total = 0.0
    for ch in SAID:
        state, lp = fl.score(state, tokens.index(ch))
        total += lp
    _, lp = fl.finish(state)
    total += lp
    exact = float(kn3.sequence_logprobs([[2, *kn3.tokenizer.encode(SAID).ids, 3]])[0].sum())
    assert total == pytest.approx(exact, abs=1e-4)


def test_children_are_stepped_together_in_one_batch():
    net, tok = build_tiny_model(steps=5)
    lm = RNNLanguageModel(net, tok)
    tokens = vocabulary(lm)
    fl = FlashlightLM(lm, token_map(tok, tokens, "<blank>"))
    root = fl.start(False)
    children = [fl.score(root, tokens.index(ch))[0] for ch in "厨你我今"]
    assert fl.steps == 1  # only <bos> so far: children wait until someone needs them
    for child in children:
        fl.score(child, tokens.index("房"))
    assert fl.steps == 2  # the four children fed in one batched step
    same = fl.score(root, tokens.index("厨"))[0]
    assert fl.states[same] is fl.states[children[0]]  # a known child is reused, not stepped again


def test_token_map_blank_delimiter_and_unknowns(kn3):
    ids = token_map(kn3.tokenizer, ["<blank>", "厨", "|", "ZZ", "☃"], "<blank>", word_delimiter="|")
    assert ids[0] == -1 and ids[1] == kn3.tokenizer.token_id("厨")
    assert ids[2] == kn3.tokenizer.encode(" ").ids[0]  # a space (unknown to this vocabulary: <unk>)
    assert ids[3] == UNK_ID and ids[4] == UNK_ID


def test_bad_shapes_and_blanks_are_refused(kn3):
    tokens = vocabulary(kn3)
    with pytest.raises(ValueError, match="blank"):
        CtcDecoder(kn3, tokens, blank="_")
    decoder = CtcDecoder(kn3, tokens)
    with pytest.raises(ValueError, match="emissions must be"):
        decoder.decode(torch.zeros(3, len(tokens) + 1))
