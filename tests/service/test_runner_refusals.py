"""The runner answers every engine refusal once (service/runner.py: ``refusal``), for the native
and the OpenAI routes alike; each API renders the ApiError in its own shape."""

from __future__ import annotations

import asyncio

import pytest

from model.inference.engine import DeadlineExceeded, EngineStopped, Overloaded
from model.inference.engine.types import TokensInFlight, TooCostly
from service.errors import ApiError
from service.runner import Generation, QueueFull, refusal


@pytest.mark.parametrize(
    ("raised", "status", "type_", "retry_after", "field"),
    [
        (Overloaded("generate", 256, 2.2), 503, "overloaded", "3", None),
        (TokensInFlight("score", 10, 95, 100, 4.0), 503, "overloaded", "4", None),
        (TooCostly("score", 200, 100), 413, "payload_too_large", None, "candidates"),
        (DeadlineExceeded("score did not finish before its deadline"), 504, "timeout", None, None),
        (EngineStopped("the engine is not running"), 503, "shutting_down", "5", None),
    ],
)
def test_each_engine_refusal_has_its_status_type_and_retry_after(raised, status, type_, retry_after, field):
    e = refusal(raised, "tiny", "candidates", "every candidate")
    assert isinstance(e, ApiError)
    assert (e.status, e.type, e.field) == (status, type_, field)
    assert (e.headers or {}).get("Retry-After") == retry_after


def test_a_full_queue_is_a_503_and_still_an_overloaded_for_callers_that_wait_for_room():
    e = refusal(Overloaded("generate", 7, 1.0))
    assert isinstance(e, QueueFull) and isinstance(e, Overloaded) and isinstance(e, ApiError)
    assert e.queued == 7 and e.message == "model busy: 7 requests are already waiting; retry later"
    assert refusal(e) is e  # mapped once


def test_a_generation_hands_its_events_over_and_its_refusals_mapped():
    class Stream:
        def __init__(self, events, end):
            self.events, self.end, self.cancelled = list(events), end, False

        async def __anext__(self):
            if self.events:
                return self.events.pop(0)
            raise self.end

        async def __aexit__(self, *exc):
            self.cancelled = True

    async def read(stream):
        got = []
        async with Generation(stream, "tiny") as gen:
            async for ev in gen:
                got.append(ev)
        return got

    ok = Stream([1, 2], StopAsyncIteration())
    assert asyncio.run(read(ok)) == [1, 2] and ok.cancelled
    late = Stream([1], DeadlineExceeded("generation did not finish before its deadline"))
    with pytest.raises(ApiError) as err:
        asyncio.run(read(late))
    assert err.value.status == 504 and late.cancelled
