"""A text classifier on a language model's encoder, the ULMFiT way (Howard & Ruder, 2018).

::

    ids (B, T) ─▶ <bos> ids ─▶ encoder (the LM's embedding + recurrent layers) ─▶ h (B, T+1, H)
                                                                                    │ masked to each row's length
           concat pooling: [ h at the last character, max over positions, mean over positions ] (B, 3H)
                                                                                    ▼
                        dropout ─▶ Linear(3H, head_dim) ─▶ ReLU ─▶ dropout ─▶ Linear(head_dim, L) ─▶ logits (B, L)

The encoder is :class:`~model.heads.tagger.Encoder` (parameter names of
:class:`~model.models.network.RNNLM`), so a language model loads into it as it is
(:func:`classifier_from_lm`; a hybrid's recurrent network too). Pooling covers positions 0..length
(the state after ``<bos>`` and after each character), so an empty text has a vector and padding on
the right changes no row. Text longer than ``max_chars`` is cut to its first ``max_chars``.

The layer groups, bottom to top, are the embedding, each recurrent layer and the head;
:meth:`Classifier.unfreeze` trains only the top ``n`` of them (gradual unfreezing), and the
trainer gives each group its own learning rate (model/training/classifier.py).

A checkpoint is a directory like every other (model/models/checkpoint.py): ``config.json``
(``model_type: classifier``, the label list inside), ``model.safetensors``, ``tokenizer.json``,
``metrics.json``; :func:`save_classifier` and :func:`load_classifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.heads.tagger import Encoder, encode_batch, with_bos
from model.models.checkpoint import CheckpointError, load_network, read_config, save_network
from model.models.config import CELLS, known_fields
from model.models.hybrid import HybridNet
from model.models.network import RNNLM
from model.text.tokenizer import PAD_ID, Tokenizer

MODEL_TYPE = "classifier"
LM_TYPES = {"rnn": RNNLM, "hybrid": HybridNet}  # checkpoints whose recurrent network can be the encoder


@dataclass
class ClassifierConfig:
    """Architecture of the classifier (everything needed to rebuild it)."""

    vocab_size: int  # the tokenizer's vocabulary (the language model's)
    labels: tuple[str, ...]  # label id -> name ("neg", "pos")
    cell: str = "lstm"  # rnn_tanh | gru | lstm
    emb_dim: int = 512  # encoder: embedding width
    hidden_dim: int = 512  # encoder: width of each recurrent layer
    num_layers: int = 2  # encoder: recurrent layers
    dropout: float = 0.3  # encoder: on the embeddings and between layers
    head_dim: int = 50  # the head's hidden width (0: one linear layer from the pooled vector)
    head_dropout: float = 0.4  # before each of the head's linear layers
    max_chars: int = 512  # longer texts are cut to their first max_chars characters
    pad_id: int = PAD_ID

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if len(self.labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        for name in ("dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.head_dim < 0 or self.max_chars < 1:
            raise ValueError("head_dim must be at least 0 and max_chars at least 1")

    @property
    def tie_weights(self) -> bool:  # read by the checkpoint writer: a classifier shares no weights
        return False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        return cls(**known_fields(cls, d))


def concat_pool(h: Tensor, lengths: Tensor) -> Tensor:
    """``[h at position length, max, mean]`` over positions 0..length of each row: (B, 3H) from
    ``h`` (B, T+1, H) (position 0 is the state after ``<bos>``)."""
    width = h.size(1)
    mask = (torch.arange(width, device=h.device) <= lengths.unsqueeze(1)).unsqueeze(2)  # (B, T+1, 1)
    last = h.gather(1, lengths.view(-1, 1, 1).expand(-1, 1, h.size(2))).squeeze(1)  # (B, H)
    peak = h.masked_fill(~mask, float("-inf")).amax(dim=1)  # (B, H)
    mean = (h * mask).sum(dim=1) / mask.sum(dim=1)  # (B, H)
    return torch.cat([last, peak, mean], dim=1)


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = Encoder(c.vocab_size, c.cell, c.emb_dim, c.hidden_dim, c.num_layers, c.dropout)
        layers: list[nn.Module] = [nn.Dropout(c.head_dropout)]
        if c.head_dim > 0:
            layers += [nn.Linear(3 * c.hidden_dim, c.head_dim), nn.ReLU(), nn.Dropout(c.head_dropout)]
        layers.append(nn.Linear(c.head_dim or 3 * c.hidden_dim, len(c.labels)))
        self.head = nn.Sequential(*layers)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B, L) of ``ids`` (B, T), rows padded on the right to their ``lengths``."""
        h = self.encoder(with_bos(ids))  # (B, T+1, H)
        return self.head(concat_pool(h, lengths))

    # -- gradual unfreezing -----------------------------------------------------------------------
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters bottom to top: the embedding, each recurrent layer, the head."""
        rnn = dict(self.encoder.rnn.named_parameters())
        groups = [list(self.encoder.embedding.parameters())]
        for k in range(self.config.num_layers):
            groups.append([p for name, p in rnn.items() if name.endswith(f"_l{k}")])
        groups.append(list(self.head.parameters()))
        return groups

    def unfreeze(self, top: int) -> None:
        """Train only the top ``top`` layer groups (at least the head); the rest keep their weights."""
        groups = self.layer_groups()
        for depth, group in enumerate(reversed(groups)):
            for p in group:
                p.requires_grad_(depth < max(top, 1))


# -- building, saving, loading -------------------------------------------------------------------
def load_encoder_source(lm_dir: str | Path) -> tuple[RNNLM, Tokenizer]:
    """The recurrent network of a forward character language model checkpoint (rnn, or a hybrid's
    RNN without its n-gram) and its tokenizer."""
    kind = read_config(lm_dir)["model_type"]
    if kind not in LM_TYPES:
        raise CheckpointError(f"{lm_dir}: a {kind} checkpoint has no recurrent encoder (rnn or hybrid)")
    net, tokenizer, _, _ = load_network(lm_dir, kind, LM_TYPES[kind])
    if tokenizer.backward:
        raise CheckpointError(f"{lm_dir}: the classifier's encoder reads forward")
    return (net.rnn if isinstance(net, HybridNet) else net), tokenizer


def classifier_from_lm(
    lm_dir: str | Path,
    labels: Sequence[str],
    load_weights: bool = True,
    **sizes: Any,
) -> tuple[Classifier, Tokenizer]:
    """A classifier with the shape and vocabulary of a language model, and with ``load_weights``
    its embedding and recurrent layers; ``sizes`` sets the rest (dropout, head_dim, max_chars)."""
    lm, tokenizer = load_encoder_source(lm_dir)
    c = lm.config
    config = ClassifierConfig(
        vocab_size=c.vocab_size,
        labels=tuple(labels),
        cell=c.cell,
        emb_dim=c.emb_dim,
        hidden_dim=c.hidden_dim,
        num_layers=c.num_layers,
        **sizes,
    )
    classifier = Classifier(config)
    if load_weights:
        classifier.encoder.load_language_model(lm)
    return classifier, tokenizer


def save_classifier(
    out_dir: str | Path,
    classifier: Classifier,
    tokenizer: Tokenizer,
    metrics: dict | None = None,
    card: str | None = None,
) -> Path:
    return save_network(out_dir, classifier, classifier.config, tokenizer, metrics, card, MODEL_TYPE)


def load_classifier(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[Classifier, Tokenizer, dict]:
    """``(classifier in eval mode, tokenizer, metrics)``, or a CheckpointError naming the problem."""
    classifier, tokenizer, metrics, _ = load_network(
        model_dir, MODEL_TYPE, Classifier, device, config_cls=ClassifierConfig
    )
    if tokenizer.backward:
        raise CheckpointError(f"{model_dir}: a classifier reads forward")
    return classifier, tokenizer, metrics


# -- classifying text ------------------------------------------------------------------------------
@torch.no_grad()
def class_probabilities(
    classifier: Classifier, tokenizer: Tokenizer, texts: Sequence[str], max_batch_chars: int = 16384
) -> Tensor:
    """Probabilities (N, L) of each text's labels, in input order (batched by length)."""
    device = next(classifier.parameters()).device
    limit = classifier.config.max_chars
    encoded = [tokenizer.encode(text).ids[:limit] for text in texts]
    out = torch.zeros(len(texts), len(classifier.labels))
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    was_training = classifier.training
    classifier.eval()
    try:
        at = 0
        while at < len(order):
            rows = max(1, max_batch_chars // max(len(encoded[order[at]]), 1))
            batch = order[at : at + rows]
            at += len(batch)
            ids, lengths = encode_batch([encoded[i] for i in batch], device)
            out[batch] = classifier(ids, lengths).float().softmax(-1).cpu()
    finally:
        classifier.train(was_training)
    return out


def classify_texts(
    classifier: Classifier, tokenizer: Tokenizer, texts: Sequence[str]
) -> list[tuple[str, float]]:
    """Each text's most probable label and its probability, in input order."""
    probs = class_probabilities(classifier, tokenizer, texts)
    best = probs.max(dim=1)
    return [(classifier.labels[int(k)], float(p)) for p, k in zip(best.values, best.indices, strict=True)]


def accuracy(
    classifier: Classifier, tokenizer: Tokenizer, texts: Sequence[str], labels: Sequence[str]
) -> float:
    """The share of ``texts`` whose most probable label is the gold one."""
    if not texts:
        return 0.0
    predicted = classify_texts(classifier, tokenizer, texts)
    return sum(p == gold for (p, _), gold in zip(predicted, labels, strict=True)) / len(texts)
