"""Model hyper-parameters (the architecture) as plain dataclasses, saved beside every checkpoint as
``config.json``. How a model is trained is :mod:`model.training.config`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

CELLS = ("rnn_tanh", "gru", "lstm")
LENGTH_UNITS = ("tokens", "chars", "words")  # how a length bonus counts (model.inference.scoring.text_length)


def known_fields(cls: Any, d: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``d`` that ``cls`` (a dataclass) has fields for, as its constructor takes
    them (a JSON list back to the tuple a field holds). Unknown keys from newer versions are
    ignored, so an older config still loads."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    if "never_predict" in kwargs:
        kwargs["never_predict"] = tuple(kwargs["never_predict"])
    return kwargs


FROM_TOKENIZER = ("vocab_size", "pad_id", "never_predict")  # ModelConfig fields the tokenizer sets


@dataclass
class ModelConfig:
    """Architecture of the recurrent language model (everything needed to rebuild it)."""

    vocab_size: int  # size of the tokenizer's vocabulary, specials included
    cell: str = "lstm"  # rnn_tanh | gru | lstm
    emb_dim: int = 512  # width of the token embedding
    hidden_dim: int = 512  # width of each recurrent layer
    num_layers: int = 2  # stacked recurrent layers (>1 is a "deep RNN")
    dropout: float = 0.2  # on the embedding, between layers and before the output layer
    emb_dropout: float = 0.0  # drop whole rows of the embedding matrix per batch (AWD-LSTM)
    variational: bool = False  # one dropout mask per sequence, not per step (locked dropout)
    tie_weights: bool = True  # share the embedding matrix with the output layer
    pad_id: int = 0  # id of <pad>; its embedding row stays zero
    never_predict: tuple[int, ...] = (0, 2)  # <pad>, <bos>: never a next token (probability 0)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if not 0.0 <= self.emb_dropout < 1.0:
            raise ValueError("emb_dropout must be in [0, 1)")

    @property
    def state_width(self) -> int:
        """Width of one layer's recurrent state: an LSTM carries (h, c), the others h."""
        return 2 * self.hidden_dim if self.cell == "lstm" else self.hidden_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**known_fields(cls, d))
