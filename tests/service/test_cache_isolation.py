"""The prefix-state cache behind the HTTP API is scoped by tenant (API key) and by a request's
`cache_salt`: a prefix another tenant (or another salt) sent is computed afresh, never answered
from their cached state, so its timing tells nothing about what others asked. Within a scope the
cache works as before. (The timing itself: `python -m rnnlm.bench.cache --tenants`.)"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

TEXT = "厨房里食油用完了我们明天去买"
KEYS = ("key-of-tenant-a", "key-of-tenant-b")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def hits(client: TestClient) -> int:
    return client.app.state.registry.runners["tiny-lstm"].engine.stats.prefix_cache_hits  # type: ignore[attr-defined]


def asks(client: TestClient, headers: dict[str, str] | None = None, **extra) -> dict:
    r = client.post("/next-token", json={"text": TEXT, "top_k": 3, **extra}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def keyed(tiny_model_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir)], device="cpu", api_keys=list(KEYS))
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def open_service(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        yield c


def test_each_api_key_has_its_own_cache(keyed):
    a = asks(keyed, auth(KEYS[0]))
    assert hits(keyed) == 0
    b = asks(keyed, auth(KEYS[1]))  # tenant B sends what A just sent: computed afresh
    assert hits(keyed) == 0
    assert [t["id"] for t in b["next"]] == [t["id"] for t in a["next"]]
    asks(keyed, auth(KEYS[0]))  # A again: from A's cache
    assert hits(keyed) == 1
    asks(keyed, auth(KEYS[1]))  # and B from B's own
    assert hits(keyed) == 2


def test_a_cache_salt_narrows_the_scope(keyed, open_service):
    for client, headers in ((keyed, auth(KEYS[0])), (open_service, None)):
        asks(client, headers)
        start = hits(client)
        asks(client, headers, cache_salt="user-1")  # another salt: another scope
        asks(client, headers, cache_salt="user-2")
        assert hits(client) == start
        asks(client, headers, cache_salt="user-1")
        assert hits(client) == start + 1


def test_without_keys_or_salt_requests_share_the_cache(open_service):
    asks(open_service)
    asks(open_service)
    assert hits(open_service) == 1


def test_score_is_scoped_too(keyed):
    body = {"candidates": [TEXT, TEXT[:-1] + "卖"]}
    for key in KEYS:
        assert keyed.post("/score", json=body, headers=auth(key)).status_code == 200
    assert hits(keyed) == 0
    assert keyed.post("/score", json=body, headers=auth(KEYS[1])).status_code == 200
    assert hits(keyed) == 2  # both candidates started from B's own cached prefixes


@pytest.mark.parametrize("salt", ["", "x" * 257, 5, None])
def test_a_bad_cache_salt_is_a_422_naming_it(open_service, salt):
    r = open_service.post("/next-token", json={"text": TEXT, "cache_salt": salt})
    if salt is None:
        assert r.status_code == 200  # null: no salt
        return
    assert r.status_code == 422 and r.json()["error"]["field"] == "cache_salt"
