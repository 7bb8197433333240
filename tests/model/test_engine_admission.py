"""The engine's admission on its own (model/inference/engine/admission.py): the queue bound, the
per-request and in-flight token bounds, each refusal counted once, tokens released once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from model.inference.engine.admission import Admission, retry_after
from model.inference.engine.types import (
    EngineConfig,
    EngineObserver,
    EngineStats,
    EngineStopped,
    Overloaded,
    TokensInFlight,
    TooCostly,
)


@dataclass
class Item:
    kind: str
    tokens: int
    released: bool = False


class Seen(EngineObserver):
    def __init__(self) -> None:
        self.rejected: list[tuple[str, str]] = []

    def on_rejected(self, kind: str, reason: str) -> None:
        self.rejected.append((kind, reason))


def admission(**config: int) -> tuple[Admission, EngineStats, Seen]:
    stats, seen = EngineStats(), Seen()
    return Admission(EngineConfig(**config), stats, seen), stats, seen


@pytest.mark.parametrize(
    ("waiting", "secs_each", "expected"),
    [(0, 0.01, 1.0), (10, 0.01, 1.0), (250, 0.01, 3.0), (10_000, 1.0, 60.0)],
)
def test_retry_after_is_the_wait_ahead_rounded_up_within_1_to_60_s(waiting, secs_each, expected):
    assert retry_after(waiting, secs_each) == expected


def test_a_stopped_engine_and_a_full_queue_are_refused_and_counted():
    adm, stats, seen = admission(max_queue=2)
    adm.admit_locked("score", queued=1, running=True)  # room
    with pytest.raises(EngineStopped):
        adm.admit_locked("generate", queued=0, running=False)
    with pytest.raises(Overloaded) as full:
        adm.admit_locked("score", queued=2, running=True)
    assert full.value.queued == 2 and full.value.retry_after_s >= 1
    assert seen.rejected == [("generate", "stopped"), ("score", "overloaded")]
    assert stats.kinds["generate"].rejected == stats.kinds["score"].rejected == 1


def test_a_request_past_its_token_limit_is_too_costly_whatever_the_load():
    adm, _, seen = admission(max_request_tokens=10, max_tokens_in_flight=20)
    adm.refuse_too_costly("next_token", 10)
    with pytest.raises(TooCostly) as err:
        adm.refuse_too_costly("next_token", 11)
    assert (err.value.tokens, err.value.limit) == (11, 10)
    assert seen.rejected == [("next_token", "too_costly")] and adm.tokens_in_flight == 0


def test_tokens_in_flight_are_reserved_refused_past_the_limit_and_released_once():
    adm, _, seen = admission(max_tokens_in_flight=10)
    a, b, c = Item("score", 6), Item("score", 5), Item("score", 4)
    adm.reserve_locked(a)
    with pytest.raises(TokensInFlight) as err:
        adm.reserve_locked(b)
    assert (err.value.tokens, err.value.in_flight, err.value.limit) == (5, 6, 10)
    adm.reserve_locked(c)
    assert adm.tokens_in_flight == 10
    adm.release_locked(a)
    adm.release_locked(a)  # withdrawn and then failed: counted out once
    assert adm.tokens_in_flight == 4 and a.released
    adm.refuse_in_flight_locked("score", 6)  # a look only: fits now, nothing reserved
    assert adm.tokens_in_flight == 4 and seen.rejected == [("score", "overloaded")]


def test_no_limits_admit_everything():
    adm, _, seen = admission()
    adm.refuse_too_costly("score", 10**9)
    adm.reserve_locked(Item("score", 10**9))
    assert adm.tokens_in_flight == 10**9 and seen.rejected == []


def test_the_retry_estimates_follow_the_passes():
    adm, _, _ = admission(max_queue=1, max_tokens_in_flight=1_000)
    for _ in range(50):
        adm.observe_request(1.0)
        adm.observe_tokens(10.0, 1_000)
    assert adm.secs_per_request == pytest.approx(1.0, rel=1e-3)
    assert adm.secs_per_token == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(Overloaded) as full:
        adm.admit_locked("score", queued=5, running=True)
    assert full.value.retry_after_s == 5.0
    adm.reserve_locked(Item("score", 900))
    with pytest.raises(TokensInFlight) as busy:
        adm.reserve_locked(Item("score", 200))
    assert busy.value.retry_after_s == 9.0
