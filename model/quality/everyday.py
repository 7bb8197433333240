"""Reranking items from raw sentences, the way a new user sends them (capitals, punctuation
against words, contractions), for word-level English models.

Each sentence of ``model/quality/sets/english_everyday.txt`` (written for this check, one per
line, never from a corpus) is tokenized the WikiText way (:func:`model.text.english.normalize`),
edited like the corpus sets (:mod:`.english_sets`: one real-word confusion, or one swap of two
adjacent words) and written back as people write (:func:`model.text.english.detokenize`). A model
whose tokenizer normalizes raw text is sent the raw candidates; a model without a normalizer (a
5-gram trained on WikiText as it ships) is sent each candidate tokenized by hand, i.e. in the
corpus's own form, so it is compared on text it can read.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from model.quality.confusion import RerankItem, with_original
from model.quality.english_sets import realword_distractors, wordswap_distractors
from model.text.english import detokenize, normalize

EVERYDAY = Path(__file__).parent / "sets" / "english_everyday.txt"


def everyday_sentences(path: str | Path = EVERYDAY) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def raw_items(sentences: Sequence[str], kind: str, distractors: int = 3, seed: int = 0) -> list[RerankItem]:
    """One item per sentence that has an edit of ``kind`` (``realword`` or ``wordswap``): the raw
    sentence and up to ``distractors`` raw variants, the original at a seeded position."""
    rng = random.Random(seed)
    items: list[RerankItem] = []
    for number, sentence in enumerate(sentences):
        tokens = normalize(sentence, "wikitext").split()
        for n in range(distractors, 0, -1):  # as many as the sentence allows
            edited = (
                realword_distractors(tokens, n, rng)
                if kind == "realword"
                else wordswap_distractors(tokens, n, rng)
            )
            if edited is not None:
                break
        else:
            continue
        raw = [(detokenize(text.split()), edit) for text, edit in edited]
        source = {"sentence": number}
        items.append(with_original(f"everyday-{kind}-{len(items)}", kind, sentence, raw, rng, source))
    return items


def as_sent_to(items: Sequence[RerankItem], normalizes: bool) -> list[RerankItem]:
    """The items as a model is sent them: raw, or (a model without a normalizer) tokenized by hand."""
    if normalizes:
        return list(items)
    return [
        RerankItem(
            id=item.id,
            kind=item.kind,
            candidates=[normalize(c, "wikitext") for c in item.candidates],
            answer=item.answer,
            edits=item.edits,
            source=item.source,
        )
        for item in items
    ]
