"""``rnnlm task pinyin|wordorder|rerank``: build the rescoring tasks' n-best files.

Each action writes ``dev.jsonl`` (from valid), ``test.jsonl`` (from test) and ``manifest.json`` to
``--out`` (see :mod:`model.quality.tasks`), then prints the manifest's figures. Only argparse is
imported here; the work loads when the command runs, so ``rnnlm --help`` stays fast. Errors are
:mod:`rnnlm.cli`'s: a bad ``--data`` or an unreadable split ends with exit status 1 and nothing
written; an option out of its range, with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from .args import at_least
from .commands import Commands

commands = Commands()  # `rnnlm task` (joined in rnnlm/cli.py)
task_action = Commands()  # @task_action("name", add_args) registers `rnnlm task name`


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="corpus directory (train/valid/test.txt from `rnnlm prepare-data`)"
    )
    p.add_argument("--out", required=True, help="directory to write dev.jsonl, test.jsonl, manifest.json")
    p.add_argument("--sentences", type=at_least(1), default=300, help="utterances per set (default: 300)")
    p.add_argument(
        "--nbest", type=at_least(1), default=20, help="candidates per utterance, at most (default: 20)"
    )
    p.add_argument("--seed", type=int, default=0, help="which held-out sentences are drawn (default: 0)")
    p.add_argument(
        "--min-len", type=at_least(1), default=8, help="shortest sentence, characters (default: 8)"
    )
    p.add_argument(
        "--max-len", type=at_least(1), default=40, help="longest sentence, characters (default: 40)"
    )
    p.add_argument(
        "--first-pass-order",
        type=at_least(1),
        default=2,
        help="n of the first pass's Kneser-Ney n-gram, counted on train (default: 2, a bigram)",
    )


def _pinyin_args(p: argparse.ArgumentParser) -> None:
    _common_args(p)
    p.add_argument(
        "--cn",
        action="store_true",
        help="also write dev.cn.jsonl and test.cn.jsonl: each utterance as a confusion network (every "
        "syllable's candidate characters with the first pass's posteriors), for `rnnlm decode --cn`",
    )
    p.add_argument(
        "--beam", type=at_least(1), default=64, help="partial hypotheses kept at each syllable (default: 64)"
    )
    p.add_argument(
        "--max-candidates",
        type=at_least(0),
        default=0,
        help="characters offered per syllable: the K read that way most often in train (default: 0, all)",
    )
    p.add_argument(
        "--min-count",
        type=at_least(1),
        default=1,
        help="times a character must be read that way in train to be offered (default: 1)",
    )


def _wordorder_args(p: argparse.ArgumentParser) -> None:
    _common_args(p)
    p.add_argument(
        "--max-chunk",
        type=at_least(1),
        default=3,
        help="longest run of characters moved by one swap of adjacent chunks (default: 3)",
    )


def _run(task: str, args: argparse.Namespace, **extra: int) -> int:
    import torch

    from model.quality.tasks import TaskConfig, build_task

    if args.max_len < args.min_len:
        raise argparse.ArgumentError(None, f"--max-len ({args.max_len}) is below --min-len ({args.min_len})")
    if extra.get("beam", args.nbest) < args.nbest:
        raise argparse.ArgumentError(
            None, f"--beam ({extra['beam']}) must be at least --nbest ({args.nbest})"
        )
    cfg = TaskConfig(
        sentences=args.sentences,
        nbest=args.nbest,
        seed=args.seed,
        min_len=args.min_len,
        max_len=args.max_len,
        first_pass_order=args.first_pass_order,
        **extra,
    )
    # The first pass steps (beam, vocabulary) arrays: one thread does it fastest; more only
    # contend (ten times slower when another process keeps the cores busy).
    torch.set_num_threads(1)
    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["task", task] else ""
    manifest = build_task(task, args.data, args.out, cfg, command)
    if getattr(args, "cn", False):
        from model.quality.pinyin_cn import write_pinyin_cns

        manifest["confusion_networks"] = write_pinyin_cns(args.data, args.out, cfg)
    print(
        json.dumps(
            {"out": args.out, "elapsed_seconds": manifest["elapsed_seconds"], "sets": manifest["sets"]},
            ensure_ascii=False,
        )
    )
    return 0


@task_action("pinyin", _pinyin_args)
def cmd_pinyin(args: argparse.Namespace) -> int:
    """Pinyin two-pass decoding (speech without audio): a bigram beam search writes 20-best lists."""
    return _run("pinyin", args, beam=args.beam, max_candidates=args.max_candidates, min_count=args.min_count)


@task_action("wordorder", _wordorder_args)
def cmd_wordorder(args: argparse.Namespace) -> int:
    """Word order (translation): the reference among its best-scored chunk-swap reorderings."""
    return _run("wordorder", args, max_chunk=args.max_chunk)


def _rerank_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("homophone", "wordorder"), required=True, help="which reranking set")
    p.add_argument(
        "--data", required=True, help="corpus directory (train/valid/test.txt from `rnnlm prepare-data`)"
    )
    p.add_argument("--out", required=True, help="directory to write dev.jsonl, test.jsonl, manifest.json")
    p.add_argument("--size", type=at_least(1), default=500, help="items per set (default: 500)")
    p.add_argument("--distractors", type=at_least(1), default=5, help="distractors per item (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="which sentences and edits are drawn (default: 0)")
    p.add_argument(
        "--sets-dir", default="runs/rerank", help="where the reranking sets are cached (default: runs/rerank)"
    )


@task_action("rerank", _rerank_args)
def cmd_rerank(args: argparse.Namespace) -> int:
    """The reranking benchmark's sets (`rnnlm benchmark rerank`) as n-best files: dev from valid, test from test."""
    from pathlib import Path

    from model.quality.rerank import SetSpec, build_and_save_set
    from model.text.data import write_text_atomically

    out, counts = Path(args.out), {}
    for name, split in (("dev", "valid"), ("test", "test")):
        spec = SetSpec(args.kind, split, args.size, args.distractors, args.seed)
        items, _ = build_and_save_set(args.data, spec, args.sets_dir)
        rows = [
            {
                "id": item.id,
                "reference": item.reference,
                "candidates": [{"text": c, "score": 0.0} for c in item.candidates],
            }
            for item in items
        ]  # no first pass: every candidate scores 0, the models alone decide
        write_text_atomically(
            out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
        counts[name] = {"set": spec.name, "utterances": len(rows)}
    manifest = {"task": f"rerank-{args.kind}", "sets": counts, "command": "rnnlm " + shlex.join(sys.argv[1:])}
    write_text_atomically(out / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps({"out": args.out, "sets": counts}, ensure_ascii=False))
    return 0


def _task_args(p: argparse.ArgumentParser) -> None:
    task_action.add_parsers(p, dest="task", handler_key="task_handler")


@commands("task", _task_args)
def cmd_task(args: argparse.Namespace) -> int:
    """Build a realistic rescoring task as n-best files: pinyin decoding (CER) or word order."""
    return args.task_handler(args)
