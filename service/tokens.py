"""Token ids and text for the compatibility endpoints (/tokenize, /detokenize, /v1/completions).

The tokenizer (model/text/tokenizer.py) maps text to ids. Clients of the OpenAI and llama.cpp / vLLM
protocols also need where each token sits in its text, and the way back from ids to text::

    text     "天气😀好"                     offsets count characters (code points), not UTF-8
    ids      [17, 52, 1, 40]                bytes: 😀 is one character at 2, though 4 bytes
    pieces   天   气   😀   好   (😀 is unknown to the vocabulary: its id is <unk>)
    starts   0    1    2    3

From ids, each id's text is its vocabulary piece, joined as generated text is (the tokenizer's
joiner); ``<unk>`` reads as U+FFFD, the replacement character (unknown to the vocabulary, so it
reads back as ``<unk>``), and the other specials as nothing.

A backward (right-to-left) model reads a text's pieces from the last one: its ids and pieces come
in that order, each with its own place in the text, and its ids read back as the text itself::

    text "天😀气"   ids [气, <unk>, 天]   starts [2, 1, 0]   ids back to text: "天\ufffd气"
"""

from __future__ import annotations

from collections.abc import Sequence

from model.text.tokenizer import SPECIALS, UNK_ID, Tokenizer

UNKNOWN_TEXT = "\ufffd"  # the text of an <unk> id


def piece_starts(text: str, pieces: Sequence[str], backward: bool = False) -> list[int]:
    """Where each piece starts in ``text``, the pieces taken in order (a piece that is not there,
    e.g. ``<bos>``, starts where the one before it ended). ``backward``: the pieces run from the
    end of the text to its start (a backward tokenizer's order)."""
    if backward:
        return piece_starts(text, pieces[::-1])[::-1]
    starts, pos = [], 0
    for piece in pieces:
        at = text.find(piece, pos) if piece else -1
        if at < 0:
            starts.append(pos)
            continue
        starts.append(at)
        pos = at + len(piece)
    return starts


def id_text(tokenizer: Tokenizer, token_id: int) -> str:
    """The text one id stands for: its piece, U+FFFD for ``<unk>``, nothing for other specials."""
    if token_id == UNK_ID:
        return UNKNOWN_TEXT
    return "" if token_id < len(SPECIALS) else tokenizer.piece(token_id)


def ids_to_text(tokenizer: Tokenizer, ids: Sequence[int]) -> tuple[str, list[str]]:
    """The text of ``ids`` and each id's text within it, in the ids' order (ids must be inside the
    vocabulary). A backward tokenizer's ids run from the text's end: the text is read the other way."""
    pieces = [id_text(tokenizer, i) for i in ids]
    text = ""
    for piece in pieces[::-1] if tokenizer.backward else pieces:
        text = tokenizer.append_piece(text, piece)
    return text, pieces
