"""Training the text classifier (model/heads/classifier.py) the ULMFiT way.

::

    (a) optional: the language model fine-tuned on the task's text     finetune_lm: the training loop of
        (an LM corpus of the train reviews: data/reviews, split by review)  `rnnlm fit` from --init-from
                                                                  ▼
    (b) DATA/train.jsonl ─▶ a seeded --label-fraction per label ─▶ batches of whole texts
        gradual unfreezing: epoch 1 the head only, then one more layer group per epoch from the top
        (recurrent layers, then the embedding); learning rate lr / 2.6^depth per group below the head;
        slanted triangular (or cosine) schedule over the run; AdamW, clipping
                                                                  ▼
        DATA/valid.jsonl accuracy after each epoch ─▶ best on valid kept ─▶ scored on valid and test,
        saved as a checkpoint (save_classifier), figures in metrics.json

With ``lm_weights`` off the same network starts from random weights (the "without language-model
initialization" baseline); unfreezing then still runs but matters little. Without ``init_from_lm``
a vocabulary is built from the labelled train texts and the sizes come from the config.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from model.heads.classifier import (
    Classifier,
    ClassifierConfig,
    accuracy,
    classifier_from_lm,
    save_classifier,
)
from model.heads.tagger import encode_batch
from model.models.checkpoint import read_config
from model.models.config import FROM_TOKENIZER
from model.models.device import pick_device
from model.text.data import sha256_file
from model.text.reviews import Review, read_labelled
from model.text.tokenizer import Tokenizer
from model.training.budget import TimeBudget
from model.training.config import TrainConfig, TrainJob

SCHEDULES = ("stlr", "cosine")
LAYER_LR_FACTOR = 2.6  # ULMFiT: each layer group learns 2.6 times slower than the one above it


@dataclass
class ClassifierTrainConfig:
    """How a classifier is trained (saved in its metrics.json)."""

    data: str  # a labelled directory (train/valid/test.jsonl of {"text", "label"})
    out: str  # where the checkpoint is written
    init_from_lm: str | None = None  # a forward language model checkpoint (rnn or hybrid)
    lm_weights: bool = True  # load the LM's weights (off: its shape and vocabulary, random init)
    label_fraction: float = 1.0  # share of each label's training texts used, drawn with ``seed``
    seed: int = 0
    epochs: int = 8  # at most this many passes over the labelled texts
    max_steps: int = 0  # stop after this many updates (0: no limit)
    max_minutes: float = 0.0  # wall-clock budget, the final evaluation included (0: none)
    gradual_unfreezing: bool = True  # off: every layer trains from the start
    unfreeze_steps: int = 0  # updates between unfreezing one more group (0: one per epoch)
    batch_chars: int = 4096  # characters per batch (whole texts, similar lengths together)
    lr: float = 2e-3  # the head's peak learning rate; group k below it gets lr / 2.6^k
    layer_lr_factor: float = LAYER_LR_FACTOR
    schedule: str = "stlr"  # stlr (slanted triangular) | cosine
    weight_decay: float = 0.01
    clip: float = 1.0  # gradient norm clipping
    dropout: float = 0.3  # encoder dropout
    head_dropout: float = 0.4
    head_dim: int = 50
    max_chars: int = 512
    valid_limit: int = 0  # score only the first N valid texts after each epoch (0: all)
    emb_dim: int = 128  # without a language model: the encoder's sizes
    hidden_dim: int = 256
    num_layers: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError("label_fraction must be in (0, 1]")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.layer_lr_factor < 1.0:
            raise ValueError("layer_lr_factor must be at least 1")
        if not self.lm_weights and self.init_from_lm is None:
            raise ValueError("lm_weights off needs init_from_lm (its shape and vocabulary)")


# -- (a) the language model on the task's text ------------------------------------------------------
def finetune_lm(
    lm_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    minutes: float,
    lr: float = 3e-4,
    device: str = "auto",
    log: Callable[[str], None] = print,
    **overrides: object,
) -> dict:
    """Fine-tune a language model on a corpus directory of the task's train text (its valid picks
    the checkpoint; its test is not read: no final evaluation) with the training loop of
    ``rnnlm fit``, from the model's weights and vocabulary; a hybrid keeps reading its own n-gram."""
    from model.training.fit import fit

    base = read_config(lm_dir)
    kind = base["model_type"]
    ngram_dir = str((Path(lm_dir) / base["ngram"]["path"]).resolve()) if kind == "hybrid" else ""
    recipe = {
        "kind": kind,
        "folds": 0,  # a hybrid's n-gram never saw the task text as held out: read it everywhere
        "max_minutes": minutes,
        "lr": lr,
        "warmup_steps": 20,
        "batch_size": 32,
        "bptt": 64,
        "eval_every_tokens": 200_000,
    }
    job = TrainJob(
        data_dir=str(data_dir),
        out_dir=str(out_dir),
        run_dir=str(Path(out_dir).with_name(Path(out_dir).name + "-run")),
        model={k: v for k, v in base["model"].items() if k not in FROM_TOKENIZER},
        train=TrainConfig.recipe(**(recipe | overrides)),
        init_from=str(lm_dir),
        vocabulary_from=str(lm_dir),
        ngram_dir=ngram_dir,
        command=f"finetune_lm({lm_dir}, {data_dir})",
    )
    return fit(job, device=device, log=log, final_eval=False)


# -- (b) the classifier ------------------------------------------------------------------------------
def label_subset(rows: Sequence[Review], fraction: float, seed: int) -> list[Review]:
    """A seeded ``fraction`` of each label's rows (at least one of each), kept in file order."""
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted({r.label for r in rows}):
        members = [i for i, r in enumerate(rows) if r.label == label]
        chosen += rng.sample(members, max(1, round(fraction * len(members))))
    return [rows[i] for i in sorted(chosen)]


def slanted_triangular(progress: float, cut: float = 0.1, ratio: float = 32.0) -> float:
    """ULMFiT's schedule as a multiple of the peak: up linearly for the first ``cut`` of the run,
    then down linearly to 1/``ratio``."""
    p = min(max(progress, 0.0), 1.0)
    rise = p / cut if p < cut else 1 - (p - cut) / (1 - cut)
    return (1 + rise * (ratio - 1)) / ratio


def schedule_factor(name: str, progress: float) -> float:
    if name == "stlr":
        return slanted_triangular(progress)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def discriminative_optimizer(
    classifier: Classifier, lr: float, weight_decay: float, factor: float
) -> torch.optim.AdamW:
    """AdamW with one learning rate per layer group: the head ``lr``, each group below ``factor``
    times less (``base_lr`` in each param group); decay on matrices only."""
    groups = []
    for depth, params in enumerate(reversed(classifier.layer_groups())):
        base = lr / factor**depth
        for decay in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decay]
            if chosen:
                wd = weight_decay if decay else 0.0
                groups.append({"params": chosen, "lr": base, "base_lr": base, "weight_decay": wd})
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def text_batches(
    rows: Sequence[tuple[list[int], int]], batch_chars: int, rng: random.Random
) -> list[list[tuple[list[int], int]]]:
    """Whole texts in batches of about ``batch_chars`` characters, similar lengths together, the
    batches in a random order."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), rng.random()))
    out: list[list[tuple[list[int], int]]] = []
    current: list[tuple[list[int], int]] = []
    width = 0
    for i in order:
        n = max(len(rows[i][0]), 1)
        if current and max(width, n) * (len(current) + 1) > batch_chars:
            out.append(current)
            current, width = [], 0
        current.append(rows[i])
        width = max(width, n)
    if current:
        out.append(current)
    rng.shuffle(out)
    return out


def build_classifier(cfg: ClassifierTrainConfig, train: Sequence[Review]) -> tuple[Classifier, Tokenizer]:
    labels = sorted({r.label for r in train})
    sizes: dict[str, Any] = {"dropout": cfg.dropout, "head_dim": cfg.head_dim}
    sizes |= {"head_dropout": cfg.head_dropout, "max_chars": cfg.max_chars}
    if cfg.init_from_lm is not None:
        return classifier_from_lm(cfg.init_from_lm, labels, cfg.lm_weights, **sizes)
    tokenizer = Tokenizer.build((r.text for r in train), kind="char")
    config = ClassifierConfig(
        vocab_size=tokenizer.vocab_size,
        labels=tuple(labels),
        emb_dim=cfg.emb_dim,
        hidden_dim=cfg.hidden_dim,
        num_layers=cfg.num_layers,
        **sizes,
    )
    return Classifier(config), tokenizer


def trainable_groups(cfg: ClassifierTrainConfig, epoch: int, step: int, total: int) -> int:
    """How many layer groups, from the top, train now (all of them without gradual unfreezing)."""
    if not cfg.gradual_unfreezing:
        return total
    stage = step // cfg.unfreeze_steps if cfg.unfreeze_steps > 0 else epoch
    return min(total, 1 + stage)


def train_classifier(cfg: ClassifierTrainConfig, say: Callable[[str], None] = print) -> dict:
    """Train, keep the best epoch on valid, score it on valid and test, save it; its metrics."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    data = Path(cfg.data)
    everything = read_labelled(data / "train.jsonl")
    train = label_subset(everything, cfg.label_fraction, cfg.seed)
    valid, test = read_labelled(data / "valid.jsonl"), read_labelled(data / "test.jsonl")
    valid_sample = valid[: cfg.valid_limit] if cfg.valid_limit > 0 else valid
    device = pick_device(cfg.device)
    classifier, tokenizer = build_classifier(cfg, train)
    classifier.to(device)
    label_ids = {label: i for i, label in enumerate(classifier.labels)}
    unknown = sorted({r.label for r in [*valid, *test]} - set(label_ids))
    if unknown:
        raise ValueError(f"valid or test has labels the training texts lack: {unknown}")
    rows = [(tokenizer.encode(r.text).ids[: cfg.max_chars], label_ids[r.label]) for r in train]
    train_chars = sum(len(ids) for ids, _ in rows)
    groups = len(classifier.layer_groups())
    say(
        f"{len(train)} of {len(everything)} training texts ({train_chars} characters), labels "
        f"{'/'.join(classifier.labels)}, {sum(p.numel() for p in classifier.parameters()) / 1e6:.1f}M "
        f"parameters in {groups} layer groups, "
        f"{'from ' + str(cfg.init_from_lm) if cfg.lm_weights and cfg.init_from_lm else 'random init'}, on {device}"
    )
    optimizer = discriminative_optimizer(classifier, cfg.lr, cfg.weight_decay, cfg.layer_lr_factor)
    budget = TimeBudget(cfg.max_minutes, sum(len(r.text[: cfg.max_chars]) for r in [*valid, *test]))
    steps_per_epoch = len(text_batches(rows, cfg.batch_chars, random.Random(0)))
    planned = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        planned = min(planned, cfg.max_steps)

    def score(split: Sequence[Review]) -> float:
        return accuracy(classifier, tokenizer, [r.text for r in split], [r.label for r in split])

    best: dict = {"valid_accuracy": -1.0}
    best_state: dict[str, torch.Tensor] | None = None
    history, step, stopped = [], 0, "epochs"
    for epoch in range(cfg.epochs):
        classifier.train()
        t0, losses, correct, seen = time.time(), [], 0, 0
        for batch in text_batches(rows, cfg.batch_chars, rng):
            top = trainable_groups(cfg, epoch, step, groups)
            classifier.unfreeze(top)
            ids, lengths = encode_batch([r[0] for r in batch], device)
            gold = torch.tensor([r[1] for r in batch], device=device)
            progress = budget.fraction() if cfg.max_minutes > 0 else step / max(planned, 1)
            factor = schedule_factor(cfg.schedule, progress)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            logits = classifier(ids, lengths).float()
            loss = F.cross_entropy(logits, gold)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(classifier.parameters(), cfg.clip)
            optimizer.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == gold).sum())
            seen += len(batch)
            step += 1
            if cfg.max_steps and step >= cfg.max_steps:
                stopped = "max_steps"
                break
            if budget.out_of_time():
                stopped = "max_minutes"
                break
        t1 = time.time()
        valid_accuracy = score(valid_sample)
        eval_s = time.time() - t1
        budget.measured(eval_s, sum(len(r.text[: cfg.max_chars]) for r in valid_sample))
        record = {
            "epoch": epoch + 1,
            "step": step,
            "trainable_groups": trainable_groups(cfg, epoch, max(step - 1, 0), groups),
            "train_loss": round(sum(losses) / max(len(losses), 1), 4),
            "train_accuracy": round(correct / max(seen, 1), 4),
            "train_s": round(t1 - t0, 1),
            "valid_accuracy": round(valid_accuracy, 4),
        }
        history.append(record)
        say(
            f"epoch {epoch + 1}: {record['trainable_groups']}/{groups} groups training, loss "
            f"{record['train_loss']}, valid accuracy {valid_accuracy:.4f} ({record['train_s']}s training, "
            f"{eval_s:.1f}s scoring {len(valid_sample)} texts)"
        )
        if valid_accuracy > best["valid_accuracy"]:
            best = {"epoch": epoch + 1, "step": step, "valid_accuracy": valid_accuracy}
            best_state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
        if stopped != "epochs" or budget.out_of_time():
            stopped = "max_minutes" if budget.out_of_time() else stopped
            break
    if best_state is not None:
        classifier.load_state_dict(best_state)
    final = {
        name: {"accuracy": score(split), "texts": len(split)}
        for name, split in (("valid", valid), ("test", test))
    }
    metrics = {
        "task": "text classification: " + "/".join(classifier.labels),
        "valid": final["valid"],
        "test": final["test"],
        "best": best,
        "history": history,
        "stopped": stopped,
        "elapsed_s": round(budget.elapsed, 1),
        "train_texts": len(train),
        "train_chars": train_chars,
        "data": {"dir": str(data), "sha256": labelled_checksums(data)},
        "train_config": asdict(cfg),
        "device": str(device),
    }
    save_classifier(
        cfg.out, classifier, tokenizer, metrics, card=classifier_card(cfg, classifier.labels, metrics)
    )
    say(
        f"best epoch {best.get('epoch')}: valid accuracy {final['valid']['accuracy']:.4f}, test accuracy "
        f"{final['test']['accuracy']:.4f} ({len(test)} texts); saved {cfg.out}"
    )
    return metrics


def labelled_checksums(data_dir: Path) -> dict[str, str]:
    return {p.stem: sha256_file(p) for p in sorted(data_dir.glob("*.jsonl"))}


# -- a peer: naive Bayes over character bigrams ------------------------------------------------------
def char_bigrams(text: str) -> list[str]:
    padded = "\x02" + text + "\x03"  # the start and the end are features too
    return [padded[i : i + 2] for i in range(len(padded) - 1)]


@dataclass
class NaiveBayes:
    """Multinomial naive Bayes over character bigrams with add-one smoothing (snownlp's sentiment
    model is a naive Bayes too, over segmented words)."""

    counts: dict[str, Counter[str]]  # label -> bigram counts
    priors: dict[str, float]  # label -> ln P(label)
    vocab: int  # distinct bigrams seen in training (the smoothing's denominator)

    @classmethod
    def fit(cls, rows: Sequence[Review]) -> NaiveBayes:
        counts: dict[str, Counter[str]] = {}
        for r in rows:
            counts.setdefault(r.label, Counter()).update(char_bigrams(r.text))
        n = Counter(r.label for r in rows)
        priors = {label: math.log(n[label] / len(rows)) for label in counts}
        return cls(counts, priors, len(set().union(*counts.values())))

    def predict(self, text: str) -> str:
        grams = char_bigrams(text)

        def score(label: str) -> float:
            c, total = self.counts[label], self.counts[label].total()
            return self.priors[label] + sum(math.log((c[g] + 1) / (total + self.vocab)) for g in grams)

        return max(sorted(self.counts), key=score)


def naive_bayes_accuracy(train: Sequence[Review], split: Sequence[Review]) -> float:
    model = NaiveBayes.fit(train)
    return sum(model.predict(r.text) == r.label for r in split) / max(len(split), 1)


def classifier_card(cfg: ClassifierTrainConfig, labels: Sequence[str], metrics: dict) -> str:
    """MODEL_CARD.md of a classifier checkpoint, from what training measured (no figure typed by hand)."""
    if cfg.init_from_lm is None:
        init = "none: a vocabulary built from the labelled texts, random weights"
    else:
        what = "weights" if cfg.lm_weights else "shape and vocabulary only (random weights)"
        init = f"`{Path(cfg.init_from_lm).name}`: {what}"
    best = metrics.get("best", {})
    rows = [
        f"| {split} | {metrics[split]['accuracy']:.4f} | {metrics[split]['texts']} |"
        for split in ("valid", "test")
    ]
    return "\n".join(
        [
            f"# {Path(cfg.out).name}: text classifier ({', '.join(labels)})",
            "",
            "A head on a recurrent language model's encoder (model/heads/classifier.py: ULMFiT concat",
            "pooling of the top layer, gradual unfreezing). Served by `POST /classify` when its directory",
            "is in `RNNLM_HEAD_DIRS` (docs/API.md).",
            "",
            "## Data",
            f"- Labelled texts `{Path(cfg.data).name}` (train/valid/test.jsonl; the reviews: `rnnlm "
            "prepare-reviews-labelled`, split by review as the language model's corpus).",
            f"- Trained on {metrics['train_texts']} texts ({metrics['train_chars']} characters), "
            f"{cfg.label_fraction:.0%} of each label's training texts, drawn with seed {cfg.seed}.",
            f"- Encoder initialized from: {init}.",
            "",
            "## Results (whole splits; the best epoch on valid accuracy)",
            "| split | accuracy | texts |",
            "|---|---|---|",
            *rows,
            "",
            f"Best epoch {best.get('epoch')} (step {best.get('step')}), stopped by {metrics['stopped']} after "
            f"{metrics['elapsed_s']} s on {metrics['device']}.",
            "",
        ]
    )
