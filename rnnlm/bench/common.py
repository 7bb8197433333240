"""What every benchmark shares: the machine's ceiling, the models, the workloads, the report.

Every figure is compared with the machine's own limit measured in the same run: the rate of a
large float32 matrix product (GFLOP/s, the *probe*), taken before and after the measurements (a
busy machine shows up as a gap between the two), and stated beside the CPU's physical peak
(cores × FMA pipes × vector lanes × 2 × clock, read from /proc/cpuinfo: no measurement can pass
it). A model figure becomes a ratio of the probe through ``RNNLM.flops_per_token()``:
positions/s × FLOPs per position ÷ probe FLOP/s.

The models: by default the served default (weights/DEFAULT.json) and the plain LSTM beside it,
so that every table compares them in one run; ``--model`` (repeatable) names others.

Timing counts only what it times: :func:`timed_runs` sums the counts its calls return, the
warm-up's left out, over the clock between its first and last timed call.
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

from model.models.config import ModelConfig
from model.models.lm import LanguageModel, RecurrentLanguageModel, RNNLanguageModel
from model.models.network import RNNLM
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / "pd98-char-lstm"
DEFAULT_CHOICE = REPO / "weights" / "DEFAULT.json"  # which model is served by default
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
class Peak:
    """A CPU's physical float32 peak and how it was computed."""

    gflops: float
    how: str


FMA_PIPES = 2  # FMA units per core assumed (Intel Xeon Gold/Platinum and Core, AMD Zen: two)


def cpu_peak(cpuinfo: str | None = None, cpus: int | None = None, max_khz: int | None = None) -> Peak | None:
    """The float32 peak of ``cpus`` logical CPUs (default: those this process may run on) from
    /proc/cpuinfo: physical cores × FMA pipes × fp32 lanes × 2 FLOP × clock. The lanes come from
    the vector width the flags name (AVX-512: 16, AVX2/FMA: 8, else 4; AMD before Zen 5 runs
    AVX-512 as two 256-bit halves: 8); the clock is the highest the kernel reports (cpufreq's
    maximum, else "cpu MHz"); SMT siblings share a core's pipes. None where it cannot tell."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.exists():
            return None
        cpuinfo = path.read_text()
        freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        if max_khz is None and freq.exists():
            max_khz = int(freq.read_text().split()[0])
    first = cpuinfo.split("\n\n")[0]
    fields: dict[str, str] = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    try:
        mhz = max_khz / 1e3 if max_khz else float(fields["cpu MHz"])
        family = int(fields.get("cpu family", "0"))
        threads_per_core = max(
            1, int(fields.get("siblings", "1")) // max(1, int(fields.get("cpu cores", "1")))
        )
    except (KeyError, ValueError):
        return None
    amd = fields.get("vendor_id") == "AuthenticAMD"
    if "avx512f" in flags and not (amd and family < 0x1A):
        bits, note = 512, "AVX-512"
    elif "avx512f" in flags or "fma" in flags or "avx2" in flags:
        bits, note = 256, "AVX-512 as two 256-bit halves" if "avx512f" in flags else "AVX2/FMA"
    else:
        bits, note = 128, "SSE"
    logical = cpus if cpus is not None else len(os.sched_getaffinity(0))
    cores = max(1, -(-logical // threads_per_core))
    lanes = bits // 32
    gflops = cores * FMA_PIPES * lanes * 2 * mhz / 1e3
    clock = "cpufreq maximum" if max_khz else "cpu MHz"
    return Peak(
        gflops,
        f"{cores} cores × {FMA_PIPES} FMA pipes (assumed) × {lanes} fp32 lanes ({note}) × 2 FLOP × "
        f"{mhz / 1e3:.2f} GHz ({clock}); {fields.get('model name', 'unknown CPU')}",
    )


@dataclass
class Ceiling:
    before: float
    after: float = 0.0
    peak: Peak | None = None  # the CPU's physical peak (None on a GPU, or where unknown)

    @property
    def gflops(self) -> float:
        """The reference rate: the better of the two measurements."""
        return max(self.before, self.after)

    def line(self) -> str:
        line = (
            f"float32 matmul probe (2048² product): {self.before:.1f} GFLOP/s before, {self.after:.1f} GFLOP/s "
            f"after (ratios below use {self.gflops:.1f})"
        )
        if self.peak is not None:
            share = self.gflops / self.peak.gflops
            line += (
                f"; physical peak {self.peak.gflops:.0f} GFLOP/s = {self.peak.how} "
                f"(the probe reaches {100 * share:.0f}% of it)"
            )
            if share > 1.0:  # a VM reports its base clock; the cores run faster (turbo)
                line += (
                    ": above 100%, so the cores run faster than the clock the kernel reports (a base "
                    "clock under a hypervisor; turbo is not visible here), and the true peak is higher"
                )
        return line


def ceiling(device: str, seconds: float) -> Ceiling:
    """The probe, measured now, with the physical peak beside it (CPU only)."""
    return Ceiling(matmul_gflops(device, seconds=seconds), peak=cpu_peak() if device == "cpu" else None)


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


def default_models() -> list[str]:
    """The served default (weights/DEFAULT.json) and the plain LSTM, those present, once each."""
    out = []
    if DEFAULT_CHOICE.exists():
        out.append(str(REPO / json.loads(DEFAULT_CHOICE.read_text(encoding="utf-8"))["default"]))
    if SHIPPED.exists():
        out.append(str(SHIPPED))
    return list(dict.fromkeys(out)) or ["untrained"]


@dataclass
class BenchModel:
    lm: LanguageModel
    desc: str  # what the header says of it
    name: str  # its column in the tables
    path: Path | None  # its checkpoint (None: untrained, in memory)


def load_bench_models(args: argparse.Namespace) -> list[BenchModel]:
    """``--model`` (repeatable), by default :func:`default_models`: the default, then the LSTM."""
    from model.models.loading import load_model

    out = []
    for spec in args.model or default_models():
        if spec == "untrained":
            desc = "untrained RNNLM, shipped shape (2-layer LSTM 512, tied) — numbers check the code only"
            out.append(BenchModel(untrained_model(args.device), desc, "untrained", None))
            continue
        path = Path(spec)
        shown = str(path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path)
        lm = load_model(path, device=args.device)
        out.append(BenchModel(lm, f"{shown} ({lm.kind})", path.name, path))
    return out


def load_bench_model(args: argparse.Namespace) -> tuple[LanguageModel, str]:
    """One ``--model`` (a parser without ``several_models``), by default the plain LSTM."""
    spec = args.model or (str(SHIPPED) if SHIPPED.exists() else "untrained")
    first = load_bench_models(argparse.Namespace(**{**vars(args), "model": [spec]}))[0]
    return first.lm, first.desc


def flops_per_token(lm: LanguageModel) -> int:
    """The recurrent network's FLOPs per position (a hybrid's LSTM; its n-gram reads tables)."""
    return lm.net.flops_per_token() if isinstance(lm, RecurrentLanguageModel) else 0


def ratio_rows(rows_by_model: dict[str, list[list]], key: Callable[[list], str], value: int) -> list[list]:
    """One row per workload of the first model: ``[workload, its figure under each model, first ÷
    last]`` (the default's figure over the LSTM's, measured in the same run)."""
    names = list(rows_by_model)
    by_key = {name: {key(r): r[value] for r in rows} for name, rows in rows_by_model.items()}
    out = []
    for k in by_key[names[0]]:
        values = [by_key[name].get(k, float("nan")) for name in names]
        last = values[-1]
        out.append(
            [k, *values, values[0] / last if len(names) > 1 and last == last and last else float("nan")]
        )
    return out


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
Clock = Callable[[], float]


@dataclass
class Timed:
    counts: tuple[int, ...]  # what the timed calls returned, summed (the warm-up's left out)
    elapsed: float  # seconds from before the first timed call to after the last
    runs: int  # timed calls

    def rate(self, i: int = 0) -> float:
        return self.counts[i] / self.elapsed


def timed_runs(
    fn: Callable[[], Sequence[int]],
    seconds: float,
    device: str = "cpu",
    min_runs: int = 2,
    clock: Clock | None = None,
) -> Timed:
    """Call ``fn`` (returning counts of work done, e.g. (requested, computed)) until ``seconds``
    pass and at least ``min_runs`` times, after one warm-up call whose counts are dropped: only
    work done between the two clock readings is counted."""
    clock = clock or time.perf_counter
    fn()  # warm-up: kernels, caches, allocator (not counted)
    sync(device)
    counts: list[int] = []
    runs, t0 = 0, clock()
    while runs < min_runs or clock() - t0 < seconds:
        done = fn()
        counts = [a + b for a, b in zip(counts, done, strict=True)] if counts else list(done)
        runs += 1
    sync(device)
    return Timed(tuple(counts), clock() - t0, runs)


def timed_loop(
    fn: Callable[[], int], seconds: float, device: str = "cpu", min_runs: int = 2, clock: Clock | None = None
) -> tuple[int, float]:
    """:func:`timed_runs` of one count: ``(units, elapsed)``."""
    timed = timed_runs(lambda: (fn(),), seconds, device, min_runs, clock)
    return timed.counts[0], timed.elapsed


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
    return models_header(title, args, [BenchModel(lm, model_desc, "", None)], ceiling, command)


def models_header(
    title: str, args: argparse.Namespace, models: Sequence[BenchModel], ceiling: Ceiling, command: str
) -> str:
    device = args.device
    if torch.device(device).type == "cuda":
        device += f" ({torch.cuda.get_device_name()})"
    lines = [
        f"### {title}",
        "",
        f"- command: `{command}`" + ("  (**--quick: too short to be meaningful**)" if args.quick else ""),
        f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, device {device}; {machine()}",
    ]
    for m in models:
        named = f"`{m.name}`: " if m.name else ""
        counted = "; its LSTM's, the n-gram reads tables" if m.lm.kind == "hybrid" else ""
        lines.append(
            f"- model {named}{m.desc}; {flops_per_token(m.lm) / 1e6:.2f} MFLOP per position "
            f"(`RNNLM.flops_per_token`{counted})"
        )
    return "\n".join([*lines, f"- {ceiling.line()}"])


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


def base_parser(description: str, several_models: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes; with ``several_models``, ``--model`` is repeatable and
    defaults to the served default and the plain LSTM (:func:`load_bench_models`)."""
    p = argparse.ArgumentParser(description=description)
    if several_models:
        p.add_argument(
            "--model",
            action="append",
            default=None,
            help=f"checkpoint directory, or 'untrained'; repeatable (default: the served default of "
            f"{DEFAULT_CHOICE.relative_to(REPO)}, then {SHIPPED.relative_to(REPO)}, those present)",
        )
    else:
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
