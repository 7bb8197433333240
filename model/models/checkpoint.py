"""Checkpoint directories: everything needed to use a model, and nothing that executes code.

::

    weights/pd98-char-lstm/
        config.json        model type, architecture, sha256 of the weights file
        model.safetensors  the weights (safetensors: plain tensors, no pickle)
        tokenizer.json     the vocabulary
        metrics.json       training and evaluation figures, data checksums
        MODEL_CARD.md      data, split, command, hardware, time, results, limits

Loading verifies the weights' sha256 against ``config.json`` and refuses anything else
(a pickle, a truncated or tampered file) with a :class:`CheckpointError` naming the path.
Every file must be a regular file within its size bound (``MAX_JSON_BYTES``,
``MAX_WEIGHTS_BYTES``), checked before it is opened: a FIFO or a link to ``/dev/zero`` is refused
at once instead of hanging the loader, and each JSON file must hold an object.
A directory is written to a temporary sibling and renamed into place, so a crash never leaves
a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.models.config import ModelConfig
from model.models.network import RNNLM
from model.text.data import NotARegularFile, regular_file_size, sha256_file
from model.text.tokenizer import Tokenizer

CONFIG, WEIGHTS, TOKENIZER, METRICS, CARD = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "metrics.json",
    "MODEL_CARD.md",
)
FORMAT_VERSION = 1
MAX_JSON_BYTES = 16 << 20  # config.json, tokenizer.json, metrics.json (a large word vocabulary: ~1 MB)
MAX_WEIGHTS_BYTES = 64 << 30  # model.safetensors, ngram.safetensors


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used; the message names the path and the problem."""


def write_dir_atomically(out_dir: str | Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp_dir)``, then move ``tmp_dir`` to ``out_dir`` (replacing it)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be read by others
    try:
        fill(tmp)
        for f in tmp.iterdir():
            f.chmod(0o644)  # readable by the service's user (safetensors writes 0600)
        old = None
        if out.exists():
            if not out.is_dir():
                raise NotADirectoryError(f"{out}: exists and is not a directory")
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None and not out.exists():
                old.rename(out)  # put the previous one back
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def checked_file(path: Path, max_bytes: int) -> int:
    """The size of a checkpoint file, or a CheckpointError naming it: missing, not a regular file
    (a FIFO or a device could block or never end), or larger than ``max_bytes``."""
    try:
        size = regular_file_size(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except NotARegularFile as e:
        raise CheckpointError(f"{path}: not a regular file (a FIFO, device or directory); refusing it") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from e
    if size > max_bytes:
        raise CheckpointError(f"{path}: {size} bytes is more than the limit of {max_bytes} for this file")
    return size


def read_json(path: Path, max_bytes: int | None = None) -> dict:
    """A checkpoint's JSON file (or another file read the same way, within ``max_bytes``; default
    ``MAX_JSON_BYTES``), which must hold an object; a CheckpointError names the file."""
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    checked_file(path, max_bytes)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)  # the file may have grown since it was checked
        if len(raw) > max_bytes:
            raise CheckpointError(f"{path}: more than the limit of {max_bytes} bytes for this file")
        value = json.loads(raw.decode("utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: must be a JSON object, not {type(value).__name__}")
    return value


def save_rnn(
    out_dir: str | Path,
    model: RNNLM,
    tokenizer: Tokenizer,
    metrics: dict | None = None,
    card: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a complete RNN checkpoint directory (atomically)."""
    return save_network(out_dir, model, model.config, tokenizer, metrics, card, dtype=dtype)


def save_network(
    out_dir: str | Path,
    net: torch.nn.Module,
    config: Any,
    tokenizer: Tokenizer,
    metrics: dict | None = None,
    card: str | None = None,
    model_type: str = "rnn",
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write any network built from a config dataclass (the RNN, the hybrid, the window model).

    ``dtype`` (e.g. ``torch.float16``) stores the floating-point weights smaller; they are read
    back into float32. ``extra`` adds fields to ``config.json`` (the hybrid's n-gram reference).
    """

    def fill(d: Path) -> None:
        # A tied decoder shares the embedding's tensor: store it once.
        tensors = {
            k: v.detach().cpu().contiguous()
            for k, v in net.state_dict().items()
            if not (config.tie_weights and k.endswith("decoder.weight"))
        }
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(d / WEIGHTS), metadata={"format": f"rnnlm-{model_type}"})
        cfg = {
            "format_version": FORMAT_VERSION,
            "model_type": model_type,
            "model": config.to_dict(),
            "weights_sha256": sha256_file(d / WEIGHTS),
            **(extra or {}),
        }
        write_json(d / CONFIG, cfg)
        write_shared_files(d, tokenizer, metrics, card)

    return write_dir_atomically(out_dir, fill)


def write_shared_files(d: Path, tokenizer: Tokenizer, metrics: dict | None, card: str | None) -> None:
    """What every kind of checkpoint holds besides its config and weights."""
    tokenizer.save(d / TOKENIZER)
    write_json(d / METRICS, metrics or {})
    if card is not None:
        (d / CARD).write_text(card, encoding="utf-8")


def read_config(model_dir: str | Path) -> dict:
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: not a checkpoint directory (does not exist)")
    config = read_json(d / CONFIG)
    if "model_type" not in config:
        raise CheckpointError(f"{d / CONFIG}: no 'model_type' field")
    if not isinstance(config["model_type"], str):
        raise CheckpointError(f"{d / CONFIG}: 'model_type' must be a string")
    return config


def load_tokenizer(d: Path) -> Tokenizer:
    """A checkpoint's vocabulary, or a CheckpointError naming the file."""
    try:
        return Tokenizer.from_dict(read_json(d / TOKENIZER))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{d / TOKENIZER}: invalid tokenizer ({type(e).__name__}: {e})") from e


def verify_file(path: Path, expected_sha256: str | None) -> None:
    checked_file(path, MAX_WEIGHTS_BYTES)
    if expected_sha256 is None:
        raise CheckpointError(f"{path}: config.json records no sha256 for it; refusing to load")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {actual[:12]}… does not match config.json ({expected_sha256[:12]}…); "
            "the file is truncated or was modified"
        )


def load_rnn(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[RNNLM, Tokenizer, dict]:
    """Load an RNN checkpoint: ``(model in eval mode, tokenizer, metrics)``."""
    net, tokenizer, metrics, _ = load_network(model_dir, "rnn", RNNLM, device)
    return net, tokenizer, metrics


def load_network(
    model_dir: str | Path,
    model_type: str,
    build: Callable[[Any], torch.nn.Module],
    device: str | torch.device = "cpu",
    config_cls: Any = ModelConfig,
) -> tuple[Any, Tokenizer, dict, dict]:
    """Load a network written by :func:`save_network`: ``(net in eval mode, tokenizer, metrics,
    config.json)``. ``build`` makes the empty network from its :class:`ModelConfig`."""
    d = Path(model_dir)
    config = read_config(d)
    if config["model_type"] != model_type:
        raise CheckpointError(f"{d / CONFIG}: model_type is {config['model_type']!r}, not {model_type!r}")
    verify_file(d / WEIGHTS, config.get("weights_sha256"))
    tokenizer = load_tokenizer(d)
    try:
        mconf = config_cls.from_dict(config["model"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{d / CONFIG}: invalid model config ({e})") from e
    if mconf.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(
            f"{d}: tokenizer has {tokenizer.vocab_size} tokens but the model expects "
            f"{mconf.vocab_size}; the vocabulary does not match the weights"
        )
    try:
        model = build(mconf)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. hidden_dim -1: torch refuses the shape
        raise CheckpointError(f"{d / CONFIG}: invalid model config ({e})") from e
    try:
        tensors = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{d / WEIGHTS}: not a valid safetensors file ({e})") from e
    if mconf.tie_weights:
        for key in [k for k in tensors if k.endswith("embedding.weight")]:
            tensors[key[: -len("embedding.weight")] + "decoder.weight"] = tensors[key]
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{d / WEIGHTS}: weights do not match config.json ({e})") from e
    metrics = read_json(d / METRICS) if (d / METRICS).exists() else {}
    return model.to(device).eval(), tokenizer, metrics, config
