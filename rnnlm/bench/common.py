"""What every benchmark shares: the machine's ceiling, the model, the workloads, the report.

Every figure is compared with the machine's own limit measured in the same run: the rate of a
large float32 matrix product (GFLOP/s), taken before and after the measurements (a busy machine
shows up as a gap between the two). A model figure becomes a ratio of it through
``RNNLM.flops_per_token()``: positions/s × FLOPs per position ÷ matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from model.config import ModelConfig
from model.lm import LanguageModel, RNNLanguageModel
from model.network import RNNLM
from model.tokenizer import BOS_ID, EOS_ID, Tokenizer

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / "pd98-char-lstm"
DATA = REPO / "data" / "pd98"
DOC = REPO / "docs" / "BENCHMARKS.md"


# -- the ceiling --------------------------------------------------------------------------------
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(
    device: str = "cpu", n: int | None = None, seconds: float = 1.0, dtype: torch.dtype = torch.float32
) -> float:
    """Best rate of an n×n matrix product of ``dtype`` over ``seconds`` (GFLOP/s, 2n³ per product)."""
    n = n or (8192 if torch.device(device).type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        a @ b  # warm-up
        sync(device)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


@dataclass
class Ceiling:
    before: float
    after: float = 0.0

    @property
    def gflops(self) -> float:
        """The reference rate: the better of the two measurements."""
        return max(self.before, self.after)

    def line(self) -> str:
        return (
            f"float32 matmul ceiling: {self.before:.1f} GFLOP/s before, {self.after:.1f} GFLOP/s after "
            f"(ratios below use {self.gflops:.1f})"
        )


# -- the model ----------------------------------------------------------------------------------
def untrained_model(device: str = "cpu", data_dir: Path = DATA) -> RNNLanguageModel:
    """An untrained RNNLM of the shipped model's shape (2-layer LSTM 512, char vocabulary of
    pd98 train when available): the same FLOPs per token, for checking the benchmarks."""
    train = data_dir / "train.txt"
    if train.exists():
        tok = Tokenizer.build(train.read_text(encoding="utf-8").splitlines(), kind="char")
    else:  # a stand-in vocabulary of the same size
        tok = Tokenizer(
            kind="char", tokens=["<pad>", "<unk>", "<bos>", "<eos>", *[chr(0x4E00 + i) for i in range(4618)]]
        )
    torch.manual_seed(0)
    net = RNNLM(
        ModelConfig(
            vocab_size=tok.vocab_size,
            cell="lstm",
            emb_dim=512,
            hidden_dim=512,
            num_layers=2,
            dropout=0.0,
            tie_weights=True,
        )
    )
    return RNNLanguageModel(net.to(device), tok)


def load_bench_model(args: argparse.Namespace) -> tuple[LanguageModel, str]:
    if args.model == "untrained" or (args.model is None and not SHIPPED.exists()):
        lm = untrained_model(args.device)
        return lm, "untrained RNNLM, shipped shape (2-layer LSTM 512, tied) — numbers check the code only"
    from model.loading import load_model

    path = Path(args.model) if args.model else SHIPPED
    return load_model(path, device=args.device), str(
        path.relative_to(REPO) if path.is_relative_to(REPO) else path
    )


def flops_per_token(lm: LanguageModel) -> int:
    return lm.net.flops_per_token() if isinstance(lm, RNNLanguageModel) else 0


# -- workloads ----------------------------------------------------------------------------------
_SENTENCE = re.compile(r"[^。！？；，]+")


def clauses(min_len: int = 16, max_len: int = 24, data_dir: Path = DATA, limit: int = 5000) -> list[str]:
    """Clauses of held-out text (pd98 test) of ``min_len..max_len`` characters."""
    path = data_dir / "test.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        out += [c for c in _SENTENCE.findall(line) if min_len <= len(c) <= max_len]
        if len(out) >= limit:
            break
    return out


def nbest_lists(lm: LanguageModel, count: int, size: int = 10, seed: int = 0) -> list[list[str]]:
    """ASR-style n-best lists: a ~20-character clause and ``size - 1`` variants of it, each with
    one to three characters replaced by frequent characters (recognizer confusions)."""
    rng = random.Random(seed)
    tok = lm.tokenizer
    frequent = [t for t in tok.tokens[4:504]]
    pool = clauses() or ["".join(rng.choice(frequent) for _ in range(20)) for _ in range(count)]
    lists = []
    for _ in range(count):
        base = list(rng.choice(pool))
        cands = {"".join(base)}
        while len(cands) < size:
            cand = base[:]
            for pos in rng.sample(range(len(cand)), rng.randint(1, min(3, len(cand)))):
                cand[pos] = rng.choice(frequent)
            cands.add("".join(cand))
        lists.append(sorted(cands, key=lambda _: rng.random()))
    return lists


def encode_lists(lm: LanguageModel, lists: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    return [[[BOS_ID, *lm.tokenizer.encode(c).ids, EOS_ID] for c in cands] for cands in lists]


# -- timing and statistics ----------------------------------------------------------------------
def timed_loop(
    fn: Callable[[], int], seconds: float, device: str = "cpu", min_runs: int = 2
) -> tuple[int, float]:
    """Call ``fn`` (returning units of work done) until ``seconds`` pass: (units, elapsed)."""
    fn()  # warm-up
    sync(device)
    units, runs, t0 = 0, 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - t0 < seconds:
        units += fn()
        runs += 1
    sync(device)
    return units, time.perf_counter() - t0


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# -- reporting ----------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])]
    )


def fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} CPUs available, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads"
    )


def header(
    title: str, args: argparse.Namespace, model_desc: str, lm: LanguageModel, ceiling: Ceiling, command: str
) -> str:
    device = args.device
    if torch.device(device).type == "cuda":
        device += f" ({torch.cuda.get_device_name()})"
    return "\n".join(
        [
            f"### {title}",
            "",
            f"- command: `{command}`" + ("  (**--quick: too short to be meaningful**)" if args.quick else ""),
            f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, device {device}; {machine()}",
            f"- model: {model_desc}; {flops_per_token(lm) / 1e6:.2f} MFLOP per token "
            f"(`RNNLM.flops_per_token`)",
            f"- {ceiling.line()}",
        ]
    )


def write_section(name: str, text: str, path: Path | None) -> None:
    """Replace the section ``name`` of ``path`` (between its markers), or append it."""
    if path is None:
        return
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    print(f"updated {path} [{name}]")


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--model",
        default=None,
        help=f"checkpoint directory, or 'untrained' (default: {SHIPPED.relative_to(REPO)} "
        "if present, else untrained)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and durations: checks that the benchmark runs; does not write the doc",
    )
    p.add_argument("--seconds", type=float, default=None, help="duration of each measurement")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Markdown file to update (default: {DOC.relative_to(REPO)}; none with --quick)",
    )
    return p


def resolve_out(args: argparse.Namespace) -> Path | None:
    if args.out is not None:
        return args.out
    return None if args.quick else DOC


def command_line(module: str, argv: Sequence[str] | None) -> str:
    import sys

    return " ".join([".venv/bin/python -m", module, *(sys.argv[1:] if argv is None else argv)])


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(
    model_dir: Path, log_path: Path, env: dict[str, str], ready_timeout_s: float = 300
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real ``python -m service`` on a free loopback port: ``(base_url, process)`` once /ready
    answers 200; terminated (then killed) on exit. Its output goes to ``log_path``."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-dir",
        str(model_dir),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the server was not ready within {ready_timeout_s:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- server-sent events, as a client reads them ------------------------------------------------------
def sse_blocks(raw: str) -> list[dict[str, str]]:
    """The fields of each event of a text/event-stream body, in order (keep-alive comments skipped)."""
    blocks = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if lines:
            blocks.append(dict(ln.split(": ", 1) for ln in lines))
    return blocks


def parse_events(raw: str) -> list[tuple[str, dict]]:
    """``(event, data)`` pairs of the service's streams (``token`` / ``done`` / ``error``)."""
    return [(b["event"], json.loads(b["data"])) for b in sse_blocks(raw)]
