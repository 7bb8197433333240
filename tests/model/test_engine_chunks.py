"""The engine's one-shot passes by cost and in chunks: work nobody waits for stops within a chunk,
a request costs its tokens (per request and in flight), and chunking changes no number."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence

import pytest
import torch

from model.inference.engine import DeadlineExceeded, Engine, EngineConfig, EngineStopped
from model.inference.engine.types import TokensInFlight, TooCostly
from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.loading import load_model
from model.models.prefix import PassStopped, score_each, score_rnn_tree
from model.text.tokenizer import BOS_ID, EOS_ID

from .test_prefix import Wrapped

CHUNK = 64  # positions between two checks in these tests
LONG = 1500  # tokens of each long sequence: a pass of 2 layers × 4 × 1500 positions


@pytest.fixture
def lm(tiny_model_dir) -> RNNLanguageModel:
    model = load_model(tiny_model_dir)  # a fresh copy per test: its cell_step gets instrumented
    assert isinstance(model, RNNLanguageModel)
    return model


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def long_seqs(lm: LanguageModel, n: int = 4, length: int = LONG, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[BOS_ID, *(rng.randrange(4, lm.vocab_size) for _ in range(length)), EOS_ID] for _ in range(n)]


class CountingCells:
    """Wraps the network's own cell step: counts the positions it computes and, once ``pause_at``
    positions are done, parks the worker until :meth:`resume` (so a test acts mid-pass)."""

    def __init__(
        self, lm: RNNLanguageModel, pause_at: int | None = None, pause_s: float | None = None
    ) -> None:
        self.inner = lm.net.cell_step
        self.positions = 0
        self.pause_at, self.pause_s = pause_at, pause_s
        self.paused = threading.Event()
        self._resume = threading.Event()
        self.at_resume: int | None = None
        lm.net.cell_step = self  # type: ignore[method-assign]

    def __call__(self, layer, gi, h, c):
        out = self.inner(layer, gi, h, c)
        self.positions += gi.size(0)
        if self.pause_at is not None and self.positions >= self.pause_at and self.at_resume is None:
            self.paused.set()
            if self.pause_s is not None:
                time.sleep(self.pause_s)
            else:
                assert self._resume.wait(30), "the test never resumed the worker"
            self.at_resume = self.positions
        return out

    def resume(self) -> None:
        self._resume.set()


def full_pass_positions(lm: RNNLanguageModel, seqs: Sequence[Sequence[int]]) -> int:
    res = score_rnn_tree(lm, seqs)
    return res.computed * lm.net.config.num_layers


def test_a_cancelled_request_stops_within_one_chunk(lm: RNNLanguageModel) -> None:
    seqs = long_seqs(lm)
    whole = full_pass_positions(lm, seqs)
    cells = CountingCells(lm, pause_at=500)

    async def main():
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0)) as engine:
            big = asyncio.create_task(engine.score(seqs))
            assert await asyncio.to_thread(cells.paused.wait, 30)
            big.cancel()  # what the route's cancellation does when its client goes away
            with pytest.raises(asyncio.CancelledError):
                await big
            cells.resume()
            small = await engine.score([[BOS_ID, 5, EOS_ID]])  # runs once the big pass is over
            return engine, small

    engine, small = run(main())
    assert cells.at_resume is not None
    after = cells.positions - cells.at_resume - 2 * 2  # the small request: 2 positions, 2 layers
    assert whole > 10_000
    assert after <= CHUNK + len(seqs)  # the rest of one chunk (a depth is whole), not the rest of the pass
    assert engine.stats.passes_stopped == 1 and engine.stats.cancelled == 1
    assert engine.tokens_in_flight == 0
    assert len(small.token_logprobs[0]) == 2


def test_a_request_past_its_deadline_stops_within_one_chunk(lm: RNNLanguageModel) -> None:
    seqs = long_seqs(lm, seed=1)
    cells = CountingCells(lm, pause_at=8)  # the worker is held up until the deadline has passed

    async def main():
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0)) as engine:
            with pytest.raises(DeadlineExceeded):
                await engine.score(seqs, timeout_s=1.0)
            assert cells.paused.is_set(), "the pass had not started by the deadline"
            cells.resume()
            await engine.score([[BOS_ID, 5, EOS_ID]])
            return engine

    engine = run(main())
    assert cells.at_resume is not None
    assert cells.positions - cells.at_resume - 2 * 2 <= CHUNK + len(seqs)
    assert engine.stats.passes_stopped == 1 and engine.tokens_in_flight == 0


def test_stop_past_its_grace_ends_a_pass_within_one_chunk(lm: RNNLanguageModel) -> None:
    seqs = long_seqs(lm, seed=7)
    cells = CountingCells(lm, pause_at=8)

    async def main():
        engine = Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0))
        await engine.start()
        big = asyncio.create_task(engine.score(seqs))
        assert await asyncio.to_thread(cells.paused.wait, 30)
        stopping = asyncio.create_task(engine.stop(grace_s=0.2))
        await wait_until(lambda: engine._abort)  # the grace period is over
        cells.resume()
        await stopping
        with pytest.raises(EngineStopped):
            await big
        return engine

    engine = run(main())
    assert cells.at_resume is not None
    assert cells.positions - cells.at_resume <= CHUNK + 4
    assert engine.stats.passes_stopped == 1


def test_a_batch_runs_on_for_the_requests_still_waiting(lm: RNNLanguageModel) -> None:
    mine, theirs = long_seqs(lm, n=2, length=300, seed=2), long_seqs(lm, n=2, length=300, seed=3)
    want = score_rnn_tree(lm, theirs)  # alone, in one pass without checks
    cells = CountingCells(lm, pause_at=100)

    async def main():
        # a long gathering window puts both requests into one batch
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=200)) as engine:
            a = asyncio.create_task(engine.score(mine))
            b = asyncio.create_task(engine.score(theirs))
            assert await asyncio.to_thread(cells.paused.wait, 30)
            a.cancel()
            cells.resume()
            with pytest.raises(asyncio.CancelledError):
                await a
            return engine, await b

    engine, got = run(main())
    assert engine.stats.passes_stopped == 0 and engine.stats.kinds["score"].batches == 1
    for lp, w in zip(got.token_logprobs, want.logprobs, strict=True):
        assert lp == pytest.approx(w.tolist(), abs=1e-5)


def test_small_requests_run_between_the_chunks_of_a_big_pass(lm: RNNLanguageModel) -> None:
    seqs = long_seqs(lm, seed=6)
    whole = full_pass_positions(lm, seqs)
    want = score_rnn_tree(lm, seqs)  # the big request alone, in one pass without checks
    small_seqs = [[BOS_ID, 5, 6, EOS_ID]]
    small_want = score_rnn_tree(lm, small_seqs)
    cells = CountingCells(lm, pause_at=500)

    async def main():
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0)) as engine:
            big = asyncio.create_task(engine.score(seqs))
            assert await asyncio.to_thread(cells.paused.wait, 30)
            small = asyncio.create_task(engine.score(small_seqs))
            await wait_until(lambda: engine.queue_depth == 1)
            cells.resume()
            small_got = await small
            positions_then, big_done_then = cells.positions, big.done()
            return engine, small_got, positions_then, big_done_then, await big

    engine, small_got, positions_then, big_done_then, got = run(main())
    assert not big_done_then and positions_then < whole // 2  # served a chunk later, not a pass later
    assert small_got.token_logprobs == [small_want.logprobs[0].tolist()]
    assert got.token_logprobs == [lp.tolist() for lp in want.logprobs]  # the big pass is unchanged
    assert engine.stats.kinds["score"].batches == 2 and engine.tokens_in_flight == 0


def test_checks_change_no_number(lm: RNNLanguageModel) -> None:
    seqs = [*long_seqs(lm, n=3, length=200, seed=4), [BOS_ID, 5, 6, EOS_ID], [BOS_ID, 5, 7, EOS_ID]]
    queries = [[BOS_ID, 5], [BOS_ID, 5, 6, 7]]
    plain = score_rnn_tree(lm, seqs, queries)
    asked: list[float] = []

    def never() -> bool:
        asked.append(time.monotonic())
        return False

    checked = score_rnn_tree(lm, seqs, queries, should_stop=never, chunk_positions=16)
    assert len(asked) > 10  # it was asked, chunk after chunk
    assert all(torch.equal(a, b) for a, b in zip(plain.logprobs, checked.logprobs, strict=True))
    assert plain.next_logprobs is not None and checked.next_logprobs is not None
    assert torch.equal(plain.next_logprobs, checked.next_logprobs)
    assert (plain.computed, plain.requested) == (checked.computed, checked.requested)


def test_the_generic_path_checks_between_groups_with_the_same_numbers(lm: RNNLanguageModel) -> None:
    model = Wrapped(lm)  # the RNN through the generic path (no prefix sharing): score_each
    seqs = long_seqs(lm, n=6, length=40, seed=5)
    queries = [s[:35] for s in seqs[:3]]
    plain = score_each(model, seqs, queries, with_state=True)
    asked: list[bool] = []

    def ask(answer: bool) -> bool:
        asked.append(answer)
        return answer

    chunked = score_each(
        model, seqs, queries, with_state=True, should_stop=lambda: ask(False), chunk_positions=30
    )
    assert len(asked) == 6 + 3  # one group per sequence, one per query
    for a, b in zip(plain.logprobs, chunked.logprobs, strict=True):
        assert a.tolist() == pytest.approx(b.tolist(), abs=1e-5)
    assert plain.next_logprobs is not None and chunked.next_logprobs is not None
    assert torch.allclose(plain.next_logprobs, chunked.next_logprobs, atol=1e-5)
    assert torch.allclose(plain.states, chunked.states, atol=1e-5)
    asked.clear()
    with pytest.raises(PassStopped):
        score_each(model, seqs, should_stop=lambda: ask(True), chunk_positions=30)
    assert asked == [True]  # stopped at the first check, after the first group


# -- cost: tokens per request and in flight ------------------------------------------------------------
def test_a_request_past_its_token_limit_is_refused_before_it_queues(lm: RNNLanguageModel) -> None:
    async def main():
        config = EngineConfig(max_request_tokens=100, max_tokens_in_flight=150)
        async with Engine(lm, config) as engine:
            with pytest.raises(TooCostly) as err:
                await engine.score([[BOS_ID, *[5] * 60, EOS_ID]] * 2)  # 2 × 62 tokens
            with pytest.raises(TooCostly):
                await engine.next_token([[BOS_ID, *[5] * 100]])
            ok = await engine.score([[BOS_ID, *[5] * 98, EOS_ID]])  # exactly 100
            return err.value, ok, engine

    err, ok, engine = run(main())
    assert (err.tokens, err.limit, err.kind) == (124, 100, "score")
    assert len(ok.token_logprobs[0]) == 99
    assert engine.stats.kinds["score"].rejected == 1 and engine.stats.kinds["next_token"].rejected == 1
    assert engine.tokens_in_flight == 0


def test_tokens_in_flight_are_bounded_and_given_back(lm: RNNLanguageModel) -> None:
    async def main():
        # a long gathering window keeps requests queued, so the tokens in flight add up deterministically
        config = EngineConfig(max_wait_ms=60_000, max_request_tokens=100, max_tokens_in_flight=150)
        async with Engine(lm, config) as engine:
            first = asyncio.create_task(engine.score([[BOS_ID, *[5] * 78, EOS_ID]]))  # 80 tokens
            await wait_until(lambda: engine.tokens_in_flight == 80)
            with pytest.raises(TokensInFlight) as err:
                await engine.score([[BOS_ID, *[6] * 78, EOS_ID]])  # 80 more: 160 > 150
            withdrawn = asyncio.create_task(engine.score([[BOS_ID, *[6] * 68, EOS_ID]]))  # 70: fits
            await wait_until(lambda: engine.tokens_in_flight == 150)
            withdrawn.cancel()  # leaves the queue: its tokens with it
            with pytest.raises(asyncio.CancelledError):
                await withdrawn
            assert engine.tokens_in_flight == 80
            later = asyncio.create_task(engine.score([[BOS_ID, *[6] * 68, EOS_ID]]))
            await wait_until(lambda: engine.tokens_in_flight == 150)
            await engine.stop()  # runs what is queued without waiting out the window
            done = await asyncio.gather(first, later)
            return err.value, done, engine

    err, done, engine = run(main())
    assert (err.tokens, err.in_flight, err.limit) == (80, 80, 150)
    assert err.retry_after_s >= 1 and "150" in str(err)
    assert [len(r.token_logprobs[0]) for r in done] == [79, 69]
    assert engine.tokens_in_flight == 0


def test_cost_settings_are_checked_against_each_other() -> None:
    with pytest.raises(ValueError, match="max_request_tokens"):
        EngineConfig(max_request_tokens=200, max_tokens_in_flight=100)
    with pytest.raises(ValueError, match="chunk_positions"):
        EngineConfig(chunk_positions=0)
    EngineConfig(max_request_tokens=100, max_tokens_in_flight=100)


async def wait_until(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.005)
