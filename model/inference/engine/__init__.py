"""The serving engine: dynamic batching, prefix-shared scoring and continuous batching.

One :class:`Engine` per served model. It owns one worker thread that does all the torch work
(in ``torch.inference_mode``), so the event loop never blocks; callers await results.

Wiring it into a web service::

    from model.inference.engine import Engine, EngineConfig, EngineObserver, Overloaded, DeadlineExceeded, EngineStopped

    engine = Engine(lm, EngineConfig(max_wait_ms=2, max_queue=256), observer=MyPrometheusObserver())
    await engine.start()                      # in the lifespan; returns once warmed up
    ...
    await engine.stop(grace_s=10)             # on shutdown: finish in-flight work, then cancel

    # POST /score: every candidate as ids, [<bos>, *context, *candidate, <eos>] (bos/eos per flags)
    res = await engine.score([ids, ...], timeout_s=None)
    res.token_logprobs[i]       # list[float]: log P(s[t] | s[:t]) for t >= 1 (natural log)
    res.logprobs[i]             # their sum
    res.positions_requested, res.positions_computed   # this request alone (its trie bound)

    # POST /next-token: prefixes as ids, each [<bos>, *ids]
    [nt] = await engine.next_token([prefix], top_k=10)
    nt.top_ids, nt.top_logprobs, nt.entropy, nt.logprobs   # logprobs: (V,) float32 CPU tensor

    # POST /generate (streamed or not): a model.inference.generation.GenerationRequest
    stream = engine.generate(request)         # raises Overloaded at once; stream.seed = seed used
    async with stream:                        # leaving the block (client gone) frees its rows
        async for ev in stream:               # model.inference.generation.TokenEvent, as generate_stream
            ...                               # ev.sample, ev.token_id, ev.text, ev.logprob, ev.finish_reason
    samples = await engine.generate(request).collect()   # == model.inference.generation.generate(lm, request)

    # or text in, model.inference.scoring results out (drop-in for score_candidates / next_token_distribution):
    from model.inference.engine.text import score_with_engine, next_token_with_engine
    ranking = await score_with_engine(engine, candidates, ScoreOptions(...), external_scores)
    dists = await next_token_with_engine(engine, texts, top_k)

Errors: :class:`Overloaded` (queue full; ``retry_after_s`` → 429/503 + Retry-After),
:class:`DeadlineExceeded` (→ 504), :class:`EngineStopped` (→ 503), ``ValueError`` for ids outside
the vocabulary, empty prefixes or ``n`` out of range (→ 422; the service validates first).

Metrics: pass an :class:`EngineObserver` subclass (``on_queue_wait(kind, s)``, ``on_batch(kind,
requests, rows)``, ``on_positions(computed, requested)``, ``on_generated(tokens)``,
``on_rejected(kind, reason)``; kinds ``score``, ``next_token``, ``generate``). Hooks run on the
worker thread (``on_rejected`` also on the event loop): keep them fast and thread-safe.
``engine.stats`` holds running totals; ``engine.queue_depth`` and ``engine.active_rows`` are gauges.

Guarantees (tests/model/test_engine.py): batched results equal each request run alone (1e-5), and a
generation equals :func:`model.inference.generation.generate` for the same request and seed, whatever else
runs beside it.

Threads: the worker calls ``torch.set_num_threads(config.threads or <CPUs this process may use>)``
once, at start. That setting is process-wide; one engine (or the sum over engines) should not
ask for more threads than there are cores, or intra-op threads fight each other. The event loop
thread does no torch work beyond slicing finished results.
"""

from model.inference.engine.core import Engine
from model.inference.engine.decode import DecodeBatch
from model.inference.engine.stream import GenerationStream
from model.inference.engine.types import (
    DeadlineExceeded,
    EngineConfig,
    EngineError,
    EngineObserver,
    EngineStats,
    EngineStopped,
    Overloaded,
    ScoreResult,
)
from model.inference.sampling import choose_tokens

__all__ = [
    "DeadlineExceeded",
    "DecodeBatch",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineObserver",
    "EngineStats",
    "EngineStopped",
    "GenerationStream",
    "Overloaded",
    "ScoreResult",
    "choose_tokens",
]
