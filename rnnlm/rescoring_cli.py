"""``rnnlm rescore``, ``rnnlm tune`` and ``rnnlm rescoring-report``: n-best lists rescored by language models.

::

    n-best file ─▶ read (model/rescoring/formats) ─▶ distinct texts ─▶ each model scores each once
                                                                 (local checkpoints, or POST /score)
                                        ┌────────────────────────────────────┘
                                        ▼
    rescore: weights ─▶ totals, rankings ─▶ the same format, written atomically + a summary
    tune:    the weight search on dev (model/rescoring/tune) ─▶ weights.json
    report:  tune on dev, measure on test, per model and combination ─▶ a markdown table + JSON

The library does the work (``model/rescoring/``); this module parses options, loads models or
talks to a server, shows progress, and prints. A malformed n-best line is one line on stderr
naming the file and line, with exit status 2; a missing file or checkpoint, status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.models.config import LENGTH_UNITS

from .args import DEVICE_HELP, usage_error
from .commands import Commands

if TYPE_CHECKING:
    import httpx

    from model.rescoring.combine import CandidateScores, Weights
    from model.rescoring.formats import FormatOptions, Utterance

commands = Commands()  # `rnnlm rescore`, `tune`, `rescoring-report` (joined in rnnlm/cli.py)

FORMATS = ("jsonl", "kaldi", "fairseq", "nemo")
METRICS = ("cer", "wer", "accuracy")
TextScores = dict[str, tuple[float, int]]  # text -> (log-prob, tokens without <bos>/<eos>)


# -- options shared by the three commands ---------------------------------------------------------
def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="DIR",
        help="a checkpoint directory (repeatable; its name is the directory's basename); with --url, "
        "the name of a served model",
    )
    p.add_argument(
        "--url",
        help="score through a running `rnnlm serve` (POST /score) instead, e.g. http://127.0.0.1:8000",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("RNNLM_API_KEY"),
        help="with --url: the server's API key (default: $RNNLM_API_KEY)",
    )
    p.add_argument("--device", default="cpu", help=f"local models: {DEVICE_HELP} (default: cpu)")
    _strip_spaces_arg(p)
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none either when stderr is not a terminal)",
    )


def _strip_spaces_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strip-spaces",
        action="store_true",
        help="the models read each text with its whitespace removed (word-segmented Chinese, e.g. Kaldi's "
        "words, for a character model); the texts written back are unchanged",
    )


def _format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--acoustic-scale",
        type=float,
        default=1.0,
        help="kaldi: the first-pass score is -(ACOUSTIC_SCALE × ac_cost + lm_cost) (default: 1)",
    )
    p.add_argument(
        "--beam-size", type=int, default=0, help="nemo: candidates per utterance (required for nemo)"
    )
    p.add_argument("--manifest", help='nemo: the JSON-lines manifest whose "text" fields are the references')


def _length_unit_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--length-unit",
        choices=LENGTH_UNITS,
        default=default,
        help="what the length bonus counts: the model's tokens, characters without whitespace, or "
        f"whitespace-separated words (default: {default or 'tokens, or the weights file'})",
    )


def _format_options(args: argparse.Namespace) -> FormatOptions:
    from model.rescoring.formats import FormatOptions

    if args.format == "nemo" and args.beam_size < 1:
        raise usage_error("the nemo format needs --beam-size N (candidates per utterance), N >= 1")
    if args.format == "kaldi" and not (math.isfinite(args.acoustic_scale) and args.acoustic_scale >= 0):
        raise usage_error(
            f"argument --acoustic-scale: must be a finite number >= 0, got {args.acoustic_scale}"
        )
    return FormatOptions(acoustic_scale=args.acoustic_scale, beam_size=args.beam_size, manifest=args.manifest)


def _check_source(args: argparse.Namespace) -> None:
    if not args.url and not args.model:
        raise usage_error("give the models: --model DIR (repeatable), or --url URL of a running server")
    if args.url and not args.url.startswith(("http://", "https://")):
        raise usage_error(f"argument --url: expected http://host:port, got {args.url!r}")
    names = [model_name(m) for m in args.model]
    if len(set(names)) != len(names):
        raise usage_error(f"argument --model: two models share the name {_first_duplicate(names)!r}")


def _first_duplicate(names: Sequence[str]) -> str:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return ""


def model_name(model: str) -> str:
    """The served name of a checkpoint: its directory's basename (an ARPA file: its file name)."""
    return Path(model.rstrip("/")).name or model


@contextmanager
def _reading_errors() -> Iterator[None]:
    """A malformed n-best file is a usage error (status 2); its message names the file and line."""
    from model.rescoring.formats import NbestFormatError

    try:
        yield
    except NbestFormatError as e:
        raise MalformedInput(str(e)) from e


class MalformedInput(Exception):
    """Raised out of a handler's body and turned into status 2 by :func:`_run`."""


def _run(body: Callable[[], int]) -> int:
    try:
        return body()
    except MalformedInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# -- scoring: local checkpoints or a server --------------------------------------------------------
class Progress:
    """A tqdm bar on stderr, only when stderr is a terminal and --no-progress is not given."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="text",
            file=sys.stderr,
            disable=not (enabled and sys.stderr.isatty()),
        )

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def http_client(url: str, api_key: str | None) -> httpx.Client:
    """The client for --url (a function, so tests can hand in the app's TestClient)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(300.0, connect=10.0))


def _remote_error(response: httpx.Response) -> str:
    try:
        detail = response.json()["error"]
        return f"{detail['message']}" + (f" (field {detail['field']})" if detail.get("field") else "")
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def score_remote(
    client: httpx.Client,
    names: Sequence[str | None],
    groups: Sequence[tuple[str, Sequence[str]]],
    progress: Callable[[int], None],
) -> dict[str, TextScores]:
    """POST /score once per utterance (``groups``: its id and candidate texts) and model, with the
    texts not scored yet (lm_weight 1, no length bonus, <bos>/<eos> defaults). ``None`` as a
    name: the server's default model."""
    import httpx

    endpoint = str(client.base_url).rstrip("/") + "/score"
    out: dict[str, TextScores] = {}
    for name in names:
        scores: TextScores = {}
        served = name
        for uid, texts in groups:
            todo = list(dict.fromkeys(t for t in texts if t not in scores))
            if not todo:
                continue
            body: dict[str, Any] = {"candidates": todo, "lm_weight": 1.0, "length_bonus": 0.0}
            if name is not None:
                body["model"] = name
            try:
                response = client.post("/score", json=body)
            except httpx.HTTPError as e:
                raise ConnectionError(f"{endpoint}: {e}") from e
            if response.status_code != 200:
                raise ConnectionError(
                    f"{endpoint} answered {response.status_code} for utterance {uid}: {_remote_error(response)}"
                )
            data = response.json()
            served = data.get("model", served)
            for text, result in zip(todo, data["results"], strict=True):
                scores[text] = (float(result["logprob"]), int(result["num_tokens"]) - 1)  # <eos> counted
            progress(len(todo))
        out[served or "default"] = scores
    return out


def score_local(
    model_dirs: Sequence[str], texts: Sequence[str], device: str, progress: Callable[[int], None]
) -> dict[str, TextScores]:
    """Load each checkpoint in turn (one in memory at a time) and score every text once."""
    from model.models.loading import load_model
    from model.rescoring.score import score_texts

    out: dict[str, TextScores] = {}
    for d in model_dirs:
        lm = load_model(d, device=device)
        out[model_name(d)] = score_texts(lm, texts, progress)
        del lm
    return out


def score_all(
    args: argparse.Namespace, utterances: Sequence[Utterance], names: Sequence[str | None], desc: str
) -> dict[str, TextScores]:
    """Every model's (log-prob, tokens) of every distinct candidate text, keyed by the text as read.
    With --strip-spaces the models read each text with its whitespace removed."""
    from model.rescoring.score import distinct_texts

    def view(text: str) -> str:
        return "".join(text.split()) if getattr(args, "strip_spaces", False) else text

    texts = distinct_texts(utterances)
    seen = list(dict.fromkeys(view(t) for t in texts))
    bar = Progress(len(seen) * max(len(names), 1), not args.no_progress, desc)
    try:
        if args.url:
            client = http_client(args.url, args.api_key)
            try:
                groups = [(u.id, [view(c.text) for c in u.candidates]) for u in utterances]
                per_model = score_remote(client, names, groups, bar)
            finally:
                client.close()
        else:
            per_model = score_local(args.model, seen, args.device, bar)
    finally:
        bar.close()
    return {m: {t: scores[view(t)] for t in texts} for m, scores in per_model.items()}


def merged(per_model: Mapping[str, TextScores]) -> dict[str, CandidateScores]:
    from model.rescoring.score import merge_scores

    return merge_scores(per_model)


def checkpoint_ids(args: argparse.Namespace) -> dict[str, str]:
    """model name -> the sha256 of its weights (local), or "served at URL"."""
    from model.text.data import sha256_file

    if args.url:
        return {model_name(m): f"served at {args.url}" for m in args.model}
    ids = {}
    for m in args.model:
        p = Path(m)
        if p.is_file():
            ids[model_name(m)] = sha256_file(p)
            continue
        try:
            config = json.loads((p / "config.json").read_text(encoding="utf-8"))
            ids[model_name(m)] = str(config.get("weights_sha256") or sha256_file(p / "config.json"))
        except (OSError, ValueError):
            ids[model_name(m)] = "unknown"
    return ids


def _command_line(name: str) -> str:
    return "rnnlm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == [name] else ""


# -- rnnlm rescore ---------------------------------------------------------------------------------
def _rescore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="the n-best file (a directory for kaldi)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="the input's format, also the output's (default: jsonl)",
    )
    p.add_argument(
        "--out", required=True, help="where to write the rescored n-best (same format; a directory for kaldi)"
    )
    _source_args(p)
    p.add_argument("--weights", help="weights JSON from `rnnlm tune` (instead of the three weight options)")
    p.add_argument("--lm-weight", type=float, help="weight of the (single) model's log-prob (default: 1)")
    p.add_argument(
        "--length-bonus", type=float, help="added per unit of length (negative: a penalty; default: 0)"
    )
    p.add_argument("--first-pass-weight", type=float, help="weight of the first-pass score (default: 1)")
    _length_unit_arg(p, None)
    _format_args(p)


def _rescore_weights(args: argparse.Namespace) -> Weights:
    from model.rescoring.combine import Weights

    given = [o for o in ("lm_weight", "length_bonus", "first_pass_weight") if getattr(args, o) is not None]
    for o in given:
        if not math.isfinite(getattr(args, o)):
            raise usage_error(f"argument --{o.replace('_', '-')}: must be a finite number")
    if args.weights:
        if given:
            raise usage_error(f"--weights sets every weight; leave out --{given[0].replace('_', '-')}")
        weights = Weights.load(args.weights)
        if args.length_unit and args.length_unit != weights.length_unit:
            raise usage_error(
                f"--length-unit {args.length_unit} differs from the weights' length_unit {weights.length_unit!r}"
            )
        names = [model_name(m) for m in args.model]
        if names:
            missing = [m for m in weights.models if m not in names]
            if missing:
                raise usage_error(
                    f"{args.weights} weighs model {missing[0]!r}: give it with --model "
                    f"(given: {', '.join(names)})"
                )
        return weights
    if len(args.model) > 1:
        raise usage_error("several --model need --weights (written by `rnnlm tune`), one weight each")
    name = model_name(args.model[0]) if args.model else "default"
    return Weights(
        models={name: 1.0 if args.lm_weight is None else args.lm_weight},
        first_pass_weight=1.0 if args.first_pass_weight is None else args.first_pass_weight,
        length_bonus=0.0 if args.length_bonus is None else args.length_bonus,
        length_unit=args.length_unit or "tokens",
    )


def summarize(utterances: Sequence[Utterance], before: Sequence[int]) -> dict[str, Any]:
    """Counts, 1-best changes, and first-pass / rescored / oracle CER and WER where references exist."""
    from model.rescoring.errors import chosen_errors, oracle_errors

    after = [u.best if u.best is not None else 0 for u in utterances]
    summary: dict[str, Any] = {
        "utterances": len(utterances),
        "candidates": sum(len(u.candidates) for u in utterances),
        "changed_1best": sum(a != b for a, b in zip(before, after, strict=True)),
    }
    with_ref = sum(u.reference is not None for u in utterances)
    if with_ref:
        summary["with_reference"] = with_ref
        for metric in ("cer", "wer"):
            summary[metric] = {
                "first_pass": round(chosen_errors(utterances, before, metric).rate, 6),
                "rescored": round(chosen_errors(utterances, after, metric).rate, 6),
                "oracle": round(oracle_errors(utterances, metric).rate, 6),
            }
    return summary


@commands("rescore", _rescore_args)
def cmd_rescore(args: argparse.Namespace) -> int:
    """Rescore an n-best file (jsonl, kaldi, fairseq, nemo) with language models; write it back rescored."""
    return _run(lambda: _rescore(args))


def _rescore(args: argparse.Namespace) -> int:
    from model.rescoring.combine import rescore
    from model.rescoring.errors import first_pass_choice
    from model.rescoring.formats import read_nbest, write_nbest

    _check_source(args)
    options = _format_options(args)
    weights = _rescore_weights(args)
    with _reading_errors():
        utterances = read_nbest(args.input, args.format, options)
    if not utterances:
        raise MalformedInput(f"{args.input}: no utterances")
    names: list[str | None] = [model_name(m) for m in args.model]
    if not names:  # --url alone: the models the weights name, or else the server's default model
        names = list(weights.models) if args.weights else [None]
    per_model = score_all(args, utterances, names, "rescore")
    if args.url and names == [None]:
        (served,) = per_model
        weights.models = {served: weights.models.pop(next(iter(weights.models)))}
    before = first_pass_choice(utterances)
    rescore(utterances, merged(per_model), weights)
    write_nbest(args.out, args.format, list(utterances), options)
    summary = {
        "out": args.out,
        "format": args.format,
        **summarize(utterances, before),
        "weights": _weights_only(weights.to_dict()),
    }
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


# -- rnnlm tune -------------------------------------------------------------------------------------
def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dev", help="the dev n-best file, with references (JSONL unless --format says otherwise)")
    p.add_argument(
        "--format", choices=FORMATS, default="jsonl", help="the dev file's format (default: jsonl)"
    )
    p.add_argument(
        "--out", required=True, help="the weights JSON to write (read by `rnnlm rescore --weights`)"
    )
    _source_args(p)
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="cer",
        help="what to minimize on dev (accuracy: maximize exact matches; default: cer)",
    )
    _length_unit_arg(p, "tokens")
    p.add_argument(
        "--no-length-bonus",
        action="store_true",
        help="keep the length bonus at 0 (tune the model weights only)",
    )
    p.add_argument(
        "--scores",
        help="a cache of the models' log-probs: read if it exists and covers every text and model, else written",
    )
    _format_args(p)


def cached_scores(
    args: argparse.Namespace, utterances: Sequence[Utterance], names: Sequence[str], desc: str
) -> dict[str, TextScores]:
    """The models' scores of every distinct text: from --scores when it covers them with the same
    checkpoints (a model retrained under the same name is scored again), else computed (and saved
    to --scores when given)."""
    from model.rescoring.score import distinct_texts, load_scores, save_scores, saved_checkpoints

    cache = getattr(args, "scores", None)
    ids = checkpoint_ids(args) if cache else {}
    if cache and Path(cache).is_file():
        loaded, was = load_scores(cache), saved_checkpoints(cache)
        texts = distinct_texts(utterances)
        if all(
            n in loaded and was.get(n) == ids.get(n) and all(t in loaded[n] for t in texts) for n in names
        ):
            return {n: loaded[n] for n in names}
        print(f"note: {cache} does not cover these texts and checkpoints; scoring again", file=sys.stderr)
    per_model = score_all(args, utterances, list(names), desc)
    if cache:
        save_scores(cache, per_model, ids)
    return per_model


@commands("tune", _tune_args)
def cmd_tune(args: argparse.Namespace) -> int:
    """Tune rescoring weights (each model's, the length bonus) on a dev n-best set; write weights JSON."""
    return _run(lambda: _tune(args))


def _tune(args: argparse.Namespace) -> int:
    from model.rescoring.formats import read_nbest
    from model.rescoring.tune import tune_weights

    _check_source(args)
    if args.url and not args.model:
        raise usage_error("with --url, name the served models to tune: --model NAME (repeatable)")
    options = _format_options(args)
    with _reading_errors():
        utterances = read_nbest(args.dev, args.format, options)
    if not any(u.reference is not None for u in utterances):
        raise MalformedInput(
            f"{args.dev}: no utterance has a reference; tuning needs a dev set with references"
        )
    names = [model_name(m) for m in args.model]
    per_model = cached_scores(args, utterances, names, "tune")
    weights, result = tune_weights(
        utterances, merged(per_model), names, args.length_unit, args.metric, not args.no_length_bonus
    )
    weights.metadata.update(
        checkpoints=checkpoint_ids(args),
        search="coarse grid, then coordinate descent with shrinking steps; first_pass_weight fixed at 1",
        evaluations=result.evaluations,
        command=_command_line("tune"),
    )
    weights.save(args.out)
    print(json.dumps({"out": args.out, **weights.to_dict()}, ensure_ascii=False, indent=2))
    return 0


# -- rnnlm rescoring-report --------------------------------------------------------------------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", required=True, help="a task directory holding dev.jsonl and test.jsonl (`rnnlm task`)"
    )
    p.add_argument(
        "--model", action="append", default=[], metavar="DIR", help="a checkpoint directory (repeatable)"
    )
    p.add_argument(
        "--combo",
        action="append",
        default=[],
        metavar="NAME=m1+m2",
        help="a combination of models (by name), tuned together on dev (repeatable; default with several "
        "models: all of them)",
    )
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="cer",
        help="cer for the pinyin task, accuracy for word order (default: cer)",
    )
    _length_unit_arg(p, "tokens")
    p.add_argument(
        "--out", required=True, help="the markdown file to write (the same numbers go to its .json twin)"
    )
    p.add_argument(
        "--into",
        help="also put the table into this page as the block `rescoring:<task directory name>` "
        "(e.g. docs/RESULTS.md; `rnnlm benchmark quality` keeps such blocks when it rewrites the page)",
    )
    p.add_argument(
        "--scores",
        help="a cache of the models' log-probs over dev and test (read if it covers them, else written)",
    )
    p.add_argument("--device", default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    _strip_spaces_arg(p)
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none either when stderr is not a terminal)",
    )


@dataclass
class SystemRow:
    name: str
    weights: dict[str, Any] | None  # None: first pass and oracle
    dev: float
    test: float


def parse_combos(combos: Sequence[str], names: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in combos:
        label, sep, members = item.partition("=")
        parts = [m.strip() for m in members.split("+") if m.strip()]
        if not sep or not label or not parts:
            raise usage_error(f"argument --combo: expected NAME=m1+m2, got {item!r}")
        unknown = [m for m in parts if m not in names]
        if unknown:
            raise usage_error(
                f"argument --combo: {unknown[0]!r} is not a --model name (names: {', '.join(names)})"
            )
        out[label] = parts
    if not combos and len(names) > 1:
        out["all"] = list(names)
    return out


@commands("rescoring-report", _report_args)
def cmd_rescoring_report(args: argparse.Namespace) -> int:
    """Tune on a task's dev set, measure on test: first pass, oracle, each model and combination."""
    return _run(lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    from model.rescoring.combine import rescore
    from model.rescoring.errors import chosen_errors, first_pass_choice, oracle_errors
    from model.rescoring.formats import read_jsonl
    from model.rescoring.tune import tune_weights
    from model.text.data import write_text_atomically

    if not args.model:
        raise usage_error("give the models: --model DIR (repeatable)")
    args.url = None
    _check_source(args)
    names = [model_name(m) for m in args.model]
    combos = parse_combos(args.combo, names)
    task = Path(args.task)
    with _reading_errors():
        dev, test = read_jsonl(task / "dev.jsonl"), read_jsonl(task / "test.jsonl")
    for split, utts in (("dev", dev), ("test", test)):
        if not any(u.reference is not None for u in utts):
            raise MalformedInput(f"{task / (split + '.jsonl')}: no utterance has a reference")
    per_model = cached_scores(args, [*dev, *test], names, "report")
    scores = merged(per_model)

    def rate(utts: Sequence[Utterance], weights: Weights) -> float:  # the test error at these weights
        rescore(utts, scores, weights)
        return chosen_errors(utts, [u.best or 0 for u in utts], args.metric).rate

    rows = [
        SystemRow(
            "first pass",
            None,
            chosen_errors(dev, first_pass_choice(dev), args.metric).rate,
            chosen_errors(test, first_pass_choice(test), args.metric).rate,
        ),
        SystemRow(
            "oracle", None, oracle_errors(dev, args.metric).rate, oracle_errors(test, args.metric).rate
        ),
    ]
    systems = {n: [n] for n in names} | {f"{label} ({'+'.join(ms)})": ms for label, ms in combos.items()}
    for label, members in systems.items():
        weights, _ = tune_weights(dev, scores, members, args.length_unit, args.metric)
        dev_rate = weights.metadata["dev_error_after"]
        rows.append(SystemRow(label, weights.to_dict(), dev_rate, rate(test, weights)))
    table = report_markdown(rows, args, len(dev), len(test))
    out = Path(args.out)
    data = {
        "task": str(task),
        "metric": args.metric,
        "length_unit": args.length_unit,
        "dev_utterances": len(dev),
        "test_utterances": len(test),
        "checkpoints": checkpoint_ids(args),
        "command": _command_line("rescoring-report"),
        "rows": [
            {"system": r.name, "dev": r.dev, "test": r.test, "weights": _weights_only(r.weights)}
            for r in rows
        ],
    }
    write_text_atomically(out, table)
    write_text_atomically(out.with_suffix(".json"), json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    if args.into:  # the same table as a block of a page another command writes (docs/RESULTS.md)
        from .reports.blocks import put_block

        page = Path(args.into)
        doc = page.read_text(encoding="utf-8") if page.exists() else ""
        name = task.resolve().name
        block = f"## Rescoring n-best lists: the {name} task\n\n{table.rstrip()}\n\n`{data['command']}`\n"
        write_text_atomically(page, put_block(doc, f"rescoring:{name}", block))
    print(table, end="")
    return 0


def _weights_only(d: dict[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {k: d[k] for k in ("first_pass_weight", "length_bonus", "length_unit", "models")}


def _shown(rate: float, metric: str) -> str:
    """Error rates as percentages; for accuracy, the accuracy itself (1 - error)."""
    return f"{1 - rate:.3f}" if metric == "accuracy" else f"{100 * rate:.2f}"


def report_markdown(rows: Sequence[SystemRow], args: argparse.Namespace, n_dev: int, n_test: int) -> str:
    what = "accuracy (exact 1-best)" if args.metric == "accuracy" else f"{args.metric.upper()} %"
    lines = [
        f"| system | dev {what} | test {what} | weights (tuned on dev: model weights, length bonus per {args.length_unit}) |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        if r.weights is None:
            w = "—"
        else:
            models = ", ".join(f"{m} {v:g}" for m, v in r.weights["models"].items())
            w = f"{models}; bonus {r.weights['length_bonus']:g}"
        lines.append(f"| {r.name} | {_shown(r.dev, args.metric)} | {_shown(r.test, args.metric)} | {w} |")
    head = (
        f"Rescoring on `{args.task}` ({n_dev} dev / {n_test} test utterances), metric {args.metric}; "
        "weights tuned on dev with `rnnlm tune`'s search, first-pass weight 1.\n\n"
    )
    return head + "\n".join(lines) + "\n"
