"""Open any checkpoint directory as a :class:`~model.lm.LanguageModel`, whatever its kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .checkpoint import CheckpointError, load_rnn, read_config
from .lm import LanguageModel, RNNLanguageModel


def _open_rnn(model_dir: Path, device: str) -> LanguageModel:
    net, tokenizer, metrics = load_rnn(model_dir, device=device)
    lm = RNNLanguageModel(net, tokenizer)
    lm.metrics = metrics
    return lm


# model_type in config.json -> opener. Other model kinds register themselves here.
OPENERS: dict[str, Callable[[Path, str], LanguageModel]] = {"rnn": _open_rnn}


def load_model(model_dir: str | Path, device: str = "cpu") -> LanguageModel:
    d = Path(model_dir)
    model_type = read_config(d)["model_type"]
    opener = OPENERS.get(model_type)
    if opener is None:
        raise CheckpointError(f"{d / 'config.json'}: unknown model_type {model_type!r} "
                              f"(known: {', '.join(sorted(OPENERS))})")
    return opener(d, device)
