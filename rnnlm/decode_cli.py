"""``rnnlm decode``: search confusion networks or HTK lattices with a language model in the loop.

::

    --cn utts.jsonl  ─┐                                   ┌─▶ --out n-best JSONL (one line per utterance)
                      ├─▶ model/decoding (beam search) ───┤
    --slf DIR/*.lat  ─┘                                   └─▶ a summary on stdout (+ CER/WER with references)

Input: ``--cn``, one utterance per line ``{"id", "slots": [[["我", -0.1], ["卧", -2.3]], …],
"reference"?}``; or ``--slf``, a directory of SLF lattices (``*.lat``, ``*.slf``, ``*.htk``,
optionally gzipped), each file one utterance named by its stem, references from ``--references``
(JSONL with ``id`` and ``reference``, e.g. an n-best file). Output, per utterance::

    {"id": "…", "results": [{"text", "score", "lm_logprob", "acoustic", "num_tokens"}, …],
     "reference": "…"}

best first; ``score = acoustic + lm_weight × lm_logprob + length_bonus × num_tokens`` with
``lm_logprob`` exactly what ``/score`` gives the text. A malformed line or lattice is one line on
stderr naming the file and line, exit status 2; a missing file or checkpoint, status 1.

This module only parses options and reads and writes files; :mod:`model.decoding` does the work.
It imports nothing of :mod:`rnnlm.cli`, which joins its ``commands`` registry.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .args import at_least
from .commands import Commands

commands = Commands()  # `rnnlm decode` (joined in rnnlm/cli.py)

SLF_SUFFIXES = (".lat", ".slf", ".htk", ".lat.gz", ".slf.gz", ".htk.gz")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def add_parser(subparsers: Any) -> None:
    """Add ``decode`` to an argparse ``subparsers``; its handler (``args.handler``) is :func:`run`."""
    p = subparsers.add_parser(
        "decode",
        help="search confusion networks (JSONL) or SLF lattices with a language model in the loop",
        description=__doc__.split("::")[0].strip() if __doc__ else None,
    )
    _decode_args(p)
    p.set_defaults(handler=run)


def _decode_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cn", metavar="FILE", help="confusion networks, one utterance per JSONL line")
    src.add_argument("--slf", metavar="DIR", help="a directory of HTK SLF lattices (one utterance each)")
    p.add_argument("--model", required=True, metavar="DIR", help="a checkpoint directory (or an .arpa file)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--out", metavar="FILE", help="write the n-best JSONL here (default: not written)")
    p.add_argument("--beam", type=at_least(1), default=16, help="hypotheses kept per slot/node (default: 16)")
    p.add_argument("--nbest", type=at_least(1), default=5, help="paths written per utterance (default: 5)")
    p.add_argument(
        "--lm-weight", type=_finite, default=1.0, help="weight of the model's log-prob (default: 1)"
    )
    p.add_argument(
        "--length-bonus", type=_finite, default=0.0, help="added per model token; < 0: a penalty (default: 0)"
    )
    p.add_argument(
        "--max-arcs",
        type=at_least(0),
        default=0,
        help="per-slot pruning: only the K best-scored alternatives of a slot/node (default: 0, all)",
    )
    p.add_argument(
        "--beam-threshold",
        type=_finite,
        default=math.inf,
        help="drop hypotheses this far below their slot's best (default: off)",
    )
    p.add_argument(
        "--no-recombine",
        action="store_true",
        help="never merge hypotheses (default: merge what the model allows)",
    )
    p.add_argument(
        "--acoustic-scale", type=_finite, default=1.0, help="SLF: weight of the arcs' a= scores (default: 1)"
    )
    p.add_argument(
        "--lattice-lm-weight",
        type=_finite,
        default=0.0,
        help="SLF: weight of the lattice's own l= scores (default: 0, replaced by the model)",
    )
    p.add_argument("--references", metavar="FILE", help="SLF: JSONL with id and reference of each utterance")
    p.add_argument(
        "--metric", choices=("cer", "wer"), help="error rate (default: cer for a char model, else wer)"
    )
    p.add_argument("--limit", type=at_least(1), help="decode only the first N utterances")


class InputError(ValueError):
    """A malformed input line or lattice (exit status 2)."""


def _read_cn(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    from model.decoding import parse_confusion_network

    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a line must be a JSON object")
                if "slots" not in row:
                    raise ValueError("missing 'slots'")
                reference = row.get("reference")
                if reference is not None and not isinstance(reference, str):
                    raise ValueError("'reference' must be a string")
                slots = parse_confusion_network(row["slots"])
            except ValueError as e:
                raise InputError(f"{path}:{number}: {e}") from None
            yield str(row.get("id", f"{path.stem}-{number}")), slots, reference


def _read_text(path: Path) -> str:
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8")


def _slf_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(SLF_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"{directory}: no lattice files ({', '.join(SLF_SUFFIXES)})")
    return files


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return name.rsplit(".", 1)[0]


def _references(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    out = {}
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[str(row["id"])] = str(row["reference"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(
                    f"{path}:{number}: needs a JSON object with id and reference ({e})"
                ) from None
    return out


@commands("decode", _decode_args)
def cmd_decode(args: argparse.Namespace) -> int:
    """Search confusion networks (JSONL) or HTK lattices with a language model in the loop."""
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Decode every utterance, write the n-best JSONL, print a summary. The exit status."""
    try:
        return _run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad checkpoint or option the model refuses
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch

    from model.decoding import DecodeOptions, DecodeStats, cn_graph, decode_graph, lattice_graph, parse_slf
    from model.models.checkpoint import CheckpointError
    from model.models.loading import load_model
    from model.rescoring.errors import ErrorCount, utterance_errors

    try:
        options = DecodeOptions(
            beam=args.beam,
            nbest=min(args.nbest, args.beam),
            lm_weight=args.lm_weight,
            length_bonus=args.length_bonus,
            max_arcs=args.max_arcs,
            beam_threshold=args.beam_threshold,
            recombine=not args.no_recombine,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        lm = load_model(args.model, args.device)
    except CheckpointError as e:
        raise FileNotFoundError(str(e)) from None
    metric = args.metric or ("cer" if lm.tokenizer.kind == "char" else "wer")
    references = _references(args.references)

    def utterances() -> Iterator[tuple[str, Any, str | None]]:
        if args.cn:
            for uid, slots, ref in _read_cn(Path(args.cn)):
                yield uid, cn_graph(slots), ref if ref is not None else references.get(uid)
            return
        for path in _slf_files(Path(args.slf)):
            try:
                graph = lattice_graph(
                    parse_slf(_read_text(path)), args.acoustic_scale, args.lattice_lm_weight
                )
            except ValueError as e:
                raise InputError(f"{path}: {e}") from None
            yield _stem(path), graph, references.get(_stem(path))

    rows: list[str] = []
    errors, scored, count = ErrorCount(0, 0), 0, 0
    stats = DecodeStats()
    started = time.perf_counter()
    for uid, graph, reference in utterances():
        if args.limit is not None and count >= args.limit:
            break
        try:
            paths = decode_graph(lm, graph, options, stats)
        except ValueError as e:
            raise InputError(f"{uid}: {e}") from None
        row: dict[str, Any] = {
            "id": uid,
            "results": [
                {
                    "text": p.text,
                    "score": p.score,
                    "lm_logprob": p.lm_logprob,
                    "acoustic": p.acoustic,
                    "num_tokens": p.num_tokens,
                }
                for p in paths
            ],
        }
        if reference is not None:
            row["reference"] = reference
            errors += utterance_errors(paths[0].text, reference, metric)
            scored += 1
        rows.append(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    elapsed = time.perf_counter() - started
    if args.out:
        from model.text.data import write_text_atomically

        write_text_atomically(Path(args.out), "".join(rows))
    summary: dict[str, Any] = {
        "utterances": count,
        "out": args.out,
        "seconds": round(elapsed, 3),
        "lm_steps": stats.steps,
        "options": {
            "beam": options.beam,
            "nbest": options.nbest,
            "lm_weight": options.lm_weight,
            "length_bonus": options.length_bonus,
            "max_arcs": options.max_arcs,
            "recombine": options.recombine,
        },
    }
    if scored:
        summary |= {
            "metric": metric,
            "error_rate": errors.rate,
            "errors": errors.errors,
            "reference_units": errors.total,
        }
        summary["with_reference"] = scored
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rnnlm.decode_cli --cn … --model …``: the command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="rnnlm")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["decode", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
