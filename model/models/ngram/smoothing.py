"""Smoothing: from n-gram counts to a normalized model, four ways (the textbook family).

Notation: ``h`` is a context (the previous tokens, cut at ``<bos>``), ``w`` the next token,
``h'`` = ``h`` without its first token, ``c(h w)`` a count, ``c(h) = Σ_w c(h w)``, and ``V'`` the
set of tokens that can be predicted: the vocabulary minus ``<pad>`` and ``<bos>`` (so ``<eos>``
and ``<unk>`` included). Every method gives every token of V' a nonzero probability in every
context, ``<unk>`` included, and every distribution sums to 1 over V'.

==============  ===========================================================================
``addk``        P(w | h) = (c(h w) + k) / (c(h) + k |V'|)          for the full-length context
                (uniform when h was never seen). Add-k is interpolation with the uniform
                distribution: ε = k |V'|.
``interp``      P(w | h) = (c(h w) + ε P(w | h')) / (c(h) + ε),    recursively down to
                P(w) = (c(w) + ε / |V'|) / (N + ε). A fixed ε; Witten-Bell would let it vary.
``katz``        Katz backoff: P(w | h) = d_c · c(h w) / c(h) if c(h w) > 0, else b(h) P(w | h').
                Good-Turing discounts d_c (c <= 5; 1 above), absolute discounting where the
                count-of-counts do not allow Good-Turing; b(h) makes the distribution sum to 1.
                Unigrams back off to the uniform distribution over the unseen tokens (<unk>).
``kn``          Interpolated modified Kneser-Ney, as KenLM's ``lmplz`` computes it (below).
==============  ===========================================================================

Each method returns :class:`~model.models.ngram.tables.BackoffTables` (the ARPA form): for every
n-gram ``h w`` seen in training its probability, and for every context ``h`` its backoff
weight b(h), the mass the context leaves to ``P(· | h')``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.models.ngram.counts import NGramCounts
from model.models.ngram.tables import BackoffTables
from model.text.tokenizer import BOS_ID, PAD_ID

DEFAULT_K = 0.01  # add-k
DEFAULT_EPSILON = 100.0  # weight of the shorter context (the best on pd98 valid, orders 3 and 5)
KATZ_MAX_COUNT = 5  # Katz: counts above this are trusted as they are (d = 1)
KN_FALLBACK = (0.5, 1.0, 1.5)  # lmplz --discount_fallback, for corpora too small for estimates


def outcome_mask(vocab_size: int) -> np.ndarray:
    """True for the tokens a model may predict (everything but <pad> and <bos>)."""
    mask = np.ones(vocab_size, dtype=bool)
    mask[[PAD_ID, BOS_ID]] = False
    return mask


def per_context_sum(counts: NGramCounts, n: int, values: np.ndarray) -> np.ndarray:
    """Σ over the n-grams ``h w`` of each context h (an (n-1)-gram) of ``values``."""
    return np.bincount(counts[n].prefix, weights=values, minlength=len(counts[n - 1]))


def to_tables(counts: NGramCounts, probs: list[np.ndarray], backoffs: list[np.ndarray]) -> BackoffTables:
    """Natural-log float32 tables from probabilities and backoff weights (float64)."""
    with np.errstate(divide="ignore"):
        logprob = [np.log(p).astype(np.float32) for p in probs]
        logbackoff = [np.log(b).astype(np.float32) for b in backoffs]
    return BackoffTables(counts.vocab_size, [o.keys for o in counts.orders], logprob, logbackoff)


# -- add-k ---------------------------------------------------------------------------------------
def additive(counts: NGramCounts, k: float = DEFAULT_K) -> tuple[BackoffTables, dict]:
    """Add-k (Laplace for k = 1) on the full-length contexts.

    A *full* context is one the model conditions on in its own right: the last ``order - 1``
    tokens, or a shorter history that starts at ``<bos>``. For a full context h seen in training,
    ``P(w | h) = (c(h w) + k) / (c(h) + k |V'|)``; for an unseen one, the uniform 1/|V'|.

    In backoff form: p*(h w) as above for the n-grams seen after a full context, and
    b(h) = k |V'| / (c(h) + k |V'|), so an unseen w gets b(h) · (1/|V'|) = k / (c(h) + k |V'|).
    The shorter, non-full n-grams (kept only as prefixes, the way ARPA needs them) are uniform.
    """
    if k <= 0:
        raise ValueError("k must be > 0")
    N, V = counts.order, counts.vocab_size
    outcomes = outcome_mask(V)
    size = outcomes.sum()
    uniform = np.where(outcomes, 1.0 / size, 0.0)
    if N == 1:
        c = counts[1].counts
        return to_tables(counts, [np.where(outcomes, (c + k) / (c.sum() + k * size), 0.0)], []), {"k": k}
    probs, backoffs = [uniform], []
    for n in range(2, N + 1):
        context = counts[n - 1]
        full = context.starts_with_bos | (n - 1 == N - 1)  # (m_{n-1},)
        total = per_context_sum(counts, n, counts[n].counts.astype(np.float64))
        backoffs.append(np.where(full & (total > 0), k * size / (total + k * size), 1.0))
        gram = counts[n]
        addk = (gram.counts + k) / (total[gram.prefix] + k * size)
        probs.append(np.where(full[gram.prefix], addk, 1.0 / size))
    return to_tables(counts, probs, backoffs), {"k": k}


# -- interpolation with a fixed weight -----------------------------------------------------------
def interpolated(counts: NGramCounts, epsilon: float = DEFAULT_EPSILON) -> tuple[BackoffTables, dict]:
    """P(w | h) = (c(h w) + ε · P(w | h')) / (c(h) + ε), recursively; P(w) mixes in 1/|V'|.

    In backoff form: p*(h w) is that formula for the seen n-grams and b(h) = ε / (c(h) + ε)
    (an unseen w keeps only the ε share of the shorter context's probability).
    """
    if epsilon <= 0:
        raise ValueError("epsilon must be > 0")
    V = counts.vocab_size
    outcomes = outcome_mask(V)
    c = counts[1].counts
    probs = [np.where(outcomes, (c + epsilon / outcomes.sum()) / (c.sum() + epsilon), 0.0)]
    backoffs = []
    for n in range(2, counts.order + 1):
        gram = counts[n]
        total = per_context_sum(counts, n, gram.counts.astype(np.float64))
        backoffs.append(np.where(total > 0, epsilon / (total + epsilon), 1.0))
        probs.append((gram.counts + epsilon * probs[-1][gram.suffix]) / (total[gram.prefix] + epsilon))
    return to_tables(counts, probs, backoffs), {"epsilon": epsilon}


# -- Katz backoff ----------------------------------------------------------------------------------
def absolute_discount(counts: np.ndarray) -> float:
    """Ney's estimate of one absolute discount for an order: D = n_1 / (n_1 + 2 n_2)."""
    n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
    return float(n1 / (n1 + 2 * n2)) if n1 > 0 and n2 > 0 else 0.5


def katz_discounted_counts(counts: np.ndarray, max_count: int = KATZ_MAX_COUNT) -> tuple[np.ndarray, str]:
    """Katz's discounted counts c* = d_c · c for one order, and the method used.

    Good-Turing (Katz 1987), with n_r the number of n-grams seen r times and K = ``max_count``::

        r* = (r + 1) n_{r+1} / n_r
        d_r = (r*/r - (K+1) n_{K+1} / n_1) / (1 - (K+1) n_{K+1} / n_1)     for 1 <= r <= K
        d_r = 1                                                             for r > K

    When some n_r (r <= K+1) is zero or a d_r falls outside (0, 1], which happens on small
    corpora, absolute discounting is used instead: c* = c - D (:func:`absolute_discount`).
    """
    n_r = np.bincount(counts[counts > 0], minlength=max_count + 2).astype(np.float64)
    K = max_count
    if np.all(n_r[1 : K + 2] > 0):
        common = (K + 1) * n_r[K + 1] / n_r[1]
        r = np.arange(1, K + 1)
        d = ((r + 1) * n_r[r + 1] / (r * n_r[r]) - common) / (1 - common)
        if common < 1 and np.all((d > 0) & (d <= 1)):
            ratio = np.ones(max(int(counts.max()), K) + 1)
            ratio[1 : K + 1] = d
            return ratio[counts] * counts, "good-turing"
    D = absolute_discount(counts)
    return np.where(counts > 0, counts - D, 0.0), f"absolute(D={D:.4f})"


def katz(counts: NGramCounts, max_count: int = KATZ_MAX_COUNT) -> tuple[BackoffTables, dict]:
    """Katz backoff with Good-Turing discounts (see :func:`katz_discounted_counts`).

    For a context h with seen tokens S(h)::

        p*(h w) = c*(h w) / c(h)                                   w in S(h)
        b(h)    = (1 - Σ_{w in S(h)} p*(h w)) / (1 - Σ_{w in S(h)} P(w | h'))

    so the mass the discounts free is shared among the unseen tokens in proportion to the
    shorter context's distribution. Two corner cases of the textbook recipe are patched:

    * a context whose counts are all above K frees no mass at all, which would give every token
      unseen after it probability 0; such a context is discounted absolutely instead (c - D);
    * where the shorter context has no unseen mass left (every token seen), there is nowhere to
      send freed mass, so the context keeps its undiscounted relative frequencies.

    At the bottom, the unigram's freed mass goes to the tokens never seen at all (``<unk>``).
    """
    V = counts.vocab_size
    outcomes = outcome_mask(V)
    methods = []
    c = counts[1].counts
    star, method = katz_discounted_counts(c, max_count)
    methods.append(method)
    unseen = outcomes & (c == 0)
    if unseen.any():
        p1 = star / c.sum()
        p1[unseen] = (1 - p1.sum()) / unseen.sum()
    else:
        p1 = c / c.sum()
    probs, backoffs = [np.where(outcomes, p1, 0.0)], []
    for n in range(2, counts.order + 1):
        gram = counts[n]
        star, method = katz_discounted_counts(gram.counts, max_count)
        methods.append(method)
        total = per_context_sum(counts, n, gram.counts.astype(np.float64))[gram.prefix]  # c(h) per n-gram
        p = star / total
        frees_nothing = per_context_sum(counts, n, p)[gram.prefix] >= 1 - 1e-12
        p = np.where(frees_nothing, (gram.counts - absolute_discount(gram.counts)) / total, p)
        lower = 1 - per_context_sum(counts, n, probs[-1][gram.suffix])  # shorter context's unseen mass
        stuck = lower[gram.prefix] <= 1e-12
        p = np.where(stuck, gram.counts / total, p)
        left = 1 - per_context_sum(counts, n, p)  # mass freed in each context
        has_room = (per_context_sum(counts, n, np.ones(len(gram))) > 0) & (lower > 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            backoffs.append(np.where(has_room, left / lower, 1.0))
        probs.append(p)
    return to_tables(counts, probs, backoffs), {"max_count": max_count, "discounts": methods}


# -- modified Kneser-Ney -----------------------------------------------------------------------------
def kn_adjusted_counts(counts: NGramCounts) -> list[np.ndarray]:
    """The counts Kneser-Ney estimates from, per order (Heafield et al. 2013, eq. 1)::

        a(g) = c(g)                           if g has the highest order or begins with <bos>
        a(g) = N1+(• g) = |{v : c(v g) > 0}|  otherwise (how many distinct tokens precede g)

    A token that follows many different contexts (a "continuation") gets a high lower-order
    count; one that is frequent only after one context (San *Francisco*) does not.
    """
    adjusted = []
    for n in range(1, counts.order + 1):
        gram = counts[n]
        if n == counts.order:
            adjusted.append(gram.counts.astype(np.float64))
            continue
        left_extensions = np.bincount(counts[n + 1].suffix, minlength=len(gram)).astype(np.float64)
        adjusted.append(np.where(gram.starts_with_bos, gram.counts, left_extensions))
    return adjusted


def kn_discounts(adjusted: np.ndarray) -> tuple[np.ndarray, bool]:
    """Modified-KN discounts [0, D1, D2, D3+] of one order from its count-of-counts t_k.

    Chen & Goodman (1998), eq. 26::

        Y = t1 / (t1 + 2 t2),     D_k = k - (k + 1) Y t_{k+1} / t_k     (k = 1, 2, 3)

    Falls back to lmplz's ``--discount_fallback`` values (0.5, 1, 1.5) when a t_k is zero or a
    discount leaves [0, k] (tiny corpora); the second value says whether it did.
    """
    t = np.bincount(adjusted.astype(np.int64)[adjusted > 0], minlength=5)[:5].astype(np.float64)
    if np.all(t[1:5] > 0):
        y = t[1] / (t[1] + 2 * t[2])
        k = np.arange(1, 4)
        d = k - (k + 1) * y * t[k + 1] / t[k]
        if np.all((d >= 0) & (d <= k)):
            return np.concatenate([[0.0], d]), False
    return np.array([0.0, *KN_FALLBACK]), True


def kneser_ney(counts: NGramCounts) -> tuple[BackoffTables, dict]:
    """Interpolated modified Kneser-Ney, computed the way KenLM's ``lmplz`` does.

    With a(·) the adjusted counts (:func:`kn_adjusted_counts`) and D(a) the discount of a count
    (0 for a = 0, D1, D2, D3+ for a >= 3), for every context h of an order::

        P(w | h) = (a(h w) - D(a(h w))) / Σ_v a(h v)  +  γ(h) · P(w | h')
        γ(h)     = (D1 N1(h •) + D2 N2(h •) + D3+ N3+(h •)) / Σ_v a(h v)

    where N_k(h •) counts the tokens seen after h with adjusted count k (3: 3 or more). The
    recursion ends in the uniform distribution: P(w) = (a(w) - D(a(w))) / Σ a + γ / |V'|, where
    |V'| counts ``<unk>`` and ``<eos>`` but not ``<bos>`` -- so ``<unk>``, never seen, gets γ/|V'|.
    In backoff form the backoff weight of a context is b(h) = γ(h).
    """
    V = counts.vocab_size
    outcomes = outcome_mask(V)
    adjusted = kn_adjusted_counts(counts)
    discounts, fallback = zip(*(kn_discounts(a) for a in adjusted), strict=True)

    def discount(n: int) -> np.ndarray:
        a = adjusted[n - 1]
        return discounts[n - 1][np.minimum(a, 3).astype(np.int64)]  # D(a); D(0) = 0

    a1, d1 = adjusted[0], discount(1)
    gamma = d1.sum() / a1.sum()
    probs = [np.where(outcomes, (a1 - d1) / a1.sum() + gamma / outcomes.sum(), 0.0)]
    backoffs = []
    for n in range(2, counts.order + 1):
        gram, a, d = counts[n], adjusted[n - 1], discount(n)
        total = per_context_sum(counts, n, a)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.where(total > 0, per_context_sum(counts, n, d) / total, 1.0)
        backoffs.append(gamma)
        probs.append((a - d) / total[gram.prefix] + gamma[gram.prefix] * probs[-1][gram.suffix])
    info = {
        "discounts": [[round(float(x), 6) for x in ds[1:]] for ds in discounts],
        "discount_fallback": [n + 1 for n, f in enumerate(fallback) if f],
    }
    return to_tables(counts, probs, backoffs), info


Smoother = Callable[..., tuple[BackoffTables, dict]]
SMOOTHERS: dict[str, Smoother] = {"addk": additive, "interp": interpolated, "katz": katz, "kn": kneser_ney}
