"""Count pruning: a smaller n-gram model that still sums to one in every context.

Like KenLM's ``lmplz --prune 0 0 1 1 1``, an n-gram of order n is dropped when it was seen at most
``thresholds[n-1]`` times; every n-gram that is the prefix or the suffix of a kept longer one is
kept too, so the tables stay a well-formed backoff model (what an ARPA file needs). The kept
n-grams keep their probabilities; the mass of the dropped ones goes back to the context's
backoff weight, re-normalized as SRILM does after pruning. For a context h and its shortening h'::

    b(h) = (1 - Σ_{w kept after h} p*(h w)) / (1 - Σ_{w kept after h} P(w | h'))

where P(w | h') is read straight from the table, since the suffix h' w of a kept h w is kept.
The 5-gram of the three domains (news, reviews, docs) drops from 89 MB to what a shipped
checkpoint can carry with singletons pruned at orders 3 to 5 (docs/RESULTS.md has the cost).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from model.models.ngram.counts import NGramCounts
from model.models.ngram.tables import BackoffTables


def parse_thresholds(spec: str | Sequence[int], order: int) -> list[int]:
    """``"0 0 1"`` or ``[0, 0, 1]`` -> one threshold per order (the last repeated, as lmplz does)."""
    values = [int(v) for v in spec.split()] if isinstance(spec, str) else [int(v) for v in spec]
    if not values or any(v < 0 for v in values):
        raise ValueError("prune thresholds are counts: non-negative integers, one per order")
    if values[0] != 0:
        raise ValueError("1-grams cannot be pruned: the first threshold must be 0")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError("prune thresholds must not decrease with the order")
    return (values + [values[-1]] * order)[:order]


def kept_ngrams(counts: NGramCounts, thresholds: Sequence[int]) -> list[np.ndarray]:
    """Per order, a boolean mask of the n-grams that stay (prefixes and suffixes of kept ones too)."""
    keep = [counts[n].counts > thresholds[n - 1] for n in range(1, counts.order + 1)]
    keep[0][:] = True
    for n in range(counts.order, 1, -1):
        gram = counts[n]
        keep[n - 2][gram.prefix[keep[n - 1]]] = True
        keep[n - 2][gram.suffix[keep[n - 1]]] = True
    return keep


def prune(counts: NGramCounts, tables: BackoffTables, thresholds: Sequence[int]) -> BackoffTables:
    """The tables without the n-grams :func:`kept_ngrams` drops, backoff weights re-normalized."""
    if tables.order != counts.order or [len(k) for k in tables.keys] != [len(o) for o in counts.orders]:
        raise ValueError("the tables were not built from these counts")
    V = counts.vocab_size
    keep = kept_ngrams(counts, thresholds)
    # new index of every kept n-gram of each order (-1: dropped); keys stay sorted (monotone map)
    new_index = [np.where(k, np.cumsum(k) - 1, -1) for k in keep]
    keys = [tables.keys[0]]
    logprob = [tables.logprob[0]]
    logbackoff: list[np.ndarray] = []
    for n in range(2, counts.order + 1):
        gram, mask = counts[n], keep[n - 1]
        prefix = new_index[n - 2][gram.prefix[mask]]  # the context's index among kept (n-1)-grams
        keys.append(prefix * V + tables.keys[n - 1][mask] % V)
        kept_logp = tables.logprob[n - 1][mask].astype(np.float64)
        lower_logp = logprob[-1].astype(np.float64)[new_index[n - 2][gram.suffix[mask]]]
        n_contexts = int(keep[n - 2].sum())
        high = np.bincount(prefix, weights=np.exp(kept_logp), minlength=n_contexts)
        low = np.bincount(prefix, weights=np.exp(lower_logp), minlength=n_contexts)
        with np.errstate(divide="ignore", invalid="ignore"):
            backoff = np.where(low < 1.0, np.maximum(1.0 - high, 1e-12) / np.maximum(1.0 - low, 1e-12), 1.0)
        logbackoff.append(np.log(backoff).astype(np.float32))
        logprob.append(tables.logprob[n - 1][mask])
    return BackoffTables(V, keys, logprob, logbackoff)
