"""What the training loop reads: the tokenizer, the train text as ids, and its batches.

Two layouts of the same train sentences, one per phase of :mod:`model.training.trainer`::

    stream    the sentences back to back, cut into B rows and read in windows of T tokens, the
              state carried from window to window (pytorch/examples word_language_model):
              no padding, long context, every step full.

              row 0  <bos> 人 民 日 报 <eos> <bos> 今 天 …  ─▶ window 1 | window 2 | …
              row 1  …                                        (state carried per row)

    sentence  length-sorted batches of whole sentences, padded, each from the zero state as
              ``/score`` and ``rnnlm evaluate`` use the model; a sentence longer than T is split
              into windows with the state carried (detached) from window to window.

Each batch is a list of :class:`Window`\\ s; the stream carries the state across batches, the
sentence layout starts every batch from the zero state.

Unknown characters: a train token seen once is shown as ``<unk>`` with probability
``unk_replace`` (a fresh draw every time), so the model learns a sensible P(<unk> | context)
instead of assigning ~0 to the out-of-vocabulary pieces real input contains.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from model.models.ngram.torch_tables import histories_of
from model.text.batching import length_sorted_batches, pad_batch, with_boundaries
from model.text.data import load_split
from model.text.tokenizer import UNK_ID, Tokenizer


def build_tokenizer(
    train_lines: list[str],
    kind: str = "char",
    min_count: int = 1,
    reverse: bool = False,
    source: str = "",
    normalizer: str = "",
) -> Tokenizer:
    """The run's tokenizer: ``source``'s (a checkpoint directory), else one built from train."""
    if source:
        return Tokenizer.load(Path(source) / "tokenizer.json")
    direction = "backward" if reverse else "forward"
    return Tokenizer.build(
        train_lines, kind=kind, min_count=min_count, direction=direction, normalizer=normalizer
    )


def rare_mask(tokenizer: Tokenizer) -> Tensor:
    """(V,) True for the tokens seen once in train: the ones shown as <unk> now and then."""
    rare = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    rare[tokenizer.rare_ids(1)] = True
    return rare


def noised(tokens: Tensor, rare: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Show each train-singleton token as <unk> with probability p (a fresh draw each time)."""
    if p <= 0:
        return tokens
    hide = rare[tokens] & (torch.rand(tokens.shape, generator=gen) < p)
    return tokens.masked_fill(hide, UNK_ID)


@dataclass
class Corpus:
    """Train sentences as one token array plus the index maps of the stream layout."""

    tokens: Tensor  # (S,) every sentence's [<bos>, …, <eos>] back to back (CPU: noised per epoch)
    inputs: Tensor  # (N,) index into tokens of each input position (all but each <eos>)
    position: Tensor  # (N,) index of the input token in its sentence (<bos> is 0)
    fold: Tensor  # (N,) the sentence's fold
    sentences: list[list[int]]
    sentence_fold: list[int]

    def to(self, device: torch.device) -> Corpus:
        """The index maps moved to ``device`` once (they are the same every epoch)."""
        return replace(
            self, inputs=self.inputs.to(device), position=self.position.to(device), fold=self.fold.to(device)
        )

    @classmethod
    def build(cls, seqs: list[list[int]], folds: int, seed: int) -> Corpus:
        fold_of = list(range(len(seqs)))
        random.Random(seed).shuffle(fold_of)
        sentence_fold = [f % max(folds, 1) for f in fold_of]
        starts, inputs, position, fold = 0, [], [], []
        for s, f in zip(seqs, sentence_fold, strict=True):
            inputs.append(torch.arange(starts, starts + len(s) - 1))
            position.append(torch.arange(len(s) - 1))
            fold.append(torch.full((len(s) - 1,), f))
            starts += len(s)
        tokens = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
        return cls(tokens, torch.cat(inputs), torch.cat(position), torch.cat(fold), seqs, sentence_fold)


@dataclass
class Window:
    """One optimizer step's inputs: x, y (B, T); hist (B, T, W) n-gram or window histories;
    fold (B, T) each position's fold (None: the full n-gram)."""

    x: Tensor
    y: Tensor
    hist: Tensor | None
    fold: Tensor | None


class TrainingData:
    """A corpus directory read once: the tokenizer, train as ids (both layouts), valid and test."""

    def __init__(
        self,
        data_dir: str,
        tokenizer: str = "char",
        min_count: int = 1,
        reverse: bool = False,
        vocabulary_from: str = "",
        folds: int = 1,
        seed: int = 1234,
        normalizer: str = "",
    ) -> None:
        self.train_lines = load_split(data_dir, "train")
        self.valid_lines = load_split(data_dir, "valid")
        self.test_lines = load_split(data_dir, "test")  # read now: a missing split fails before training
        self.tokenizer = build_tokenizer(
            self.train_lines, tokenizer, min_count, reverse, vocabulary_from, normalizer
        )
        encode = self.tokenizer.encode
        seqs = [with_boundaries(encode(line).ids) for line in self.train_lines]
        self.corpus = Corpus.build(seqs, folds, seed)
        valid = [encode(line) for line in self.valid_lines]
        self.valid_seqs = [with_boundaries(e.ids) for e in valid]
        self.valid_oov = sum(e.oov for e in valid)
        self.rare = rare_mask(self.tokenizer)

    @property
    def train_tokens(self) -> int:
        """Target tokens of train (each sentence's pieces and its <eos>)."""
        return len(self.corpus.inputs)


def stream_batches(
    corpus: Corpus, tokens: Tensor, batch_size: int, bptt: int, offset: int, width: int
) -> Iterator[list[Window]]:
    """Windows of (B, T) over the (noised, on-device) stream ``tokens``, rows read in order from
    ``offset``; one window per batch (the state is carried across them)."""
    x_all, y_all = tokens[corpus.inputs], tokens[corpus.inputs + 1]
    hist_all = histories_of(x_all, corpus.position, width) if width else None
    B = batch_size
    L = (len(x_all) - offset) // B
    view = lambda t: t[offset : offset + B * L].view(B, L, *t.shape[1:])  # noqa: E731
    x, y, f = view(x_all), view(y_all), view(corpus.fold)
    h = view(hist_all) if hist_all is not None else None
    for start in range(0, L, bptt):
        end = min(start + bptt, L)
        yield [
            Window(
                x[:, start:end], y[:, start:end], h[:, start:end] if h is not None else None, f[:, start:end]
            )
        ]


def sentence_batches(
    seqs: list[list[int]],
    folds: list[int] | None,
    batch_size: int,
    bptt: int,
    width: int,
    device: torch.device,
    rng: random.Random | None = None,
    noise=lambda batch: batch,
) -> Iterator[list[Window]]:
    """Padded batches of whole sentences (``rng`` shuffles their order), each as its BPTT windows."""
    for rows in length_sorted_batches(seqs, batch_size, rng):
        batch = noise(pad_batch([seqs[i] for i in rows])).to(device)  # (B, L)
        x, y = batch[:, :-1], batch[:, 1:]
        B, T = x.shape
        position = torch.arange(T, device=device).repeat(B)
        hist = histories_of(x.reshape(-1), position, width).view(B, T, -1) if width else None
        fold = (
            torch.tensor([folds[i] for i in rows], device=device)[:, None].expand(B, T)
            if folds is not None
            else None
        )
        yield [
            Window(
                x[:, s : s + bptt],
                y[:, s : s + bptt],
                hist[:, s : s + bptt] if hist is not None else None,
                fold[:, s : s + bptt] if fold is not None else None,
            )
            for s in range(0, T, bptt)
        ]


def sentence_steps(seqs: list[list[int]], batch_size: int, bptt: int) -> int:
    """Optimizer steps in one pass of the sentence layout: one per BPTT window of each batch."""
    return sum(
        -(-(max(len(seqs[i]) for i in rows) - 1) // bptt) if rows else 0
        for rows in length_sorted_batches(seqs, batch_size, random.Random(0))
    )


def stream_steps(corpus: Corpus, batch_size: int, bptt: int) -> int:
    """Optimizer steps in one pass of the stream layout (at offset 0)."""
    return -(-(len(corpus.inputs) // batch_size) // bptt)
