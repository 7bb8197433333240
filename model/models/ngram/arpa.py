"""ARPA back-off language model files: read and write, so KenLM and SRILM models interoperate.

The format (log10 probabilities and backoff weights, one n-gram per line)::

    \\data\\
    ngram 1=4622
    ngram 2=265855

    \\1-grams:
    -99         <s>     -0.61       (log10 P, the n-gram, log10 backoff if it is a context)
    -1.50832    </s>
    -5.87204    <unk>
    -2.11301    的      -0.70419
    \\2-grams:
    -0.98712    <s> 中  -0.2118
    ...
    \\end\\

P(w | h) is the longest listed ``h[i:] w`` times the backoffs of the longer contexts, exactly the
:class:`~model.models.ngram.tables.BackoffTables` form. ``<s>``, ``</s>`` and ``<unk>`` map to ``<bos>``,
``<eos>`` and ``<unk>``; ``<s>`` is context only (its listed probability, 0 in lmplz files and
-99 in SRILM's, is ignored). A file without ``<unk>`` gets log10 P(<unk>) = -100, as KenLM
substitutes. N-grams whose prefix is missing (pruned SRILM models) get the prefix added with the
probability the model gives it by backing off, so nothing changes.

The tokenizer comes from the 1-grams: characters when every entry is one character, else words.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import numpy as np

from model.models.ngram.model import NGramLanguageModel
from model.models.ngram.tables import BackoffTables
from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Tokenizer

ARPA_SPECIALS = {"<s>": BOS_ID, "</s>": EOS_ID, "<unk>": UNK_ID}
LN10 = math.log(10.0)
MISSING_UNK_LOG10 = -100.0  # what KenLM gives <unk> when a file does not list it


class ArpaError(ValueError):
    """A malformed ARPA file; the message names the file and line."""


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8"))
    return open(path, mode, encoding="utf-8")


# -- writing -----------------------------------------------------------------------------------
def arpa_words(tokenizer: Tokenizer) -> list[str]:
    """The ARPA spelling of every token id (``<pad>`` has none: it is never written)."""
    words = ["", "<unk>", "<s>", "</s>", *tokenizer.tokens[4:]]
    for w in words[4:]:
        if w in ARPA_SPECIALS or not w or any(ch.isspace() for ch in w):
            raise ValueError(
                f"token {w!r} cannot be written to an ARPA file (it is empty, contains "
                "whitespace, or is spelled like <s>, </s> or <unk>)"
            )
    return words


def write_arpa(lm: NGramLanguageModel, path: str | Path) -> Path:
    """Write ``lm`` as an ARPA file (gzipped when the name ends in .gz), atomically."""
    path = Path(path)
    tables = lm.tables
    words = np.array(arpa_words(lm.tokenizer), dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)  # ends like the target (.gz: compressed), renamed into place when complete
    try:
        with _open_text(tmp, "w") as f:
            f.write("\\data\\\n")
            keep = [np.arange(tables.vocab_size) != PAD_ID] + [None] * (tables.order - 1)
            for n in range(1, tables.order + 1):
                count = int(keep[0].sum()) if n == 1 else len(tables.keys[n - 1])
                f.write(f"ngram {n}={count}\n")
            for n in range(1, tables.order + 1):
                f.write(f"\n\\{n}-grams:\n")
                f.writelines(_arpa_lines(tables, words, n, keep[n - 1]))
            f.write("\n\\end\\\n")
        os.chmod(tmp, 0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _arpa_lines(tables: BackoffTables, words: np.ndarray, n: int, keep: np.ndarray | None) -> Iterator[str]:
    ids = tables.ngram_tokens(n)
    logp = tables.logprob[n - 1].astype(np.float64) / LN10
    logp[~np.isfinite(logp)] = -99.0  # <s>: context only (the SRILM convention)
    has_backoff = n < tables.order
    bo = tables.logbackoff[n - 1].astype(np.float64) / LN10 if has_backoff else None
    rows = np.flatnonzero(keep) if keep is not None else range(len(ids))
    text = [" ".join(ws) for ws in words[ids].tolist()]
    for i in rows:
        if bo is not None and bo[i] != 0.0:
            yield f"{logp[i]:.8g}\t{text[i]}\t{bo[i]:.8g}\n"
        else:
            yield f"{logp[i]:.8g}\t{text[i]}\n"


# -- reading -----------------------------------------------------------------------------------
def arpa_tokenizer(unigram_words: list[str]) -> Tokenizer:
    """Specials first, then every listed word but ``<s> </s> <unk>``; char-level if all are chars."""
    words = [w for w in unigram_words if w not in ARPA_SPECIALS]
    clash = [w for w in words if w in SPECIALS]
    if clash:
        raise ArpaError(f"ARPA word {clash[0]!r} clashes with this project's special tokens")
    kind = "char" if words and all(len(w) == 1 for w in words) else "word"
    return Tokenizer(kind=kind, tokens=[*SPECIALS, *words])


Grams = tuple[np.ndarray, np.ndarray, np.ndarray]  # (ids (m, n), ln p (m,), ln backoff (m,))


class _ArpaParser:
    """One pass over the file: the \\data\\ counts, then each order's section into arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: list[int] = []
        self.unigram_words: list[str] = []
        self.index: dict[str, int] = {}
        self.grams: list[Grams] = []
        self._ids = array("q")
        self._logp = array("d")
        self._logbo = array("d")

    def fail(self, lineno: int, message: str) -> ArpaError:
        return ArpaError(f"{self.path}:{lineno}: {message}")

    def parse(self) -> None:
        state = "preamble"
        with _open_text(self.path, "r") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.strip()
                if state == "preamble":
                    state = "data" if line == "\\data\\" else state
                elif not line:
                    continue
                elif line == "\\end\\":
                    if state == "grams":
                        self._close_section(lineno)
                    state = "end"
                    break
                elif line.startswith("\\") and line.endswith("-grams:"):
                    if state == "grams":
                        self._close_section(lineno)
                    n = line[1:-7]
                    if not n.isdigit() or int(n) != len(self.grams) + 1 or int(n) > len(self.counts):
                        raise self.fail(lineno, f"unexpected section {line!r}")
                    state = "grams"
                elif state == "data":
                    self._header_line(lineno, line)
                else:
                    self._gram_line(lineno, line)
        if state == "preamble":
            raise ArpaError(f"{self.path}: no \\data\\ header (is this an ARPA file?)")
        if state != "end":
            raise ArpaError(f"{self.path}: missing \\end\\ (truncated file?)")
        if not self.counts or len(self.grams) != len(self.counts):
            raise ArpaError(
                f"{self.path}: the header lists {len(self.counts)} orders but the file has {len(self.grams)}"
            )

    def _header_line(self, lineno: int, line: str) -> None:
        if not line.startswith("ngram ") or "=" not in line:
            raise self.fail(lineno, "expected 'ngram N=count' in the \\data\\ header")
        n_text, count_text = line[6:].split("=", 1)
        if not n_text.strip().isdigit() or int(n_text) != len(self.counts) + 1:
            raise self.fail(lineno, "ngram counts out of order")
        self.counts.append(int(count_text))

    def _gram_line(self, lineno: int, line: str) -> None:
        n = self._order()
        fields = line.split()
        if len(fields) not in (n + 1, n + 2):
            raise self.fail(lineno, f"a {n}-gram line needs log10 P, {n} words and maybe a backoff")
        try:
            self._logp.append(float(fields[0]) * LN10)
            self._logbo.append(float(fields[n + 1]) * LN10 if len(fields) > n + 1 else 0.0)
        except ValueError as e:
            raise self.fail(lineno, f"bad number ({e})") from e
        if n == 1:
            self.unigram_words.append(fields[1])
            return
        try:
            self._ids.extend([self.index[w] for w in fields[1 : n + 1]])
        except KeyError as e:
            raise self.fail(lineno, f"word {e.args[0]!r} is not among the 1-grams") from e

    def _order(self) -> int:
        return len(self.grams) + 1

    def _close_section(self, lineno: int) -> None:
        """Finish the section just read into arrays; the 1-grams define the vocabulary."""
        n = self._order()
        m = len(self._logp)
        if m != self.counts[n - 1]:
            raise self.fail(lineno, f"the header says ngram {n}={self.counts[n - 1]} but the section has {m}")
        if n == 1:
            self.tokenizer = arpa_tokenizer(self.unigram_words)
            self.index = {**{t: i for i, t in enumerate(self.tokenizer.tokens) if i >= 4}, **ARPA_SPECIALS}
            ids = np.array([self.index[w] for w in self.unigram_words], dtype=np.int64)
        else:
            ids = np.frombuffer(self._ids, dtype=np.int64).copy()
        logp, logbo = np.frombuffer(self._logp).copy(), np.frombuffer(self._logbo).copy()
        self.grams.append((ids.reshape(m, n), logp, logbo))
        self._ids, self._logp, self._logbo = array("q"), array("d"), array("d")


def read_arpa(path: str | Path) -> tuple[NGramLanguageModel, dict]:
    """Load an ARPA file as a model: ``(model, info)`` (info: what was fixed up, if anything)."""
    path = Path(path)
    parser = _ArpaParser(path)
    parser.parse()
    grams, tokenizer = parser.grams, parser.tokenizer
    V = tokenizer.vocab_size
    info: dict = {"source": path.name, "orders": len(grams)}

    unigram_ids, p1, bo1 = grams[0]
    if len(np.unique(unigram_ids)) != len(unigram_ids):
        raise ArpaError(f"{path}: a 1-gram is listed twice")
    logprob1 = np.full(V, -np.inf)
    logbackoff1 = np.zeros(V)
    logprob1[unigram_ids[:, 0]] = p1
    logbackoff1[unigram_ids[:, 0]] = bo1
    if UNK_ID not in unigram_ids:
        logprob1[UNK_ID] = MISSING_UNK_LOG10 * LN10
        info["unk_substituted_log10"] = MISSING_UNK_LOG10
    logprob1[[PAD_ID, BOS_ID]] = -np.inf  # <s> is never predicted, whatever the file says
    grams[0] = (np.arange(V)[:, None], logprob1, logbackoff1)

    added = _add_missing_prefixes(grams)
    if added:
        info["added_prefixes"] = added
    tables = _build_tables(V, grams, path)
    return NGramLanguageModel(tables, tokenizer, "arpa", info), info


def _add_missing_prefixes(grams: list[Grams]) -> int:
    """Give every n-gram's (n-1)-word prefix an entry (NaN log-prob: computed later)."""
    added = 0
    for n in range(len(grams), 2, -1):
        ids = grams[n - 1][0]
        have = grams[n - 2][0]
        need = np.unique(ids[:, :-1], axis=0)
        both = np.concatenate([have, need])
        _, inverse = np.unique(both, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        present = np.zeros(inverse.max() + 1 if len(inverse) else 0, dtype=bool)
        present[inverse[: len(have)]] = True
        missing = need[~present[inverse[len(have) :]]]
        if len(missing):
            h_ids, h_p, h_bo = grams[n - 2]
            grams[n - 2] = (
                np.concatenate([h_ids, missing]),
                np.concatenate([h_p, np.full(len(missing), np.nan)]),
                np.concatenate([h_bo, np.zeros(len(missing))]),
            )
            added += len(missing)
    return added


def _build_tables(V: int, grams: list[Grams], path: Path) -> BackoffTables:
    keys = [np.arange(V, dtype=np.int64)]
    logprob = [grams[0][1].astype(np.float32)]
    logbackoff = []
    for n in range(2, len(grams) + 1):
        logbackoff.append(grams[n - 2][2].astype(np.float32))
        ids, logp, logbo = grams[n - 1]
        partial = BackoffTables(V, keys, logprob, logbackoff[: n - 2])
        prefix = partial.ending_indices(ids[:, :-1].reshape(-1), np.tile(np.arange(n - 1), len(ids)))
        prefix_index = prefix[n - 2].reshape(len(ids), n - 1)[:, -1]
        if np.any(prefix_index < 0):
            raise ArpaError(f"{path}: a {n}-gram's prefix could not be found")
        key = prefix_index * V + ids[:, -1]
        order = np.argsort(key, kind="stable")
        key, ids, logp, logbo = key[order], ids[order], logp[order], logbo[order]
        if len(key) > 1 and np.any(key[1:] == key[:-1]):
            raise ArpaError(f"{path}: a {n}-gram is listed twice")
        added = np.isnan(logp)
        if added.any():  # the probability the model already gives these n-grams, by backing off
            ahead = BackoffTables(
                V, [*keys, np.zeros(0, np.int64)], [*logprob, np.zeros(0, np.float32)], logbackoff[: n - 1]
            )
            rows = ids[added]
            target = ahead.target_logprobs(rows.reshape(-1), np.tile(np.arange(n), len(rows)))
            logp = logp.copy()
            logp[added] = target.reshape(len(rows), n)[:, -1]
        keys.append(key)
        logprob.append(logp.astype(np.float32))
        grams[n - 1] = (ids, logp, logbo)  # re-sorted, for the next order's backoffs
    return BackoffTables(V, keys, logprob, logbackoff)
