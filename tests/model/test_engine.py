"""The engine: batched results equal one-at-a-time results; queue, deadlines, cancellation, stop."""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import replace

import pytest
import torch

from model.inference.engine import (
    DeadlineExceeded,
    DecodeBatch,
    Engine,
    EngineConfig,
    EngineObserver,
    EngineStopped,
    Overloaded,
    choose_tokens,
)
from model.inference.engine.decode import Row
from model.inference.generation import GenerationRequest, generate, generate_stream, sample_choosers
from model.inference.sampling import SamplingParams, StoppingCriteria, TokenChooser
from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.loading import load_model
from model.models.prefix import score_tree
from model.text.tokenizer import BOS_ID, EOS_ID

TOL = 1e-5


@pytest.fixture(scope="module")
def lm(tiny_model_dir) -> RNNLanguageModel:
    return load_model(tiny_model_dir)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def ids(lm: LanguageModel, text: str, eos: bool = True) -> list[int]:
    return [BOS_ID, *lm.tokenizer.encode(text).ids, *([EOS_ID] if eos else [])]


class Recorder(EngineObserver):
    def __init__(self) -> None:
        self.batches: list[tuple[str, int, int]] = []
        self.waits: list[tuple[str, float]] = []
        self.positions: list[tuple[int, int]] = []
        self.rejected: list[tuple[str, str]] = []

    def on_batch(self, kind, requests, rows):
        self.batches.append((kind, requests, rows))

    def on_queue_wait(self, kind, seconds):
        self.waits.append((kind, seconds))

    def on_positions(self, computed, requested):
        self.positions.append((computed, requested))

    def on_rejected(self, kind, reason):
        self.rejected.append((kind, reason))


class NoEos(LanguageModel):
    """A model that never ends a sentence (so a generation runs until stopped); fallback path."""

    kind = "no-eos"

    def __init__(self, inner: RNNLanguageModel) -> None:
        self.inner, self.tokenizer = inner, inner.tokenizer

    def sequence_logprobs(self, seqs):
        return self.inner.sequence_logprobs(seqs)

    def start_state(self, batch_size):
        return self.inner.start_state(batch_size)

    def step(self, state, ids):
        logprobs, state = self.inner.step(state, ids)
        return logprobs.index_fill(1, torch.tensor([EOS_ID]), float("-inf")), state

    def select_state(self, state, rows):
        return self.inner.select_state(state, rows)

    def concat_states(self, states):
        return self.inner.concat_states(states)


TEXTS = ["厨房里食油用完了", "厨房里石油用完了", "你先走", "你走先", "", "今天天气很好", "😀新华社"]


# -- dynamic batching ---------------------------------------------------------------------------
def test_concurrent_score_and_next_token_are_batched_and_equal_alone(lm: RNNLanguageModel) -> None:
    rec = Recorder()
    requests = [[ids(lm, t) for t in TEXTS[i : i + 3]] for i in range(len(TEXTS))]
    prefixes = [[ids(lm, t, eos=False)] for t in TEXTS] + [[ids(lm, "厨房", eos=False), [BOS_ID]]]

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=1000), observer=rec) as engine:
            scores = [engine.score(r) for r in requests]
            nexts = [engine.next_token(p, top_k=5) for p in prefixes]
            results = await asyncio.gather(*scores, *nexts)
            return results, engine.stats

    results, stats = run(main())
    score_results, next_results = results[: len(requests)], results[len(requests) :]
    for req, res in zip(requests, score_results, strict=True):
        for s, got, total in zip(req, res.token_logprobs, res.logprobs, strict=True):
            want = lm.sequence_logprobs([s])[0]
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, atol=TOL, rtol=0)
            assert total == pytest.approx(float(want.sum()), abs=TOL)
        assert res.positions_requested == sum(len(s) - 1 for s in req)
        assert res.positions_computed == len({tuple(s[:i]) for s in req for i in range(1, len(s))})
    for pre, res in zip(prefixes, next_results, strict=True):
        want = lm.next_token_logprobs(pre)
        for row, nt in enumerate(res):
            torch.testing.assert_close(nt.logprobs, want[row], atol=TOL, rtol=0)
            assert nt.top_ids == want[row].topk(5).indices.tolist()
            p = want[row].exp()
            assert nt.entropy == pytest.approx(float(-(p * want[row]).nansum()), abs=1e-4)
    # everything arrived within the gathering window: one batch of each kind
    assert [b for b in rec.batches if b[0] == "score"] == [("score", len(requests), sum(map(len, requests)))]
    assert [b[:2] for b in rec.batches if b[0] == "next_token"] == [("next_token", len(prefixes))]
    assert stats.kinds["score"].requests == len(requests) and stats.kinds["score"].batches == 1
    computed, requested = rec.positions[0]
    assert computed < requested  # shared prefixes (and duplicates across requests) ran once
    assert len(rec.waits) == len(requests) + len(prefixes) and all(w >= 0 for _, w in rec.waits)


def test_batch_limits_split_the_queue(lm: RNNLanguageModel) -> None:
    rec = Recorder()
    config = EngineConfig(max_wait_ms=1000, max_batch_sequences=4)

    async def main():
        async with Engine(lm, config, observer=rec) as engine:
            return await asyncio.gather(*[engine.score([ids(lm, t), ids(lm, t + "吧")]) for t in TEXTS[:6]])

    results = run(main())
    assert [b for b in rec.batches if b[0] == "score"] == [("score", 2, 4)] * 3
    for t, res in zip(TEXTS[:6], results, strict=True):
        want = lm.sequence_logprobs([ids(lm, t + "吧")])[0]
        torch.testing.assert_close(
            torch.tensor(res.token_logprobs[1], dtype=torch.float64), want, atol=TOL, rtol=0
        )


def test_dense_mode_and_fallback_models_give_the_same_scores(lm: RNNLanguageModel) -> None:
    seqs = [ids(lm, t) for t in TEXTS]
    want = lm.sequence_logprobs(seqs)

    async def main(model, config):
        async with Engine(model, config) as engine:
            return await engine.score(seqs)

    for model, config in [(lm, EngineConfig(prefix_sharing=False)), (NoEos(lm), EngineConfig())]:
        res = run(main(model, config))
        assert res.positions_computed == res.positions_requested
        for got, w in zip(res.token_logprobs, want, strict=True):
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), w, atol=TOL, rtol=0)


def test_bad_ids_are_refused_before_queueing(lm: RNNLanguageModel) -> None:
    async def main():
        async with Engine(lm) as engine:
            with pytest.raises(ValueError, match="outside the vocabulary"):
                await engine.score([[BOS_ID, lm.vocab_size]])
            with pytest.raises(ValueError, match="start token"):
                await engine.next_token([[]])
            assert (await engine.score([])).logprobs == []
            assert await engine.next_token([]) == []
            return engine.queue_depth

    assert run(main()) == 0


# -- sampling parts, batched --------------------------------------------------------------------
CHOOSER_CASES = [
    SamplingParams(temperature=0),
    SamplingParams(temperature=0, repetition_penalty=1.3),
    SamplingParams(seed=1),
    SamplingParams(seed=2, temperature=0.7),
    SamplingParams(seed=3, top_k=3),
    SamplingParams(seed=4, top_p=0.5),
    SamplingParams(seed=5, temperature=1.5, top_k=10, top_p=0.9, repetition_penalty=1.2),
    SamplingParams(seed=6, allow_unk=True),
    SamplingParams(temperature=0, allow_unk=True),
]


def test_choose_tokens_equals_each_chooser_alone(lm: RNNLanguageModel) -> None:
    logprobs = lm.next_token_logprobs([ids(lm, t, eos=False) for t in ["厨房", "你", "今天", "", "新华"] * 2])
    logprobs = logprobs[: len(CHOOSER_CASES)].repeat(1, 1)
    histories = [ids(lm, "厨房里的油")[1:-1] for _ in CHOOSER_CASES]
    batched = [TokenChooser(p) for p in CHOOSER_CASES]
    alone = copy.deepcopy(batched)
    for _ in range(5):  # several draws: the generators advance the same way
        got = choose_tokens(batched, logprobs, histories)
        want = [c.next_id(logprobs[r], histories[r]) for r, c in enumerate(alone)]
        assert got == want


# -- continuous batching ------------------------------------------------------------------------
GEN_CASES = [
    GenerationRequest("厨房里", max_new_tokens=12, sampling=SamplingParams(temperature=0)),
    GenerationRequest("你", max_new_tokens=20, sampling=SamplingParams(seed=11)),
    GenerationRequest("", max_new_tokens=15, sampling=SamplingParams(seed=3, top_k=5), n=3),
    GenerationRequest(
        "今天",
        max_new_tokens=25,
        sampling=SamplingParams(seed=7, temperature=0.8, top_p=0.9, repetition_penalty=1.3),
    ),
    GenerationRequest("人民", max_new_tokens=30, sampling=SamplingParams(seed=5), stop=["报", "了"]),
    GenerationRequest("新华社", max_new_tokens=1, sampling=SamplingParams(seed=9), n=2),
    GenerationRequest("新华社", max_new_tokens=0, sampling=SamplingParams(seed=9)),
]


def test_continuous_batching_equals_reference_generate(lm: RNNLanguageModel) -> None:
    rec = Recorder()

    async def one(engine: Engine, request: GenerationRequest, delay: float):
        await asyncio.sleep(delay)  # join while others are mid-generation
        return await engine.generate(request).collect()

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=0), observer=rec) as engine:
            return await asyncio.gather(*[one(engine, r, 0.01 * i) for i, r in enumerate(GEN_CASES * 2)])

    results = run(main())
    for request, got in zip(GEN_CASES * 2, results, strict=True):
        want = generate(lm, request)
        assert [(s.ids, s.text, s.finish_reason) for s in got] == [
            (s.ids, s.text, s.finish_reason) for s in want
        ]
        if request.sampling.seed is not None:
            assert [s.seed for s in got] == [s.seed for s in want]
        for g, w in zip(got, want, strict=True):
            assert g.logprobs == pytest.approx(w.logprobs, abs=TOL)
    rows = [r for kind, _, r in rec.batches if kind == "generate"]
    assert max(rows) >= 3  # at least the n=3 request's samples were rows of one batch


def test_rows_join_and_leave_between_steps(lm: RNNLanguageModel) -> None:
    """DecodeBatch alone, deterministically: requests join at chosen steps of a running batch."""
    joins = {0: GEN_CASES[1:3], 2: GEN_CASES[3:5], 5: GEN_CASES[:1]}
    batch = DecodeBatch(lm)
    got: dict[tuple[int, int], list[int]] = {}
    step, sizes = 0, []
    while step <= max(joins) or batch.rows:
        for req in joins.get(step, []):
            res = score_tree(lm, [], [[BOS_ID, *lm.tokenizer.encode(req.prompt).ids]], with_state=True)
            choosers = sample_choosers(req)
            stopping = StoppingCriteria(req.max_new_tokens, req.stop)
            prompt = lm.tokenizer.encode(req.prompt).ids
            rows = [Row(id(req), i, c, stopping, list(prompt)) for i, c in enumerate(choosers)]
            index = [0] * len(rows)
            batch.add(rows, res.next_logprobs[index], lm.select_state(res.states, index))
        if batch.rows:
            sizes.append(len(batch))
            for row, ev in batch.choose():
                got.setdefault((row.owner, ev.sample), []).append(ev.token_id)
            batch.step()
        step += 1
    for reqs in joins.values():
        for req in reqs:
            for i, s in enumerate(generate(lm, req)):
                assert got[(id(req), i)] == s.ids
    assert max(sizes) > 3 and len(set(sizes)) > 2  # rows came and went


def test_stream_events_equal_generate_stream(lm: RNNLanguageModel) -> None:
    request = GenerationRequest("厨房", max_new_tokens=10, sampling=SamplingParams(seed=4), n=2)

    async def main():
        async with Engine(lm) as engine:
            stream = engine.generate(request)
            assert stream.seed == 4
            return [ev async for ev in stream]

    got = run(main())
    want = list(generate_stream(lm, request))
    assert [(e.sample, e.token_id, e.text, e.finish_reason) for e in got] == [
        (e.sample, e.token_id, e.text, e.finish_reason) for e in want
    ]
    assert [e.logprob for e in got] == pytest.approx([e.logprob for e in want], abs=TOL)


def test_seeded_request_is_reproducible_whatever_else_runs(lm: RNNLanguageModel) -> None:
    seeded = GenerationRequest("今天", max_new_tokens=40, sampling=SamplingParams(seed=1234, temperature=1.2))
    noise = [
        GenerationRequest(t, max_new_tokens=30, sampling=SamplingParams(temperature=1.5))
        for t in ["你", "厨房", "新华", "", "人民"]
    ]

    async def main(with_traffic: bool):
        async with Engine(lm, EngineConfig(max_wait_ms=0)) as engine:
            others = [engine.generate(r).collect() for r in noise] if with_traffic else []
            scores = [engine.score([ids(lm, t) for t in TEXTS])] if with_traffic else []
            mine = engine.generate(seeded).collect()
            got, *_ = await asyncio.gather(mine, *others, *scores)
            return got[0]

    alone, busy = run(main(False)), run(main(True))
    assert (alone.ids, alone.text) == (busy.ids, busy.text)
    assert alone.ids == generate(lm, seeded)[0].ids
    unseeded = GenerationRequest("今天", max_new_tokens=5)

    async def seed_reported():
        async with Engine(lm) as engine:
            stream = engine.generate(unseeded)
            return stream.seed, await stream.collect()

    seed, samples = run(seed_reported())
    assert samples[0].seed == seed
    assert samples[0].ids == generate(lm, replace(unseeded, sampling=SamplingParams(seed=seed)))[0].ids


def test_a_seeded_sample_is_the_same_among_63_sampled_neighbours(lm: RNNLanguageModel) -> None:
    """Batch invariance of the sampler: one decode step draws all 64 rows at once, and a row's
    token depends on its own seed, step and scores only (model/inference/sampling.py)."""
    mine = GenerationRequest("厨房", max_new_tokens=30, sampling=SamplingParams(seed=99, top_p=0.9))
    crowd = [
        GenerationRequest(t, max_new_tokens=30, sampling=SamplingParams(seed=s, temperature=1.3))
        for s, t in enumerate(["你", "新华", "", "人民", "今天", "中国", "他们"] * 9)
    ]

    async def main(neighbours: list[GenerationRequest]):
        async with Engine(lm, EngineConfig(max_wait_ms=0, max_rows=64)) as engine:
            streams = [engine.generate(r).collect() for r in [mine, *neighbours]]
            return (await asyncio.gather(*streams))[0][0]

    alone, among = run(main([])), run(main(crowd))
    assert len(crowd) == 63
    assert (alone.ids, alone.text) == (among.ids, among.text)
    assert alone.ids == generate(lm, mine)[0].ids  # and the same as the plain library loop


def test_a_short_prompt_fed_inside_a_running_batch_samples_what_it_samples_alone(
    lm: RNNLanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short prompt that arrives while others decode joins their batch from the start state and
    is fed a token per step (no prefill pass of its own): it says nothing until its prompt is in,
    then draws exactly the tokens it draws alone (products batch-invariant, so exactly)."""
    exact = copy.deepcopy(lm)
    exact.set_numerics(batch_invariant=True)
    with torch.no_grad():  # no <eos>: the busy neighbours are still decoding when the late one comes
        exact.net.decoder.bias[EOS_ID] = -1e4
    joined: list[int] = []
    join_fresh = DecodeBatch.join_fresh

    def counting(self: DecodeBatch, rows: list[Row]) -> None:
        joined.append(len(rows))
        join_fresh(self, rows)

    monkeypatch.setattr(DecodeBatch, "join_fresh", counting)
    mine = GenerationRequest("厨房", max_new_tokens=12, n=2, sampling=SamplingParams(seed=7, top_p=0.9))
    busy = [
        GenerationRequest(t, max_new_tokens=400, sampling=SamplingParams(seed=s))
        for s, t in enumerate(["你", "人民"])
    ]

    async def main():
        async with Engine(exact, EngineConfig(max_wait_ms=0)) as engine:
            running = [engine.generate(r) for r in busy]
            for stream in running:
                stream.max_backlog = None  # read only at the end: never paused
            await wait_until(lambda: engine.active_rows == len(busy))
            late = await engine.generate(mine).collect()
            await asyncio.gather(*(s.collect() for s in running))
            return late

    late = run(main())
    assert joined == [2]  # its two samples were fed in the batch
    alone = generate(exact, mine)
    assert [(s.ids, s.text) for s in late] == [(s.ids, s.text) for s in alone]


# -- cancellation, overload, deadlines, stop ----------------------------------------------------
async def wait_until(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


def endless(prompt: str = "你", n: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt, max_new_tokens=10**9, sampling=SamplingParams(seed=0), n=n)


def test_cancel_frees_the_rows_at_once(lm: RNNLanguageModel) -> None:
    async def main():
        async with Engine(NoEos(lm)) as engine:
            stream = engine.generate(endless(n=2))
            got = [await stream.__anext__() for _ in range(4)]
            assert engine.active_rows == 2
            stream.cancel()
            await wait_until(lambda: engine.active_rows == 0)
            assert [ev async for ev in stream] == []  # a cancelled stream ends
            generated = engine.stats.tokens_generated
            await asyncio.sleep(0.05)
            assert engine.stats.tokens_generated == generated  # nothing runs for it any more

            # a client that disconnects: the task reading the stream is cancelled
            async def reader():
                async with engine.generate(endless()) as s:
                    async for _ in s:
                        pass

            task = asyncio.create_task(reader())
            await wait_until(lambda: engine.active_rows == 1)
            task.cancel()
            await wait_until(lambda: engine.active_rows == 0)

            # leaving an `async with` early (break) frees the row as well
            async with engine.generate(endless()) as s:
                async for _ in s:
                    break
            await wait_until(lambda: engine.active_rows == 0)
            return got, engine.stats.cancelled

    got, cancelled = run(main())
    assert [e.sample for e in got] == [0, 1, 0, 1]
    assert cancelled == 3


def test_full_queue_raises_overloaded_immediately(lm: RNNLanguageModel) -> None:
    rec = Recorder()
    # a long gathering window keeps requests queued, so the queue fills deterministically
    config = EngineConfig(max_wait_ms=60_000, max_queue=2)

    async def main():
        engine = Engine(lm, config, observer=rec)
        await engine.start()
        waiting = [asyncio.create_task(engine.score([ids(lm, t)])) for t in TEXTS[:2]]
        await wait_until(lambda: engine.queue_depth == 2)
        # were these not refused at once, they would wait out the 60 s window (and time the test out)
        with pytest.raises(Overloaded) as err:
            await engine.score([ids(lm, "你先走")])
        with pytest.raises(Overloaded):
            engine.generate(GenerationRequest("你"))
        await engine.stop()  # stopping runs what is queued without waiting out the window
        done = await asyncio.gather(*waiting)
        return err.value, done

    err, done = run(main())
    assert err.retry_after_s >= 1 and err.queued == 2
    assert [len(r.logprobs) for r in done] == [1, 1]
    assert rec.rejected == [("score", "overloaded"), ("generate", "overloaded")]


def test_deadlines(lm: RNNLanguageModel) -> None:
    async def main():
        async with Engine(NoEos(lm), EngineConfig(max_wait_ms=60_000)) as engine:
            t0 = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await engine.score([ids(lm, "你先走")], timeout_s=0.05)
            assert time.monotonic() - t0 < 30  # not the 60 s window
            assert engine.queue_depth == 0  # the expired request left the queue
            stream = engine.generate(endless(), timeout_s=0.2)
            with pytest.raises(DeadlineExceeded):
                async for _ in stream:
                    pass
            await wait_until(lambda: engine.active_rows == 0)

    run(main())


def test_stop_finishes_in_flight_work_then_refuses(lm: RNNLanguageModel) -> None:
    async def main():
        engine = Engine(lm, EngineConfig(max_wait_ms=60_000))
        await engine.start()
        request = GenerationRequest("你", max_new_tokens=5, sampling=SamplingParams(seed=3))
        short = asyncio.create_task(engine.generate(request).collect())
        queued = asyncio.create_task(engine.score([ids(lm, "你先走")]))  # waiting out a long window
        await wait_until(lambda: len(engine._oneshot) == 1)  # the score waits for company
        await engine.stop(grace_s=60)  # returns as soon as both are done
        samples, scored = await short, await queued
        with pytest.raises(EngineStopped):
            await engine.score([ids(lm, "你")])
        with pytest.raises(EngineStopped):
            engine.generate(GenerationRequest("你"))
        return samples, scored

    samples, scored = run(main())
    want = generate(lm, GenerationRequest("你", max_new_tokens=5, sampling=SamplingParams(seed=3)))
    assert (samples[0].ids, samples[0].finish_reason) == (want[0].ids, want[0].finish_reason)
    assert len(scored.token_logprobs[0]) == 4


def test_stop_ends_what_outlives_the_grace_period(lm: RNNLanguageModel) -> None:
    async def main():
        engine = Engine(NoEos(lm))
        await engine.start()
        endless_stream = engine.generate(endless())
        await endless_stream.__anext__()
        await engine.stop(grace_s=0.1)
        with pytest.raises(EngineStopped):
            async for _ in endless_stream:
                pass
        return engine.active_rows

    assert run(main()) == 0


def test_generate_rejects_impossible_requests(lm: RNNLanguageModel) -> None:
    async def main():
        async with Engine(lm, EngineConfig(max_rows=4)) as engine:
            with pytest.raises(ValueError, match="max_rows"):
                engine.generate(GenerationRequest("你", n=5))
            with pytest.raises(ValueError, match="n must be"):
                engine.generate(GenerationRequest("你", n=0))
            # more rows than fit at once: the rest wait for free rows, results unchanged
            reqs = [
                GenerationRequest("你", max_new_tokens=6, sampling=SamplingParams(seed=i), n=3)
                for i in range(3)
            ]
            return await asyncio.gather(*[engine.generate(r).collect() for r in reqs]), reqs

    results, reqs = run(main())
    for got, req in zip(results, reqs, strict=True):
        assert [s.ids for s in got] == [s.ids for s in generate(lm, req)]


# -- text in, model.inference.scoring results out -----------------------------------------------------------
def test_text_frontend_equals_model_scoring(lm: RNNLanguageModel) -> None:
    from model.inference.engine.text import next_token_with_engine, score_with_engine
    from model.inference.scoring import ScoreOptions
    from model.inference.scoring import next_token_distribution as plain_next
    from model.inference.scoring import score_candidates as plain_score

    options = [
        ScoreOptions(),
        ScoreOptions(context="厨房里", normalize="token", length_bonus=0.5),
        ScoreOptions(bos=False, eos=False, lm_weight=0.3),
    ]
    candidates = ["食油用完了", "石油用完了", "", "😀"]
    external = [0.0, -1.0, 2.5, 0.1]

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=50)) as engine:
            ranks = await asyncio.gather(
                *[score_with_engine(engine, candidates, o, external) for o in options]
            )
            nexts = await next_token_with_engine(engine, ["厨房", "", "😀"], top_k=4)
            with pytest.raises(ValueError, match="external_scores"):
                await score_with_engine(engine, candidates, options[0], [1.0])
            return ranks, nexts

    ranks, nexts = run(main())
    for o, got in zip(options, ranks, strict=True):
        want = plain_score(lm, candidates, o, external)
        assert got.ranking == want.ranking
        for g, w in zip(got.results, want.results, strict=True):
            fields = ("text", "num_tokens", "oov", "rank", "tokens")
            assert [getattr(g, f) for f in fields] == [getattr(w, f) for f in fields]
            assert g.score == pytest.approx(w.score, abs=TOL)
            assert g.token_logprobs == pytest.approx(w.token_logprobs, abs=TOL)
        assert got.positions <= want.positions
    for g, w in zip(nexts, plain_next(lm, ["厨房", "", "😀"], top_k=4), strict=True):
        assert (g.tokens, g.oov, [t.id for t in g.next]) == (w.tokens, w.oov, [t.id for t in w.next])
        assert g.entropy == pytest.approx(w.entropy, abs=1e-5)
        assert [t.logprob for t in g.next] == pytest.approx([t.logprob for t in w.next], abs=TOL)
