"""Alternatives through the engine: every position of a sequence in one pass
(:meth:`Engine.alternatives`), and each generated token's alternatives from the decoding step
that chose it (``GenerationRequest.top_logprobs``), equal to the model's own answers."""

from __future__ import annotations

import asyncio

import pytest

from model.inference.engine import Engine, EngineConfig
from model.inference.engine.types import TooCostly
from model.inference.generation import GenerationRequest, generate
from model.inference.sampling import SamplingParams
from model.models.lm import RNNLanguageModel
from model.models.loading import load_model
from model.text.tokenizer import BOS_ID

TOL = 1e-5


@pytest.fixture(scope="module")
def lm(tiny_model_dir) -> RNNLanguageModel:
    return load_model(tiny_model_dir)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_alternatives_through_the_engine_equal_the_models_and_cost_linearly(lm: RNNLanguageModel) -> None:
    seqs = [[BOS_ID, *lm.tokenizer.encode(t).ids] for t in ["今天天气很好", "你先走吧" * 200]]
    want = lm.position_alternatives(seqs, 3)

    async def main():
        async with Engine(lm, EngineConfig(max_request_tokens=1000, max_tokens_in_flight=2000)) as engine:
            got = await engine.alternatives(seqs, top_k=3)
            with pytest.raises(TooCostly):  # the tokens of its sequences, not of every prefix
                await engine.alternatives([[BOS_ID] + [5] * 1000], top_k=3)
            return got, engine.stats, engine.tokens_in_flight

    got, stats, in_flight = run(main())
    assert in_flight == 0
    assert stats.positions_computed == got.computed == 5 + 800
    for a, b in zip(got.sequences, want.sequences, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)
        assert a.alternatives == b.alternatives or all(
            [i for i, _ in x] == [i for i, _ in y]
            for x, y in zip(a.alternatives, b.alternatives, strict=True)
        )


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_generated_alternatives_are_the_reference_generations(
    lm: RNNLanguageModel, temperature: float
) -> None:
    request = GenerationRequest(
        prompt="今天",
        max_new_tokens=12,
        n=3,
        top_logprobs=4,
        sampling=SamplingParams(temperature=temperature, seed=5),
    )
    want = generate(lm, request)

    async def main():
        async with Engine(lm) as engine:
            others = engine.generate(
                GenerationRequest(prompt="你", max_new_tokens=12, n=2)
            )  # no alternatives
            samples = await engine.generate(request).collect()
            return samples, await others.collect()

    samples, others = run(main())
    for got, ref in zip(samples, want, strict=True):
        assert got.ids == ref.ids
        assert len(got.alternatives) == len(got.ids)
        for a, b, token, lp in zip(got.alternatives, ref.alternatives, got.ids, got.logprobs, strict=True):
            assert len(a) == 4 and [i for i, _ in a] == [i for i, _ in b]
            assert [v for _, v in a] == pytest.approx([v for _, v in b], abs=TOL)
            assert a[0][1] >= lp - TOL  # the most likely is at least as likely as the token chosen
            if token in dict(a):
                assert dict(a)[token] == pytest.approx(lp, abs=TOL)
    assert all(s.alternatives == [] for s in others)
