"""The playground's Embed tab in a real browser against a real ``rnnlm serve`` (the fixtures of
test_playground.py): the cosine matrix the page shows is the one the API's vectors give, pooling
reaches the request, an error is shown in place, and a phone-width page does not scroll sideways.
Skipped, like test_playground.py, where Chromium or Playwright is missing."""

from __future__ import annotations

import json

import pytest

from . import test_playground as playground
from .test_playground import api, api_error, open_page

# test_playground.py's fixtures (a real `rnnlm serve`, a Chromium tab), used here by their names
browser_ready, context, service, page = (
    playground.browser_ready,
    playground.context,
    playground.service,
    playground.page,
)


def matrix(page) -> list[list[float]]:
    return [
        [float(td.get_attribute("data-cos")) for td in row.locator("td").all()]
        for row in page.locator("#embed-rows tr").all()
    ]


def same(shown: list[list[float]], want: list[list[float]]) -> bool:
    """The page's cosines are the API vectors' dot products (the same sums, in double precision)."""
    return len(shown) == len(want) and all(
        a == pytest.approx(b, abs=1e-9) for a, b in zip(shown, want, strict=True)
    )


def expected_matrix(base: str, texts: list[str], pooling: str) -> tuple[list[list[float]], dict]:
    data = api(base, "embed", {"texts": texts, "pooling": pooling, "normalize": True, "model": "tiny-lstm"})
    vectors = data.json()["embeddings"]
    cos = [[sum(x * y for x, y in zip(a, b, strict=True)) for b in vectors] for a in vectors]
    return cos, data.json()


def test_the_matrix_is_the_cosines_of_the_api_vectors(page, service):
    open_page(page, service, "embed")  # the first visit compares the prefilled texts
    page.wait_for_selector("#embed-rows tr")
    texts = page.locator("#embed-texts").input_value().splitlines()
    assert len(texts) == 4
    want, data = expected_matrix(service, texts, "last")
    assert same(matrix(page), want)
    assert all(row[i] == pytest.approx(1.0, abs=1e-5) for i, row in enumerate(matrix(page)))
    shown = page.locator("#embed-rows td").first.inner_text()
    assert shown == f"{want[0][0]:.3f}"
    assert page.locator("#embed-stats").get_attribute("data-dim") == str(data["dim"]) == "16"
    assert "16 dimensions" in page.locator("#embed-stats").inner_text()

    # pooling: the select reaches the request and the matrix follows; blank lines are dropped
    page.locator("#embed-texts").fill("你先走吧\n\n我们先走了\n今天天气很好")
    with page.expect_request(lambda r: r.url.endswith("/embed")) as sent:
        page.locator("#embed-pooling").select_option("mean")
    body = json.loads(sent.value.post_data)
    assert body["pooling"] == "mean" and body["normalize"] is True
    assert body["texts"] == ["你先走吧", "我们先走了", "今天天气很好"]
    page.wait_for_function("document.querySelectorAll('#embed-rows tr').length === 3")
    want, _ = expected_matrix(service, body["texts"], "mean")
    assert same(matrix(page), want)


def test_an_empty_list_is_shown_in_place(page, service):
    open_page(page, service, "embed")
    page.wait_for_selector("#embed-rows tr")
    page.locator("#embed-texts").fill("\n \n")
    page.locator("#embed-start").click()
    want = api_error(service, "embed", {"texts": [], "model": "tiny-lstm"})
    page.locator("#embed-error").wait_for(state="visible")
    assert page.locator("#embed-error").inner_text() == want["message"] and want["field"] == "texts"
    assert page.locator("#embed-texts").get_attribute("aria-invalid") == "true"


def test_phone_width_has_no_horizontal_scroll(page, service):
    page.set_viewport_size({"width": 375, "height": 740})
    open_page(page, service, "embed")
    page.wait_for_selector("#embed-rows tr")
    assert page.locator("#panel-embed").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
