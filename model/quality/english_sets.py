"""English reranking sets from a word-level held-out split (WikiText-2, PTB), built like the
Chinese ones (:mod:`.confusion`): each item is a held-out sentence and distractors that differ
from it by one edit, the original at a seeded random position.

* ``realword`` (the spelling-checker and ASR case, "their car" vs "there car"): each distractor
  replaces one word by a word it is commonly confused with, from :data:`CONFUSIONS`. A group's
  forms are written as people write them and tokenized like the corpora (``it's`` -> ``it 's``,
  the same in WikiText and PTB), so a form may be two tokens. Matching ignores case and a
  replacement takes the capital of the word it replaces (``Their`` -> ``There``). With a
  ``vocab`` (the train tokens), a replacement with a token outside it is never proposed.
* ``wordswap`` (the translation case, "he said" vs "said he"): each distractor swaps two adjacent,
  different words (tokens starting with a letter or digit), at a different place each time.

Sentences are the split's lines (PTB: one sentence each) cut after a ``.``, ``?`` or ``!`` token
(WikiText paragraphs; headings such as ``= Title =`` are skipped), of ``min_len..max_len`` tokens.
An edit never touches ``<unk>``. ``pos`` in an edit is the character offset of the edited word in
the original (as for the Chinese sets, where a character is a token), ``word`` its token index.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from model.quality.confusion import RerankItem, with_original
from model.text.english import normalize

ENGLISH_KINDS = ("realword", "wordswap")

# Groups of real words that writers (and recognizers) confuse, as people write them. Every form of a
# group replaces every other. Sources: the usual lists of commonly confused English words
# (homophones and near-homophones, and a few look-alikes such as quite/quiet, lose/loose).
CONFUSIONS: tuple[tuple[str, ...], ...] = (
    ("their", "there", "they're"),
    ("to", "too", "two"),
    ("its", "it's"),
    ("than", "then"),
    ("affect", "effect"),
    ("lose", "loose"),
    ("accept", "except"),
    ("your", "you're"),
    ("whose", "who's"),
    ("were", "where", "we're"),
    ("lead", "led"),
    ("quite", "quiet"),
    ("weather", "whether"),
    ("past", "passed"),
    ("principal", "principle"),
    ("brake", "break"),
    ("peace", "piece"),
    ("right", "write"),
    ("hear", "here"),
    ("know", "no"),
    ("new", "knew"),
    ("buy", "by", "bye"),
    ("sea", "see"),
    ("advice", "advise"),
    ("allowed", "aloud"),
    ("board", "bored"),
    ("cite", "site", "sight"),
    ("complement", "compliment"),
    ("council", "counsel"),
    ("desert", "dessert"),
    ("fair", "fare"),
    ("hole", "whole"),
    ("meat", "meet"),
    ("one", "won"),
    ("plain", "plane"),
    ("rain", "reign", "rein"),
    ("role", "roll"),
    ("threw", "through"),
    ("waist", "waste"),
    ("weak", "week"),
    ("which", "witch"),
    ("for", "four"),
    ("of", "off"),
    ("later", "latter"),
    ("choose", "chose"),
    ("course", "coarse"),
    ("stationary", "stationery"),
    ("born", "borne"),
)
_SENTENCE_END = frozenset({".", "?", "!"})


def confusion_forms() -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Each form's tokens (lower case, as both corpora split them) -> the tokens of its confusions."""
    out: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for group in CONFUSIONS:
        forms = [tuple(normalize(word, "wikitext").lower().split()) for word in group]
        for form in forms:
            others = out.setdefault(form, [])
            others += [f for f in forms if f != form and f not in others]
    return out


def word_sentences(lines: Sequence[str], min_len: int, max_len: int) -> list[tuple[int, int, list[str]]]:
    """``(line, sentence, tokens)`` of every sentence of ``min_len..max_len`` tokens."""
    out = []
    for i, line in enumerate(lines):
        tokens = line.split()
        if not tokens or tokens[0] == "=":  # a blank line or a WikiText heading
            continue
        sentences, current = [], []
        for token in tokens:
            current.append(token)
            if token in _SENTENCE_END:
                sentences.append(current)
                current = []
        sentences += [current] if current else []
        out += [(i, j, s) for j, s in enumerate(sentences) if min_len <= len(s) <= max_len]
    return out


def _char_offset(tokens: Sequence[str], index: int) -> int:
    return sum(len(t) + 1 for t in tokens[:index])


def _with_case(form: tuple[str, ...], like: str) -> list[str]:
    """``form`` capitalized when the word it replaces is (``Their`` -> ``There``)."""
    words = list(form)
    if like[:1].isupper():
        words[0] = words[0][:1].upper() + words[0][1:]
    return words


def realword_distractors(
    tokens: list[str], n: int, rng: random.Random, vocab: set[str] | None = None
) -> list[tuple[str, dict]] | None:
    """``n`` distinct one-word confusion edits of ``tokens``, or None if it has fewer."""
    forms = confusion_forms()
    options: dict[int, list[tuple[int, tuple[str, ...]]]] = {}  # position -> (length replaced, new form)
    for i in range(len(tokens)):
        for size in (2, 1):
            old = tuple(t.lower() for t in tokens[i : i + size])
            if len(old) == size and old in forms:
                usable = [f for f in forms[old] if vocab is None or all(t in vocab for t in f)]
                options.setdefault(i, []).extend((size, f) for f in usable)
    options = {i: opts for i, opts in options.items() if opts}
    if sum(len(o) for o in options.values()) < n:
        return None
    out: list[tuple[str, dict]] = []
    while len(out) < n:
        pos = rng.choice(sorted(options))
        opts = options[pos]
        size, form = opts.pop(rng.randrange(len(opts)))
        if not opts:
            del options[pos]
        new = _with_case(form, tokens[pos])
        edited = [*tokens[:pos], *new, *tokens[pos + size :]]
        edit = {
            "pos": _char_offset(tokens, pos),
            "word": pos,
            "from": " ".join(tokens[pos : pos + size]),
            "to": " ".join(new),
        }
        out.append((" ".join(edited), edit))
    return out


def _is_word(token: str) -> bool:
    return token[:1].isalnum() and token != "<unk>"


def wordswap_distractors(tokens: list[str], n: int, rng: random.Random) -> list[tuple[str, dict]] | None:
    """``n`` distinct swaps of two adjacent different words, or None if fewer exist."""
    positions = [
        i
        for i in range(len(tokens) - 1)
        if _is_word(tokens[i]) and _is_word(tokens[i + 1]) and tokens[i] != tokens[i + 1]
    ]
    if len(positions) < n:
        return None
    out = []
    for pos in sorted(rng.sample(positions, n)):
        swapped = [*tokens[:pos], tokens[pos + 1], tokens[pos], *tokens[pos + 2 :]]
        edit = {"pos": _char_offset(tokens, pos), "word": pos, "swap": [tokens[pos], tokens[pos + 1]]}
        out.append((" ".join(swapped), edit))
    return out


def build_english_set(
    kind: str,
    heldout: Sequence[str],
    *,
    vocab: Iterable[str] | None = None,
    size: int = 500,
    distractors: int = 5,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 60,
    split: str = "test",
) -> list[RerankItem]:
    """Up to ``size`` items of ``distractors + 1`` candidates from the sentences of ``heldout``.

    Same arguments, same set. Fewer than ``size`` items come back only if the split has too few
    sentences with enough edits."""
    if kind not in ENGLISH_KINDS:
        raise ValueError(f"English set kind must be one of {ENGLISH_KINDS}, got {kind!r}")
    if distractors < 1 or size < 1:
        raise ValueError("size and distractors must be at least 1")
    known = set(vocab) if vocab is not None else None
    rng = random.Random(seed)
    pool = word_sentences(heldout, min_len, max_len)
    rng.shuffle(pool)
    items: list[RerankItem] = []
    for line_no, sent_no, tokens in pool:
        if len(items) == size:
            break
        edited = (
            realword_distractors(tokens, distractors, rng, known)
            if kind == "realword"
            else wordswap_distractors(tokens, distractors, rng)
        )
        if edited is None:
            continue
        source = {"split": split, "line": line_no, "sentence": sent_no}
        items.append(with_original(f"{kind}-{len(items)}", kind, " ".join(tokens), edited, rng, source))
    return items
