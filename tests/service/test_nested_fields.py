"""An unknown field inside a nested object (a `sweep` point) is named with that object's fields,
not with the whole request's."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        yield c


def error(r) -> dict:
    assert r.status_code == 422, r.text
    return r.json()["error"]


def test_unknown_field_in_a_sweep_point_lists_the_points_fields(client):
    point = {"lm_weight": 1.0, "length_bonus": 0.0}
    err = error(
        client.post("/score", json={"candidates": ["a"], "sweep": [point, {**point, "lm_wieght": 2}]})
    )
    assert err["field"] == "sweep.1.lm_wieght"
    assert "did you mean `lm_weight`?" in err["message"]
    assert err["message"].endswith("(the fields are: lm_weight, length_bonus)")
    assert "candidates" not in err["message"]


def test_a_far_off_name_in_a_sweep_point_is_not_matched_to_the_requests_fields(client):
    err = error(
        client.post(
            "/score",
            json={"candidates": ["a"], "sweep": [{"lm_weight": 1, "length_bonus": 0, "context": "x"}]},
        )
    )
    # `context` is a field of the request, not of a sweep point: no "did you mean `context`"
    assert err["field"] == "sweep.0.context" and "did you mean" not in err["message"]
    assert "(the fields are: lm_weight, length_bonus)" in err["message"]


def test_top_level_unknown_fields_still_list_the_requests_fields(client):
    err = error(client.post("/score", json={"candidates": ["a"], "lm_wieght": 1}))
    assert err["field"] == "lm_wieght" and "did you mean `lm_weight`?" in err["message"]
    assert "candidates" in err["message"] and "sweep" in err["message"]
