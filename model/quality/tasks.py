"""The realistic rescoring tasks: n-best lists as a first pass would hand them to a second pass.

Two tasks, each written as a dev set (from the valid split) and a test set (from the test split);
train only gives the first-pass model and the pronunciations, never a sentence:

* ``pinyin`` (speech recognition without the audio). A held-out sentence is turned into its
  toneless pinyin, read in context (:func:`~model.quality.confusion.context_readings`, so 银行
  reads "yin hang"). Each syllable becomes a slot of a lattice holding every train character read
  that way (:class:`~model.quality.confusion.HomophoneIndex`: counted in context on train, most
  frequent first, optionally capped); a character that is not Chinese (digits, punctuation,
  Latin) is given and passes through as itself::

      厨      房      里      食      油     ...    <- the reference (never shown to the decoder)
      chu     fang    li      shi     you           <- what the "acoustics" say
      [出处初  [方放房  [里理力  [是时市  [有由油  ...  <- the lattice: one slot per character
       除厨…]   防访…]   利李…]   事实食…] 游友…]

  A beam search with a weak model (a Kneser-Ney bigram counted on train) keeps the ``beam`` best
  partial hypotheses slot by slot and writes the ``nbest`` best complete ones. The reference is
  not added when the beam lost it, nor when the lattice cannot spell it (a character never read
  that way in train), so the lists have an oracle error above 0, as a real recognizer's do.
* ``wordorder`` (machine translation). Candidates are the reference and the reorderings a
  translator proposes: two adjacent chunks of 1..``max_chunk`` Chinese characters swapped
  (chunks of one character are an adjacent-character swap). The ``nbest - 1`` reorderings the
  first-pass model likes best join the reference, which is always in the list.

Each candidate's ``score`` is the first-pass model's natural-log probability of the whole
sentence (``<bos>`` context, ``<eos>`` scored: what ``rnnlm evaluate`` sums), and every list is
sorted by it, best first. The files follow the n-best JSONL contract of the rescoring tools::

    {"id": "dev-000001", "reference": "…", "candidates": [{"text": "…", "score": -12.3}, …],
     "source": {"split": "valid", "line": 17, "sentence": 2}, "pinyin": "chu fang li …"}

(``source`` and, for pinyin, ``pinyin`` are extra fields). Sentences are the held-out lines cut
after 。！？ (:func:`~model.quality.confusion.split_sentences`) of ``min_len..max_len``
characters with at least one Chinese character, drawn in a seeded order: same arguments, same
files. Beside the sets, ``manifest.json`` records every parameter, the sha256 of each split read,
the first-pass model, the pypinyin version, the counts, the first-pass 1-best and oracle error of
each set (CER for pinyin, sentence accuracy for word order) and the time taken.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.models.lm import LanguageModel
from model.models.ngram.model import NGramLanguageModel, from_sequences
from model.quality.confusion import HomophoneIndex, context_readings, is_hanzi, sentence_pool
from model.rescoring.errors import ErrorCount, utterance_errors
from model.text.batching import with_boundaries
from model.text.data import load_split, sha256_file, write_text_atomically
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer

SETS = (("dev", "valid"), ("test", "test"))  # (set name, the split it is drawn from)


# -- shared parts ------------------------------------------------------------------------------
@dataclass
class TaskConfig:
    sentences: int = 300  # utterances per set (fewer only if the split has too few usable ones)
    nbest: int = 20  # candidates written per utterance (at most)
    seed: int = 0  # which sentences are drawn
    min_len: int = 8  # shortest sentence, characters
    max_len: int = 40  # longest sentence, characters
    first_pass_order: int = 2  # n of the first pass's Kneser-Ney n-gram (2: a bigram)
    beam: int = 64  # pinyin: partial hypotheses kept at each slot
    max_candidates: int = 0  # pinyin: keep only the K most frequent characters of a reading (0: all)
    min_count: int = 1  # pinyin: times a character must be read that way in train to be proposed
    max_chunk: int = 3  # wordorder: longest chunk swapped, characters

    def __post_init__(self) -> None:
        for name in ("sentences", "nbest", "first_pass_order", "beam", "min_len", "min_count", "max_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_candidates < 0:
            raise ValueError(f"max_candidates must be 0 (all) or more, got {self.max_candidates}")
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({self.max_len}) is below min_len ({self.min_len})")


def first_pass_model(train_lines: Sequence[str], order: int = 2) -> NGramLanguageModel:
    """The weak first-pass model: a character Kneser-Ney n-gram counted on ``train_lines``."""
    tokenizer = Tokenizer.build(train_lines, "char")
    seqs = [with_boundaries(tokenizer.encode(line).ids) for line in train_lines]
    return from_sequences(tokenizer, seqs, order, "kn")


def sentence_logprobs(lm: LanguageModel, texts: Sequence[str]) -> list[float]:
    """Natural-log probability of each whole text (``<bos>`` context, ``<eos>`` scored)."""
    if not texts:
        return []
    seqs = [with_boundaries(lm.tokenizer.encode(t).ids) for t in texts]
    return [float(lp.double().sum()) for lp in lm.sequence_logprobs(seqs)]


def drawn_sentences(
    lines: Sequence[str], seed: int, min_len: int, max_len: int
) -> Iterator[tuple[int, int, str]]:
    """``(line, sentence, text)`` of the usable sentences of ``lines``, in a seeded order."""
    pool = [p for p in sentence_pool(lines, min_len, max_len) if any(is_hanzi(ch) for ch in p[2])]
    random.Random(seed).shuffle(pool)
    yield from pool


def sorted_candidates(texts: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    """Candidates best first (ties: by text, so the order never depends on how they were found)."""
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], texts[i]))
    return [{"text": texts[i], "score": float(scores[i])} for i in order]


def _utterance(name: str, number: int, split: str, where: tuple[int, int], reference: str) -> dict[str, Any]:
    return {
        "id": f"{name}-{number:06d}",
        "reference": reference,
        "candidates": [],
        "source": {"split": split, "line": where[0], "sentence": where[1]},
    }


# -- pinyin: lattice and beam search -----------------------------------------------------------
Lattice = list[list[str]]  # per slot, the characters the recognizer may write there


def build_lattice(
    sentence: str, index: HomophoneIndex, max_candidates: int = 0
) -> tuple[Lattice, list[str | None]]:
    """The lattice of ``sentence`` and its readings (None where a character is given as itself).

    A Chinese character's slot holds the train characters read like it here (the ``max_candidates``
    most frequent, or all with 0). A reading that no train character has is given like a
    non-Chinese character (it stays as said: a recognizer spells what it cannot map).
    """
    readings = context_readings(sentence)
    lattice: Lattice = []
    for ch, r in zip(sentence, readings, strict=True):
        options = list(index.by_reading.get(r, ())) if r is not None else []
        if max_candidates:
            options = options[:max_candidates]
        lattice.append(options or [ch])
    return lattice, readings


def beam_search(lm: LanguageModel, lattice: Lattice, beam: int, nbest: int) -> list[tuple[str, float]]:
    """The ``nbest`` best paths through ``lattice`` that survive a beam of ``beam``, best first.

    Slot by slot, every kept hypothesis is extended by every character of the slot and the
    ``beam`` best extensions are kept (ties: the earlier hypothesis, then the earlier character);
    ``<eos>`` is scored at the end. Returned scores are the exact whole-sentence log-probs
    (:func:`sentence_logprobs`), which also order the list.
    """
    if beam < 1 or nbest < 1:
        raise ValueError("beam and nbest must be at least 1")
    tokenizer = lm.tokenizer
    if tokenizer.kind != "char" or tokenizer.backward:
        raise ValueError("the first pass writes characters left to right: it needs a forward character model")
    logp, state = lm.step(lm.start_state(1), torch.tensor([BOS_ID]))  # (1, V)
    totals = np.zeros(1)  # (B,) log-prob of each hypothesis so far
    paths: list[str] = [""]
    for options in lattice:
        ids = torch.tensor([tokenizer.encode(ch).ids[0] for ch in options])  # (C,)
        extended = totals[:, None] + logp[:, ids].double().numpy()  # (B, C)
        keep = np.argsort(-extended.ravel(), kind="stable")[:beam]
        rows, cols = np.divmod(keep, len(options))
        totals = extended.ravel()[keep]
        paths = [paths[r] + options[c] for r, c in zip(rows, cols, strict=True)]
        state = lm.select_state(state, torch.from_numpy(rows))
        logp, state = lm.step(state, ids[torch.from_numpy(cols)])
    finals = totals + logp[:, EOS_ID].double().numpy()
    best = [paths[i] for i in np.argsort(-finals, kind="stable")[:nbest]]
    ranked = sorted_candidates(best, sentence_logprobs(lm, best))
    return [(c["text"], c["score"]) for c in ranked]


def pinyin_set(
    lm: LanguageModel,
    index: HomophoneIndex,
    lines: Sequence[str],
    cfg: TaskConfig,
    name: str = "dev",
    split: str = "valid",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The n-best utterances of one pinyin set, and its figures (1-best and oracle CER, counts)."""
    if cfg.beam < cfg.nbest:
        raise ValueError(f"beam ({cfg.beam}) must be at least nbest ({cfg.nbest})")
    utterances: list[dict[str, Any]] = []
    best = oracle = ErrorCount(0, 0)  # CER as the rescoring tools count it (whitespace excluded)
    unspellable = in_nbest = 0
    for line_no, sent_no, sentence in drawn_sentences(lines, cfg.seed, cfg.min_len, cfg.max_len):
        if len(utterances) == cfg.sentences:
            break
        lattice, readings = build_lattice(sentence, index, cfg.max_candidates)
        nbest = beam_search(lm, lattice, cfg.beam, cfg.nbest)
        u = _utterance(name, len(utterances) + 1, split, (line_no, sent_no), sentence)
        u["candidates"] = [{"text": t, "score": s} for t, s in nbest]
        u["pinyin"] = " ".join(r if r is not None else ch for ch, r in zip(sentence, readings, strict=True))
        utterances.append(u)
        errors = [utterance_errors(t, sentence, "cer") for t, _ in nbest]
        best += errors[0]
        oracle += min(errors, key=lambda e: e.errors)
        in_nbest += any(t == sentence for t, _ in nbest)
        unspellable += sum(ch not in slot for ch, slot in zip(sentence, lattice, strict=True))
    figures = {
        "utterances": len(utterances),
        "candidates": sum(len(u["candidates"]) for u in utterances),
        "reference_chars": best.total,
        "first_pass_cer": best.rate,
        "oracle_cer": oracle.rate,
        "reference_in_nbest": in_nbest,
        "unspellable_chars": unspellable,  # reference characters the lattice does not offer
    }
    return utterances, figures


# -- word order --------------------------------------------------------------------------------
def reorderings(sentence: str, max_chunk: int = 3) -> list[str]:
    """Distinct texts made by swapping two adjacent chunks of 1..``max_chunk`` Chinese characters.

    In order of position, then of chunk lengths; the sentence itself is never among them.
    """
    seen = {sentence}
    out = []
    for i in range(len(sentence)):
        for a in range(1, max_chunk + 1):
            for b in range(1, max_chunk + 1):
                end = i + a + b
                if end > len(sentence) or not all(is_hanzi(ch) for ch in sentence[i:end]):
                    continue
                text = sentence[:i] + sentence[i + a : end] + sentence[i : i + a] + sentence[end:]
                if text not in seen:
                    seen.add(text)
                    out.append(text)
    return out


def wordorder_set(
    lm: LanguageModel,
    lines: Sequence[str],
    cfg: TaskConfig,
    name: str = "dev",
    split: str = "valid",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The n-best utterances of one word-order set, and its figures (first-pass accuracy, counts)."""
    utterances: list[dict[str, Any]] = []
    correct = 0
    for line_no, sent_no, sentence in drawn_sentences(lines, cfg.seed, cfg.min_len, cfg.max_len):
        if len(utterances) == cfg.sentences:
            break
        others = reorderings(sentence, cfg.max_chunk)
        if not others:
            continue
        scores = sentence_logprobs(lm, [sentence, *others])
        kept = sorted_candidates(others, scores[1:])[: cfg.nbest - 1]
        texts = [sentence, *(c["text"] for c in kept)]
        u = _utterance(name, len(utterances) + 1, split, (line_no, sent_no), sentence)
        u["candidates"] = sorted_candidates(texts, [scores[0], *(c["score"] for c in kept)])
        utterances.append(u)
        correct += u["candidates"][0]["text"] == sentence
    figures = {
        "utterances": len(utterances),
        "candidates": sum(len(u["candidates"]) for u in utterances),
        "first_pass_accuracy": correct / max(len(utterances), 1),
        "oracle_accuracy": 1.0 if utterances else 0.0,  # the reference is always in the list
    }
    return utterances, figures


# -- building a task on disk -------------------------------------------------------------------
TASKS = ("pinyin", "wordorder")
COMMON = ("sentences", "nbest", "seed", "min_len", "max_len", "first_pass_order")
PARAMETERS = {  # the TaskConfig fields each task uses (the manifest records these)
    "pinyin": (*COMMON, "beam", "max_candidates", "min_count"),
    "wordorder": (*COMMON, "max_chunk"),
}


def build_task(
    task: str, data_dir: str | Path, out_dir: str | Path, cfg: TaskConfig, command: str = ""
) -> dict[str, Any]:
    """Write ``dev.jsonl``, ``test.jsonl`` and ``manifest.json`` of ``task`` to ``out_dir``.

    Every split is read (and every set built) before anything is written; then each file is
    written to a temporary name and renamed. Returns the manifest.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    started = time.time()
    data = Path(data_dir)
    train = load_split(data, "train")
    if not train:
        raise ValueError(f"{data / 'train.txt'}: no lines to count the first-pass model on")
    lm = first_pass_model(train, cfg.first_pass_order)
    index = HomophoneIndex(HomophoneIndex.count_readings(train), cfg.min_count) if task == "pinyin" else None
    files: dict[str, str] = {}
    sets: dict[str, Any] = {}
    for name, split in SETS:
        lines = load_split(data, split)
        if index is not None:
            utterances, figures = pinyin_set(lm, index, lines, cfg, name, split)
        else:
            utterances, figures = wordorder_set(lm, lines, cfg, name, split)
        if not utterances:
            raise ValueError(
                f"{data / (split + '.txt')}: no usable sentence of {cfg.min_len}-{cfg.max_len} characters"
            )
        files[f"{name}.jsonl"] = "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in utterances)
        sets[name] = {"file": f"{name}.jsonl", "split": split, **figures}
    manifest = {
        "task": task,
        "command": command,
        "parameters": {k: v for k, v in asdict(cfg).items() if k in PARAMETERS[task]},
        "data": {
            "dir": str(data),
            "sha256": {s: sha256_file(data / f"{s}.txt") for s in ("train", *(split for _, split in SETS))},
        },
        "first_pass": {
            "model": f"character Kneser-Ney {cfg.first_pass_order}-gram counted on train",
            "vocab_size": lm.vocab_size,
            "ngrams": lm.tables.sizes(),
        },
        "score": "first-pass natural-log probability of the whole sentence (<bos> context, <eos> scored)",
        **({"pypinyin": version("pypinyin")} if task == "pinyin" else {}),
        "sets": sets,
        "elapsed_seconds": round(time.time() - started, 2),
    }
    files["manifest.json"] = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    out = Path(out_dir)
    for filename, text in files.items():
        write_text_atomically(out / filename, text)
    return manifest
