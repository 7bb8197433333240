"""Raw everyday sentences as reranking items: edits made on WikiText tokens, written back raw."""

from __future__ import annotations

from model.quality.everyday import as_sent_to, everyday_sentences, raw_items

SENTENCES = ["I think their car is parked outside.", "It's too late to call them now.", "Hello!"]


def test_the_shipped_sentences_are_raw_text() -> None:
    sentences = everyday_sentences()
    assert len(sentences) >= 100
    assert not any(" n't" in s or " 's" in s or " ." in s for s in sentences)


def test_items_keep_the_original_and_differ_by_one_edit() -> None:
    items = raw_items(SENTENCES, "realword", distractors=2, seed=1)
    assert [i.source["sentence"] for i in items] == [0, 1]  # "Hello!" has nothing to confuse
    for item in items:
        assert item.reference == SENTENCES[item.source["sentence"]]
        assert item.edits[item.answer] is None
        assert len(set(item.candidates)) == len(item.candidates) >= 2
    first = items[0].candidates
    assert (
        "I think there car is parked outside." in first or "I think they're car is parked outside." in first
    )
    assert raw_items(SENTENCES, "realword", distractors=2, seed=1) == items  # seeded


def test_word_swaps_and_hand_tokenized_copies() -> None:
    items = raw_items(SENTENCES, "wordswap", distractors=3)
    assert items and all(len(i.candidates) >= 2 for i in items)
    tokenized = as_sent_to(items, normalizes=False)
    assert tokenized[1].candidates[tokenized[1].answer] == "It 's too late to call them now ."
    assert as_sent_to(items, normalizes=True) == items
