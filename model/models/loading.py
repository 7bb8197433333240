"""Open any checkpoint directory as a :class:`~model.models.lm.LanguageModel`, whatever its kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model.models.checkpoint import CheckpointError, load_rnn, read_config
from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.precision import DEFAULT_PRECISION


def _open_rnn(model_dir: Path, device: str) -> LanguageModel:
    net, tokenizer, metrics = load_rnn(model_dir, device=device)
    lm = RNNLanguageModel(net, tokenizer)
    lm.metrics = metrics
    return lm


def _open_ngram(model_dir: Path, device: str) -> LanguageModel:
    from model.models.ngram.store import load_ngram  # numpy tables: always on the CPU

    return load_ngram(model_dir)


def _open_mixture(model_dir: Path, device: str) -> LanguageModel:
    from model.models.mixture import load_mixture

    return load_mixture(model_dir, device, open_model=load_model)  # its components: any kind


def _open_arpa_file(path: Path) -> LanguageModel:
    """A bare ARPA file (KenLM, SRILM), used as it is."""
    from model.models.ngram.arpa import ArpaError, read_arpa

    try:
        return read_arpa(path)[0]
    except (ArpaError, OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable ARPA file ({e})") from e


def _open_hybrid(model_dir: Path, device: str) -> LanguageModel:
    from model.models.hybrid import load_hybrid

    return load_hybrid(model_dir, device)


def _open_window(model_dir: Path, device: str) -> LanguageModel:
    from model.models.window import load_window

    return load_window(str(model_dir), device)


# model_type in config.json -> opener. Other model kinds register themselves here.
OPENERS: dict[str, Callable[[Path, str], LanguageModel]] = {
    "rnn": _open_rnn,
    "ngram": _open_ngram,
    "mixture": _open_mixture,
    "hybrid": _open_hybrid,
    "window": _open_window,
}


def load_model(
    model_dir: str | Path, device: str = "cpu", precision: str = "fp32", batch_invariant: bool = False
) -> LanguageModel:
    """A checkpoint directory (any registered model_type) or a bare ``.arpa[.gz]`` file, with
    its products in ``precision`` and, with ``batch_invariant``, scores that do not depend on
    the batch (model/models/precision.py; ValueError if the model kind or the device cannot)."""
    d = Path(model_dir)
    if d.is_file() and d.name.endswith((".arpa", ".arpa.gz")):
        lm = _open_arpa_file(d)
    else:
        model_type = read_config(d)["model_type"]
        opener = OPENERS.get(model_type)
        if opener is None:
            raise CheckpointError(
                f"{d / 'config.json'}: unknown model_type {model_type!r} (known: {', '.join(sorted(OPENERS))})"
            )
        lm = opener(d, device)
    if precision != DEFAULT_PRECISION or batch_invariant:
        lm.set_numerics(precision, batch_invariant)
    return lm
