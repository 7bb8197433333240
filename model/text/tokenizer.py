"""Tokenizers: text <-> ids, at the character level (default for Chinese) or the word level.

The vocabulary always starts with four special tokens, in this order::

    0 <pad>   1 <unk>   2 <bos>   3 <eos>

Unknown input never fails: it maps to ``<unk>`` and is counted (``Encoding.oov``). A tokenizer
is saved as JSON beside the weights, so a checkpoint never needs the corpus again.

A tokenizer also fixes the reading direction. A ``backward`` tokenizer encodes a text's pieces
right to left, so a model trained on its ids is a right-to-left language model: it scores a
whole, finished sentence as P(w_n) P(w_{n-1} | w_n) … P(w_1 | w_2 … w_n). The joint probability
is the same quantity a forward model estimates, which is why the two can be added when
rescoring finished hypotheses (never when generating: a backward model cannot continue a text).

A word tokenizer may also carry a ``normalizer`` (:mod:`model.text.english`): the way its corpus
was prepared ("wikitext" or "ptb"). Its ``encode`` then reads text as people write it
(``Don't stop.`` -> ``Don 't stop .``), each piece keeping the raw text it came from, and decoded
text is written back the same way (``don't``, ``3.5``, ``well-known``). Without one (the default,
and what older tokenizer files get) a word is whatever whitespace separates.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from model.text import english

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
KINDS = ("char", "word")
DIRECTIONS = ("forward", "backward")
NORMALIZERS = ("", *english.NORMALIZERS)  # "" = none (whitespace-separated words as they are)


def append_piece(text: str, piece: str, joiner: str) -> str:
    """``text`` with one more decoded ``piece``: ``joiner`` goes between two non-empty pieces."""
    return text + (joiner if text and piece else "") + piece


@dataclass
class Encoding:
    ids: list[int]  # token ids, no <bos>/<eos>
    tokens: list[str]  # the input pieces: the original text of each, unknown ones included
    oov: int = 0  # how many pieces mapped to <unk>


@dataclass
class Tokenizer:
    kind: str  # "char" or "word"
    tokens: list[str]  # id -> token; the first four are SPECIALS
    counts: dict[str, int] = field(default_factory=dict)  # training counts (for rare-token handling)
    direction: str = "forward"  # forward (left to right) | backward (ids and pieces right to left)
    normalizer: str = ""  # word tokenizers: how the corpus was prepared ("wikitext", "ptb"; "" none)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"tokenizer direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"tokenizer normalizer must be one of {NORMALIZERS}, got {self.normalizer!r}")
        if self.normalizer and self.kind != "word":
            raise ValueError("a normalizer is for word tokenizers")
        if tuple(self.tokens[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("vocabulary has duplicate tokens")

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        lines: Iterable[str],
        kind: str = "char",
        min_count: int = 1,
        direction: str = "forward",
        normalizer: str = "",
    ) -> Tokenizer:
        """Vocabulary of every piece seen at least ``min_count`` times, most frequent first.

        ``lines`` are the prepared corpus: a ``normalizer`` is only recorded (for the text the
        tokenizer will meet later), never applied to them."""
        counter: Counter[str] = Counter()
        for line in lines:
            counter.update(split_text(line, kind))
        for s in SPECIALS:
            counter.pop(s, None)
        kept = [t for t, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        return cls(
            kind=kind,
            tokens=[*SPECIALS, *kept],
            counts={t: counter[t] for t in kept},
            direction=direction,
            normalizer=normalizer,
        )

    # -- using --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_id(self, token: str) -> int:
        return self._index.get(token, UNK_ID)

    @cached_property
    def language(self) -> str:
        """The language of the text it was built from, told by its script: ``zh`` when most letters
        of the training text (counted by frequency) are Han characters, ``en`` when most are Latin,
        else ``und`` (BCP 47 for "undetermined")."""
        scripts: Counter[str] = Counter()
        for token in self.tokens[4:]:
            weight = self.counts.get(token, 1)
            for ch in token:
                if ch.isalpha():
                    scripts[unicodedata.name(ch, "").split(" ")[0]] += weight
        if not scripts:
            return "und"
        script, count = scripts.most_common(1)[0]
        if count * 2 <= sum(scripts.values()):
            return "und"
        return {"CJK": "zh", "LATIN": "en"}.get(script, "und")

    @property
    def backward(self) -> bool:
        return self.direction == "backward"

    def split(self, text: str) -> list[str]:
        """The text's pieces in the model's reading order (right to left for a backward tokenizer)."""
        return [raw for _, raw in self._pieces(text)]

    def _pieces(self, text: str) -> list[tuple[str, str]]:
        """``(vocabulary form, original text)`` of each piece, in the model's reading order."""
        if self.normalizer:
            pieces = [(token, text[start:end]) for token, start, end in english.pieces(text, self.normalizer)]
        else:
            pieces = [(p, p) for p in split_text(text, self.kind)]
        return pieces[::-1] if self.backward else pieces

    def encode(self, text: str) -> Encoding:
        """Ids of ``text``'s pieces; ``tokens`` are the pieces' original text (``1,000`` where a
        PTB tokenizer reads ``N``), so each can be found in ``text``."""
        forms = self._pieces(text)
        pieces = [raw for _, raw in forms]
        ids = [self._index.get(token, UNK_ID) for token, _ in forms]
        # A literal "<unk>" typed by a user is not a known word: only specials by id are special.
        ids = [UNK_ID if i < 4 else i for i in ids]
        return Encoding(ids=ids, tokens=pieces, oov=sum(1 for i in ids if i == UNK_ID))

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out = [self.tokens[i] for i in ids if not (skip_special and i < 4)]
        if self.backward:
            out = out[::-1]
        return english.detokenize(out) if self.normalizer else self.joiner.join(out)

    def piece(self, token_id: int) -> str:
        """Text of one token id, as it would appear in decoded text."""
        return self.tokens[token_id]

    @property
    def joiner(self) -> str:
        """What goes between decoded pieces: nothing for characters, a space for words."""
        return "" if self.kind == "char" else " "

    def append_piece(self, text: str, piece: str) -> str:
        """``text`` with one more token's ``piece`` (how every generated text is assembled).

        With a normalizer, pieces are joined as people write (``don`` + ``'t`` -> ``don't``); the
        text before is never changed, so what was already shown stays true."""
        if self.normalizer:
            return english.append_token(text, piece)
        return append_piece(text, piece, self.joiner)

    def rare_ids(self, max_count: int = 1) -> list[int]:
        """Ids of tokens seen at most ``max_count`` times in training (stand-ins for unknowns)."""
        return [self._index[t] for t, n in self.counts.items() if n <= max_count]

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"kind": self.kind, "tokens": self.tokens, "counts": self.counts}
        d |= {"direction": self.direction} if self.backward else {}
        return d | ({"normalizer": self.normalizer} if self.normalizer else {})

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        return cls(
            kind=d["kind"],
            tokens=list(d["tokens"]),
            counts=dict(d.get("counts", {})),
            direction=d.get("direction", "forward"),
            normalizer=d.get("normalizer", ""),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def split_text(text: str, kind: str) -> list[str]:
    """Characters (every code point, spaces included) or whitespace-separated words."""
    if kind == "char":
        return list(text)
    if kind == "word":
        return text.split()
    raise ValueError(f"tokenizer kind must be one of {KINDS}, got {kind!r}")
