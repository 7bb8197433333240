"""Per-sentence evaluation, the way every comparison in this project is made.

Each line is scored on its own from the model's start state: ``<bos>`` is the context and
``<eos>`` is predicted, as KenLM does with ``bos=True, eos=True``. Perplexity is
``exp(-sum log P / tokens)`` where ``tokens`` counts every character (or word) plus one ``<eos>``
per line; out-of-vocabulary pieces are scored as ``<unk>`` and included (KenLM's "including
OOVs" figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from model.models.lm import LanguageModel
from model.text.batching import with_boundaries


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
