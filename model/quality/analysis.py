"""Where a model wins or loses a rerank: per-position margins and a split by character frequency.

Every distractor differs from its original at one place (a replaced character, or a swapped
pair), so the candidates share the prefix before it and a left-to-right model gives both the
same log-probs there. What decides the comparison is the *margin* per position::

    margin[t] = log P(original[t] | original[:t]) - log P(distractor[t] | distractor[:t])

at the edit (offset 0; for a swap, offsets 0 and 1 are the swapped pair) and at the positions
that follow it, up to ``<eos>``. A positive total margin means the model prefers the original
over that distractor. :func:`position_profile` averages the margins by offset;
:func:`frequency_profile` splits the pairs by how often the original character occurs in train.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.quality.confusion import RerankItem

OFFSET_BUCKETS = ("before", "edit", "+1", "+2", "+3", "+4..end")
FREQUENCY_EDGES = (20, 200, 2000)  # train counts of the original character: <20, 20-199, ...


@dataclass
class Pair:
    """One original-versus-distractor comparison inside an item."""

    item: int  # index of the item in its set
    candidate: int  # index of the distractor in the item
    pos: int  # character position of the edit
    original_char: str  # character at ``pos`` in the original
    margin: np.ndarray  # (n + 1,) per-token margin, original minus distractor, <eos> last

    def buckets(self, width: int = 1) -> dict[str, float]:
        """Summed margin before the edit, at it (``width`` positions), and at each offset after."""
        m, p = self.margin, self.pos
        after = m[p + width :]
        out = {"before": float(m[:p].sum()), "edit": float(m[p : p + width].sum())}
        for k in range(1, 4):
            out[f"+{k}"] = float(after[k - 1]) if len(after) >= k else 0.0
        out["+4..end"] = float(after[3:].sum())
        return out

    @property
    def total(self) -> float:
        return float(self.margin.sum())


def pairs_of(items: Sequence[RerankItem], per_token: Sequence[Sequence[torch.Tensor]]) -> list[Pair]:
    """Every (original, distractor) pair of every item, with its per-position margin."""
    pairs = []
    for i, (item, lps) in enumerate(zip(items, per_token, strict=True)):
        ref = lps[item.answer].numpy()
        for j, edit in enumerate(item.edits):
            if edit is None:
                continue
            other = lps[j].numpy()
            if len(other) != len(ref):
                raise ValueError(
                    f"item {item.id}: candidates tokenize to different lengths; "
                    "the position analysis needs a character tokenizer"
                )
            pairs.append(Pair(i, j, edit["pos"], item.reference[edit["pos"]], ref - other))
    return pairs


def edit_width(items: Sequence[RerankItem]) -> int:
    """Positions an edit occupies: 1 for a replaced character, 2 for a swapped pair."""
    return 2 if items and items[0].kind == "wordorder" else 1


def _after(row: dict[str, float]) -> float:
    return sum(row[b] for b in OFFSET_BUCKETS[2:])


def position_profile(pairs: Sequence[Pair], width: int = 1) -> dict:
    """Mean margin per offset bucket, the pairwise win rate, and where the losses come from."""
    if not pairs:
        return {"pairs": 0}
    rows = [p.buckets(width) for p in pairs]
    totals = np.array([p.total for p in pairs])
    mean = {b: float(np.mean([r[b] for r in rows])) for b in OFFSET_BUCKETS}
    lost = [r for r, t in zip(rows, totals, strict=True) if t <= 0]
    return {
        "pairs": len(pairs),
        "win_rate": float(np.mean(totals > 0)),  # original strictly preferred over the distractor
        "mean_margin": mean,
        "mean_total": float(totals.mean()),
        # over the pairs the model gets wrong: the mean margin at the edit and after it
        "lost_pairs": len(lost),
        "lost_edit": float(np.mean([r["edit"] for r in lost])) if lost else 0.0,
        "lost_after": float(np.mean([_after(r) for r in lost])) if lost else 0.0,
    }


def frequency_bucket(count: int, edges: Sequence[int] = FREQUENCY_EDGES) -> str:
    lo = 0
    for edge in edges:
        if count < edge:
            return f"{lo}-{edge - 1}"
        lo = edge
    return f">={lo}"


def frequency_profile(
    pairs: Sequence[Pair], counts: Counter[str], width: int = 1, edges: Sequence[int] = FREQUENCY_EDGES
) -> dict[str, dict]:
    """Win rate and mean margins by train frequency of the original character."""
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(frequency_bucket(counts.get(p.original_char, 0), edges), []).append(p)
    order = [frequency_bucket(e - 1, edges) for e in edges] + [frequency_bucket(edges[-1], edges)]
    out = {}
    for name in order:
        group = groups.get(name, [])
        if not group:
            continue
        rows = [p.buckets(width) for p in group]
        out[name] = {
            "pairs": len(group),
            "win_rate": float(np.mean([p.total > 0 for p in group])),
            "edit": float(np.mean([r["edit"] for r in rows])),
            "after": float(np.mean([_after(r) for r in rows])),
        }
    return out
