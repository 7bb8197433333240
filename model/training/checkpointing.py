"""What a run writes and reads back: the best checkpoint (with its metadata and card), the
resume state, and the weights a run may start from.

Every checkpoint carries what it took to make it (``metrics.json``): the corpus and its
checksums, the :class:`~model.training.config.TrainConfig`, the tokenizer, the command line and
the hardware; the validations so far; once the run ends, its valid and test figures.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model import __version__
from model.text.data import corpus_checksums, write_text_atomically
from model.text.tokenizer import UNK_ID, Tokenizer
from model.training.config import TrainConfig


def run_metadata(
    job: Any,
    cfg: TrainConfig,
    tokenizer: Tokenizer,
    net: nn.Module,
    data: Any,
    device: torch.device,
    world: int,
) -> dict:
    """The record of how a checkpoint was made (``job``: a TrainJob, ``data``: TrainingData)."""
    return {
        "model_type": cfg.kind,
        "data": {
            "dir": str(job.data_dir),
            "sha256": corpus_checksums(job.data_dir),
            "train_lines": len(data.train_lines),
            "train_tokens": data.train_tokens,
        },
        "train_config": cfg.to_dict(),
        "tokenizer": {
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "min_count": job.min_count,
            "direction": tokenizer.direction,
        },
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": job.command,
        "init_from": job.init_from,
        "hardware": {
            "device": str(device),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch_threads": torch.get_num_threads(),
            "world_size": world,
            "torch": torch.__version__,
        },
        "rnnlm_version": __version__,
    }


def save_checkpoint(
    out_dir: str,
    net: Any,
    tokenizer: Tokenizer,
    cfg: TrainConfig,
    metrics: dict,
    card: str | None,
    ngram_dir: str = "",
) -> None:
    """Write ``net`` as a checkpoint of ``cfg.kind``, its weights stored as ``cfg.save_dtype``."""
    from model.models.checkpoint import save_network

    dtype = {"float32": None, "float16": torch.float16}[cfg.save_dtype]
    if cfg.kind == "hybrid":
        from model.models.hybrid import save_hybrid

        save_hybrid(out_dir, net, tokenizer, ngram_dir, metrics, card=card, dtype=dtype)
    else:
        save_network(out_dir, net, net.config, tokenizer, metrics, card, model_type=cfg.kind, dtype=dtype)


def write_metrics(model_dir: str | Path, metrics: dict) -> None:
    """Replace a checkpoint's metrics.json in one rename (never half-written)."""
    write_text_atomically(
        Path(model_dir) / "metrics.json", json.dumps(metrics, ensure_ascii=False, indent=2) + "\n"
    )


def write_card(model_dir: str | Path, card: str) -> None:
    """Replace a checkpoint's MODEL_CARD.md in one rename."""
    write_text_atomically(Path(model_dir) / "MODEL_CARD.md", card)


# -- resume -------------------------------------------------------------------------------------
@dataclass
class Progress:
    """Everything a resumed run needs besides the weights and the optimizer (saved as JSON)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    best_valid: float = math.inf
    bad_evals: int = 0
    tokens_seen: int = 0
    next_eval: int = 0  # step of the next validation (0: by tokens only)
    next_eval_tokens: int = 0  # tokens seen at the next validation (0: by steps only)
    phase: str = "sentence"
    history: list[dict] = field(default_factory=list)


def save_resume_state(path: Path, net: nn.Module, opt: torch.optim.Optimizer, progress: dict) -> None:
    """Weights, optimizer and progress, replaced in one rename."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": net.state_dict(), "optimizer": opt.state_dict(), "progress": json.dumps(progress)}, tmp
    )
    tmp.replace(path)


def load_resume_state(path: Path, net: nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> dict:
    """Load a resume state into ``net`` and ``opt``; its progress fields."""
    saved = torch.load(path, map_location=device, weights_only=True)
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    return json.loads(saved["progress"])


# -- starting from another checkpoint's weights ---------------------------------------------------
VOCAB_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")  # the tensors indexed by token id


def remap_vocabulary(tensors: dict[str, Tensor], source: Tokenizer, target: Tokenizer) -> dict[str, Tensor]:
    """A checkpoint's weights for another vocabulary (training on more text starts from a model
    trained on less): a token both know keeps its rows; a new token starts as ``<unk>`` did,
    its output bias lowered by ln(new tokens + 1) so the new tokens share ``<unk>``'s probability."""
    index = torch.tensor([source.token_id(t) if i >= 4 else i for i, t in enumerate(target.tokens)])
    new = sum(1 for t in target.tokens[4:] if source.token_id(t) == UNK_ID)
    out = dict(tensors)
    for k, v in tensors.items():
        if k.endswith(VOCAB_ROWS) and v.shape[0] == source.vocab_size:
            out[k] = v[index].clone()
            if k.endswith("decoder.bias"):
                out[k][(index == UNK_ID) & (torch.arange(len(index)) >= 4)] -= math.log(new + 1)
    return out


def vocabulary_overlap(source: Tokenizer, target: Tokenizer) -> str:
    known = sum(1 for t in target.tokens[4:] if source.token_id(t) != UNK_ID)
    return (
        f"{known} of {target.vocab_size - 4} tokens from the checkpoint, {target.vocab_size - 4 - known} new"
    )


def load_initial_weights(net: nn.Module, kind: str, path: str, tokenizer: Tokenizer, say=print) -> None:
    """Start from a checkpoint's weights. A hybrid may start from a plain RNN checkpoint of the
    same shape: its RNN is taken over and β starts at 1."""
    from safetensors.torch import load_file

    tensors = {k: v.float() for k, v in load_file(str(Path(path) / "model.safetensors")).items()}
    own = net.state_dict()
    source = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))["model_type"]
    if kind == "hybrid" and source == "rnn":
        tensors = {"rnn." + k: v for k, v in tensors.items()}
        tensors.update({k: v for k, v in own.items() if k.startswith("beta.")})
    for k in [k for k in own if k.endswith("decoder.weight") and k not in tensors]:
        tensors[k] = tensors[k.replace("decoder.weight", "embedding.weight")]
    source_tokenizer = Tokenizer.load(Path(path) / "tokenizer.json")
    if source_tokenizer.tokens != tokenizer.tokens:
        tensors = remap_vocabulary(tensors, source_tokenizer, tokenizer)
        say(f"vocabulary mapped: {vocabulary_overlap(source_tokenizer, tokenizer)}")
    net.load_state_dict(tensors, strict=True)
    say(f"initialized from {path}")
