"""How long one confusion-network decode takes: S slots × A alternatives at beam B (issue 26's
target: 40 × 12 at beam 16 under 1 s on the CPU with the default model).

The network is synthetic and seeded: each slot holds A distinct characters of the model's
vocabulary (Chinese ones where it has them) with random log scores, so every alternative is a real
token and every hypothesis must be stepped. Prints wall and CPU seconds per decode (median, best,
worst over ``--runs``, after one warm-up), the batched steps and rows stepped; writes nothing.
CPU time is the process's own: on a busy machine it is the better guide, wall time the honest one.

    .venv/bin/python -m rnnlm.bench.decode                      # the default model, 40 × 12, beam 16
    .venv/bin/python -m rnnlm.bench.decode --model weights/mix-char-kn5 --slots 80 --beam 32
    .venv/bin/python -m rnnlm.bench.decode --quick              # a tiny untrained model: checks it runs
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence

import torch

from model.decoding import DecodeOptions, DecodeStats, decode_cn
from model.models.lm import LanguageModel

from .common import DEFAULT_CHOICE, REPO, machine, untrained_model


def synthetic_cn(lm: LanguageModel, slots: int, alternatives: int, seed: int = 0) -> list[list[list]]:
    """``slots`` slots of ``alternatives`` distinct vocabulary characters with random log scores."""
    pieces = [t for t in lm.tokenizer.tokens[4:] if "\u4e00" <= t <= "\u9fff"] or lm.tokenizer.tokens[4:]
    if len(pieces) < alternatives:
        raise ValueError(f"the vocabulary has {len(pieces)} usable pieces, fewer than {alternatives}")
    rng = random.Random(seed)
    return [[[ch, -rng.expovariate(1.0)] for ch in rng.sample(pieces, alternatives)] for _ in range(slots)]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", default=None, help="checkpoint directory (default: the served default)")
    p.add_argument("--slots", type=int, default=40)
    p.add_argument("--alternatives", type=int, default=12)
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--runs", type=int, default=5, help="timed decodes after one warm-up (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--quick", action="store_true", help="a tiny untrained model and 2 runs: checks it runs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm: LanguageModel
    if args.quick:
        lm, name = untrained_model(), "untrained"
        args.runs = 2
    else:
        from model.models.loading import load_model

        spec = args.model or str(REPO / json.loads(DEFAULT_CHOICE.read_text(encoding="utf-8"))["default"])
        lm, name = load_model(spec), spec
    cn = synthetic_cn(lm, args.slots, args.alternatives)
    options = DecodeOptions(beam=args.beam, nbest=1)
    decode_cn(lm, cn, options)  # warm-up
    walls, cpus = [], []
    stats = DecodeStats()
    for _ in range(args.runs):
        stats = DecodeStats()
        w0, c0 = time.perf_counter(), time.process_time()
        decode_cn(lm, cn, options, stats)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    print(f"model: {name} ({lm.kind}); {machine()}")
    print(f"confusion network: {args.slots} slots x {args.alternatives} alternatives, beam {args.beam}")
    for label, xs in (("wall", walls), ("cpu", cpus)):
        print(
            f"{label} s/decode: median {statistics.median(xs):.3f}  best {min(xs):.3f}  worst {max(xs):.3f}"
            f"  ({args.runs} runs)"
        )
    print(
        f"per decode: {stats.steps} batched steps, {stats.stepped_rows} rows stepped, {stats.expansions} expansions"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
