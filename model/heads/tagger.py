"""A bidirectional recurrent tagger: one B/M/E/S-POS label per character (model/text/tagged.py).

::

    ids (B, T) ─▶ <bos> ids ──────────▶ forward encoder  ─▶ h→ (B, T, H1) ─┐
              └─▶ each row reversed ─▶ backward encoder ─▶ h← (B, T, H2) ─┴─▶ concat ─▶ Linear ─▶ (B, T, L)
                                      (read right to left, then put back in order)         │
                                             softmax: cross-entropy / CRF: -log p(y|x) ◀────┘
                                             decoding: Viterbi over B/M/E/S-valid paths

Each encoder is a language model without its output layer (an embedding and the recurrent
layers, named as in :class:`~model.models.network.RNNLM`), so a forward LM and a backward LM
(``weights/pd98-char-lstm``, ``weights/pd98-char-lstm-backward``) load into them as they are
(:func:`tagger_from_lms`): both read ``<bos>`` first, and position t of each sees character t, the
forward one with everything before it, the backward one with everything after. The vocabulary is
the language models' (they share one). Both heads decode with the same constrained Viterbi
search, so every output is a valid segmentation (the softmax head with no learned transitions).

A checkpoint is a directory like every other (model/models/checkpoint.py): ``config.json``
(``model_type: tagger``, the label list inside), ``model.safetensors``, ``tokenizer.json``,
``metrics.json``; :func:`save_tagger` and :func:`load_tagger`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.heads.crf import LinearChainCRF, penalty, viterbi
from model.models.checkpoint import CheckpointError, load_network, load_rnn, save_network
from model.models.config import CELLS, known_fields
from model.models.network import RNNLM
from model.text.tagged import (
    TaggedWord,
    TagScores,
    allowed_first,
    allowed_last,
    allowed_transition,
    score_sentences,
    sentence_text,
    word_spans,
    words_from_labels,
)
from model.text.tokenizer import BOS_ID, PAD_ID, Tokenizer

HEADS = ("softmax", "crf")
MODEL_TYPE = "tagger"
IGNORE = -100  # the label of a padded position (cross-entropy ignores it)
RUN = re.compile(r"\S+")  # a run of characters between whitespace (tag_spaced_texts)


@dataclass
class TaggerConfig:
    """Architecture of the tagger (everything needed to rebuild it)."""

    vocab_size: int  # the tokenizer's vocabulary (the language models')
    labels: tuple[str, ...]  # label id -> "B-n", "S-v", … (from the training data)
    head: str = "crf"  # softmax | crf
    cell: str = "lstm"  # rnn_tanh | gru | lstm, both directions
    emb_dim: int = 512  # forward encoder: embedding width
    hidden_dim: int = 512  # forward encoder: width of each recurrent layer
    num_layers: int = 2  # forward encoder: recurrent layers
    backward_emb_dim: int = 512  # backward encoder: the same three
    backward_hidden_dim: int = 512
    backward_num_layers: int = 2
    dropout: float = 0.3  # on the embeddings, between layers and before the output layer
    pad_id: int = PAD_ID

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if not self.labels:
            raise ValueError("a tagger needs at least one label")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def tie_weights(self) -> bool:  # read by the checkpoint writer: a tagger shares no weights
        return False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaggerConfig:
        return cls(**known_fields(cls, d))


class Encoder(nn.Module):
    """An embedding and recurrent layers, with the parameter names of :class:`RNNLM`."""

    def __init__(
        self, vocab_size: int, cell: str, emb_dim: int, hidden_dim: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        rnn_cls = {"rnn_tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn_cls(
            emb_dim, hidden_dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.hidden_dim = hidden_dim

    def forward(self, ids: Tensor) -> Tensor:
        """The top layer's hidden states (B, T, H) after each token of ``ids`` (B, T)."""
        return self.rnn(self.drop(self.embedding(ids)))[0]

    def load_language_model(self, net: RNNLM) -> None:
        """Start from a language model's embedding and recurrent layers (shapes must match)."""
        own = self.state_dict()
        weights = {k: v for k, v in net.state_dict().items() if k in own}
        wrong = [k for k in own if k not in weights or weights[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"the language model does not fit the encoder ({', '.join(wrong)})")
        self.load_state_dict(weights)


def reversed_rows(lengths: Tensor, width: int) -> Tensor:
    """Index (B, T) that reverses each row's first ``length`` positions and keeps the padding."""
    pos = torch.arange(width, device=lengths.device).expand(lengths.size(0), width)  # (B, T)
    back = lengths.unsqueeze(1) - 1 - pos
    return torch.where(back >= 0, back, pos)


def with_bos(ids: Tensor) -> Tensor:
    return F.pad(ids, (1, 0), value=BOS_ID)  # (B, T + 1)


class Tagger(nn.Module):
    no_transitions: Tensor
    no_start: Tensor
    no_end: Tensor

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.forward_encoder = Encoder(c.vocab_size, c.cell, c.emb_dim, c.hidden_dim, c.num_layers, c.dropout)
        self.backward_encoder = Encoder(
            c.vocab_size, c.cell, c.backward_emb_dim, c.backward_hidden_dim, c.backward_num_layers, c.dropout
        )
        self.drop = nn.Dropout(c.dropout)
        self.output = nn.Linear(c.hidden_dim + c.backward_hidden_dim, len(c.labels))
        labels = c.labels
        allowed = torch.tensor([[allowed_transition(a, b) for b in labels] for a in labels])
        first = torch.tensor([allowed_first(label) for label in labels])
        last = torch.tensor([allowed_last(label) for label in labels])
        self.crf = LinearChainCRF(len(labels), allowed, first, last) if c.head == "crf" else None
        # the softmax head decodes with the constraints only
        self.register_buffer("no_transitions", penalty(allowed), persistent=False)
        self.register_buffer("no_start", penalty(first), persistent=False)
        self.register_buffer("no_end", penalty(last), persistent=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def encoders(self) -> list[Encoder]:
        return [self.forward_encoder, self.backward_encoder]

    def freeze_encoders(self, frozen: bool) -> None:
        """Train only the output layer (and the CRF) while ``frozen``."""
        for encoder in self.encoders():
            encoder.requires_grad_(not frozen)

    def emissions(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Label scores (B, T, L) of ``ids`` (B, T), rows padded on the right to their ``lengths``."""
        ahead = self.forward_encoder(with_bos(ids))[:, 1:]  # (B, T, H1)
        order = reversed_rows(lengths, ids.size(1))  # (B, T)
        behind = self.backward_encoder(with_bos(ids.gather(1, order)))[:, 1:]  # (B, T, H2), right to left
        behind = behind.gather(1, order.unsqueeze(2).expand_as(behind))  # back in reading order
        return self.output(self.drop(torch.cat([ahead, behind], dim=2)))

    def loss(self, ids: Tensor, lengths: Tensor, labels: Tensor) -> Tensor:
        """Mean loss per labelled character; ``labels`` (B, T) with :data:`IGNORE` on padding."""
        scores = self.emissions(ids, lengths).float()  # (B, T, L)
        mask = labels != IGNORE
        if self.crf is None:
            return F.cross_entropy(scores.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return self.crf.nll(scores, labels, mask).sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def decode(self, ids: Tensor, lengths: Tensor) -> list[list[int]]:
        """The best valid label ids of each row."""
        scores = self.emissions(ids, lengths).float()
        mask = torch.arange(ids.size(1), device=ids.device) < lengths.unsqueeze(1)  # (B, T)
        if self.crf is not None:
            return self.crf.decode(scores, mask)
        return viterbi(scores.log_softmax(-1), mask, self.no_transitions, self.no_start, self.no_end)


# -- building, saving, loading -------------------------------------------------------------------
def tagger_from_lms(
    forward_dir: str | Path,
    backward_dir: str | Path,
    labels: Sequence[str],
    head: str = "crf",
    dropout: float = 0.3,
    load_weights: bool = True,
) -> tuple[Tagger, Tokenizer]:
    """A tagger with the shape and vocabulary of two language models (a forward and a backward
    checkpoint), and, with ``load_weights``, their embeddings and recurrent layers."""
    fwd, fwd_tok, _ = load_rnn(forward_dir)
    bwd, bwd_tok, _ = load_rnn(backward_dir)
    if fwd_tok.backward or not bwd_tok.backward:
        raise CheckpointError(f"{forward_dir} must read forward and {backward_dir} backward")
    if fwd_tok.tokens != bwd_tok.tokens or fwd_tok.kind != "char":
        raise CheckpointError(f"{forward_dir} and {backward_dir} must share one character vocabulary")
    if fwd.config.cell != bwd.config.cell:
        raise CheckpointError(f"{forward_dir} and {backward_dir} must have the same cell")
    f, b = fwd.config, bwd.config
    config = TaggerConfig(
        vocab_size=f.vocab_size,
        labels=tuple(labels),
        head=head,
        cell=f.cell,
        emb_dim=f.emb_dim,
        hidden_dim=f.hidden_dim,
        num_layers=f.num_layers,
        backward_emb_dim=b.emb_dim,
        backward_hidden_dim=b.hidden_dim,
        backward_num_layers=b.num_layers,
        dropout=dropout,
    )
    tagger = Tagger(config)
    if load_weights:
        tagger.forward_encoder.load_language_model(fwd)
        tagger.backward_encoder.load_language_model(bwd)
    return tagger, fwd_tok


def save_tagger(
    out_dir: str | Path,
    tagger: Tagger,
    tokenizer: Tokenizer,
    metrics: dict | None = None,
    card: str | None = None,
) -> Path:
    return save_network(out_dir, tagger, tagger.config, tokenizer, metrics, card, model_type=MODEL_TYPE)


def load_tagger(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Tagger, Tokenizer, dict]:
    """``(tagger in eval mode, tokenizer, metrics)``, or a CheckpointError naming the problem."""
    tagger, tokenizer, metrics, _ = load_network(
        model_dir, MODEL_TYPE, Tagger, device, config_cls=TaggerConfig
    )
    if tokenizer.kind != "char" or tokenizer.backward:
        raise CheckpointError(f"{model_dir}: a tagger reads characters forward")
    return tagger, tokenizer, metrics


# -- tagging text ----------------------------------------------------------------------------------
def encode_batch(rows: Sequence[Sequence[int]], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Rows of ids -> ``(ids (B, T) padded on the right, lengths (B,))``."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)


def tag_texts(
    tagger: Tagger, tokenizer: Tokenizer, texts: Sequence[str], max_batch_chars: int = 8192
) -> list[list[TaggedWord]]:
    """Each text's words with their tags and spans (character offsets), in input order."""
    device = tagger.output.weight.device
    encoded = [tokenizer.encode(text).ids for text in texts]
    out: list[list[TaggedWord]] = [[] for _ in texts]
    order = sorted((i for i in range(len(texts)) if encoded[i]), key=lambda i: -len(encoded[i]))
    was_training = tagger.training
    tagger.eval()
    try:
        at = 0
        while at < len(order):
            rows = max(1, max_batch_chars // len(encoded[order[at]]))
            batch = order[at : at + rows]
            at += len(batch)
            ids, lengths = encode_batch([encoded[i] for i in batch], device)
            for i, labels in zip(batch, tagger.decode(ids, lengths), strict=True):
                out[i] = words_from_labels(texts[i], [tagger.labels[k] for k in labels])
    finally:
        tagger.train(was_training)
    return out


def tag_spaced_texts(
    tagger: Tagger, tokenizer: Tokenizer, texts: Sequence[str], max_batch_chars: int = 8192
) -> list[list[TaggedWord]]:
    """:func:`tag_texts` for raw text: whitespace separates words and belongs to none. Each run of
    non-whitespace characters is tagged on its own (the tagger never reads a space; its training
    sentences have none), so a word never spans a space and sending the runs one by one gives the
    same words; spans stay offsets into the text as sent (``"今天 很好"``: 今天 [0, 2), 很 [3, 4), …)."""
    runs = [[(m.start(), m.group()) for m in RUN.finditer(text)] for text in texts]
    tagged = iter(tag_texts(tagger, tokenizer, [run for rs in runs for _, run in rs], max_batch_chars))
    out: list[list[TaggedWord]] = []
    for rs in runs:
        words: list[TaggedWord] = []
        for at, _ in rs:
            words.extend(TaggedWord(w.text, w.tag, w.start + at, w.end + at) for w in next(tagged))
        out.append(words)
    return out


def evaluate_tagger(
    tagger: Tagger, tokenizer: Tokenizer, sentences: Sequence[Sequence[tuple[str, str]]]
) -> TagScores:
    """Segmentation and POS scores (model/text/tagged.py) of ``tagger`` on gold ``(word, tag)`` sentences."""
    predicted = tag_texts(tagger, tokenizer, [sentence_text(s) for s in sentences])
    return score_sentences([word_spans(s) for s in sentences], predicted)
