"""Adapt a trained model to the user's own text, the way speech teams adapt their LM to a domain.

``rnnlm adapt --from MODEL --text FILE… --out DIR`` does three things in a few CPU minutes::

    text files ──▶ lines ──┬─ 9 of 10 ─▶ fine-tune MODEL's network (low lr, its own vocabulary,
                           │              the base's training text replayed beside it so the base
                           │              domain is not forgotten; best on the held-out lines kept)
                           │          ─▶ a Kneser-Ney 5-gram of the same lines
                           └─ 1 of 10 ─▶ held-out: picks the fine-tune's checkpoint and the weight
                                         λ of the mixture  P = λ·P_finetuned + (1-λ)·P_KN

The adapted model keeps the base whole beside the domain model, in a *sentence* mixture
(:mod:`model.models.mixture`): the weights follow the sentence read so far, so a sentence of the base's
own domains costs -ln(base_weight) once (a few percent of perplexity), not at every token::

    DIR/config.json …   sentence mixture: base_weight · MODEL + (1 - base_weight) · DIR/domain
    DIR/domain/         token mixture:    λ · finetuned + (1 - λ) · domain-kn5 (λ tuned on held-out)
    DIR/finetuned/      the network, fine-tuned (a hybrid keeps pointing at the base's n-gram)
    DIR/domain-kn5/     the n-gram of the text

``DIR`` names the base by a relative path, as a hybrid names its n-gram: move them together.

An n-gram base (no network) is adapted by the n-gram alone. Everything is written beside ``DIR``
and renamed into place at the end, so a failed run (a bad file, Ctrl-C) leaves nothing behind.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.models.checkpoint import read_config
from model.models.config import FROM_TOKENIZER
from model.models.evaluate import evaluate_lines
from model.text.data import NotARegularFile, load_split, regular_file_size, write_corpus

MAX_TEXT_BYTES = 1 << 30  # 1 GiB of text in all: more is not "a user's own text" for a CPU recipe
MIN_LINES = 20  # fewer cannot be split into a training part and a held-out part worth tuning on
MAX_LINE_CHARS = 512  # longer lines are cut at sentence ends (a paragraph per line, say)
HELD_OUT_EVERY = 10  # every 10th line is held out
NEURAL = ("rnn", "hybrid")


class AdaptError(ValueError):
    """Input the adaptation cannot use (a missing, empty or binary file; an unusable base)."""


@dataclass
class AdaptJob:
    base: str  # the model to adapt (a checkpoint directory)
    texts: list[str]  # the user's text files (UTF-8, one sentence or paragraph per line)
    out_dir: str  # the adapted model (must not exist)
    minutes: float = 8.0  # fine-tuning budget (wall clock); the n-gram and λ take seconds more
    lr: float = 3e-4  # peak learning rate of the fine-tune (the base was trained at 1e-3 to 2e-3)
    replay: float = 1.0  # base training text replayed, in characters per character of the user's
    base_data: str = ""  # corpus directory of the base's training text ("" = the one its metrics name)
    ngram_order: int = 5
    base_weight: float = 0.5  # prior weight of the base in the sentence mixture (its domains' sentences)
    device: str = "auto"
    seed: int = 1234
    command: str = ""
    fit_overrides: dict = field(default_factory=dict)  # TrainConfig fields (tests: tiny budgets)


# -- the user's text ------------------------------------------------------------------------------
def read_text_lines(paths: Sequence[str | Path]) -> list[str]:
    """The non-empty lines of the files, long ones cut at sentence ends. Refuses (AdaptError) a
    missing file, a directory, a FIFO or device, binary data (a NUL byte, or not UTF-8) and text
    with fewer than :data:`MIN_LINES` lines, naming the file."""
    from model.text.corpora import split_sentences

    if not paths:
        raise AdaptError("--text: give at least one text file")
    total, lines = 0, []
    for path in paths:
        try:
            total += regular_file_size(path)
        except FileNotFoundError:
            raise AdaptError(f"--text {path}: no such file") from None
        except NotARegularFile:
            raise AdaptError(f"--text {path}: not a regular file") from None
        if total > MAX_TEXT_BYTES:
            raise AdaptError(f"--text: more than {MAX_TEXT_BYTES >> 20} MiB of text in all")
        data = Path(path).read_bytes()
        nul = data.find(0)
        if nul >= 0:
            raise AdaptError(f"--text {path}: binary data (a NUL byte at offset {nul})")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AdaptError(f"--text {path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        for raw in text.splitlines():
            line = raw.strip()
            if line:
                lines += split_sentences(line) if len(line) > MAX_LINE_CHARS else [line]
    if len(lines) < MIN_LINES:
        raise AdaptError(f"--text: {len(lines)} non-empty lines; adaptation needs at least {MIN_LINES}")
    return lines


def hold_out(lines: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train, held-out): every :data:`HELD_OUT_EVERY`-th line is held out."""
    held = [line for i, line in enumerate(lines) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train = [line for i, line in enumerate(lines) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train, held


def replay_lines(base_data: str | Path, chars: int, seed: int) -> list[str]:
    """About ``chars`` characters of a corpus's training lines, drawn at random (seeded): the
    base's text replayed beside the user's, or a sample of a domain to adapt to."""
    pool = load_split(base_data, "train")
    random.Random(seed).shuffle(pool)
    out, total = [], 0
    for line in pool:
        if total >= chars:
            break
        out.append(line)
        total += len(line)
    return out


def base_data_dir(job: AdaptJob, metrics: dict) -> Path | None:
    """Where the base's training text is: ``--base-data``, else the directory its metrics name."""
    if job.base_data:
        if not (Path(job.base_data) / "train.txt").is_file():
            raise AdaptError(f"--base-data {job.base_data}: not a corpus directory (no train.txt)")
        return Path(job.base_data)
    recorded = (metrics.get("data") or {}).get("dir")
    return Path(recorded) if recorded and (Path(recorded) / "train.txt").is_file() else None


# -- the run --------------------------------------------------------------------------------------
def adapt(job: AdaptJob, log=print) -> dict:
    """Adapt ``job.base`` to ``job.texts`` and write the adapted model to ``job.out_dir``."""
    from model.models.loading import load_model
    from model.models.mixture import (
        MixtureLanguageModel,
        mixture_files,
        summarize,
        token_logprobs,
        tune_lambda,
    )
    from model.models.ngram.model import build_ngram
    from model.models.ngram.store import save_ngram

    started = time.time()
    out = Path(job.out_dir)
    if out.exists():
        raise AdaptError(f"--out {out}: exists; adaptation writes a new directory")
    lines = read_text_lines(job.texts)
    train, held = hold_out(lines)
    base_config = read_config(job.base)
    kind = base_config["model_type"]
    base = load_model(job.base)
    metrics: dict = {
        "model_type": "mixture",
        "adapted": {
            "base": str(job.base),
            "base_kind": kind,
            "texts": [str(t) for t in job.texts],
            "train_lines": len(train),
            "train_chars": sum(map(len, train)),
            "held_out_lines": len(held),
        },
        "job": asdict(job),
        "command": job.command,
    }
    staging = out.with_name(f".{out.name}.adapting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        base_eval = evaluate_lines(base, held)
        log(f"base on the held-out lines: perplexity {base_eval['perplexity']:.2f}")
        metrics["adapted"]["base_held_out"] = base_eval
        if kind in NEURAL:
            finetuned = staging / "finetuned"
            metrics["finetune"] = _finetune(job, kind, base_config, base.metrics, train, held, staging, log)
        else:
            finetuned = Path(job.base)  # an n-gram base: the domain n-gram is the whole adaptation
        kn_dir = staging / f"domain-kn{job.ngram_order}"
        domain = build_ngram(base.tokenizer, train, job.ngram_order, "kn")
        save_ngram(
            kn_dir, domain, {"model_type": "ngram", "order": job.ngram_order, "built_by": "rnnlm adapt"}
        )
        neural = load_model(finetuned)
        logp_a, logp_b = token_logprobs(neural, held), token_logprobs(domain, held)
        lam = tune_lambda(logp_a, logp_b)
        domain_dir = staging / "domain"
        in_domain = MixtureLanguageModel(neural, domain, lam, names=[finetuned.name, kn_dir.name])
        domain_dir.mkdir()
        mixture_files(domain_dir, [finetuned, kn_dir], in_domain, {"model_type": "mixture", "lambda": lam})
        # the base, whole, beside the domain model: a sentence of the base's domains costs -ln(prior) once
        adapted = MixtureLanguageModel(
            base, in_domain, job.base_weight, names=[str(job.base), domain_dir.name], mode="sentence"
        )
        metrics["lambda"] = lam
        metrics["base_weight"] = job.base_weight
        metrics["held_out"] = {
            "base": base_eval["perplexity"],
            "finetuned": summarize(logp_a, held, base.tokenizer)["perplexity"],
            "domain_kn": summarize(logp_b, held, base.tokenizer)["perplexity"],
            "domain": evaluate_lines(in_domain, held)["perplexity"],
            "adapted": evaluate_lines(adapted, held)["perplexity"],
        }
        log(
            "held-out perplexity: base {base:.2f}, fine-tuned {finetuned:.2f}, domain n-gram {domain_kn:.2f}, "
            "their mixture (λ = {lam:.3f}) {domain:.2f}, adapted {adapted:.2f}".format(
                lam=lam, **metrics["held_out"]
            )
        )
        metrics["adapt_s"] = round(time.time() - started, 1)
        # paths relative to the staging directory: the same once it is renamed (a sibling of DIR)
        card = render_adapted_card(out.name, metrics)
        mixture_files(staging, [Path(job.base), domain_dir], adapted, metrics, card)
        shutil.rmtree(staging / "data", ignore_errors=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metrics


def _finetune(
    job: AdaptJob,
    kind: str,
    base_config: dict,
    base_metrics: dict,
    train: list[str],
    held: list[str],
    staging: Path,
    log,
) -> dict:
    """Fine-tune the base network on ``train`` (plus replayed base text) with :mod:`model.training.fit`."""
    from model.training.config import TrainConfig, TrainJob
    from model.training.fit import fit

    replay_dir = base_data_dir(job, base_metrics)
    replayed: list[str] = []
    if replay_dir is not None and job.replay > 0:
        replayed = replay_lines(replay_dir, int(job.replay * sum(map(len, train))), job.seed)
        log(f"replaying {len(replayed)} lines of {replay_dir} beside {len(train)} lines of the text")
    elif job.replay > 0:
        log("the base's training text is not here (--base-data): fine-tuning on the text alone")
    mixed = train + replayed
    random.Random(job.seed).shuffle(mixed)
    data = staging / "data"
    write_corpus(data, {"train": mixed, "valid": held, "test": held}, {"name": "adapt", "texts": job.texts})
    model = {k: v for k, v in base_config["model"].items() if k not in FROM_TOKENIZER}
    ngram_dir = ""
    if kind == "hybrid":
        ngram_dir = str((Path(job.base) / base_config["ngram"]["path"]).resolve())
    recipe = {
        "kind": kind,
        "folds": 0,  # a hybrid reads the base's n-gram everywhere: it never saw this text
        "ngram_order": int(read_config(ngram_dir)["order"]) if ngram_dir else 5,
        "max_minutes": job.minutes,
        "lr": job.lr,
        "warmup_steps": 20,
        "batch_size": 32,
        "bptt": 64,
        "eval_every_tokens": max(20_000, sum(map(len, mixed)) // 2),
        "sentence_fraction": 0.25,
        "seed": job.seed,
    }
    cfg = TrainConfig.recipe(**(recipe | job.fit_overrides))
    fit_job = TrainJob(
        data_dir=str(data),
        out_dir=str(staging / "finetuned"),
        run_dir=str(staging / "data" / "run"),
        model=model,
        train=cfg,
        ngram_dir=ngram_dir,
        init_from=str(job.base),
        vocabulary_from=str(job.base),
        reverse=False,
        command=job.command,
    )
    fitted = fit(fit_job, device=job.device, log=log, final_eval=False)
    return {
        "replay_lines": len(replayed),
        "replay_from": str(replay_dir) if replay_dir else None,
        "fit_config": asdict(cfg),
        "best": fitted.get("best"),
        "tokens_seen": fitted.get("tokens_seen"),
        "train_time_s": fitted.get("train_time_s"),
        "history": fitted.get("history", []),  # held-out perplexity along the way (with cpu_s)
    }


def render_adapted_card(name: str, metrics: dict) -> str:
    a, h = metrics["adapted"], metrics["held_out"]
    finetune = metrics.get("finetune")
    how = (
        f"its network fine-tuned for {finetune['train_time_s'] / 60:.1f} minutes "
        f"({finetune['tokens_seen']:,} tokens, {finetune['replay_lines']} lines of the base's own "
        "training text replayed beside the user's)"
        if finetune
        else "no network (an n-gram base)"
    )
    return f"""# {name}

`{a["base"]}` adapted to {a["train_chars"]:,} characters ({a["train_lines"]} lines) of
{", ".join(f"`{t}`" for t in a["texts"])}: {how}, mixed with a Kneser-Ney n-gram of the same
lines, λ = {metrics["lambda"]:.3f} tuned on the {a["held_out_lines"]} held-out lines (every
{HELD_OUT_EVERY}th line of the text) (`domain/`). The served model is the sentence mixture of the
base, whole, with weight {metrics["base_weight"]:g}, and that domain model: the weights follow
the sentence read so far, so the base's own domains lose little.

| held-out perplexity | |
|---|---:|
| base | {h["base"]:.2f} |
| fine-tuned | {h["finetuned"]:.2f} |
| n-gram of the text | {h["domain_kn"]:.2f} |
| their mixture (`domain/`) | {h["domain"]:.2f} |
| **adapted** (base + domain, per sentence) | **{h["adapted"]:.2f}** |

Made by `{metrics["command"] or "model.training.adapt.adapt"}` in {metrics["adapt_s"]} s. Serve it like any
checkpoint: `RNNLM_MODEL_DIRS={name} rnnlm serve`.
"""
