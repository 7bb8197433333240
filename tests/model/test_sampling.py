"""Table-style tests for the sampling parts and stopping criteria (after TGI's test_tokens.py)."""

import math
from dataclasses import replace

import pytest
import torch

from model.inference.generation import GenerationRequest, sample_choosers
from model.inference.sampling import (
    MAX_SEED,
    MAX_TEMPERATURE,
    MIN_SCALE,
    Greedy,
    ParamSpec,
    RepetitionPenalty,
    SamplingParams,
    StoppingCriteria,
    Temperature,
    TokenChooser,
    TopK,
    TopP,
    build_processors,
    gumbel_noise,
)
from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

NEG = float("-inf")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), []),
        (SamplingParams(temperature=0.0), []),
        (SamplingParams(temperature=0.7), [Temperature]),
        (SamplingParams(top_k=5), [TopK]),
        (SamplingParams(top_p=0.9), [TopP]),
        (
            SamplingParams(repetition_penalty=1.3, temperature=2.0, top_k=3, top_p=0.5),
            [RepetitionPenalty, Temperature, TopK, TopP],
        ),
    ],
)
def test_only_non_default_processors_are_built(params, expected):
    assert [type(p) for p in build_processors(params)] == expected


@pytest.mark.parametrize(
    ("proc", "scores", "expected"),
    [
        (Temperature(2.0), [2.0, -4.0], [1.0, -2.0]),
        (TopK(2), [1.0, 3.0, 2.0, 0.0], [NEG, 3.0, 2.0, NEG]),
        (TopK(10), [1.0, 2.0], [1.0, 2.0]),
        # probs ~ [0.665, 0.245, 0.090]: p=0.6 keeps the first only, p=0.8 the first two
        (TopP(0.6), [2.0, 1.0, 0.0], [2.0, NEG, NEG]),
        (TopP(0.8), [2.0, 1.0, 0.0], [2.0, 1.0, NEG]),
        (TopP(0.01), [0.0, 5.0], [NEG, 5.0]),  # the most likely token always survives
    ],
)
def test_processor_table(proc, scores, expected):
    out = proc(torch.tensor(scores), history=[])
    assert out.tolist() == expected


def test_repetition_penalty_only_touches_seen_tokens():
    out = RepetitionPenalty(2.0)(torch.tensor([2.0, -2.0, 2.0]), history=[0, 1, 1])
    assert out.tolist() == [1.0, -4.0, 2.0]


def test_greedy_and_chooser_never_emit_non_text_tokens():
    logprobs = torch.full((8,), -10.0)
    logprobs[PAD_ID] = logprobs[BOS_ID] = logprobs[UNK_ID] = 0.0
    logprobs[6] = -1.0
    assert TokenChooser(SamplingParams(temperature=0)).next_id(logprobs, []) == 6
    assert Greedy()(logprobs) == PAD_ID  # the bare chooser does not know about specials
    allow = TokenChooser(SamplingParams(temperature=0, allow_unk=True))
    assert allow.next_id(logprobs, []) == UNK_ID


def test_seeded_sampling_is_reproducible_and_follows_the_distribution():
    logprobs = torch.log(torch.tensor([0.0, 0.0, 0.0, 0.2, 0.8]))
    a = TokenChooser(SamplingParams(seed=7))
    b = TokenChooser(SamplingParams(seed=7))
    draws_a = [a.next_id(logprobs, []) for _ in range(400)]
    draws_b = [b.next_id(logprobs, []) for _ in range(400)]
    assert draws_a == draws_b
    share = draws_a.count(4) / len(draws_a)
    assert abs(share - 0.8) < 0.08
    assert set(draws_a) <= {EOS_ID, 4}


@pytest.mark.parametrize(
    ("last_id", "count", "text", "expected"),
    [
        (EOS_ID, 1, "", (True, "eos")),
        (9, 1, "你好。", (True, "stop")),
        (9, 5, "你好", (True, "length")),
        (9, 2, "你好", (False, None)),
        (EOS_ID, 5, "你好。", (True, "eos")),  # eos wins over the others
    ],
)
def test_stopping_table(last_id, count, text, expected):
    assert StoppingCriteria(max_new_tokens=5, stop=["。"])(last_id, count, text) == expected


def test_stop_trim_cuts_at_the_earliest_stop_string():
    crit = StoppingCriteria(10, stop=["了", "。"])
    assert crit.trim("用完了。再") == "用完"
    assert crit.trim("没有") == "没有"
    assert math.isfinite(len(crit.trim("")))


# -- counter-based noise ------------------------------------------------------------------------------
def _fmix32(x: int) -> int:
    """MurmurHash3's finalizer in plain Python integers: the reference for model.inference.sampling.mix32."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_noise_is_the_documented_hash_of_seed_step_and_index():
    import math

    from model.inference.sampling import gumbel_noise, mix32

    xs = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789]
    assert mix32(torch.tensor(xs)).tolist() == [_fmix32(x) for x in xs]
    seed, step, v = 2**31 - 2, 17, 4622
    row = _fmix32(_fmix32(seed ^ 0x9E3779B9) ^ step)
    want = [
        -math.log(-math.log((_fmix32(_fmix32(row ^ i) ^ 0x85EBCA77) + 0.5) / 2**32)) for i in (0, 5, v - 1)
    ]
    got = gumbel_noise(torch.tensor([seed]), torch.tensor([step]), v)[0, [0, 5, v - 1]].tolist()
    assert got == pytest.approx(want, rel=1e-12)  # a pure function: the same in any process


def test_a_rows_noise_does_not_depend_on_its_neighbours():
    from model.inference.sampling import gumbel_noise

    alone = gumbel_noise(torch.tensor([42]), torch.tensor([3]), 50)
    crowd = gumbel_noise(torch.tensor([1, 42, 7] * 21), torch.tensor([0, 3, 9] * 21), 50)
    assert torch.equal(crowd[1], alone[0]) and torch.equal(crowd[-2], alone[0])
    assert not torch.equal(crowd[0], alone[0])


def test_gumbel_max_samples_the_softmax():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    chooser = TokenChooser(SamplingParams(seed=3))
    logprobs = torch.cat([torch.full((4,), float("-inf")), probs.log()])  # ids 0-3 are specials
    draws = [chooser.next_id(logprobs, []) - 4 for _ in range(4000)]  # each call is the next step
    freq = torch.bincount(torch.tensor(draws), minlength=4).double() / len(draws)
    assert torch.allclose(freq, probs.double(), atol=0.03)
    assert chooser.step == 4000


# -- the parameters check themselves (as vLLM's SamplingParams does) ------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature must be in [0, 100], got -1.0"),
        ({"temperature": 100.5}, "temperature must be in [0, 100]"),
        ({"temperature": math.nan}, "temperature must be"),
        ({"top_k": -1}, "top_k must be non-negative, got -1"),
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be in [0.0001, 100], got 0.0"),
        ({"repetition_penalty": math.inf}, "repetition_penalty must be"),
        ({"seed": -1}, "seed must be in [0, 4294967295], got -1"),
        ({"seed": 2**32}, "seed must be in [0, 4294967295]"),
    ],
)
def test_sampling_params_refuse_a_value_out_of_range_naming_it(kwargs, message):
    with pytest.raises(ValueError) as e:
        SamplingParams(**kwargs)
    assert str(e.value).startswith(message)


def test_sampling_params_accept_their_bounds_and_a_tiny_temperature_is_greedy():
    edges = SamplingParams(
        temperature=MAX_TEMPERATURE, top_k=0, top_p=1.0, repetition_penalty=MIN_SCALE, seed=0
    )
    assert edges.temperature == MAX_TEMPERATURE
    assert SamplingParams(seed=MAX_SEED, repetition_penalty=100.0).seed == MAX_SEED
    assert SamplingParams(temperature=5e-324).temperature == 0.0  # logits / 5e-324 would be NaN
    assert SamplingParams(temperature=MIN_SCALE).temperature == MIN_SCALE
    with pytest.raises(ValueError, match="top_p must be"):
        replace(SamplingParams(), top_p=0.0)  # a copy checks itself too


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be at least 1, got 0"),
        ({"max_new_tokens": -1}, "max_new_tokens must be non-negative, got -1"),
        ({"top_logprobs": -2}, "top_logprobs must be non-negative, got -2"),
    ],
)
def test_generation_request_refuses_a_value_out_of_range_naming_it(kwargs, message):
    with pytest.raises(ValueError) as e:
        GenerationRequest("a", **kwargs)
    assert str(e.value) == message


def test_sample_seeds_past_the_largest_seed_wrap_as_the_noise_does():
    request = GenerationRequest("a", n=3, sampling=SamplingParams(seed=MAX_SEED - 1))
    assert [c.seed for c in sample_choosers(request)] == [MAX_SEED - 1, MAX_SEED, 0]
    assert torch.equal(  # the noise reads a seed's low 32 bits: the same draws as before the wrap
        gumbel_noise(torch.tensor([MAX_SEED + 1]), torch.tensor([3]), 50),
        gumbel_noise(torch.tensor([0]), torch.tensor([3]), 50),
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ParamSpec("", ge=0), "non-negative"),
        (ParamSpec("", gt=0.0), "positive"),
        (ParamSpec("", ge=1), "at least 1"),
        (ParamSpec("", gt=0.5), "more than 0.5"),
        (ParamSpec("", le=2), "at most 2"),
        (ParamSpec("", ge=0.0, le=1.0), "in [0, 1]"),
        (ParamSpec(""), "any value"),
    ],
)
def test_a_range_in_words(spec, words):
    assert spec.describe() == words
