"""Supervised training of the character tagger (model/heads/tagger.py) on a tagged split.

::

    DATA/train.txt ─▶ a seeded --label-fraction of its sentences ─▶ batches of whole sentences
        (word/POS)                                                      │ AdamW, clipping, bf16 optional
                                       encoders frozen for --freeze-lm-epochs, then all trained
                                                                        ▼
    DATA/valid.txt ─▶ segmentation F1 / POS accuracy after each epoch ─▶ best on valid kept
                                                                        ▼
    at the end (or when --max-minutes runs out): the best weights, scored on all of valid and
    test, saved as a checkpoint (model/heads/tagger.py: save_tagger), figures in metrics.json

The best epoch is the one with the highest joint POS F1 on valid (a word counts when its span
and its tag are right), which rewards segmentation and tagging together. With ``init_from_lm``
and ``backward_lm`` the encoders take the two language models' shape and vocabulary, and their
weights unless ``lm_weights`` is off (the "without LM initialization" baseline of the same
network); without them a vocabulary is built from the labelled sentences and the sizes come
from the config.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from model.heads.tagger import (
    HEADS,
    IGNORE,
    Tagger,
    TaggerConfig,
    encode_batch,
    evaluate_tagger,
    save_tagger,
    tagger_from_lms,
)
from model.models.device import pick_device
from model.text.data import corpus_checksums
from model.text.tagged import char_labels, read_tagged, sentence_text, split_label
from model.text.tokenizer import Tokenizer
from model.training.budget import TimeBudget
from model.training.optim import adamw

Sentence = list[tuple[str, str]]  # (word, tag) pairs
Row = tuple[list[int], list[int]]  # a sentence's character ids and label ids


@dataclass
class TaggerTrainConfig:
    """How a tagger is trained (saved in its metrics.json)."""

    data: str  # a tagged corpus directory (train/valid/test.txt of word/POS lines)
    out: str  # where the checkpoint is written
    init_from_lm: str | None = None  # a forward language model checkpoint (its shape, vocabulary, weights)
    backward_lm: str | None = None  # the backward language model beside it
    lm_weights: bool = True  # load the language models' weights (off: their shape only, random init)
    head: str = "crf"  # softmax | crf
    label_fraction: float = 1.0  # share of the training sentences used, drawn with ``seed``
    seed: int = 0
    epochs: int = 10  # at most this many passes over the labelled sentences
    max_steps: int = 0  # stop after this many updates (0: no limit)
    max_minutes: float = 0.0  # wall-clock budget, the final evaluation included (0: none)
    batch_chars: int = 4096  # characters per batch (whole sentences, similar lengths together)
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 1.0  # gradient norm clipping
    dropout: float = 0.3
    freeze_lm_epochs: int = 0  # epochs with the encoders frozen (only the output layer and CRF train)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    valid_lines: int = 0  # score only the first N valid sentences after each epoch (0: all)
    emb_dim: int = 128  # without language models: the encoders' sizes
    hidden_dim: int = 256
    num_layers: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError("label_fraction must be in (0, 1]")
        if (self.init_from_lm is None) != (self.backward_lm is None):
            raise ValueError("init_from_lm and backward_lm go together (a forward and a backward model)")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")


def labelled_subset(sentences: Sequence[Sentence], fraction: float, seed: int) -> list[Sentence]:
    """A seeded ``fraction`` of ``sentences`` (at least one), kept in file order."""
    n = len(sentences)
    k = max(1, round(fraction * n)) if n else 0
    chosen = sorted(random.Random(seed).sample(range(n), k))
    return [sentences[i] for i in chosen]


def label_set(sentences: Sequence[Sentence]) -> list[str]:
    """Every label of the training sentences, sorted (the tagger's output classes)."""
    return sorted({label for s in sentences for label in char_labels(s)})


def encode(sentences: Sequence[Sentence], tokenizer: Tokenizer, label_ids: dict[str, int]) -> list[Row]:
    """Each sentence as (character ids, label ids)."""
    return [
        (tokenizer.encode(sentence_text(s)).ids, [label_ids[label] for label in char_labels(s)])
        for s in sentences
        if s
    ]


def batches(rows: Sequence[Row], batch_chars: int, rng: random.Random) -> list[list[Row]]:
    """Whole sentences in batches of about ``batch_chars`` characters, similar lengths together,
    the batches in a random order."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), rng.random()))
    out: list[list[Row]] = []
    current: list[Row] = []
    width = 0
    for i in order:
        n = len(rows[i][0])
        if current and max(width, n) * (len(current) + 1) > batch_chars:
            out.append(current)
            current, width = [], 0
        current.append(rows[i])
        width = max(width, n)
    if current:
        out.append(current)
    rng.shuffle(out)
    return out


def build_tagger(cfg: TaggerTrainConfig, train: Sequence[Sentence]) -> tuple[Tagger, Tokenizer]:
    labels = label_set(train)
    if cfg.init_from_lm is not None and cfg.backward_lm is not None:
        return tagger_from_lms(
            cfg.init_from_lm, cfg.backward_lm, labels, cfg.head, cfg.dropout, cfg.lm_weights
        )
    tokenizer = Tokenizer.build((sentence_text(s) for s in train), kind="char")
    config = TaggerConfig(
        vocab_size=tokenizer.vocab_size,
        labels=tuple(labels),
        head=cfg.head,
        emb_dim=cfg.emb_dim,
        hidden_dim=cfg.hidden_dim,
        num_layers=cfg.num_layers,
        backward_emb_dim=cfg.emb_dim,
        backward_hidden_dim=cfg.hidden_dim,
        backward_num_layers=cfg.num_layers,
        dropout=cfg.dropout,
    )
    return Tagger(config), tokenizer


def train_tagger(cfg: TaggerTrainConfig, say: Callable[[str], None] = print) -> dict:
    """Train, keep the best epoch on valid, score it on valid and test, save it; its metrics."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    data = Path(cfg.data)
    everything = read_tagged(data / "train.txt")
    train = labelled_subset(everything, cfg.label_fraction, cfg.seed)
    valid, test = read_tagged(data / "valid.txt"), read_tagged(data / "test.txt")
    valid_sample = valid[: cfg.valid_lines] if cfg.valid_lines > 0 else valid
    device = pick_device(cfg.device)
    tagger, tokenizer = build_tagger(cfg, train)
    tagger.to(device)
    label_ids = {label: i for i, label in enumerate(tagger.labels)}
    rows = encode(train, tokenizer, label_ids)
    train_chars = sum(len(ids) for ids, _ in rows)
    say(
        f"{len(train)} of {len(everything)} training sentences ({train_chars} characters), "
        f"{len(tagger.labels)} labels, head {cfg.head}, "
        f"{sum(p.numel() for p in tagger.parameters()) / 1e6:.1f}M parameters, on {device}"
    )
    optimizer = adamw(tagger, cfg.lr, cfg.weight_decay)
    final_chars = sum(len(sentence_text(s)) for s in [*valid, *test])
    budget = TimeBudget(cfg.max_minutes, final_chars)

    def autocast():
        if cfg.precision != "bf16":
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    best: dict = {"valid_pos_f1": -1.0}
    best_state: dict[str, torch.Tensor] | None = None
    history, step, stopped = [], 0, "epochs"
    for epoch in range(cfg.epochs):
        tagger.freeze_encoders(epoch < cfg.freeze_lm_epochs)
        tagger.train()
        t0, losses = time.time(), []
        for batch in batches(rows, cfg.batch_chars, rng):
            ids, lengths = encode_batch([r[0] for r in batch], device)
            labels = torch.full_like(ids, IGNORE)
            for i, (_, row) in enumerate(batch):
                labels[i, : len(row)] = torch.tensor(row)
            progress = budget.fraction() if cfg.max_minutes > 0 else epoch / max(cfg.epochs, 1)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            with autocast():
                loss = tagger.loss(ids, lengths, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tagger.parameters(), cfg.clip)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if cfg.max_steps and step >= cfg.max_steps:
                stopped = "max_steps"
                break
            if budget.out_of_time():
                stopped = "max_minutes"
                break
        t1 = time.time()
        with autocast():
            scores = evaluate_tagger(tagger, tokenizer, valid_sample)
        eval_s = time.time() - t1
        budget.measured(eval_s, sum(len(sentence_text(s)) for s in valid_sample))
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": round(sum(losses) / max(len(losses), 1), 4),
            "train_s": round(t1 - t0, 1),
            "valid_f1": round(scores.f1, 4),
            "valid_pos_accuracy": round(scores.pos_accuracy, 4),
            "valid_pos_f1": round(scores.pos_f1, 4),
            "frozen": epoch < cfg.freeze_lm_epochs,
        }
        history.append(record)
        say(
            f"epoch {epoch + 1}: loss {record['train_loss']}, valid F1 {scores.f1:.4f}, "
            f"POS accuracy {scores.pos_accuracy:.4f}, POS F1 {scores.pos_f1:.4f} "
            f"({record['train_s']}s training, {eval_s:.1f}s scoring {len(valid_sample)} sentences)"
        )
        if scores.pos_f1 > best["valid_pos_f1"]:
            best = {"epoch": epoch + 1, "step": step, "valid_pos_f1": scores.pos_f1}
            best_state = {k: v.detach().clone() for k, v in tagger.state_dict().items()}
        if stopped != "epochs" or budget.out_of_time():
            stopped = "max_minutes" if budget.out_of_time() else stopped
            break
    if best_state is not None:
        tagger.load_state_dict(best_state)
    with autocast():
        final = {
            name: evaluate_tagger(tagger, tokenizer, split).to_dict()
            for name, split in (("valid", valid), ("test", test))
        }
    metrics = {
        "task": "word segmentation and part-of-speech tagging (B/M/E/S-POS per character)",
        "valid": final["valid"],
        "test": final["test"],
        "best": best,
        "history": history,
        "stopped": stopped,
        "elapsed_s": round(budget.elapsed, 1),
        "train_sentences": len(train),
        "train_chars": train_chars,
        "data": {"dir": str(data), "sha256": corpus_checksums(data)},
        "train_config": asdict(cfg),
        "device": str(device),
    }
    save_tagger(cfg.out, tagger, tokenizer, metrics, card=tagger_card(cfg, tagger.labels, metrics))
    say(
        f"best epoch {best.get('epoch')}: valid F1 {final['valid']['f1']:.4f} POS accuracy "
        f"{final['valid']['pos_accuracy']:.4f}; test F1 {final['test']['f1']:.4f} POS accuracy "
        f"{final['test']['pos_accuracy']:.4f}; saved {cfg.out}"
    )
    return metrics


def tagger_card(cfg: TaggerTrainConfig, labels: Sequence[str], metrics: dict) -> str:
    """MODEL_CARD.md of a tagger checkpoint, from what training measured (no figure typed by hand)."""
    tags = sorted({split_label(label)[1] for label in labels})
    if cfg.init_from_lm is None:
        init = "none: a vocabulary built from the labelled sentences, random weights"
    else:
        what = "weights" if cfg.lm_weights else "shape and vocabulary only (random weights)"
        init = f"`{Path(cfg.init_from_lm).name}` (forward) and `{Path(cfg.backward_lm or '').name}` (backward): {what}"
    rows = [
        f"| {split} | {m['f1']:.4f} | {m['pos_accuracy']:.4f} | {m['pos_f1']:.4f} | {m['char_accuracy']:.4f} "
        f"| {m['gold_words']} |"
        for split, m in ((split, metrics[split]) for split in ("valid", "test"))
    ]
    best = metrics.get("best", {})
    return "\n".join(
        [
            f"# {Path(cfg.out).name}: character tagger (word segmentation and part of speech)",
            "",
            "A bidirectional recurrent tagger (model/heads/tagger.py): one B/M/E/S-POS label per character,",
            f"decoded with a constrained Viterbi search ({cfg.head} head). Served by `POST /tag` when its",
            "directory is in `RNNLM_HEAD_DIRS` (docs/API.md).",
            "",
            "## Data",
            f"- Tagged corpus `{Path(cfg.data).name}` (train/valid/test.txt of `word/POS` lines; pd98: "
            "`rnnlm prepare-tagged`, the language models' split line for line).",
            f"- Trained on {metrics['train_sentences']} sentences ({metrics['train_chars']} characters), "
            f"{cfg.label_fraction:.0%} of the training split, drawn with seed {cfg.seed}.",
            f"- Encoders initialized from: {init}.",
            "",
            "## Labels",
            f"{len(labels)} labels: B/M/E/S × {len(tags)} tags ({', '.join(tags)}).",
            "",
            "## Results (whole splits; the best epoch on valid POS F1)",
            "| split | segmentation F1 | POS accuracy | POS F1 (joint) | label accuracy | words |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Best epoch {best.get('epoch')} (step {best.get('step')}), stopped by {metrics['stopped']} after "
            f"{metrics['elapsed_s']} s on {metrics['device']}.",
            "",
            "## Limits",
            "Learned from its corpus's text, word standard and tag set (pd98: 1998 newspaper text, the PKU",
            "standard): weaker on other registers. Whitespace is never part of a word (`/tag` tags each",
            "whitespace-separated run on its own).",
            "",
        ]
    )
