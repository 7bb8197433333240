"""English reranking sets (real-word errors, adjacent-word swaps) on a tiny word-level corpus."""

import random

import pytest

from model.quality.confusion import load_items
from model.quality.english_sets import (
    CONFUSIONS,
    build_english_set,
    confusion_forms,
    realword_distractors,
    word_sentences,
    wordswap_distractors,
)
from model.quality.rerank import SetSpec, build_and_save_set
from model.text.english import normalize

HELDOUT = [
    " = A Heading With Their Name = ",
    " Their house is there , and it 's too big to buy . They 're new here ; we were told no . ",
    " He knew the weather was quite right for it , and then he passed the lead to them . ",
    " <unk> <unk> to <unk> <unk> the <unk> <unk> <unk> . ",
    "",
    " The council 's advice was to accept the loss rather than lose its whole board . ",
]


def test_every_listed_confusion_is_tokenized_alike_in_both_corpora():
    assert len(CONFUSIONS) >= 27
    for group in CONFUSIONS:
        for word in group:
            assert normalize(word, "wikitext").lower() == normalize(word, "ptb")
    forms = confusion_forms()
    assert ("they", "'re") in forms[("their",)] and ("its",) in forms[("it", "'s")]


def test_sentences_are_cut_after_end_tokens_and_headings_skipped():
    sentences = word_sentences(HELDOUT, 3, 60)
    assert all(s[0] != "=" for _, _, s in sentences)
    assert [(i, j) for i, j, _ in sentences][:3] == [(1, 0), (1, 1), (2, 0)]
    assert sentences[0][2][-1] == "."


def test_realword_items_swap_one_word_for_a_confusion():
    items = build_english_set("realword", HELDOUT, size=10, distractors=3, seed=1, min_len=5)
    assert len(items) >= 3
    forms = confusion_forms()
    for item in items:
        original = item.reference.split()
        assert len(set(item.candidates)) == 4 and item.edits[item.answer] is None
        for cand, edit in zip(item.candidates, item.edits, strict=True):
            if edit is None:
                continue
            w, old, new = edit["word"], edit["from"].split(), edit["to"].split()
            assert original[w : w + len(old)] == old
            assert cand.split() == original[:w] + new + original[w + len(old) :]
            assert tuple(t.lower() for t in new) in forms[tuple(t.lower() for t in old)]
            assert item.reference[edit["pos"] :].startswith(edit["from"])
            assert "<unk>" not in old + new


def test_replacements_keep_the_capital_and_stay_inside_the_vocabulary():
    tokens = ["Their", "house", "is", "there"]
    made = realword_distractors(tokens, 4, random.Random(0))
    assert made is not None
    assert {"There house is there", "They 're house is there"} <= {t for t, _ in made}
    assert realword_distractors(tokens, 5, random.Random(0)) is None  # only four edits exist
    made = realword_distractors(tokens, 2, random.Random(0), vocab={"their", "there", "house", "is"})
    assert made is not None and all("'re" not in t for t, _ in made)


def test_wordswap_items_swap_adjacent_words_never_unk_or_punctuation():
    items = build_english_set("wordswap", HELDOUT, size=10, distractors=2, seed=0, min_len=5)
    assert len(items) >= 3
    for item in items:
        original = item.reference.split()
        for cand, edit in zip(item.candidates, item.edits, strict=True):
            if edit is not None:
                w = edit["word"]
                assert edit["swap"] == original[w : w + 2] and edit["swap"][0] != edit["swap"][1]
                assert cand.split() == [*original[:w], original[w + 1], original[w], *original[w + 2 :]]
                assert all(t[0].isalnum() and t != "<unk>" for t in edit["swap"])
    assert wordswap_distractors(["<unk>", "<unk>", ",", "the"], 1, random.Random(0)) is None


def test_sets_are_seeded_and_limited():
    a = build_english_set("realword", HELDOUT, size=2, distractors=1, seed=3, min_len=5)
    assert a == build_english_set("realword", HELDOUT, size=2, distractors=1, seed=3, min_len=5)
    assert len(a) == 2
    others = [
        build_english_set("realword", HELDOUT, size=5, distractors=2, seed=s, min_len=5) for s in range(5)
    ]
    assert any(o != others[0] for o in others)
    with pytest.raises(ValueError, match="kind"):
        build_english_set("homophone", HELDOUT)


def test_the_benchmark_builds_and_saves_english_sets(tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(HELDOUT) + "\n", encoding="utf-8")
    (data / "test.txt").write_text("\n".join(HELDOUT) + "\n", encoding="utf-8")
    for kind in ("realword", "wordswap"):
        spec = SetSpec(kind=kind, size=3, distractors=1, min_len=5)
        items, path = build_and_save_set(data, spec, tmp_path / "sets")
        assert items and path is not None and load_items(path) == items
