"""POST /score `hotwords`: a bonus per occurrence, in every way of combining scores, with bounds."""

from __future__ import annotations

import pytest

from service.schemas import MAX_HOTWORD_CHARS, MAX_HOTWORDS

from .test_score_rescoring import CANDS, client, error_of, model_dirs, score  # noqa: F401  (fixtures)


def test_a_hotword_adds_its_bonus_per_occurrence_and_turns_the_ranking(client) -> None:  # noqa: F811
    plain = score(client, model="tiny-lstm")
    last = plain["ranking"][-1]
    phrase = CANDS[last][:3]
    biased = score(client, model="tiny-lstm", hotwords={phrase: 1000.0})
    assert biased["ranking"][0] == last
    for before, after in zip(plain["results"], biased["results"], strict=True):
        count = after["text"].count(phrase)
        assert after["hotword_bonus"] == 1000.0 * count
        assert after["score"] == pytest.approx(before["score"] + 1000.0 * count)
        assert after["logprob"] == before["logprob"]


def test_hotwords_count_with_several_models_and_in_a_sweep(client) -> None:  # noqa: F811
    weights = {"models": {"tiny-lstm": 1.0, "tiny-gru": 0.5}, "first_pass_weight": 1.0}
    phrase = CANDS[1][:4]
    out = score(client, weights=weights, hotwords={phrase: 500.0})
    assert out["ranking"][0] == 1 and out["results"][1]["hotword_bonus"] == 500.0
    swept = score(
        client, model="tiny-lstm", hotwords={phrase: 500.0}, sweep=[{"lm_weight": 1.0, "length_bonus": 0.0}]
    )
    assert swept["sweep"][0]["best"] == 1


@pytest.mark.parametrize(
    "hotwords",
    [
        {"": 1.0},
        {"x" * (MAX_HOTWORD_CHARS + 1): 1.0},
        {"李素丽": "many"},
        {"李素丽": 1e9},
        {f"词{i}": 1.0 for i in range(MAX_HOTWORDS + 1)},
        ["李素丽"],
    ],
)
def test_bad_hotwords_are_a_422_naming_the_field(client, hotwords) -> None:  # noqa: F811
    r = client.post("/score", json={"candidates": CANDS, "hotwords": hotwords})
    assert r.status_code == 422, r.text
    assert "hotwords" in r.json()["error"]["field"]


def test_an_infinite_bonus_is_refused(client) -> None:  # noqa: F811
    r = client.post(
        "/score",
        content='{"candidates": ["甲乙"], "hotwords": {"甲": Infinity}}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "hotwords" in r.json()["error"]["field"]
