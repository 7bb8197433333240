"""English normalizers (WikiText-2, PTB) and the detokenizer, and a word tokenizer that uses them."""

from pathlib import Path

import pytest

from model.text import english
from model.text.english import append_token, detokenize, normalize
from model.text.tokenizer import UNK_ID, Tokenizer
from service.tokens import piece_starts

SHARED = Path("/work/shared/data")


@pytest.mark.parametrize(
    "raw, wikitext, ptb",
    [
        ("Don't stop.", "Don 't stop .", "do n't stop"),
        ("It's 3.5% of $1,000.", "It 's 3 @.@ 5 % of $ 1 @,@ 000 .", "it 's N N of $ N"),
        ("a well-known (U.S.) firm", "a well @-@ known ( U.S. ) firm", "a well-known u.s. firm"),
        ("O'Brien's dog can't swim.", "O 'Brien 's dog can 't swim .", "o'brien 's dog ca n't swim"),
        ('He said "no" to Mr. Smith.', 'He said " no " to Mr. Smith .', "he said no to mr. smith"),
        ("They're here, aren't they?", "They 're here , aren 't they ?", "they 're here are n't they"),
        (
            "I won't go; the 1990s, e.g. No. 5.",
            "I won 't go ; the 1990s , e.g. No. 5 .",
            "i wo n't go the 1990s e.g. no. N",
        ),
        ("etc. and more", "etc. and more", "etc. and more"),
        ("S&P 500 rose 2.5 points.", "S & P 500 rose 2 @.@ 5 points .", "s&p N rose N points"),
        ("", "", ""),
    ],
)
def test_raw_sentences_are_written_as_the_corpus_writes_them(raw, wikitext, ptb):
    assert normalize(raw, "wikitext") == wikitext
    assert normalize(raw, "ptb") == ptb


# Lines written in each corpus's conventions (not copied from the corpora).
WIKITEXT_LINES = [
    " = The Harbour Bridge = ",
    " The bridge , a 1 @,@ 200 @-@ metre span , cost $ 4 @.@ 5 million ( about £ 3 million ) . ",
    " Locals don 't call it \" the <unk> \" ; O 'Brien 's company did ... ",
    " The U.S. Navy 's No. 2 ship sailed in the 1920s – and again in 1941 — with Mr. <unk> . ",
    " It 's 40 % cheaper than the second- and third @-@ class fares , e.g. <formula> . ",
]
PTB_LINES = [
    "the bridge cost $ N million or about N N more than expected",
    "mr. <unk> said the company does n't expect a third-quarter loss at s&p 's <unk> inc.",
    "they 're buying us$ N of mgm\\/ua shares in the 1980s said the n.v. unit of <unk> corp",
    "it 's not clear whether the funds ' managers will sell \\* she said nov. N",
]


@pytest.mark.parametrize(
    "style, line", [*(("wikitext", x) for x in WIKITEXT_LINES), *(("ptb", x) for x in PTB_LINES)]
)
def test_prepared_lines_are_left_unchanged(style, line):
    assert normalize(line, style) == " ".join(line.split())


@pytest.mark.parametrize(
    "style, path",
    [("wikitext", "wikitext-2/test.txt"), ("ptb", "ptb/ptb.test.txt"), ("ptb", "ptb/ptb.valid.txt")],
)
def test_shared_corpus_lines_are_left_unchanged(style, path):
    file = SHARED / path
    if not file.exists():
        pytest.skip(f"{file} is not here")
    lines = file.read_text(encoding="utf-8").splitlines()[:400]
    changed = [line for line in lines if normalize(line, style) != " ".join(line.split())]
    assert changed == []


@pytest.mark.parametrize(
    "tokens, text",
    [
        ("Don 't stop .", "Don't stop."),
        ("do n't stop , it 's N N", "don't stop, it's N N"),
        ("ca n't and wo n't", "can't and won't"),
        ("a well @-@ known 3 @.@ 5 % rise of $ 1 @,@ 000", "a well-known 3.5% rise of $1,000"),
        ('he said " no " ( twice ) .', 'he said "no" (twice).'),
        ("O 'Brien 's dog", "O'Brien's dog"),
        ("mgm\\/ua", "mgm/ua"),
    ],
)
def test_detokenize_writes_as_people_write(tokens, text):
    assert detokenize(tokens.split()) == text


def test_append_token_never_changes_what_is_already_there():
    text, tokens = "", 'The " well @-@ known " firm ca n\'t pay $ 1 @,@ 000 .'
    for token in tokens.split():
        longer = append_token(text, token)
        assert longer.startswith(text)
        text = longer
    assert text == 'The "well-known" firm can\'t pay $1,000.'
    assert append_token("a", "") == "a"


def test_unknown_normalizer_is_refused():
    with pytest.raises(ValueError, match="normalizer"):
        normalize("x", "sentencepiece")


# -- the tokenizer ------------------------------------------------------------------------------
@pytest.fixture()
def tok() -> Tokenizer:
    lines = ["the firm does n't pay $ N", "it 's a well-known firm", "the firm 's N N rise"]
    return Tokenizer.build(lines, kind="word", normalizer="ptb")


def test_a_normalizing_tokenizer_reads_raw_text(tok):
    text = "The firm doesn't pay $1,000!"
    enc = tok.encode(text)
    assert [tok.tokens[i] for i in enc.ids] == ["the", "firm", "does", "n't", "pay", "$", "N"]
    assert enc.tokens == ["The", "firm", "does", "n't", "pay", "$", "1,000"]  # the text of each piece
    assert enc.oov == 0
    assert tok.split(text) == enc.tokens
    assert tok.encode("The firm's rise: 5%").ids == tok.encode("the firm 's rise N N").ids


def test_oov_counts_pieces_mapped_to_unk(tok):
    enc = tok.encode("The bank doesn't <unk> pay.")
    assert enc.ids.count(UNK_ID) == enc.oov == 2  # bank, and a literal <unk>


def test_pieces_keep_their_place_in_the_text(tok):
    text = "It's a well-known firm, isn't it? It pays $1,000."
    enc = tok.encode(text)
    starts = piece_starts(text, enc.tokens)
    spans = english.pieces(text, "ptb")
    assert starts == [s for _, s, _ in spans]
    assert all(text[s : s + len(p)] == p for s, p in zip(starts, enc.tokens, strict=True))


def test_decoding_and_generated_text_are_detokenized(tok):
    ids = tok.encode("it 's a well-known firm does n't").ids
    assert tok.decode(ids) == "it's a well-known firm doesn't"
    text = ""
    for i in ids:
        text = tok.append_piece(text, tok.piece(i))
    assert text == tok.decode(ids)


def test_backward_normalizing_tokenizer_reads_right_to_left():
    tok = Tokenizer.build(["it 's a firm"], kind="word", normalizer="ptb", direction="backward")
    enc = tok.encode("It's a firm.")
    assert enc.tokens == ["firm", "a", "'s", "It"]
    assert tok.decode(enc.ids) == "it's a firm"


def test_normalizer_is_saved_and_old_files_load_without_one(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert again.normalizer == "ptb" and again.encode("Doesn't").ids == tok.encode("Doesn't").ids
    old = {"kind": "word", "tokens": tok.tokens, "counts": tok.counts}
    plain = Tokenizer.from_dict(old)
    assert plain.normalizer == "" and "normalizer" not in plain.to_dict()
    assert plain.encode("does n't").tokens == ["does", "n't"]
    assert plain.decode(plain.encode("does n't").ids) == "does n't"


def test_a_normalizer_needs_a_word_tokenizer():
    with pytest.raises(ValueError, match="word"):
        Tokenizer.build(["abc"], kind="char", normalizer="ptb")
    with pytest.raises(ValueError, match="normalizer"):
        Tokenizer.build(["abc"], kind="word", normalizer="moses")
