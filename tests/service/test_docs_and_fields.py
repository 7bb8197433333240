"""/docs and /redoc served from the service's own files (no CDN: they work offline, also behind
an API key), and a request with an unknown field answered with an error that names it."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_the_service_own_files(client, page):
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?'([^']+)'""", html)
    urls = [a or b for a, b in urls]
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "fonts.googleapis" not in html and "cdn." not in html


def test_swagger_ui_never_calls_the_online_validator(client):
    assert '"validatorUrl": null' in client.get("/docs").text


def test_docs_need_no_api_key(tiny_model_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir)], device="cpu", api_key="secret")
    with TestClient(create_app(settings)) as c:
        for url in (
            "/docs",
            "/static/docs/swagger-ui-bundle.js",
            "/static/docs/swagger-ui.css",
            "/openapi.json",
        ):
            assert c.get(url).status_code == 200, url
        assert c.post("/next-token", json={"text": "a"}).status_code == 401


@pytest.mark.parametrize(
    "path,body,unknown,suggestion",
    [
        ("/next-token", {"txt": "人民"}, "txt", "text"),
        ("/next-token", {"text": "人民", "topk": 3}, "topk", "top_k"),
        ("/score", {"candidate": ["人民"]}, "candidate", "candidates"),
        ("/generate", {"prompt": "人民", "max_tokens": 3, "zzz": 1}, "max_tokens", "max_new_tokens"),
    ],
)
def test_an_unknown_field_is_named(client, path, body, unknown, suggestion):
    r = client.post(path, json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == unknown and err["type"] == "invalid_request"
    assert err["message"].startswith(f"`{unknown}`: unknown field; did you mean `{suggestion}`?")
    assert "Field required" not in err["message"]
