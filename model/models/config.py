"""Hyper-parameters as plain dataclasses, saved beside every checkpoint as ``config.json``."""

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


@dataclass
class TrainConfig:
    """How a model is trained; recorded in ``metrics.json`` so a run can be repeated."""

    epochs: int = 20  # upper bound; early stopping usually ends sooner
    max_minutes: float = 0.0  # wall-clock limit, final evaluation included (0 = none); schedule fitted to it
    batch_size: int = 64  # sentences per batch
    bptt: int = 128  # truncated-BPTT window; longer sentences are split, state carried
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_steps: int = 200  # linear warm-up before the cosine decay
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    clip: float = 0.5  # max global gradient norm
    unk_replace: float = 0.5  # chance a train-singleton token is shown as <unk> (teaches P(<unk>))
    patience: int = 3  # evaluations without valid improvement before stopping
    eval_every: int = 0  # steps between validations (0 = once per epoch)
    seed: int = 1234
    threads: int = 0  # torch intra-op threads (0 = torch default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**known_fields(cls, d))


FIT_KINDS = ("rnn", "hybrid", "window")


@dataclass
class FitConfig:
    """How :func:`model.training.fit.fit` trains a model; recorded in its ``metrics.json``."""

    kind: str = "rnn"  # rnn | hybrid (RNN residual over a KN n-gram) | window (Bengio 2003)
    ngram_order: int = 5  # hybrid: order of the Kneser-Ney n-gram
    folds: int = 5  # hybrid: train positions see an n-gram counted without their fold
    ngram_prune: str = (
        ""  # hybrid: count thresholds per order, "0 0 0 1 1" (model.models.ngram.prune); "" = none
    )
    max_minutes: float = 10.0  # wall-clock limit of the whole run, final evaluation included (0 = none)
    max_tokens: int = 0  # token budget (0 = none); the schedule follows whichever ends first
    sentence_fraction: float = 0.25  # last part of the budget on whole sentences (1 = sentences only)
    batch_size: int = 64  # stream rows, or sentences per batch
    bptt: int = 128  # window length in the stream phase (and longest sentence window)
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02  # the cosine ends at lr * min_lr_ratio
    clip: float = 0.5  # max global gradient norm
    unk_replace: float = 0.5  # chance a train-singleton token is shown as <unk>
    precision: str = "bf16"  # bf16 (autocast) | fp32
    eval_every_tokens: int = 2_000_000  # tokens between validations
    save_dtype: str = "float16"  # float32 | float16: stored weights
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.kind not in FIT_KINDS:
            raise ValueError(f"kind must be one of {FIT_KINDS}, got {self.kind!r}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got {self.precision!r}")
        if not 0.0 <= self.sentence_fraction <= 1.0:
            raise ValueError("sentence_fraction must be in [0, 1]")
        if self.max_minutes <= 0 and self.max_tokens <= 0:
            raise ValueError("give a budget: max_minutes or max_tokens")


# -- the command line's words for each field (`rnnlm train --help`, `rnnlm fit --help`) --------------
# One line per field: what it means to someone typing it, with its unit or range; the comments
# above say the same to a reader of the code. A field with a fixed set of values lists it in CHOICES.
CHOICES: dict[str, tuple[str, ...]] = {
    "cell": CELLS,
    "optimizer": ("adamw", "sgd"),
    "kind": FIT_KINDS,
    "precision": ("bf16", "fp32"),
    "save_dtype": ("float32", "float16"),
}
_BUDGET = "wall-clock limit of the whole run in minutes, the final valid and test evaluation included"
_SHARED = {
    "lr": "peak learning rate (after the warm-up)",
    "warmup_steps": "optimizer steps of linear warm-up before the cosine decay",
    "clip": "largest global gradient norm (L2); larger gradients are scaled down to it",
    "unk_replace": "probability (0-1) that a token seen once in train is shown as <unk>",
    "seed": "random seed: initial weights, batch order and noise",
}
FIELD_HELP: dict[type, dict[str, str]] = {
    ModelConfig: {
        "vocab_size": "tokens in the vocabulary, specials included (set from the tokenizer)",
        "cell": "recurrent cell: rnn_tanh (Elman), gru or lstm",
        "emb_dim": "width of the token embedding (units)",
        "hidden_dim": "width of each recurrent layer (units)",
        "num_layers": "stacked recurrent layers",
        "dropout": "dropout probability (0-1) on the embedding, between layers and before the output",
        "emb_dropout": "probability (0-1) of dropping a whole embedding row per batch (AWD-LSTM)",
        "variational": "one dropout mask per sequence instead of per step (locked dropout)",
        "tie_weights": "share the embedding matrix with the output layer",
        "pad_id": "id of <pad> (set from the tokenizer)",
        "never_predict": "ids never predicted: <pad>, <bos> (set from the tokenizer)",
    },
    TrainConfig: {
        "epochs": "most passes over train (early stopping usually ends sooner)",
        "max_minutes": f"{_BUDGET} (0 = none; the schedule is fitted to it)",
        "batch_size": "sentences per batch",
        "bptt": "truncated-BPTT window in tokens; longer sentences are split, the state carried",
        "optimizer": "adamw: AdamW with decoupled weight decay; sgd: plain SGD",
        "lr": _SHARED["lr"],
        "weight_decay": "AdamW decoupled weight decay (per step, times lr)",
        "warmup_steps": _SHARED["warmup_steps"],
        "min_lr_ratio": "the cosine ends at lr times this ratio (0-1)",
        "clip": _SHARED["clip"],
        "unk_replace": _SHARED["unk_replace"],
        "patience": "validations in a row without a better valid perplexity before stopping",
        "eval_every": "optimizer steps between validations (0 = once per epoch)",
        "seed": _SHARED["seed"],
        "threads": "torch intra-op CPU threads (0 = torch's default)",
    },
    FitConfig: {
        "kind": "rnn; hybrid: an RNN learning the residual over a Kneser-Ney n-gram; window: Bengio 2003",
        "ngram_order": "hybrid: order n of its Kneser-Ney n-gram",
        "folds": "hybrid: folds; each train position sees an n-gram counted without its fold",
        "ngram_prune": "hybrid: prune n-grams seen at most this often, per order ('0 0 0 1 1'; '' = none)",
        "max_minutes": f"{_BUDGET} (0 = none; give this or --max-tokens)",
        "max_tokens": "train tokens to read (0 = none); the schedule follows whichever budget ends first",
        "sentence_fraction": "fraction (0-1) of the budget spent on whole sentences at the end (1 = only)",
        "batch_size": "rows of the stream, or sentences per batch",
        "bptt": "window length in tokens in the stream phase (and the longest sentence window)",
        "lr": _SHARED["lr"],
        "weight_decay": "AdamW decoupled weight decay on matrices (per step, times lr)",
        "warmup_steps": _SHARED["warmup_steps"],
        "min_lr_ratio": "the cosine ends at lr times this ratio (0-1)",
        "clip": _SHARED["clip"],
        "unk_replace": _SHARED["unk_replace"],
        "precision": "bf16: bfloat16 autocast; fp32: full precision",
        "eval_every_tokens": "train tokens between validations",
        "save_dtype": "precision of the stored weights (computed in float32 when used)",
        "seed": _SHARED["seed"],
    },
}
