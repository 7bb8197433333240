"""How a model is trained: one dataclass for every run, saved in its ``metrics.json``.

``rnnlm fit`` and ``rnnlm train`` run the same loop (:mod:`model.training.trainer`) with two
settings of this one config::

    TrainConfig()          the classic setting (`rnnlm train`): whole sentences only, epochs,
                           early stopping on valid, fp32, weights stored as float32
    TrainConfig.recipe()   the shipped recipe (`rnnlm fit`): the token stream, then the last
                           quarter of a time or token budget on whole sentences, bf16, float16 weights

The command line's words for each field (``FIELD_HELP``, ``CHOICES``) sit at the end, next to the
fields they describe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model.models.config import CELLS, ModelConfig, known_fields

KINDS = ("rnn", "hybrid", "window")  # rnn | hybrid (RNN residual over a KN n-gram) | window (Bengio 2003)
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("bf16", "fp32")
SAVE_DTYPES = ("float32", "float16")


@dataclass
class TrainConfig:
    """One training run's settings (defaults: the classic sentence/epoch setting of `rnnlm train`)."""

    # -- what is trained
    kind: str = "rnn"  # rnn | hybrid | window
    ngram_order: int = 5  # hybrid: order of the Kneser-Ney n-gram
    folds: int = 5  # hybrid: train positions see an n-gram counted without their fold
    ngram_prune: str = ""  # hybrid: count thresholds per order, "0 0 0 1 1" (model.models.ngram.prune)
    # -- when it ends (whichever comes first; the schedule follows the nearest end)
    epochs: int = 20  # passes over train (0 = no limit)
    max_minutes: float = 0.0  # wall-clock limit, final evaluation included (0 = none)
    max_tokens: int = 0  # train tokens to read (0 = none)
    patience: int = 3  # validations without a better valid perplexity before stopping (0 = never)
    # -- the batches
    sentence_fraction: float = 1.0  # last part of the run on whole sentences, the rest on the stream
    batch_size: int = 64  # stream rows, or sentences per batch (the global batch under torchrun)
    bptt: int = 128  # truncated-BPTT window; longer sentences are split, the state carried
    unk_replace: float = 0.5  # chance a train-singleton token is shown as <unk> (teaches P(<unk>))
    # -- the optimizer and its schedule
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay on matrices
    warmup_steps: int = 200  # linear warm-up before the cosine decay
    min_lr_ratio: float = 0.05  # the cosine ends at lr * min_lr_ratio
    clip: float = 0.5  # max global gradient norm
    # -- validation, precision, storage
    eval_every: int = 0  # steps between validations (0 and eval_every_tokens 0: once per epoch)
    eval_every_tokens: int = 0  # train tokens between validations (0 = by eval_every)
    precision: str = "fp32"  # bf16 (autocast) | fp32
    save_dtype: str = "float32"  # float32 | float16: stored weights
    seed: int = 1234
    threads: int = 0  # torch intra-op threads (0 = torch default)

    def __post_init__(self) -> None:
        for name, allowed in (("kind", KINDS), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {SAVE_DTYPES}, got {self.save_dtype!r}")
        if not 0.0 <= self.sentence_fraction <= 1.0:
            raise ValueError("sentence_fraction must be in [0, 1]")
        if self.epochs <= 0 and self.max_minutes <= 0 and self.max_tokens <= 0:
            raise ValueError("give a budget: epochs, max_minutes or max_tokens")

    @classmethod
    def recipe(cls, **overrides: Any) -> TrainConfig:
        """The shipped recipe (`rnnlm fit`), with ``overrides``."""
        return cls(**(RECIPE | overrides))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**known_fields(cls, d))


# What `rnnlm fit` changes of the defaults above: the recipe chosen on valid in docs/TRAINING.md.
RECIPE: dict[str, Any] = {
    "epochs": 0,
    "max_minutes": 10.0,
    "patience": 0,
    "sentence_fraction": 0.25,
    "weight_decay": 0.1,
    "min_lr_ratio": 0.02,
    "eval_every_tokens": 2_000_000,
    "precision": "bf16",
    "save_dtype": "float16",
}


@dataclass
class TrainJob:
    """One run: where its text is, where its checkpoint goes, what it trains and how."""

    data_dir: str  # corpus directory from `rnnlm prepare-data`
    out_dir: str  # the best checkpoint goes here
    run_dir: str  # log.jsonl (and the resume state) go here
    model: dict  # ModelConfig (rnn, hybrid) or WindowConfig (window) fields, no vocab_size
    train: TrainConfig = field(default_factory=TrainConfig)
    tokenizer: str = "char"  # char | word (whitespace-separated words, as PTB and WikiText-2 are prepared)
    normalizer: str = ""  # word: how raw text is read, as the corpus was prepared ("wikitext", "ptb", "")
    min_count: int = 1  # pieces seen fewer times in train become <unk>
    reverse: bool = False  # a right-to-left model: the tokenizer reads each sentence backward
    vocabulary_from: str = ""  # read with this checkpoint's tokenizer instead of one built from train
    init_from: str = ""  # start from this checkpoint's weights (same kind; a new vocabulary is mapped)
    ngram_dir: str = ""  # hybrid: the full-train n-gram checkpoint (built and saved here if missing)
    command: str = ""  # the command line, recorded in the model card
    resume: bool = False  # keep a resume state in run_dir, and continue from one found there


def recorded_config(metrics: dict) -> dict:
    """The training config a checkpoint's metrics.json records: ``train_config`` (this version,
    and `rnnlm train` before it) or ``fit_config`` (`rnnlm fit` before this version)."""
    return metrics.get("train_config") or metrics.get("fit_config") or {}


# -- the command line's words for each field (`rnnlm train --help`, `rnnlm fit --help`) --------------
# One line per field: what it means to someone typing it, with its unit or range; the comments
# above say the same to a reader of the code. A field with a fixed set of values lists it in CHOICES.
CHOICES: dict[str, tuple[str, ...]] = {
    "cell": CELLS,
    "optimizer": OPTIMIZERS,
    "kind": KINDS,
    "precision": PRECISIONS,
    "save_dtype": SAVE_DTYPES,
}
_BUDGET = "wall-clock limit of the whole run in minutes, the final valid and test evaluation included"
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
        "kind": "rnn; hybrid: an RNN learning the residual over a Kneser-Ney n-gram; window: Bengio 2003",
        "ngram_order": "hybrid: order n of its Kneser-Ney n-gram",
        "folds": "hybrid: folds; each train position sees an n-gram counted without its fold",
        "ngram_prune": "hybrid: prune n-grams seen at most this often, per order ('0 0 0 1 1'; '' = none)",
        "epochs": "most passes over train (0 = no limit; early stopping usually ends sooner)",
        "max_minutes": f"{_BUDGET} (0 = none; the schedule is fitted to it)",
        "max_tokens": "train tokens to read (0 = none); the schedule follows whichever budget ends first",
        "patience": "validations in a row without a better valid perplexity before stopping (0 = never)",
        "sentence_fraction": "fraction (0-1) of the run spent on whole sentences at the end; the rest "
        "reads the concatenated stream (1 = sentences only)",
        "batch_size": "rows of the stream, or sentences per batch (the global batch under torchrun)",
        "bptt": "truncated-BPTT window in tokens; longer sentences are split, the state carried",
        "unk_replace": "probability (0-1) that a token seen once in train is shown as <unk>",
        "optimizer": "adamw: AdamW with decoupled weight decay; sgd: plain SGD",
        "lr": "peak learning rate (after the warm-up)",
        "weight_decay": "AdamW decoupled weight decay on matrices (per step, times lr)",
        "warmup_steps": "optimizer steps of linear warm-up before the cosine decay",
        "min_lr_ratio": "the cosine ends at lr times this ratio (0-1)",
        "clip": "largest global gradient norm (L2); larger gradients are scaled down to it",
        "eval_every": "optimizer steps between validations (0 = once per epoch)",
        "eval_every_tokens": "train tokens between validations (0 = by --eval-every)",
        "precision": "bf16: bfloat16 autocast; fp32: full precision",
        "save_dtype": "precision of the stored weights (computed in float32 when used)",
        "seed": "random seed: initial weights, batch order and noise",
        "threads": "torch intra-op CPU threads (0 = torch's default)",
    },
}
