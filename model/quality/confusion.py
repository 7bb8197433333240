"""Confusion sets: n-best lists in which exactly one candidate is the sentence that was said.

Two kinds, both built from held-out sentences with a fixed seed (same arguments, same set):

* ``homophone`` (the ASR case, 厨房里食油用完了 vs 厨房里石油用完了): each distractor replaces one
  Chinese character by another character with the same toneless pinyin. Readings are taken in
  context (``pypinyin.lazy_pinyin`` on the whole sentence, so 银行 reads "hang"); a replacement
  must differ from the original and must be read that way at least ``min_count`` times in
  train (a recognizer would not propose characters it has hardly seen, or readings nobody uses).
  The edit position is chosen uniformly among the characters that have such a homophone, then
  the replacement uniformly among them.
* ``wordorder`` (the translation case, 你先走 vs 你走先): each distractor swaps two adjacent,
  different Chinese characters, at a different position for every distractor. Characters, not
  words: the prepared corpus has no word segmentation, and a character swap is also a swap of
  two one-character words where the text has them.

Sentences are the held-out lines cut after 。！？ (keeping closing quotes), because a recognizer
hypothesis is a sentence, not a newspaper paragraph; only those of ``min_len..max_len``
characters are used. Each sentence gives at most one item; the original sits at a random
position in its list. A set is stored as JSONL, one :class:`RerankItem` per line.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SET_KINDS = ("homophone", "wordorder")
_SENTENCE = re.compile(r".+?(?:[。！？]+[”’」』）]*|$)")


@dataclass
class RerankItem:
    id: str  # "<kind>-<number>", stable for a given set
    kind: str  # "homophone" or "wordorder"
    candidates: list[str]  # the original and its distractors, in presentation order
    answer: int  # index of the original in ``candidates``
    edits: list[dict | None]  # per candidate: None for the original, else what was changed
    source: dict = field(default_factory=dict)  # where the sentence came from (split, line, sentence)

    @property
    def reference(self) -> str:
        return self.candidates[self.answer]


def with_original(
    item_id: str,
    kind: str,
    original: str,
    distractors: Sequence[tuple[str, dict]],
    rng: random.Random,
    source: dict,
) -> RerankItem:
    """An item: the ``original`` put among its ``distractors`` (text, edit) at a seeded position."""
    made: list[tuple[str, dict | None]] = list(distractors)
    answer = rng.randrange(len(made) + 1)
    made.insert(answer, (original, None))
    return RerankItem(
        id=item_id,
        kind=kind,
        candidates=[c for c, _ in made],
        answer=answer,
        edits=[e for _, e in made],
        source=source,
    )


def is_hanzi(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def split_sentences(line: str) -> list[str]:
    """A paragraph cut after 。！？ (a closing quote stays with its sentence)."""
    return [s for s in _SENTENCE.findall(line) if s.strip()]


def sentence_pool(lines: Sequence[str], min_len: int, max_len: int) -> list[tuple[int, int, str]]:
    """``(line number, sentence number, sentence)`` for every sentence of an allowed length."""
    return [
        (i, j, s)
        for i, line in enumerate(lines)
        for j, s in enumerate(split_sentences(line))
        if min_len <= len(s) <= max_len
    ]


# -- homophones --------------------------------------------------------------------------------
def _no_reading(text: str) -> Any:
    """pypinyin's ``errors`` hook: one empty reading per non-Chinese character."""
    return [""] * len(text)


def context_readings(sentence: str) -> list[str | None]:
    """The toneless reading of each character as said in this sentence (None if not Chinese)."""
    from pypinyin import Style, lazy_pinyin

    readings = lazy_pinyin(sentence, style=Style.NORMAL, errors=_no_reading)
    if len(readings) != len(sentence):  # pypinyin grouped something: fall back to one by one
        readings = [lazy_pinyin(ch, style=Style.NORMAL)[0] if is_hanzi(ch) else "" for ch in sentence]
    return [r if r and is_hanzi(ch) else None for ch, r in zip(sentence, readings, strict=True)]


class HomophoneIndex:
    """Toneless reading -> the characters read that way at least ``min_count`` times in train.

    Readings are counted in context, so 行 is proposed for "hang" and for "xing" (both are
    frequent in news text) but 登 is never proposed for "de", a reading dictionaries list and
    nobody says.
    """

    def __init__(self, reading_counts: dict[str, dict[str, int]], min_count: int = 20):
        self.reading_counts = reading_counts  # reading -> character -> times read that way
        self.min_count = min_count
        self.by_reading = {
            r: sorted((c for c, n in chars.items() if n >= min_count), key=lambda c: (-chars[c], c))
            for r, chars in reading_counts.items()
        }

    @staticmethod
    def count_readings(lines: Iterable[str]) -> dict[str, dict[str, int]]:
        counts: Counter[tuple[str, str]] = Counter()
        for line in lines:
            counts.update((r, ch) for ch, r in zip(line, context_readings(line), strict=True) if r)
        out: dict[str, dict[str, int]] = {}
        for (r, ch), n in sorted(counts.items()):
            out.setdefault(r, {})[ch] = n
        return out

    @classmethod
    def from_lines(cls, lines: Iterable[str], min_count: int = 20) -> HomophoneIndex:
        return cls(cls.count_readings(lines), min_count)

    def homophones(self, ch: str, reading: str | None) -> list[str]:
        """Frequent characters other than ``ch`` that sound like ``ch`` read as ``reading``."""
        if reading is None:
            return []
        return [c for c in self.by_reading.get(reading, ()) if c != ch]


def homophone_distractors(
    sentence: str, index: HomophoneIndex, n: int, rng: random.Random
) -> list[tuple[str, dict]] | None:
    """``n`` distinct one-character homophone edits of ``sentence``, or None if it has fewer."""
    options = {
        i: index.homophones(ch, r)
        for i, (ch, r) in enumerate(zip(sentence, context_readings(sentence), strict=True))
    }
    options = {i: list(hs) for i, hs in options.items() if hs}
    if sum(len(hs) for hs in options.values()) < n:
        return None
    out: list[tuple[str, dict]] = []
    while len(out) < n:
        pos = rng.choice(sorted(options))
        hs = options[pos]
        new = hs.pop(rng.randrange(len(hs)))
        if not hs:
            del options[pos]
        edit = {"pos": pos, "from": sentence[pos], "to": new}
        out.append((sentence[:pos] + new + sentence[pos + 1 :], edit))
    return out


def wordorder_distractors(sentence: str, n: int, rng: random.Random) -> list[tuple[str, dict]] | None:
    """``n`` distinct swaps of two adjacent different Chinese characters, or None if fewer exist."""
    positions = [
        i
        for i in range(len(sentence) - 1)
        if is_hanzi(sentence[i]) and is_hanzi(sentence[i + 1]) and sentence[i] != sentence[i + 1]
    ]
    if len(positions) < n:
        return None
    out = []
    for pos in sorted(rng.sample(positions, n)):
        swapped = sentence[:pos] + sentence[pos + 1] + sentence[pos] + sentence[pos + 2 :]
        out.append((swapped, {"pos": pos, "swap": sentence[pos : pos + 2]}))
    return out


# -- building a set ----------------------------------------------------------------------------
def build_set(
    kind: str,
    heldout: Sequence[str],
    homophones: HomophoneIndex | None = None,
    *,
    size: int = 500,
    distractors: int = 5,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 60,
    split: str = "test",
) -> list[RerankItem]:
    """Up to ``size`` items of ``distractors + 1`` candidates from the sentences of ``heldout``.

    ``homophones`` (needed for the homophone kind) says which characters may replace which.
    Fewer than ``size`` items come back only if the held-out text has too few usable sentences.
    """
    if kind not in SET_KINDS:
        raise ValueError(f"set kind must be one of {SET_KINDS}, got {kind!r}")
    if distractors < 1:
        raise ValueError("distractors must be at least 1")
    if size < 1:
        raise ValueError("size must be at least 1")
    index = homophones if kind == "homophone" else None
    if kind == "homophone" and index is None:
        raise ValueError("a homophone set needs a HomophoneIndex built from the train text")
    rng = random.Random(seed)
    pool = sentence_pool(heldout, min_len, max_len)
    rng.shuffle(pool)
    items: list[RerankItem] = []
    for line_no, sent_no, sentence in pool:
        if len(items) == size:
            break
        made: list[tuple[str, Any]] | None = (
            homophone_distractors(sentence, index, distractors, rng)
            if index is not None
            else wordorder_distractors(sentence, distractors, rng)
        )
        if made is None:
            continue
        source = {"split": split, "line": line_no, "sentence": sent_no}
        items.append(with_original(f"{kind}-{len(items)}", kind, sentence, made, rng, source))
    return items


# -- storage -----------------------------------------------------------------------------------
def save_items(path: str | Path, items: Sequence[RerankItem]) -> Path:
    """Write a set as JSONL (to a temporary file, then renamed: never half-written)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def load_items(path: str | Path) -> list[RerankItem]:
    """Read a JSONL set; a malformed line raises ValueError naming the file and line."""
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = RerankItem(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a rerank item ({e})") from e
            if not 0 <= item.answer < len(item.candidates) or len(item.edits) != len(item.candidates):
                raise ValueError(f"{path}:{n}: 'answer' or 'edits' does not match 'candidates'")
            items.append(item)
    return items
