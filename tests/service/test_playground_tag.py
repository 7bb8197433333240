"""The playground's Tag tab in a real browser against a real ``rnnlm serve`` with a tagger
(RNNLM_HEAD_DIRS): the words the page colours are the API's, the tab is there only when a tagger
is served (and the keyboard skips it otherwise), an error is shown in place, and a phone-width
page does not scroll sideways. Skipped, like test_playground.py, where Chromium or Playwright is
missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_playground as playground
from . import test_tag
from .test_playground import api, api_error, running_service

# test_playground.py's browser fixtures and test_tag.py's tiny tagger, used here by their names
browser_ready, context, page, tagger_dir = (
    playground.browser_ready,
    playground.context,
    playground.page,
    test_tag.tagger_dir,
)


@pytest.fixture(scope="module")
def service(browser_ready, tiny_model_dir: Path, tagger_dir: Path, tmp_path_factory) -> Iterator[str]:
    """One model (tiny-lstm) and one tagger (tiny-tagger)."""
    log = tmp_path_factory.mktemp("serve-tag") / "serve.log"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RNNLM_HEAD_DIRS", str(tagger_dir))
        env.setenv(
            "PYTHONPATH", str(playground.REPO)
        )  # this checkout's service, wherever rnnlm is installed from
        with running_service([tiny_model_dir], log) as base:
            yield base


def open_tag_page(page, base: str, panel: str = "tag") -> None:
    page.goto(base + f"#{panel}")
    page.wait_for_selector("#model-summary dt")  # the header is drawn once /models has answered


def shown_words(page) -> list[list[tuple[str, str, int, int]]]:
    return [
        [
            (
                w.locator(".tag-text").inner_text(),
                w.get_attribute("data-tag"),
                int(w.get_attribute("data-start")),
                int(w.get_attribute("data-end")),
            )
            for w in row.locator(".tag-word").all()
        ]
        for row in page.locator("#tag-rows .tagged-text").all()
    ]


def test_the_page_shows_the_api_words_coloured_by_tag(page, service):
    open_tag_page(page, service)  # the first visit tags the prefilled texts
    page.wait_for_selector("#tag-rows .tag-word")
    assert page.locator("#tab-tag").is_visible() and page.locator("#panel-tag").is_visible()
    texts = page.locator("#tag-texts").input_value().splitlines()
    data = api(service, "tag", {"texts": texts}).json()
    want = [[(w["word"], w["tag"], w["start"], w["end"]) for w in r["words"]] for r in data["results"]]
    assert shown_words(page) == want and len(want) == 3
    stats = page.locator("#tag-stats")
    assert stats.get_attribute("data-words") == str(sum(len(r) for r in want))
    assert "tiny-tagger" in stats.inner_text()
    legend = page.locator("#tag-legend .tag-key").all_inner_texts()
    assert {text.split(":")[0] for text in legend} == {w[1] for r in want for w in r}

    # whitespace: the request keeps it, the page shows a gap there and no word holds it
    page.locator("#tag-texts").fill("今天 天气很好\n\n")
    with page.expect_request(lambda r: r.url.endswith("/tag")) as sent:
        page.locator("#tag-start").click()
    assert json.loads(sent.value.post_data) == {"texts": ["今天 天气很好"]}
    page.wait_for_function("document.querySelectorAll('#tag-rows .tagged-text').length === 1")
    assert page.locator("#tag-rows .tag-gap").count() == 1
    assert all(" " not in word for word, *_ in shown_words(page)[0])


def test_the_tab_sits_before_rerank_and_the_keyboard_reaches_it(page, service):
    open_tag_page(page, service, "embed")
    page.locator("#tab-embed").focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#panel-tag").is_visible() and page.evaluate("location.hash") == "#tag"
    page.keyboard.press("End")
    assert page.locator("#panel-rerank").is_visible()  # Rerank stays the last tab


def test_without_a_tagger_the_tab_is_hidden_and_skipped(page, service):
    def no_heads(route):
        response = route.fetch()
        body = response.json()
        route.fulfill(response=response, json={**body, "heads": []})

    page.route("**/models", no_heads)
    open_tag_page(page, service, "tag")
    assert page.locator("#tab-tag").is_hidden() and page.locator("#panel-tag").is_hidden()
    assert page.locator("#panel-next").is_visible()  # #tag names no panel here
    page.locator("#tab-embed").click()
    page.locator("#tab-embed").focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#panel-rerank").is_visible()


def test_an_error_is_shown_in_place(page, service):
    open_tag_page(page, service)
    page.wait_for_selector("#tag-rows .tag-word")
    page.locator("#tag-texts").fill("\n \n")
    page.locator("#tag-start").click()
    want = api_error(service, "tag", {"texts": []})
    page.locator("#tag-error").wait_for(state="visible")
    assert page.locator("#tag-error").inner_text() == want["message"] and want["field"] == "texts"
    assert page.locator("#tag-texts").get_attribute("aria-invalid") == "true"


def test_phone_width_has_no_horizontal_scroll(page, service):
    page.set_viewport_size({"width": 375, "height": 740})
    open_tag_page(page, service)
    page.wait_for_selector("#tag-rows .tag-word")
    assert page.locator("#panel-tag").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
