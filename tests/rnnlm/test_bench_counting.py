"""Benchmarks count what they time: a timed loop's figure equals a hand-timed run of the same work
(on a fake clock that each call moves by a fixed step, so nothing depends on the machine), and the
physical peak printed beside the matmul probe follows from /proc/cpuinfo."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

from model.models.lm import LanguageModel
from model.models.prefix import TreeResult, requested_positions
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer
from rnnlm.bench import common
from rnnlm.bench.common import Ceiling, cpu_peak, ratio_rows, timed_loop, timed_runs
from rnnlm.bench.scoring import library_rows

from ..conftest import TINY_LINES

STEP = 0.25  # fake seconds per call


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def zeros(seqs: Sequence[Sequence[int]]) -> list[Tensor]:
    return [torch.zeros(max(len(s) - 1, 0), dtype=torch.float64) for s in seqs]


class ClockedModel(LanguageModel):
    """Every scoring call takes exactly ``STEP`` seconds of the fake clock; a tree pass computes
    half the positions it is asked for."""

    kind = "clocked"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.tokenizer = Tokenizer.build(TINY_LINES, kind="char")
        self.metrics = {}
        self.calls = 0

    def _tick(self) -> None:
        self.clock.now += STEP
        self.calls += 1

    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        self._tick()
        return zeros(seqs)

    def score_tree(
        self, seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = (), **options: Any
    ) -> TreeResult:
        self._tick()
        n = requested_positions(seqs, queries)
        return TreeResult(zeros(seqs), None, None, n // 2, n)

    def start_state(self, batch_size: int) -> Any:
        raise NotImplementedError

    def step(self, state: Any, ids: Tensor) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def select_state(self, state: Any, rows: Sequence[int] | Tensor) -> Any:
        raise NotImplementedError

    def concat_states(self, states: Sequence[Any]) -> Any:
        raise NotImplementedError


def test_timed_runs_leave_the_warm_up_out_of_the_counts_and_the_clock():
    clock = FakeClock()
    calls = []

    def work() -> tuple[int, int]:
        clock.now += STEP
        calls.append(clock.now)
        return 10, 3

    timed = timed_runs(work, seconds=1.0, clock=clock)
    assert len(calls) == 5  # the warm-up, then four calls until a second has passed
    assert timed.runs == 4 and timed.elapsed == 1.0 and timed.counts == (40, 12)
    assert timed.rate(0) == 10 / STEP  # what one call does in one call's time
    units, elapsed = timed_loop(lambda: work()[0], seconds=0.0, min_runs=3, clock=clock)
    assert (units, elapsed) == (30, 3 * STEP)


def nbest(lm: LanguageModel, lists: int = 6, size: int = 3) -> list[list[list[int]]]:
    """Lists of candidates of one length each, so every call does the same work."""
    ids = [[BOS_ID, *lm.tokenizer.encode(t[:4]).ids, EOS_ID] for t in TINY_LINES]
    return [[ids[(i * size + j) % len(ids)] for j in range(size)] for i in range(lists)]


def test_library_rows_figures_equal_a_hand_timed_run_of_the_same_calls():
    clock = FakeClock()
    lm = ClockedModel(clock)
    lists = nbest(lm)
    rows = library_rows(lm, lists, (1, 2), seconds=1.0, device="cpu", gflops=1.0, clock=clock)
    assert [r[:2] for r in rows] == [
        [name, f"{k} lists/call"]
        for k in (1, 2)
        for name in (
            "lm.sequence_logprobs (plain)",
            "dense (score_tree, no sharing)",
            "prefix-shared (score_tree)",
        )
    ]
    for name, batch, requested_s, computed_s, *_ in rows:
        k = int(batch.split()[0])
        per_call = [[s for cands in lists[i : i + k] for s in cands] for i in range(0, len(lists), k)]
        t0, requested, computed = clock(), 0, 0
        for seqs in per_call:  # by hand: each call once, between two readings of the clock
            if name.startswith("lm.sequence_logprobs"):
                lm.sequence_logprobs(seqs)
                requested += requested_positions(seqs)
                computed += requested_positions(seqs)
            else:
                res = lm.score_tree(seqs)
                requested, computed = requested + res.requested, computed + res.computed
        elapsed = clock() - t0
        assert requested_s == pytest.approx(requested / elapsed, rel=1e-12), (name, batch)
        assert computed_s == pytest.approx(computed / elapsed, rel=1e-12), (name, batch)


def test_ratio_rows_put_the_same_workload_of_two_models_side_by_side():
    rows = {"hybrid": [["score", 90.0], ["step", 30.0]], "lstm": [["step", 40.0], ["score", 100.0]]}
    assert ratio_rows(rows, lambda r: r[0], 1) == [["score", 90.0, 100.0, 0.9], ["step", 30.0, 40.0, 0.75]]


def test_default_models_are_the_served_default_then_the_lstm():
    if not (common.DEFAULT_CHOICE.exists() and common.SHIPPED.exists()):
        pytest.skip("weights/DEFAULT.json or the shipped LSTM is missing")
    default = json.loads(common.DEFAULT_CHOICE.read_text(encoding="utf-8"))["default"]
    models = common.default_models()
    assert models[0] == str(common.REPO / default) and models[-1] == str(common.SHIPPED)
    assert len(models) == len(set(models))


# -- the physical peak -----------------------------------------------------------------------------
def cpuinfo(vendor: str, family: int, flags: str, mhz: float, siblings: int = 2, cores: int = 2) -> str:
    block = (
        f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel name\t: Test CPU\n"
        f"cpu MHz\t\t: {mhz:.3f}\nsiblings\t: {siblings}\ncpu cores\t: {cores}\nflags\t\t: {flags}\n"
    )
    return block + "\n" + block.replace("processor\t: 0", "processor\t: 1")


@pytest.mark.parametrize(
    ("info", "cpus", "max_khz", "gflops", "lanes"),
    [
        # the two Zen 4 cores: AVX-512 as two 256-bit halves, 32 FLOP a cycle each
        (cpuinfo("AuthenticAMD", 25, "fma avx2 avx512f", 3750.0), 2, None, 240.0, "8 fp32 lanes"),
        (cpuinfo("GenuineIntel", 6, "fma avx2 avx512f", 2600.0), 2, None, 332.8, "16 fp32 lanes"),
        (cpuinfo("AuthenticAMD", 26, "fma avx2 avx512f", 1000.0), 1, 4000000, 256.0, "16 fp32 lanes"),
        (cpuinfo("GenuineIntel", 6, "fma avx2", 3000.0, siblings=4, cores=2), 4, None, 192.0, "8 fp32 lanes"),
        (cpuinfo("GenuineIntel", 6, "sse sse2", 2000.0), 2, None, 64.0, "4 fp32 lanes"),
    ],
)
def test_the_physical_peak_is_cores_times_fma_width_times_clock(info, cpus, max_khz, gflops, lanes):
    peak = cpu_peak(info, cpus=cpus, max_khz=max_khz)
    assert peak is not None and peak.gflops == pytest.approx(gflops)
    assert lanes in peak.how and "FMA pipes" in peak.how and "Test CPU" in peak.how
    line = Ceiling(120.0, 118.0, peak).line()
    assert f"physical peak {gflops:.0f} GFLOP/s" in line and "probe" in line


def test_an_unreadable_cpuinfo_gives_no_peak():
    assert cpu_peak("processor\t: 0\nflags\t: fma\n", cpus=2) is None  # no clock
    assert "physical peak" not in Ceiling(100.0).line()


def test_a_probe_above_the_reported_peak_says_the_clock_is_higher() -> None:
    from rnnlm.bench.common import Ceiling, Peak

    assert "true peak is higher" in Ceiling(383.0, 380.0, Peak(333.0, "2 cores × …")).line()
    assert "true peak is higher" not in Ceiling(200.0, 190.0, Peak(333.0, "2 cores × …")).line()
