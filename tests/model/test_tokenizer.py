import pytest

from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Tokenizer


def test_specials_come_first():
    tok = Tokenizer.build(["abc"], kind="char")
    assert tuple(tok.tokens[:4]) == SPECIALS
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)


def test_char_round_trip():
    tok = Tokenizer.build(["厨房里食油用完了", "你先走"], kind="char")
    enc = tok.encode("你先走了")
    assert enc.oov == 0
    assert tok.decode(enc.ids) == "你先走了"


def test_unknown_characters_map_to_unk_and_are_counted():
    tok = Tokenizer.build(["厨房里食油用完了"], kind="char")
    enc = tok.encode("厨房😀石油x")
    assert enc.tokens == ["厨", "房", "😀", "石", "油", "x"]
    assert enc.ids.count(UNK_ID) == 3
    assert enc.oov == 3
    assert tok.decode(enc.ids, skip_special=False).count("<unk>") == 3


def test_literal_special_strings_are_not_special():
    tok = Tokenizer.build(["a <eos> b"], kind="word")
    assert "<eos>" not in tok.tokens[4:]
    enc = tok.encode("a <eos> <bos> b")
    assert enc.ids[1] == UNK_ID and enc.ids[2] == UNK_ID


def test_word_level_min_count():
    tok = Tokenizer.build(["the cat sat", "the dog sat", "the end"], kind="word", min_count=2)
    assert tok.tokens[4:] == ["the", "sat"]
    enc = tok.encode("the cat sat")
    assert enc.ids == [tok.token_id("the"), UNK_ID, tok.token_id("sat")]
    assert tok.decode(enc.ids, skip_special=False) == "the <unk> sat"


def test_empty_and_whitespace_text():
    tok = Tokenizer.build(["ab"], kind="char")
    assert tok.encode("").ids == []
    assert tok.encode("  ").ids == [UNK_ID, UNK_ID]  # spaces are characters; unseen ones are <unk>
    assert Tokenizer.build(["a b"], kind="word").encode("   ").ids == []


def test_json_round_trip(tmp_path):
    tok = Tokenizer.build(["厨房里食油", "石油"], kind="char")
    tok.save(tmp_path / "tok.json")
    loaded = Tokenizer.load(tmp_path / "tok.json")
    assert loaded.tokens == tok.tokens
    assert loaded.kind == "char"
    assert loaded.encode("石油😀").ids == tok.encode("石油😀").ids
    assert loaded.rare_ids(1) == tok.rare_ids(1)


def test_backward_tokenizer_reads_right_to_left_and_decodes_in_reading_order():
    fwd = Tokenizer.build(["厨房里食油用完了", "你先走"], kind="char")
    bwd = Tokenizer.build(["厨房里食油用完了", "你先走"], kind="char", direction="backward")
    assert bwd.tokens == fwd.tokens  # one vocabulary, two reading orders
    enc = bwd.encode("你先走")
    assert enc.tokens == ["走", "先", "你"]
    assert enc.ids == fwd.encode("你先走").ids[::-1]
    assert bwd.decode(enc.ids) == "你先走"
    words = Tokenizer.build(["the cat sat"], kind="word", direction="backward")
    assert words.decode(words.encode("the cat sat").ids) == "the cat sat"


def test_direction_survives_save_and_load(tmp_path):
    bwd = Tokenizer.build(["你先走"], kind="char", direction="backward")
    bwd.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json").direction == "backward"
    fwd = Tokenizer.build(["你先走"], kind="char")
    assert "direction" not in fwd.to_dict()  # forward files stay as they were
    assert Tokenizer.from_dict(fwd.to_dict()).direction == "forward"


def test_unknown_direction_is_refused():
    import pytest

    with pytest.raises(ValueError, match="direction"):
        Tokenizer.build(["abc"], direction="sideways")


@pytest.mark.parametrize(
    ("lines", "kind", "language"),
    [
        (["今天天气很好", "人民日报"], "char", "zh"),
        (["the students opened their books", "It 's late ."], "word", "en"),
        (["12 34 , .", "56"], "word", "und"),
    ],
)
def test_language_is_told_by_the_training_text_script(lines: list[str], kind: str, language: str) -> None:
    assert Tokenizer.build(lines, kind=kind).language == language
