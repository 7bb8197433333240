"""Run several :mod:`model.training.fit` trainings side by side and compare them on valid.

A plan is a JSON file: shared arguments plus one entry per run::

    {"common": ["--data", "data/pd98", "--device", "auto"],
     "runs": [{"name": "rnn-base", "group": "ablation", "args": ["--max-minutes", "3"]}, …]}

``python -m rnnlm.sweep run PLAN --root runs/sweep`` starts every run at once (one process each,
so one GPU is shared by all of them), waits, and writes ``summary.json``: per run its best valid
perplexity, the tokens and minutes it took, and its final valid/test figures. Choosing between
runs uses valid only. Each run's ``log.jsonl`` is what :mod:`model.training_report` draws.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_plan(plan_path: str, root: str, deadline_s: float, only: list[str] | None = None) -> dict:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    root_dir = Path(root)
    root_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for run in plan["runs"]:
        if only and run["name"] not in only:
            continue
        out = root_dir / run["name"]
        out.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "rnnlm.cli",
            "fit",
            *plan["common"],
            *run["args"],
            "--out",
            str(out / "model"),
            "--run-dir",
            str(out),
        ]
        if "--ngram-dir" not in run["args"]:
            args += ["--ngram-dir", str(out / "ngram")]
        log = open(out / "stdout.txt", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        procs[run["name"]] = (subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env), log, run)
        print(f"started {run['name']}: {' '.join(args[3:])}", flush=True)
    t0 = time.time()
    while any(p.poll() is None for p, _, _ in procs.values()):
        if time.time() - t0 > deadline_s:
            for name, (p, _, _) in procs.items():
                if p.poll() is None:
                    print(f"deadline: stopping {name}", flush=True)
                    p.kill()
            break
        time.sleep(2)
    summary = {}
    for name, (p, log, run) in procs.items():
        p.wait()
        log.close()
        summary[name] = summarize_run(root_dir / name, run, p.returncode)
        print(json.dumps({name: summary[name]}), flush=True)
    (root_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summarize_run(run_dir: Path, run: dict, returncode: int | None) -> dict:
    records = []
    log = run_dir / "log.jsonl"
    if log.exists():
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    valid = [r for r in records if r["event"] == "valid"]
    metrics_path = run_dir / "model" / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
    best = min(valid, key=lambda r: r["valid_perplexity"]) if valid else None
    return {
        "group": run.get("group", ""),
        "args": run["args"],
        "returncode": returncode,
        "best_valid": best["valid_perplexity"] if best else None,
        "best_at_tokens": best["tokens_seen"] if best else None,
        "tokens_seen": records[-1].get("tokens_seen") if records else None,
        "elapsed_s": records[-1].get("elapsed_s") if records else None,
        "final_valid": metrics.get("valid", {}).get("perplexity"),
        "final_test": metrics.get("test", {}).get("perplexity"),
        "parameters": metrics.get("parameters"),
    }


def best_of(summary: dict, group: str) -> str | None:
    """The run of ``group`` with the lowest best valid perplexity (valid only decides)."""
    runs = [(v["best_valid"], k) for k, v in summary.items() if v["group"] == group and v["best_valid"]]
    return min(runs)[1] if runs else None


def pack(root: str, out: str, groups: list[str], chunk_mb: int = 15) -> list[str]:
    """Tar the logs of every run and the checkpoint of the best run of each group, in chunks."""
    import tarfile

    root_dir, out_dir = Path(root), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = json.loads((root_dir / "summary.json").read_text(encoding="utf-8"))
    with tarfile.open(out_dir / "logs.tar.gz", "w:gz") as tar:
        tar.add(root_dir / "summary.json", arcname="summary.json")
        for name in summary:
            for f in ("log.jsonl", "stdout.txt", "model/metrics.json", "model/models/config.json"):
                if (root_dir / name / f).exists():
                    tar.add(root_dir / name / f, arcname=f"{name}/{f}")
    chosen = [b for g in groups if (b := best_of(summary, g))]
    blob = out_dir / "models.tar"
    with tarfile.open(blob, "w") as tar:
        for name in chosen:
            tar.add(root_dir / name / "model", arcname=f"{name}/model")
    data = blob.read_bytes()
    blob.unlink()
    parts = []
    for i in range(0, len(data), chunk_mb << 20):
        part = out_dir / f"models.tar.{i // (chunk_mb << 20):02d}"
        part.write_bytes(data[i : i + (chunk_mb << 20)])
        parts.append(part.name)
    print(json.dumps({"chosen": chosen, "parts": parts}), flush=True)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnlm.sweep", description="run training plans side by side")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start every run of a plan at once and wait")
    r.add_argument("plan")
    r.add_argument("--root", required=True, help="one folder per run goes here")
    r.add_argument("--deadline-s", type=float, default=3600, help="kill runs still going after this")
    r.add_argument("--only", nargs="*", help="run only these names")
    k = sub.add_parser("pack", help="tar the logs and the best checkpoint of each group")
    k.add_argument("root")
    k.add_argument("--out", required=True)
    k.add_argument("--groups", nargs="+", required=True)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run_plan(args.plan, args.root, args.deadline_s, args.only)
    elif args.cmd == "pack":
        pack(args.root, args.out, args.groups)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
