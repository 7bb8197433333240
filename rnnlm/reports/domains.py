"""``rnnlm benchmark domains``: every model against every domain's test split, in one table.

For each test domain (news, reviews, docs), the same figures as the pd98 results: per-sentence
perplexity of its test split, and top-1 of the homophone and word-order sets drawn from its test
sentences (the homophone index counted on that domain's train split). The Kneser-Ney 5-gram of
every training corpus (each domain alone, and all of them) is built here (cached in
``runs/ngram``) and gets a row, so every neural row has its n-gram of the same data beside it.
Two sentence pairs the issue tracker named as the classic confusions are a last column::

    厨房里食油用完了 / 厨房里石油用完了      你先走 / 你走先

A model that has never seen a character scores it as ``<unk>``: its perplexity on a new domain
includes that lumped probability, which flatters it (the OOV rate is in the JSON twin).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from model.models.evaluate import evaluate_lines
from model.models.loading import load_model
from model.quality.rerank import SetSpec, build_and_save_set, rerank
from model.text.data import load_split, sha256_file

from .blocks import write_report
from .results import NGramSpec, ensure_ngram

EXAMPLES = (("厨房里食油用完了", "厨房里石油用完了"), ("你先走", "你走先"))  # (right, wrong)
KINDS = ("homophone", "wordorder")
BLOCK = "domains"
Log = Callable[[str], None]


def parse_named(values: Sequence[str], option: str) -> dict[str, str]:
    """``["news=data/pd98", …]`` -> ``{"news": "data/pd98", …}`` (names unique, dirs corpora)."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{option} {value!r}: expected NAME=DIR")
        if name in out:
            raise ValueError(f"{option} {name}: given twice")
        if not (Path(path) / "test.txt").is_file():
            raise ValueError(f"{option} {value}: {path} is not a corpus directory (no test.txt)")
        out[name] = path
    return out


def examples_right(lm) -> int:
    """How many of :data:`EXAMPLES` the model gets right (the right sentence strictly more likely)."""
    from model.inference.scoring import score_candidates

    right = 0
    for good, bad in EXAMPLES:
        a, b = score_candidates(lm, [good, bad]).results
        right += a.logprob > b.logprob
    return right


def run_domains(
    test_domains: dict[str, str],
    train_corpora: dict[str, str],
    models: Sequence[str],
    out: str | Path,
    spec: SetSpec,
    ngram_dir: str = "runs/ngram",
    sets_dir: str = "runs/rerank/domains",
    device: str = "cpu",
    command: str = "",
    log: Log = print,
) -> dict:
    started = time.time()
    sets = {}
    for domain, data in test_domains.items():
        for kind in KINDS:
            items, _ = build_and_save_set(
                data, SetSpec(**{**spec.__dict__, "kind": kind, "split": "test"}), Path(sets_dir) / domain
            )
            sets[domain, kind] = items
    tests = {domain: load_split(data, "test") for domain, data in test_domains.items()}
    rows: list[tuple[str, str, str]] = []  # (label, trained on, checkpoint)
    for name, data in train_corpora.items():
        kn = ensure_ngram(NGramSpec("Kneser-Ney 5-gram", 5, "kn"), data, ngram_dir, log)
        rows.append((f"KN 5-gram of {name}", name, str(kn)))
    trained_on = {sha256_file(Path(d) / "train.txt"): n for n, d in train_corpora.items()}
    for model_dir in models:
        rows.append((Path(model_dir).name, _trained_on(model_dir, trained_on), str(model_dir)))
    results = []
    for label, corpus, model_dir in rows:
        lm = load_model(model_dir, device=device)
        row: dict = {"model": label, "trained_on": corpus, "dir": model_dir, "kind": lm.kind, "domains": {}}
        for domain in test_domains:
            ev = evaluate_lines(lm, tests[domain])
            cell = {"perplexity": ev["perplexity"], "oov_rate": ev["oov"] / max(ev["tokens"], 1)}
            for kind in KINDS:
                cell[kind] = rerank(lm, sets[domain, kind])[0].summary(spec.seed)["top1"]
            row["domains"][domain] = cell
        row["examples_right"] = examples_right(lm)
        log(f"{label}: " + json.dumps(row["domains"], ensure_ascii=False))
        results.append(row)
    record = {
        "command": command,
        "test_domains": test_domains,
        "train_corpora": train_corpora,
        "sets": {f"{d}/{k}": len(v) for (d, k), v in sets.items()},
        "rows": results,
        "seconds": round(time.time() - started, 1),
    }
    write_report(out, BLOCK, record, render(record))
    return record


def _trained_on(model_dir: str, by_sha: dict[str, str]) -> str:
    """The training corpus a checkpoint's metrics record, by its train split's checksum."""
    path = Path(model_dir) / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data = metrics.get("data") or {}
    sha = str((data.get("sha256") or {}).get("train", ""))
    return by_sha.get(sha, str(data.get("dir", "?")))


def render(record: dict) -> str:
    domains = list(record["test_domains"])
    head = "| model | trained on | " + " | ".join(
        f"{d} ppl | {d} homophone | {d} word order" for d in domains
    )
    head += " | 食油 / 你先走 |\n|---|---|" + "---:|---:|---:|" * len(domains) + "---:|\n"
    best = {
        (d, key): (min if key == "perplexity" else max)(r["domains"][d][key] for r in record["rows"])
        for d in domains
        for key in ("perplexity", *KINDS)
    }

    def fmt(d: str, key: str, value: float) -> str:
        text = f"{value:.2f}" if key == "perplexity" else f"{value:.3f}"
        return f"**{text}**" if value == best[d, key] else text

    body = ""
    for r in record["rows"]:
        cells = [fmt(d, key, r["domains"][d][key]) for d in domains for key in ("perplexity", *KINDS)]
        body += (
            f"| {r['model']} | {r['trained_on']} | "
            + " | ".join(cells)
            + f" | {r['examples_right']} of 2 |\n"
        )
    sets = ", ".join(f"{k}: {n}" for k, n in record["sets"].items())
    return (
        "### Across domains: news, everyday reviews, technical documentation\n\n"
        f"By `{record['command'] or 'rnnlm benchmark domains'}` ({record['seconds']} s). Each domain's "
        "**test** split: per-sentence perplexity (`<eos>` included; characters a model never saw count as "
        "`<unk>`), and top-1 of its homophone and word-order sets (items: " + sets + "). The "
        "Kneser-Ney 5-gram of each training corpus is built by the command. Best per column in bold. "
        "Figures and OOV rates in `RESULTS-domains.json`.\n\n" + head + body
    )
