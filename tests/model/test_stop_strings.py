"""Stop strings, incrementally: the same decisions, hold-back and cut as the whole-text check,
at a cost per token that does not grow with the stop strings' length (issue 13, item 8)."""

from __future__ import annotations

import asyncio
import random

import pytest

from model.inference.engine import Engine, EngineConfig
from model.inference.engine.decode import ShownTokenEvent
from model.inference.generation import GenerationRequest, generate
from model.inference.sampling import SamplingParams, StoppingCriteria, StreamedText
from model.models.lm import LanguageModel
from model.models.loading import load_model
from model.text.tokenizer import EOS_ID, append_piece


@pytest.fixture(scope="module")
def lm(tiny_model_dir) -> LanguageModel:
    return load_model(tiny_model_dir)


# -- the oracle: how the service decided before (the whole text, every token) -------------------
def old_safe_length(text: str, stop: list[str]) -> int:
    """service.streaming.StreamedText.safe_length before the change, verbatim in effect."""
    safe = len(text)
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                safe = min(safe, len(text) - k)
                break
    return safe


def old_shown(pieces: list[str], reasons: list[str | None], stop: list[str], joiner: str = "") -> list[str]:
    """The text each event showed before the change (StreamedText.push, the whole-text way)."""
    text, shown, out = "", 0, []
    for piece, reason in zip(pieces, reasons, strict=True):
        text = append_piece(text, piece, joiner)
        safe = (
            len(StoppingCriteria(0, stop).trim(text)) if reason is not None else old_safe_length(text, stop)
        )
        out.append(text[shown : max(safe, shown)])
        shown = max(safe, shown)
    return out


def random_case(rng: random.Random) -> tuple[list[str], list[str]]:
    """Stop strings over a tiny alphabet (so they overlap, repeat and nest) and the pieces of a text."""
    alphabet = rng.choice(["ab", "abc", "a。\n"])
    stop = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(0, 5))]
    pieces = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 30))
    ]
    return stop, pieces


@pytest.mark.parametrize("seed", range(300))
def test_matcher_decides_holds_back_and_cuts_as_the_whole_text_check(seed: int) -> None:
    rng = random.Random(seed)
    stop, pieces = random_case(rng)
    joiner = rng.choice(["", " "])
    criteria = StoppingCriteria(max_new_tokens=len(pieces), stop=stop)
    matcher = criteria.matcher()
    text = ""
    for count, piece in enumerate(pieces, 1):
        before = len(text)
        text = append_piece(text, piece, joiner)
        got = criteria.step(matcher, 7, count, text[before:])
        assert got == criteria(7, count, text)  # the same (stop, finish_reason) as the whole-text check
        if got[1] == "stop":
            assert text[: matcher.safe_length()] == criteria.trim(text)  # cut where trim cuts
            break
        assert matcher.safe_length() == old_safe_length(text, stop)  # the same hold-back
        if got[0]:
            break


def test_eos_wins_and_length_comes_last() -> None:
    criteria = StoppingCriteria(max_new_tokens=2, stop=["ab"])
    m = criteria.matcher()
    assert criteria.step(m, 9, 1, "a") == (False, None)
    assert criteria.step(m, EOS_ID, 2, "") == (True, "eos")
    m = criteria.matcher()
    assert criteria.step(m, 9, 1, "x") == (False, None)
    assert criteria.step(m, 9, 2, "ab") == (True, "stop")  # a stop string on the last allowed token
    assert criteria.step(criteria.matcher(), 9, 2, "xx") == (True, "length")


def test_earliest_stop_string_is_cut_even_when_it_ends_later() -> None:
    """Within one piece, a longer stop string that starts earlier wins (as ``trim`` does)."""
    criteria = StoppingCriteria(10, ["bc", "abcd"])
    m = criteria.matcher()
    assert criteria.step(m, 9, 1, "xabcd") == (True, "stop")
    assert m.safe_length() == 1 == len(criteria.trim("xabcd"))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


async def engine_stream(lm: LanguageModel, request: GenerationRequest) -> list[ShownTokenEvent]:
    engine = Engine(lm, EngineConfig(threads=1, max_wait_ms=1))
    async with engine:
        events = []
        async with engine.generate(request) as stream:
            async for ev in stream:
                assert isinstance(ev, ShownTokenEvent)
                events.append(ev)
        return events


def seeded_stop_cases(lm: LanguageModel) -> list[GenerationRequest]:
    """Seeded requests with stop strings taken from what the model writes unconstrained, so they
    are hit (and span several tokens), nearly hit, or never hit."""
    cases = []
    for seed in range(6):
        free = GenerationRequest("今天", max_new_tokens=40, sampling=SamplingParams(seed=seed), n=2)
        text = generate(lm, free)[0].text
        rng = random.Random(seed)
        a = rng.randrange(0, max(1, len(text) - 6))
        stops = [
            text[a : a + 2 + seed % 4],  # hit, spanning 2 to 5 tokens
            text[a + 1 : a + 3] + "\x00",  # begins like the text, never completes: held back, then shown
            "zz" * (seed + 1),  # never begun
        ]
        cases.append(
            GenerationRequest("今天", max_new_tokens=40, sampling=SamplingParams(seed=seed), stop=stops, n=2)
        )
    return cases


def test_engine_shows_what_the_service_showed_before(lm: LanguageModel) -> None:
    for request in seeded_stop_cases(lm):
        events = run(engine_stream(lm, request))
        want = generate(lm, request)  # the reference loop, whole-text checks
        for i, sample in enumerate(want):
            evs = [ev for ev in events if ev.sample == i]
            assert [ev.token_id for ev in evs] == sample.ids
            reasons = [ev.finish_reason for ev in evs]
            assert reasons[-1] == sample.finish_reason
            assert [ev.shown for ev in evs] == old_shown([ev.text for ev in evs], reasons, request.stop)
            assert "".join(ev.shown for ev in evs) == sample.text
    hit = [s.finish_reason for r in seeded_stop_cases(lm) for s in generate(lm, r)]
    assert "stop" in hit  # the cases do exercise stop strings that span tokens


def feed_work(pieces: list[str], stop: list[str]) -> tuple[int, list[int]]:
    """Characters compared by one matcher fed these pieces, and its hold-back after each."""
    criteria = StoppingCriteria(len(pieces) + 1, stop)
    m = criteria.matcher()
    held = []
    for count, piece in enumerate(pieces, 1):
        assert criteria.step(m, 7, count, piece) == (False, None)
        held.append(len("".join(pieces[:count])) - m.safe_length())
    return m.work, held


@pytest.mark.parametrize("seed", range(3))
def test_work_per_token_does_not_grow_with_stop_length(seed: int) -> None:
    """16 stop strings of 9,999 characters that the text keeps beginning (the worst case for the
    hold-back: everything is held) cost what 16 stop strings of 9 characters cost."""
    rng = random.Random(seed)
    pieces = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 3))) for _ in range(500)]
    text = "".join(pieces)
    periodic = ("ab" * 5_000)[:9_998]  # matched again and again by the failure links
    long_stops = [(text[k:] + "c" * 9_999)[:9_999] for k in range(8)]
    long_stops += [periodic[k:] + "c" * (k + 1) for k in range(8)]
    short_stops = [text[k : k + 8] + "c" for k in range(8)] + [("ab" * 5)[k : k + 8] + "c" for k in range(8)]
    assert len(long_stops) == len(short_stops) == 16 and {len(s) for s in long_stops} == {9_999}
    long_work, long_held = feed_work(pieces, long_stops)
    short_work, _ = feed_work(pieces, short_stops)
    assert feed_work(pieces, [])[0] == 0
    assert long_held[-1] == len(text)  # the first long stop string is still possible: all held back
    assert long_work / len(pieces) <= 4 * 16 * 3  # O(1) amortized per character and stop string
    assert long_work <= 3 * short_work  # generous: independent of the stop strings' length
    # the whole-text check this replaces compared about len(text)² / 2 characters per stop string
    assert long_work * 100 < 16 * len(text) ** 2 // 2


# (stop strings, pieces, finish reason of the last piece) -> the text shown after each piece
@pytest.mark.parametrize(
    ("stop", "pieces", "shown"),
    [
        ([], ["a", "b", "c"], ["a", "b", "c"]),
        (["END"], ["a", "b", "E", "x", "E", "N", "D"], ["a", "b", "", "Ex", "", "", ""]),
        (["END"], ["E", "N"], ["", "EN"]),  # finished for another reason: flush what was held
        (["。\n", "！"], ["好", "。", "\n"], ["好", "", ""]),
        (["ab"], ["x", "a", "a", "b"], ["x", "", "a", ""]),
        (["xyz"], ["xy", "zq"], ["", ""]),  # a stop string across tokens; the rest of the token is cut
    ],
)
def test_streamed_text_holds_back_possible_stop_strings(stop, pieces, shown):
    st = StreamedText(stop=stop)
    got = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        reason = ("stop" if any(s in st.text + piece for s in stop) else "length") if last else None
        got.append(st.push(piece, reason))
    assert got == shown
    assert "".join(got) == st.final
