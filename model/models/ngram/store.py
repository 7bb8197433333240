"""N-gram checkpoint directories, laid out like the RNN's (see :mod:`model.models.checkpoint`)::

    runs/ngram/pd98-char-kn5/
        config.json        model_type "ngram", order, smoothing and its parameters, sha256 of the tables
        ngram.safetensors  the backoff tables: keys.N, logprob.N, logbackoff.N (float32)
        tokenizer.json     the vocabulary
        metrics.json       counts, build time and memory, valid/test perplexity
        MODEL_CARD.md

The tables are plain arrays (safetensors, no pickle) and load in well under a second; the
interchange format with KenLM and SRILM is ARPA text (:mod:`model.models.ngram.arpa`). The sorted int64 keys
are stored as their differences, ``keydelta.N`` (uint32), which halves their size (a 5-gram of
the People's Daily fits in 39 MB instead of 54); tables whose gaps do not fit keep ``keys.N``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from model.models.checkpoint import (
    CONFIG,
    FORMAT_VERSION,
    METRICS,
    CheckpointError,
    load_tokenizer,
    read_config,
    read_json,
    verify_file,
    write_dir_atomically,
    write_json,
    write_shared_files,
)
from model.models.ngram.model import NGramLanguageModel
from model.models.ngram.quantize import dequantize, quantize
from model.models.ngram.tables import BackoffTables
from model.text.data import sha256_file

TABLES = "ngram.safetensors"


def tables_to_arrays(tables: BackoffTables, quantize_bits: int = 0) -> dict[str, np.ndarray]:
    """The tables as named arrays; with ``quantize_bits`` (8), orders 2 and up as one byte per
    value plus its centers (``logprob.N.q`` + ``logprob.N.centers``, :mod:`model.models.ngram.quantize`)."""
    arrays = {}
    for n in range(1, tables.order + 1):
        keys = np.asarray(tables.keys[n - 1], dtype=np.int64)
        delta = np.diff(keys, prepend=0)
        if len(delta) and (delta.min() < 0 or delta.max() >= 2**32):
            arrays[f"keys.{n}"] = np.ascontiguousarray(keys)
        else:
            arrays[f"keydelta.{n}"] = delta.astype(np.uint32)
        values = {"logprob": tables.logprob[n - 1]}
        if n < tables.order:
            values["logbackoff"] = tables.logbackoff[n - 1]
        for name, v in values.items():
            if quantize_bits and n > 1:
                codes, centers = quantize(v, quantize_bits)
                arrays[f"{name}.{n}.q"], arrays[f"{name}.{n}.centers"] = codes, centers
            else:
                arrays[f"{name}.{n}"] = np.ascontiguousarray(v, dtype=np.float32)
    return arrays


def _values(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A float32 table, stored plain or quantized."""
    if name in arrays:
        return arrays[name]
    return dequantize(arrays[name + ".q"], arrays[name + ".centers"])


def tables_from_arrays(arrays: dict[str, np.ndarray], order: int, vocab_size: int) -> BackoffTables:
    return BackoffTables(
        vocab_size=vocab_size,
        keys=[
            arrays[f"keys.{n}"]
            if f"keys.{n}" in arrays
            else np.cumsum(arrays[f"keydelta.{n}"], dtype=np.int64)
            for n in range(1, order + 1)
        ],
        logprob=[_values(arrays, f"logprob.{n}") for n in range(1, order + 1)],
        logbackoff=[_values(arrays, f"logbackoff.{n}") for n in range(1, order)],
    )


def save_ngram(
    out_dir: str | Path,
    lm: NGramLanguageModel,
    metrics: dict | None = None,
    card: str | None = None,
    quantize_bits: int = 0,
) -> Path:
    """Write a complete n-gram checkpoint directory (atomically); ``quantize_bits`` 8 stores the
    tables of orders 2 and up in one byte per value (:mod:`model.models.ngram.quantize`)."""

    def fill(d: Path) -> None:
        arrays = tables_to_arrays(lm.tables, quantize_bits)
        save_file(arrays, str(d / TABLES), metadata={"format": "rnnlm-ngram"})
        os.chmod(d / TABLES, 0o644)  # safetensors writes 0600; a server running as another user must read it
        write_json(
            d / CONFIG,
            {
                "format_version": FORMAT_VERSION,
                "model_type": "ngram",
                "order": lm.order,
                "smoothing": lm.smoothing,
                "params": lm.params,
                **({"quantized_bits": quantize_bits} if quantize_bits else {}),
                "vocab_size": lm.vocab_size,
                "ngrams": lm.tables.sizes(),
                "tables_file": TABLES,
                "tables_sha256": sha256_file(d / TABLES),
            },
        )
        write_shared_files(d, lm.tokenizer, metrics, card)

    return write_dir_atomically(out_dir, fill)


def load_ngram(model_dir: str | Path) -> NGramLanguageModel:
    """Open an n-gram checkpoint; refuses (CheckpointError) anything that does not verify."""
    d = Path(model_dir)
    config = read_config(d)
    if config["model_type"] != "ngram":
        raise CheckpointError(f"{d / CONFIG}: model_type is {config['model_type']!r}, not 'ngram'")
    name = config.get("tables_file", TABLES)
    if not isinstance(name, str) or Path(name).name != name:
        raise CheckpointError(f"{d / CONFIG}: 'tables_file' must be a file name in the checkpoint directory")
    path = d / name
    verify_file(path, config.get("tables_sha256"))
    tokenizer = load_tokenizer(d)
    try:
        arrays = load_file(str(path))
        tables = tables_from_arrays(arrays, int(config["order"]), tokenizer.vocab_size)
        lm = NGramLanguageModel(tables, tokenizer, config.get("smoothing", "unknown"), config.get("params"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from e
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: tables do not match config.json or the tokenizer ({e})") from e
    lm.metrics = read_json(d / METRICS) if (d / METRICS).exists() else {}
    return lm
