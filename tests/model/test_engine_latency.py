"""Latency of the engine's one-shot requests: an idle engine starts a lone request at once, yet
requests that arrive together or while it is busy still share a batch; each request can learn where
its time went (:class:`PassTiming`)."""

from __future__ import annotations

import asyncio

import pytest

from model.inference.engine import Engine, EngineConfig
from model.inference.engine.core import PassTiming
from model.models.lm import RNNLanguageModel
from model.models.loading import load_model
from model.text.tokenizer import BOS_ID

from .test_engine_chunks import CountingCells

WINDOW_MS = 1_000  # a gathering window far longer than any pass of the tiny model


@pytest.fixture
def lm(tiny_model_dir) -> RNNLanguageModel:
    model = load_model(tiny_model_dir)  # a fresh copy per test: its cell_step may get instrumented
    assert isinstance(model, RNNLanguageModel)
    return model


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def prefix(lm: RNNLanguageModel, text: str) -> list[int]:
    return [BOS_ID, *lm.tokenizer.encode(text).ids]


async def lone(engine: Engine, ids: list[int]) -> PassTiming:
    timing = PassTiming()
    await engine.next_token([ids], top_k=3, timing=timing)
    return timing


def test_an_idle_engine_answers_a_lone_request_without_the_gathering_window(lm: RNNLanguageModel) -> None:
    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=WINDOW_MS)) as engine:
            first = await lone(engine, prefix(lm, "今天"))  # a new engine assumes load: it waits once
            waited = engine.stats.kinds["next_token"].queue_wait_s
            later = [await lone(engine, prefix(lm, t)) for t in ("今天天气", "你先走", "厨房里")]
            return first, waited, later, engine.stats

    first, waited, later, stats = run(main())
    assert first.queue_s >= 0.9 * WINDOW_MS / 1000  # no company came within the window
    assert stats.kinds["next_token"].batches == 4 and stats.kinds["next_token"].rows == 4
    # once a lone batch shows the engine idle, a lone request starts at once (the engine's own stats)
    assert stats.kinds["next_token"].queue_wait_s - waited < 0.5
    for t in later:
        assert 0 <= t.queue_s < 0.5 and t.model_s > 0 and t.select_s >= 0


def test_requests_submitted_together_share_one_batch_on_an_idle_engine(lm: RNNLanguageModel) -> None:
    texts = ["今天", "今天天气", "你先走", "厨房里", "新华社", "很好"]

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=WINDOW_MS)) as engine:
            await engine.next_token([prefix(lm, "你")], top_k=3)
            await lone(engine, prefix(lm, "我"))  # idle now: this one started at once
            before = engine.stats.kinds["next_token"].batches
            got = await asyncio.gather(*[engine.next_token([prefix(lm, t)], top_k=3) for t in texts])
            return got, engine.stats.kinds["next_token"].batches - before, engine.stats

    got, batches, stats = run(main())
    assert batches == 1  # one gather, one batch: the idle start waits for the end of the loop's turn
    assert [len(g) for g in got] == [1] * len(texts)
    assert stats.kinds["next_token"].rows == 2 + len(texts)


def test_requests_arriving_while_the_worker_is_busy_share_the_next_batch(lm: RNNLanguageModel) -> None:
    cells = CountingCells(lm, pause_at=1)  # the worker parks inside the first pass until resumed
    texts = ["今天", "你先走", "厨房里", "新华社"]

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=0, warmup=False)) as engine:
            busy = asyncio.create_task(engine.score([prefix(lm, "今天天气很好")]))
            assert await asyncio.to_thread(cells.paused.wait, 30)
            waiting = []
            for t in texts:  # one per event-loop turn: no gather helps them
                waiting.append(asyncio.create_task(engine.next_token([prefix(lm, t)], top_k=3)))
                await asyncio.sleep(0.01)
            cells.resume()
            await busy
            got = await asyncio.gather(*waiting)
            return got, engine.stats

    got, stats = run(main())
    assert [len(g) for g in got] == [1] * len(texts)
    assert stats.kinds["next_token"].requests == len(texts)
    assert stats.kinds["next_token"].batches == 1 and stats.kinds["next_token"].rows == len(texts)


def test_a_burst_makes_the_next_lone_request_wait_for_company(lm: RNNLanguageModel) -> None:
    """Batching under load is kept: after a batch of several requests, the next one waits for company."""
    window_s = 0.3

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=1000 * window_s)) as engine:
            await asyncio.gather(*[engine.next_token([prefix(lm, t)], top_k=3) for t in ("今天", "你先走")])
            after_burst = await lone(engine, prefix(lm, "厨房"))
            idle_again = await lone(engine, prefix(lm, "厨房里"))
            return after_burst, idle_again

    after_burst, idle_again = run(main())
    assert after_burst.queue_s >= 0.9 * window_s
    assert idle_again.queue_s < 0.9 * window_s
