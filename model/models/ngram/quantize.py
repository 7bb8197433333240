"""8-bit storage of an n-gram's log-probs and backoffs, as KenLM's ``build_binary -q 8 -b 8``.

Each table of order 2 and up is stored as one byte per value plus 256 float32 centers: the values
are cut into 256 bins of equal count, and every value is replaced by the mean of its bin. A
5-gram then needs 4 + 1 + 1 bytes per n-gram (key delta, log-prob, backoff) instead of 12. The
1-grams stay float32 (a few thousand values). The rounding leaves each context's distribution
summing to one within about 1% (docs/RESULTS.md has what it costs in perplexity and reranking).
"""

from __future__ import annotations

import numpy as np

BITS = 8


def quantize(values: np.ndarray, bits: int = BITS) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, centers)`` with ``centers[codes]`` close to ``values``: equal-count bins, bin means."""
    levels = 1 << bits
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return np.zeros(0, dtype=np.uint8), np.zeros(levels, dtype=np.float32)
    if not np.isfinite(v).all():
        raise ValueError("only finite values can be quantized")
    edges = np.quantile(v, np.linspace(0, 1, levels + 1)[1:-1])
    codes = np.searchsorted(edges, v, side="right").astype(np.uint8 if bits <= 8 else np.uint16)
    sums = np.bincount(codes, weights=v, minlength=levels)
    counts = np.bincount(codes, minlength=levels)
    fill = np.concatenate([[v.min()], edges])  # an empty bin keeps its lower edge (never used)
    centers = np.where(counts > 0, sums / np.maximum(counts, 1), fill)
    return codes, centers.astype(np.float32)


def dequantize(codes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return centers[codes.astype(np.int64)].astype(np.float32)
