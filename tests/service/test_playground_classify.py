"""The playground's Classify tab in a real browser against a real ``rnnlm serve`` with a classifier
(RNNLM_HEAD_DIRS): the labels and bars the page shows are the API's, the tab sits after Tag and
before Rerank and is there only when a classifier is served, and an error is shown in place.
Skipped, like test_playground.py, where Chromium or Playwright is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_classify
from . import test_playground as playground
from .test_playground import api, api_error, running_service

# test_playground.py's browser fixtures and test_classify.py's tiny classifier, used here by their names
browser_ready, context, page, classifier_dir = (
    playground.browser_ready,
    playground.context,
    playground.page,
    test_classify.classifier_dir,
)


@pytest.fixture(scope="module")
def service(browser_ready, tiny_model_dir: Path, classifier_dir: Path, tmp_path_factory) -> Iterator[str]:
    """One model (tiny-lstm) and one classifier (tiny-sentiment)."""
    log = tmp_path_factory.mktemp("serve-classify") / "serve.log"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RNNLM_HEAD_DIRS", str(classifier_dir))
        env.setenv("PYTHONPATH", str(playground.REPO))  # this checkout's service
        with running_service([tiny_model_dir], log) as base:
            yield base


def open_page(page, base: str, panel: str = "classify") -> None:
    page.goto(base + f"#{panel}")
    page.wait_for_selector("#model-summary dt")  # the header is drawn once /models has answered


def test_the_page_shows_the_api_labels_and_bars(page, service):
    open_page(page, service)  # the first visit classifies the prefilled texts
    page.wait_for_selector("#classify-rows .classified")
    assert page.locator("#tab-classify").is_visible() and page.locator("#panel-classify").is_visible()
    texts = page.locator("#classify-texts").input_value().splitlines()
    data = api(service, "classify", {"texts": texts}).json()
    rows = page.locator("#classify-rows .classified").all()
    assert [r.get_attribute("data-label") for r in rows] == [res["label"] for res in data["results"]]
    for row, res in zip(rows, data["results"], strict=True):
        bars = row.locator(".class-bar").all()
        assert [b.get_attribute("data-label") for b in bars] == list(res["probabilities"])
        shown = [float(b.get_attribute("data-probability")) for b in bars]
        assert shown == pytest.approx(list(res["probabilities"].values()), abs=1e-6)
    assert "tiny-sentiment" in page.locator("#classify-stats").inner_text()
    assert page.locator("#tab-tag").is_hidden()  # no tagger served here


def test_the_tab_sits_before_rerank(page, service):
    open_page(page, service, "embed")
    page.locator("#tab-embed").focus()
    page.keyboard.press("ArrowRight")  # Tag is hidden (no tagger): skipped
    assert page.locator("#panel-classify").is_visible() and page.evaluate("location.hash") == "#classify"
    page.keyboard.press("ArrowRight")
    assert page.locator("#panel-rerank").is_visible()


def test_without_a_classifier_the_tab_is_hidden(page, service):
    def no_heads(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "heads": []})

    page.route("**/models", no_heads)
    open_page(page, service)
    assert page.locator("#tab-classify").is_hidden() and page.locator("#panel-classify").is_hidden()
    assert page.locator("#panel-next").is_visible()


def test_an_error_is_shown_in_place(page, service):
    open_page(page, service)
    page.wait_for_selector("#classify-rows .classified")
    page.locator("#classify-texts").fill("\n \n")
    page.locator("#classify-start").click()
    want = api_error(service, "classify", {"texts": []})
    page.locator("#classify-error").wait_for(state="visible")
    assert page.locator("#classify-error").inner_text() == want["message"] and want["field"] == "texts"
