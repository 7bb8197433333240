"""CTC shallow fusion: our model as the token-level LM of flashlight-text's beam-search decoder.

flashlight-text (the engine under torchaudio's ``ctc_decoder``) searches CTC emissions (T, N)
frame by frame and asks an ``LM`` object for the score of each new token. Its ``LM`` class can be
subclassed in Python with three methods; :class:`FlashlightLM` implements them on any
:class:`~model.models.lm.LanguageModel`::

    start(start_with_nothing) -> LMState             the state after <bos>
    score(state, token) -> (child LMState, log P)     log P(token | state's history)
    finish(state) -> (state, log P(<eos>))            at the end of the utterance

flashlight owns the search; we keep, for every ``LMState`` it holds, where our model's state and
next-token log-probs for it are (``self.states``: a dict keyed by the ``LMState``). Batching:
``score`` answers from the parent's log-probs, which are already known; the child it creates is
only *pending* (its token not yet fed). The first time a pending state's own log-probs are needed,
every pending state is fed in one batched ``lm.step``: in practice one call per frame for all the
new hypotheses of the previous frame.

The decoder's tokens are mapped to the model's ids once (:func:`token_map`): the CTC blank maps
to nothing, a word delimiter such as ``|`` to a space, an unknown token to ``<unk>``.

Typical use (see docs/DECODING.md)::

    decoder = CtcDecoder(lm, tokens=["<blank>", "n", "i", "h", "a", "o", "你", "尼", …], blank="<blank>")
    best = decoder.decode(emissions)[0]          # emissions: (T, N) log-probs, float32
    best.text, best.score, best.lm_score
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from flashlight.lib.text.decoder import (
    LM,
    CriterionType,
    LexiconFreeDecoder,
    LexiconFreeDecoderOptions,
    LMState,
)
from torch import Tensor

from model.models.lm import LanguageModel, State
from model.text.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer


def token_map(
    tokenizer: Tokenizer, tokens: Sequence[str], blank: str, word_delimiter: str | None = None
) -> list[int]:
    """The model id of each decoder token (-1 for the blank); ``word_delimiter`` reads as a space."""
    out = []
    for token in tokens:
        if token == blank:
            out.append(-1)
            continue
        piece = " " if token == word_delimiter else token
        ids = tokenizer.encode(piece).ids
        out.append(ids[0] if len(ids) == 1 else UNK_ID)
    return out


@dataclass
class _Entry:
    batch: int  # where its log-probs and state are (-1 while pending)
    row: int
    parent: LMState | None = None  # pending: the state it continues
    token: int = 0  # pending: the model id to feed


class FlashlightLM(LM):
    """A :class:`LanguageModel` as a flashlight-text ``LM`` (token level: the decoder's token
    ``i`` is the model's id ``ids[i]``). Scores are natural-log probabilities."""

    def __init__(self, lm: LanguageModel, ids: Sequence[int]) -> None:
        LM.__init__(self)
        if lm.tokenizer.backward:
            raise ValueError("shallow fusion reads left to right: it needs a forward model")
        self.lm = lm
        self.ids = list(ids)
        self.states: dict[LMState, _Entry] = {}
        self.pending: list[LMState] = []
        self.logprobs: list[Tensor] = []  # (B_i, V) of each batched step
        self.model_states: list[State] = []
        self.steps = 0  # batched lm.step calls so far (for tests and benchmarks)

    def _add(self, logprobs: Tensor, state: State) -> int:
        self.logprobs.append(logprobs.float().cpu())
        self.model_states.append(state)
        return len(self.logprobs) - 1

    def start(self, start_with_nothing: bool = False) -> LMState:
        """A fresh search: forget every state, step <bos>."""
        self.states.clear()
        self.pending.clear()
        self.logprobs.clear()
        self.model_states.clear()
        with torch.inference_mode():
            logp, state = self.lm.step(self.lm.start_state(1), torch.tensor([BOS_ID]))
        self.steps += 1
        root = LMState()
        self.states[root] = _Entry(self._add(logp, state), 0)
        return root

    def _ready(self, state: LMState) -> _Entry:
        entry = self.states[state]
        if entry.batch < 0:
            self._flush()
        return entry

    def _flush(self) -> None:
        """Feed every pending state its token in one batched step."""
        todo = [s for s in self.pending if self.states[s].batch < 0]
        self.pending.clear()
        if not todo:
            return
        parents = [self.states[self.states[s].parent] for s in todo]
        by_batch: dict[int, list[int]] = {}
        for i, p in enumerate(parents):
            by_batch.setdefault(p.batch, []).append(i)
        parts, order = [], []
        for b, items in by_batch.items():
            parts.append(self.lm.select_state(self.model_states[b], [parents[i].row for i in items]))
            order += items
        state = parts[0] if len(parts) == 1 else self.lm.concat_states(parts)
        tokens = torch.tensor([self.states[todo[i]].token for i in order])
        with torch.inference_mode():
            logp, state = self.lm.step(state, tokens)  # (B, V)
        self.steps += 1
        b = self._add(logp, state)
        for row, i in enumerate(order):
            entry = self.states[todo[i]]
            entry.batch, entry.row, entry.parent = b, row, None

    def score(self, state: LMState, token_index: int) -> tuple[LMState, float]:
        entry = self._ready(state)
        model_id = self.ids[token_index]
        if model_id < 0:
            raise ValueError(f"the decoder asked the LM to score token {token_index}, the blank")
        child = state.child(token_index)
        if child not in self.states:
            self.states[child] = _Entry(-1, 0, parent=state, token=model_id)
            self.pending.append(child)
        return child, float(self.logprobs[entry.batch][entry.row, model_id])

    def finish(self, state: LMState) -> tuple[LMState, float]:
        entry = self._ready(state)
        return state, float(self.logprobs[entry.batch][entry.row, EOS_ID])


@dataclass
class CtcHypothesis:
    text: str
    tokens: list[int]  # decoder token indices (blanks and repeats removed)
    score: float  # the decoder's total: emissions + lm_weight × lm_score (+ silence scores)
    lm_score: float  # the LM's log-prob as the decoder summed it (before lm_weight)


class CtcDecoder:
    """flashlight-text's lexicon-free CTC beam search with our model fused in.

    ``beam_size`` hypotheses are kept per frame; each tries only the ``beam_size_token`` tokens
    the emissions rate best in that frame. Every token tried becomes a state our model steps
    (pending, then batched), so with a vocabulary of thousands of characters keep
    ``beam_size_token`` small: the model steps up to ``beam_size × beam_size_token`` rows a frame."""

    def __init__(
        self,
        lm: LanguageModel,
        tokens: Sequence[str],
        blank: str = "<blank>",
        word_delimiter: str | None = None,
        beam_size: int = 16,
        beam_size_token: int = 32,
        beam_threshold: float = 50.0,
        lm_weight: float = 1.0,
        sil_score: float = 0.0,
    ) -> None:
        if blank not in tokens:
            raise ValueError(f"the blank {blank!r} is not one of the decoder's tokens")
        self.tokens = list(tokens)
        self.blank = self.tokens.index(blank)
        self.word_delimiter = word_delimiter
        sil = self.tokens.index(word_delimiter) if word_delimiter in self.tokens else self.blank
        self.lm = FlashlightLM(lm, token_map(lm.tokenizer, tokens, blank, word_delimiter))
        options = LexiconFreeDecoderOptions(
            beam_size,
            min(beam_size_token, len(tokens)),
            beam_threshold,
            lm_weight,
            sil_score,
            False,  # log_add: Viterbi (max) over alignments of one prefix
            CriterionType.CTC,
        )
        self.decoder = LexiconFreeDecoder(options, self.lm, sil, self.blank, [])

    def decode(self, emissions: Tensor, nbest: int = 1) -> list[CtcHypothesis]:
        """The ``nbest`` best hypotheses for emissions (T, N): per-frame log-probs over the tokens."""
        if emissions.dim() != 2 or emissions.size(1) != len(self.tokens):
            raise ValueError(f"emissions must be (T, {len(self.tokens)}), got {tuple(emissions.shape)}")
        em = emissions.detach().to("cpu", torch.float32).contiguous()  # (T, N)
        results = self.decoder.decode(em.data_ptr(), em.size(0), em.size(1))
        out = []
        for r in results[:nbest]:
            idx = self._collapse(r.tokens)
            pieces = [" " if self.tokens[i] == self.word_delimiter else self.tokens[i] for i in idx]
            out.append(CtcHypothesis("".join(pieces).strip(), idx, float(r.score), float(r.lmScore)))
        return out

    def _collapse(self, tokens: Sequence[int]) -> list[int]:
        out: list[int] = []
        prev = -1
        for t in tokens:
            if t != prev and t >= 0 and t != self.blank:
                out.append(t)
            prev = t
        return out
