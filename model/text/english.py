"""English text as the word-level corpora write it, and back.

A word-level model only knows the tokens of its training files, so text must reach it split and
spelled the way those files were prepared. Two preparations are supported:

=============== ============================================ ==========================================
raw text        ``wikitext`` (WikiText-2, Moses-style)        ``ptb`` (Penn Treebank, Mikolov's)
=============== ============================================ ==========================================
Don't stop.     ``Don 't stop .``                             ``do n't stop``
It's 3.5%       ``It 's 3 @.@ 5 %``                           ``it 's N N``
a well-known    ``a well @-@ known``                          ``a well-known``
$1,000 (U.S.)   ``$ 1 @,@ 000 ( U.S. )``                      ``$ N u.s.``
O'Brien's       ``O 'Brien 's``                               ``o'brien 's``
=============== ============================================ ==========================================

Both start from one splitter (:func:`surface_pieces`): a text is cut into words (letters and
digits, which may be joined by ``- . , & /``), clitics (``'s``, ``'t``, ``'re`` …, and ``n't``),
and single punctuation characters. A word's final period stays on it only where it is not a
sentence end: an abbreviation (``Mr.``, ``No. 5``, ``U.S.``, single letters) or a period followed
by a lower-case word, the rule the Moses tokenizer behind WikiText uses. Then each corpus spells
the pieces its own way (:func:`wikitext_pieces`, :func:`ptb_pieces`).

Every piece keeps the span of raw text it came from, so a caller can say where each token sits in
what the user wrote (``1,000`` for PTB's ``N``, ``-`` for WikiText's ``@-@``). Normalizing text
that is already prepared returns it unchanged (``<unk>``, ``@-@``, ``n't`` and PTB's ``N`` pass
through), which is what lets a model score corpus lines and raw sentences alike.

Known approximations: a word that starts with an apostrophe is kept whole (``'Brien`` in
WikiText's ``O 'Brien``), so a single-quoted phrase keeps its opening quote on its first word;
PTB's bare ``N`` is read as the number token, not the letter.

:func:`detokenize` goes the other way for generated text (either corpus): ``don 't`` and ``do
n't`` both read ``don't``, ``3 @.@ 5`` reads ``3.5``, punctuation is attached, and quotes close.
It is built on :func:`append_token`, which adds one token to a text without changing what is
already there (how generated text grows token by token).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

Piece = tuple[str, int, int]  # (token as the corpus writes it, start, end) in the raw text

# Abbreviations whose period does not end a sentence (the common ones of Moses' English list,
# lower case; single letters are always abbreviations). Those in NUMBERED only before a number.
_ABBREVIATIONS = """mr mrs ms dr prof rev hon st sr jr mt ft lt col gen capt cmdr sgt cpl maj adm gov sen rep
    reps sens pres messrs mme mlle mssrs bros co corp inc ltd plc llc dept univ assn est op vs etc al
    var lit ssp sp cf ie eg jan feb mar apr jun jul aug sep sept oct nov dec ala ariz ark calif colo
    conn del fla ga ill ind kan ky la md mass mich minn miss mo mont neb nev okla ore pa tenn tex va
    vt wash wis wyo"""
ABBREVIATIONS = frozenset(_ABBREVIATIONS.split())
NUMBERED = frozenset({"no", "nos", "nr", "art", "pp", "p", "vol", "fig", "ch"})
CLITICS = frozenset({"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't"})

_PIECE = re.compile(
    r"""
      <[a-z]+> | @[-,.]@                   # already-prepared tokens pass through: <unk> @-@
    | \.{2,} | -{2,} | (?:\\\*)+             # an ellipsis, a double dash, PTB's \* and \*\*
    | n't(?![^\W_])                        # PTB's negation clitic, already split off
    | '[^\W\d_](?:'[^\W_]+|[^\W_]*)        # a clitic or a name's tail: 's 't 're 'Brien 'n'roll
    | '\d0s\b                              # a decade: '80s
    | [^\W_]+(?:(?:\.?-|[.,&/]|\\/)[^\W_]+)*  # a word: letters and digits joined by - . , & / \/
      (?:\.|-(?!\S)|\$(?![^\W_]))?           # ... with a final period, hyphen ("second-") or $ (US$)
    | \S                                   # any other character, alone
    """,
    re.VERBOSE,
)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")


def _keeps_period(word: str, following: str) -> bool:
    """Whether ``word`` (which ends in ".") is written with its period: not a sentence end."""
    stem = word[:-1]
    if not stem:
        return False
    if "." in stem and any(c.isalpha() for c in stem):  # U.S., e.g., Media.Vision.
        return True
    low = stem.lower()
    if (len(stem) == 1 and stem.isalpha()) or low in ABBREVIATIONS:
        return True
    nxt = following.lstrip()[:1]
    if low in NUMBERED and re.match(r"\s*(\d|N\b|<unk>)", following):  # "No. 5", not "said no."
        return True
    return nxt.islower()  # Moses: a period before a lower-case word is not a sentence end


def surface_pieces(text: str) -> list[Piece]:
    """``text`` cut into words, clitics and punctuation, each with its span (the shared first step)."""
    pieces: list[Piece] = []
    for m in _PIECE.finditer(text):
        piece, start, end = m.group(), m.start(), m.end()
        sentence_end = piece.endswith(".") and piece[0].isalnum() and not _keeps_period(piece, text[end:])
        if sentence_end:
            pieces += [(piece[:-1], start, end - 1), (".", end - 1, end)]
            continue
        pieces.append((piece, start, end))
    return pieces


# -- WikiText ----------------------------------------------------------------------------------
def _wikitext_word(word: str, start: int) -> list[Piece]:
    """A word's inner hyphens, and the commas and periods between digits, as ``@-@ @,@ @.@``.

    A period between letters stays (``U.S.``, ``Media.Vision``); ``&`` and ``/`` stand alone."""
    out: list[Piece] = []
    glue = False  # the next part joins the last piece (after a period kept inside a word)
    parts = list(re.finditer(r"[^\W_]+|.", word))
    for k, m in enumerate(parts):
        part, s, e = m.group(), start + m.start(), start + m.end()
        before = parts[k - 1].group() if k else ""
        after = parts[k + 1].group() if k + 1 < len(parts) else ""
        stays_inside = (
            part == "."  # U.S., e.g., Media.Vision, Mr.
            or (part == "," and before[-1:].isdigit() and after)  # 1,000th
            or (part == "-" and not after)  # second- (as in "second- and third-class")
        )
        if part == "-" and before and after:
            out.append(("@-@", s, e))
        elif part in ",." and before.isdigit() and after.isdigit():
            out.append((f"@{part}@", s, e))
        elif stays_inside and out:
            out[-1] = (out[-1][0] + part, out[-1][1], e)
            glue = True
        elif glue and part[0].isalnum():
            out[-1] = (out[-1][0] + part, out[-1][1], e)
            glue = False
        else:
            out.append((part, s, e))
            glue = False
    return out


def wikitext_pieces(text: str) -> list[Piece]:
    """Tokens of ``text`` as WikiText-2 writes them, each with its span in ``text``."""
    out: list[Piece] = []
    for token, start, end in surface_pieces(text):
        if token[0].isalnum() and len(token) > 1 and token != "n't":
            out += _wikitext_word(token, start)
        else:
            out.append((token, start, end))
    return out


# -- Penn Treebank -----------------------------------------------------------------------------
PTB_KEPT = {"$": "$", "&": "&", "#": "#", "'": "'", "%": "N", "*": "\\*"}  # what PTB writes of punctuation


def ptb_pieces(text: str) -> list[Piece]:
    """Tokens of ``text`` as Mikolov's PTB writes them: lower case, numbers as ``N``, no punctuation.

    Clitics are split as in the Treebank (``do n't``, ``ca n't``, ``it 's``); other apostrophes stay
    inside their word (``o'brien``); hyphens stay (``third-quarter``); ``/`` is written ``\\/``."""
    out: list[Piece] = []
    for token, start, end in surface_pieces(text):
        joined = bool(out) and out[-1][2] == start  # no space between this piece and the last
        if token.lower() == "'t" and joined and out[-1][0].endswith("n"):  # can't -> ca n't
            word, s, _ = out[-1]
            out[-1] = (word[:-1], s, start - 1)
            if not out[-1][0]:
                out.pop()
            out.append(("n't", start - 1, end))
        elif token.startswith("'") and len(token) > 1:
            if token.lower() in CLITICS or not joined:
                out.append((token.lower(), start, end))
            else:  # o'brien, d'arcy: one word
                out[-1] = (out[-1][0] + token.lower(), out[-1][1], end)
        elif token in ("N", "<unk>", "n't") or _NUMBER.fullmatch(token):
            out.append((token if not _NUMBER.fullmatch(token) else "N", start, end))
        elif token[0].isalnum():
            for part in re.finditer(r"[^,]+", token):  # commas between letters are punctuation
                word = re.sub(r"(?<!\\)/", r"\\/", part.group().lower())
                out.append((word, start + part.start(), start + part.end()))
        elif token.startswith("\\*"):
            out.append((token, start, end))
        elif token in PTB_KEPT:
            out.append((PTB_KEPT[token], start, end))
    return out


# -- both ways ---------------------------------------------------------------------------------
NORMALIZERS: dict[str, Callable[[str], list[Piece]]] = {"wikitext": wikitext_pieces, "ptb": ptb_pieces}


def normalize(text: str, style: str) -> str:
    """``text`` as the corpus of ``style`` ("wikitext" or "ptb") writes it: tokens joined by spaces."""
    return " ".join(token for token, _, _ in pieces(text, style))


def pieces(text: str, style: str) -> list[Piece]:
    """The tokens of ``text`` in the corpus of ``style``, each with its span of ``text``."""
    if style not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {tuple(NORMALIZERS)}, got {style!r}")
    return NORMALIZERS[style](text)


_SURFACE = {"@-@": "-", "@,@": ",", "@.@": "."}
_NO_SPACE_BEFORE = frozenset(",.:;!?)]}%…") | {"...", "n't"} | set(_SURFACE)
_NO_SPACE_AFTER = ("(", "[", "{", "$", "£", "€", "#")


def append_token(text: str, token: str) -> str:
    """``text`` with one more token, written as people write it (``text`` itself is unchanged).

    No space before closing punctuation, clitics (``'s``, ``'t``, ``n't``) and ``@-@`` joins, nor
    after opening brackets, currency signs and those joins; a ``"`` closes a quote when the text
    has an odd number of them. PTB's ``\\/`` reads ``/``."""
    if not token:
        return text
    surface = _SURFACE.get(token, token.replace("\\/", "/"))
    if not text:
        return surface
    opens_quote = token == '"' and text.count('"') % 2 == 0
    closes_quote = token == '"' and not opens_quote
    after_join = text.endswith(tuple(_SURFACE.values())) and len(text) > 1 and text[-2].isalnum()
    attach = (
        token in _NO_SPACE_BEFORE
        or closes_quote
        or (token.startswith("'") and len(token) > 1 and token[1].isalpha())  # 's 't 'Brien
        or text.endswith(_NO_SPACE_AFTER)
        or (text.endswith('"') and text.count('"') % 2 == 1)  # just after an opening quote
        or (after_join and text[-1] == "-")  # well@-@ known
        or (after_join and text[-2].isdigit() and surface[:1].isdigit())  # 1@,@ 000, 3@.@ 5
    )
    return text + ("" if attach else " ") + surface


def detokenize(tokens: Iterable[str]) -> str:
    """Tokens (WikiText or PTB style) read as people write them: ``don 't`` -> ``don't``."""
    text = ""
    for token in tokens:
        text = append_token(text, token)
    return text
