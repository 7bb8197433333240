"""A generation's prefill runs in chunks: between two, the model's other requests go on (small
score/next-token requests, short prompts' generations, the running batch's decoding steps), and a
prefill nobody waits for any more (its client gone, its deadline passed) stops there. A long
prompt thus holds its model for a chunk at a time, not for its whole prefill, and chunking
changes no sample."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from model.inference.engine import DeadlineExceeded, Engine, EngineConfig, EngineObserver, EngineStopped
from model.inference.generation import GenerationRequest, generate
from model.inference.sampling import SamplingParams
from model.models.lm import RNNLanguageModel
from model.models.loading import load_model
from model.text.tokenizer import BOS_ID, EOS_ID

from .test_engine_chunks import CountingCells, run, wait_until

CHUNK = 64  # positions between two checks in these tests
LONG = 1500  # characters of the long prompt: a prefill of 2 layers × 1501 positions


@pytest.fixture
def lm(tiny_model_dir) -> RNNLanguageModel:
    model = load_model(tiny_model_dir)  # a fresh copy per test: its cell_step gets instrumented
    assert isinstance(model, RNNLanguageModel)
    return model


def long_prompt(lm: RNNLanguageModel, length: int = LONG, seed: int = 0) -> str:
    rng = random.Random(seed)
    pieces = lm.tokenizer.tokens[4:]
    return "".join(rng.choice(pieces) for _ in range(length))


def request(prompt: str, max_new_tokens: int = 4, seed: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens, sampling=SamplingParams(seed=seed))


class Log(EngineObserver):
    """What ran, in order, with how far the cells had got (``cells.positions``) at the time."""

    def __init__(self, cells: CountingCells) -> None:
        self.cells = cells
        self.events: list[tuple[str, int]] = []

    def on_batch(self, kind: str, requests: int, rows: int) -> None:
        self.events.append((kind, self.cells.positions))

    def first(self, kind: str) -> int:
        return next(at for k, at in self.events if k == kind)


def prefill_positions(lm: RNNLanguageModel, prompt: str) -> int:
    return (len(lm.tokenizer.encode(prompt).ids) + 1) * lm.net.config.num_layers


def test_small_requests_run_between_the_chunks_of_a_long_prefill(lm):
    prompt = long_prompt(lm)
    whole = prefill_positions(lm, prompt)
    cells = CountingCells(lm, pause_at=200)
    log = Log(cells)

    async def main():
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0), observer=log) as engine:
            long = asyncio.create_task(engine.generate(request(prompt)).collect())
            assert await asyncio.to_thread(cells.paused.wait, 30)  # the long prefill has started
            small = asyncio.create_task(engine.next_token([[BOS_ID, 5, 6]], top_k=3))
            short = asyncio.create_task(engine.generate(request("今天", max_new_tokens=3)).collect())
            await wait_until(lambda: engine.queue_depth == 2)
            cells.resume()
            return await small, await short, await long, engine

    _, short, long, engine = run(main())
    assert cells.at_resume is not None and whole > 2000
    # each ran a chunk or so after the pause, long before the prefill's end
    assert log.first("next_token") <= cells.at_resume + CHUNK + 8
    assert log.first("generate") < whole  # the short prompt's first decoding step
    short_done = [at for kind, at in log.events if kind == "generate"][2]  # its third (last) token
    assert short_done < whole  # it finished inside the long prefill
    assert engine.stats.passes_stopped == 0
    # chunking changed no sample
    for got, req in ((short, request("今天", max_new_tokens=3)), (long, request(prompt))):
        want = generate(lm, req)
        assert [(s.ids, s.text) for s in got] == [(s.ids, s.text) for s in want]


def positions_before_five_steps(lm: RNNLanguageModel, start_pass, **config) -> int:
    """With a generation running (no sample ends), start a long pass (``start_pass(engine)`` gives
    its awaitable) and count the cell positions computed until the running batch has taken five
    more decoding steps: less than the whole pass means the steps ran between its chunks."""
    with torch.no_grad():
        lm.net.decoder.bias[EOS_ID] = -1e4  # no sample ends: the running batch decodes all along
    cells = CountingCells(lm, pause_at=10**9)  # counts only

    async def main():
        settings = EngineConfig(chunk_positions=CHUNK, max_wait_ms=0, batch_prefill_tokens=0, **config)
        async with Engine(lm, settings) as engine:
            stream = engine.generate(request("今天", max_new_tokens=10**6))

            async def read() -> None:  # a reader that keeps up (else backpressure parks the stream)
                async for _ in stream:
                    pass

            async with stream:
                reader = asyncio.create_task(read())
                await wait_until(lambda: engine.stats.kinds["generate"].batches > 0)
                start = cells.positions
                long = asyncio.create_task(start_pass(engine))
                await wait_until(lambda: engine.queue_depth == 0)  # the long pass has begun
                steps_before = engine.stats.kinds["generate"].batches
                await wait_until(lambda: engine.stats.kinds["generate"].batches > steps_before + 5)
                ahead = cells.positions - start
            await long
            reader.cancel()
            return ahead

    return run(main())


def test_the_running_batch_decodes_between_the_chunks(lm):
    prompt = long_prompt(lm, seed=1)
    whole = prefill_positions(lm, prompt)
    ahead = positions_before_five_steps(lm, lambda engine: engine.generate(request(prompt)).collect())
    assert ahead < whole  # five decoding steps ran while the long prefill was still going


def test_a_prefill_nobody_waits_for_stops_within_a_chunk(lm):
    prompt = long_prompt(lm, seed=2)
    whole = prefill_positions(lm, prompt)
    cells = CountingCells(lm, pause_at=200)

    async def main():
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0)) as engine:
            stream = engine.generate(request(prompt))
            assert await asyncio.to_thread(cells.paused.wait, 30)
            stream.cancel()  # what the route does when its client goes away
            cells.resume()
            after = await engine.next_token([[BOS_ID, 5]], top_k=1)  # runs once the worker is free
            return engine, after

    engine, after = run(main())
    assert cells.at_resume is not None and len(after) == 1
    computed_after = cells.positions - cells.at_resume - 1 * 2  # the small request: 1 position, 2 layers
    assert computed_after <= CHUNK + 32, (computed_after, whole)  # a chunk, not the rest of ~3000
    assert engine.stats.passes_stopped == 1 and engine.active_rows == 0


def test_a_prefill_past_its_deadline_stops_and_says_so(lm):
    prompt = long_prompt(lm, seed=3)
    cells = CountingCells(lm, pause_at=200)

    async def main():
        async with Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0)) as engine:
            stream = engine.generate(request(prompt), timeout_s=1.0)
            with pytest.raises(DeadlineExceeded):
                await stream.collect()
            cells.resume()
            await engine.next_token([[BOS_ID, 5]], top_k=1)
            return engine

    engine = run(main())
    assert cells.at_resume is not None
    assert cells.positions - cells.at_resume - 2 <= CHUNK + 32
    assert engine.stats.passes_stopped == 1


def test_stop_past_its_grace_ends_a_prefill(lm):
    prompt = long_prompt(lm, seed=4)
    cells = CountingCells(lm, pause_at=200)

    async def main():
        engine = Engine(lm, EngineConfig(chunk_positions=CHUNK, max_wait_ms=0))
        await engine.start()
        stream = engine.generate(request(prompt))
        assert await asyncio.to_thread(cells.paused.wait, 30)
        stopping = asyncio.create_task(engine.stop(grace_s=0.2))
        await wait_until(lambda: engine._abort)
        cells.resume()
        await stopping
        with pytest.raises(EngineStopped):
            await stream.collect()

    run(main())
    assert cells.at_resume is not None and cells.positions - cells.at_resume <= CHUNK + 32


@pytest.mark.parametrize("kind", ["score", "alternatives"])
def test_the_running_batch_decodes_between_the_chunks_of_a_long_scoring_or_echo_pass(lm, kind):
    """A large /score or an echo of long prompts is one pass too: a generation beside it keeps
    getting tokens between its chunks (before, it waited for the whole pass)."""
    ids = [BOS_ID, *lm.tokenizer.encode(long_prompt(lm, seed=2)).ids, EOS_ID]
    whole = len(ids) * lm.net.config.num_layers * 3  # three such sequences
    seqs = [ids, ids[:-1], ids[:-2]]

    def start_pass(engine: Engine):
        return engine.score(seqs) if kind == "score" else engine.alternatives(seqs, top_k=2)

    ahead = positions_before_five_steps(lm, start_pass, prefix_sharing=False)
    assert ahead < whole  # five decoding steps ran while the pass was still going
