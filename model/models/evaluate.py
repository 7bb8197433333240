"""Per-sentence evaluation, the way every comparison in this project is made.

Each line is scored on its own from the model's start state: ``<bos>`` is the context and
``<eos>`` is predicted, as KenLM does with ``bos=True, eos=True``. Perplexity is
``exp(-sum log P / tokens)`` where ``tokens`` counts every character (or word) plus one ``<eos>``
per line; out-of-vocabulary pieces are scored as ``<unk>`` and included (KenLM's "including
OOVs" figure).

The literature's word-level figures (PTB, WikiText-2) are *running text* instead: the state is
carried from one line to the next, so a sentence is read in the context of the ones before it.
:func:`evaluate_stream` measures that, the way pytorch/examples ``word_language_model`` does
(``--eval_batch_size 10``: the text cut into 10 contiguous parts, each read as one stream). The
count is the same (every word plus one ``<eos>`` per line); only the context differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from model.models.lm import LanguageModel
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID


def evaluate_lines(lm: LanguageModel, lines: Sequence[str], batch_lines: int = 256) -> dict:
    total_logprob = 0.0
    tokens = oov = chars = 0
    for start in range(0, len(lines), batch_lines):
        chunk = lines[start : start + batch_lines]
        encodings = [lm.tokenizer.encode(line) for line in chunk]
        scores = lm.sequence_logprobs([with_boundaries(e.ids) for e in encodings])
        for enc, s, line in zip(encodings, scores, chunk, strict=True):
            total_logprob += float(s.sum())
            tokens += len(s)
            oov += enc.oov
            chars += len(line) + 1  # characters plus one for the end of the line
    return figures(total_logprob, tokens, len(lines), oov, chars)


def evaluate_stream(lm: LanguageModel, lines: Sequence[str], parts: int = 10) -> dict:
    """Running-text perplexity: ``lines`` cut into ``parts`` contiguous runs, each read as one stream
    ``<bos> line₁ <eos> <bos> line₂ <eos> …`` with the state carried across lines. Every word and
    every ``<eos>`` is scored; the ``<bos>`` after an ``<eos>`` is read, not predicted."""
    encodings = [lm.tokenizer.encode(line) for line in lines]
    size = -(-len(lines) // max(1, parts))
    streams = []  # one flat id list per part
    for start in range(0, len(encodings), size):
        stream: list[int] = []
        for enc in encodings[start : start + size]:
            stream += [BOS_ID, *enc.ids, EOS_ID]
        streams.append(stream)
    length = max(len(s) for s in streams)
    ids = torch.full((len(streams), length), EOS_ID, dtype=torch.long)  # (P, T), padded after the end
    scored = torch.zeros(len(streams), length, dtype=torch.bool)
    for row, stream in enumerate(streams):
        ids[row, : len(stream)] = torch.tensor(stream)
        scored[row, 1 : len(stream)] = ids[row, 1 : len(stream)] != BOS_ID
    total = 0.0
    state = lm.start_state(len(streams))
    for t in range(length - 1):
        logprobs, state = lm.step(state, ids[:, t])  # (P, V): P(next | the stream so far)
        targets = ids[:, t + 1]
        picked = logprobs.float().cpu().gather(1, targets.view(-1, 1)).view(-1)  # (P,)
        total += float(picked[scored[:, t + 1]].sum())
    tokens = int(scored.sum())
    chars = sum(len(line) + 1 for line in lines)
    result = figures(total, tokens, len(lines), sum(e.oov for e in encodings), chars)
    plural = "s" if len(streams) != 1 else ""
    return {**result, "mode": f"running text ({len(streams)} stream{plural}, state carried across lines)"}


def figures(total_logprob: float, tokens: int, lines: int, oov: int, chars: int) -> dict:
    """Perplexity and friends from a summed log-prob over ``tokens`` (``chars`` counts the text's
    characters plus one per line for ``<eos>``)."""
    nll = -total_logprob / max(tokens, 1)
    return {
        "perplexity": math.exp(nll),
        "cross_entropy_nats": nll,
        "bits_per_token": nll / math.log(2),
        # bits per character of text (+1 per line for <eos>); equals bits_per_token for char models
        "bits_per_char": -total_logprob / math.log(2) / max(chars, 1),
        "logprob": total_logprob,
        "tokens": tokens,
        "lines": lines,
        "oov": oov,
        "mode": "per-sentence",
    }
