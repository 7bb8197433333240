"""A held-out set on which rare names must win: what ``hotwords`` (contextual biasing) buys.

A recognizer that hears a name it has rarely seen proposes its common homophones: 李素丽 comes
back as 李素利 or 李肃丽. A user who knows the names that may come up (a contact list, the
participants of a meeting) sends them as ``hotwords``; each occurrence of one in a candidate adds
its bonus to the candidate's score. The set::

    tagged pd98 test lines ──▶ person and place names (nr, ns; a surname and a given name joined)
        seen at most ``max_train_count`` times in train ──▶ the sentence holding the name
        ──▶ distractors: one character *of the name* replaced by a homophone (as in
            :mod:`model.quality.confusion`), so only the name's spelling tells them apart

Each item carries its name as ``hotword``. Scoring an item with the hotwords of *other* items
(:func:`shuffled_hotwords`) is the control: a list that does not hold the spoken name must not
change the ranking.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from model.quality.confusion import HomophoneIndex, context_readings, is_hanzi, split_sentences
from model.text.data import split_lines, strip_pos_tags

NAME_TAGS = ("nr", "ns")  # person names, place names


@dataclass
class HotwordItem:
    candidates: list[str]
    answer: int
    hotword: str  # the name the spoken sentence holds


def tagged_words(raw_line: str) -> list[tuple[str, str]]:
    """``迈向/v  充满/v`` -> ``[("迈向", "v"), ("充满", "v")]`` (bracketed groups' brackets dropped)."""
    out = []
    for token in raw_line.split():
        word, _, tag = token.rpartition("/")
        word = word.lstrip("[")
        tag = tag.split("]")[0]
        if word:
            out.append((word, tag))
    return out


def names_in(words: Sequence[tuple[str, str]]) -> Iterator[str]:
    """Names of a line: runs of name-tagged words (江/nr 泽民/nr -> 江泽民), Han only, 2+ characters."""
    run: list[str] = []
    for word, tag in [*words, ("", "")]:
        if tag in NAME_TAGS:
            run.append(word)
            continue
        name = "".join(run)
        run = []
        if len(name) >= 2 and all(is_hanzi(c) for c in name):
            yield name


def build_hotword_set(
    raw_lines: Sequence[str],
    index: HomophoneIndex,
    split: str = "test",
    size: int = 300,
    distractors: int = 5,
    max_train_count: int = 1,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 60,
) -> list[HotwordItem]:
    """Items from the ``split`` lines of the tagged People's Daily (aligned with the pd98 split)."""
    tagged = [line for line in raw_lines if strip_pos_tags(line)]
    parts = split_lines(tagged)
    train_names = Counter(name for line in parts["train"] for name in names_in(tagged_words(line)))
    rng = random.Random(seed)
    pool = []
    for line in parts[split]:
        text = strip_pos_tags(line)
        for name in dict.fromkeys(names_in(tagged_words(line))):
            if train_names[name] > max_train_count:
                continue
            for sentence in split_sentences(text):
                if name in sentence and min_len <= len(sentence) <= max_len:
                    pool.append((sentence, name))
                    break
    rng.shuffle(pool)
    items: list[HotwordItem] = []
    for sentence, name in pool:
        if len(items) == size:
            break
        start = sentence.index(name)
        readings = context_readings(sentence)
        options = [
            (i, h)
            for i in range(start, start + len(name))
            for h in index.homophones(sentence[i], readings[i])
        ]
        if len(options) < distractors:
            continue
        made = [sentence[:i] + h + sentence[i + 1 :] for i, h in rng.sample(options, distractors)]
        answer = rng.randrange(distractors + 1)
        made.insert(answer, sentence)
        items.append(HotwordItem(candidates=made, answer=answer, hotword=name))
    return items


def shuffled_hotwords(items: Sequence[HotwordItem], seed: int = 0) -> list[str]:
    """For each item, another item's name (never one its own sentence holds): the control list."""
    rng = random.Random(seed)
    names = [item.hotword for item in items]
    out = []
    for item in items:
        other = [n for n in rng.sample(names, min(len(names), 8)) if n not in item.candidates[item.answer]]
        out.append(other[0] if other else "")
    return out
