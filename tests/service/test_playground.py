"""The playground page (service/static/) driven in a real browser against a real ``rnnlm serve``.

::

    headless Chromium ──▶ http://127.0.0.1:PORT/  ◀── httpx (the same requests, made directly)
         (Playwright)          rnnlm serve                 │
              │           two tiny fixture models          ▼
              └─── what the page shows ══ must equal ══ what the API answers

Every check compares the page with the API's own answer to the same request: bar order and
probabilities with /next-token, the streamed text with a non-streamed /generate of the same
seed, the ranking and per-token log-probs with /score, and error messages with the API's error.

Needs Debian's ``chromium`` (browsers cannot be downloaded here, so Playwright is pointed at
/usr/bin/chromium; ``RNNLM_CHROMIUM`` overrides the path) and the ``playwright`` package. Where
either is missing the browser tests are skipped with the reason; with
``RNNLM_REQUIRE_BROWSER=1`` (CI, once it has installed both) they fail instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from model.models.checkpoint import save_rnn

from ..conftest import build_tiny_model

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "service" / "static"
CHROMIUM = Path(os.environ.get("RNNLM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MINUS = "\u2212"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` Python package is not installed (pip install playwright)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RNNLM_CHROMIUM)"
    return None


# -- a real service and a real browser (also used by docs/screenshots/capture.py) ---------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rnnlm_command() -> list[str]:
    script = Path(sys.executable).with_name("rnnlm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rnnlm.cli"]


@contextmanager
def running_service(model_dirs: list[Path], log_path: Path, timeout_s: float = 180) -> Iterator[str]:
    """``rnnlm serve`` on a free port until the block ends; yields its base URL once /ready."""
    port = free_port()
    command = [*rnnlm_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    for d in model_dirs:
        command += ["--model-dir", str(d)]
    env = {**os.environ, "RNNLM_DEVICE": "cpu", "RNNLM_TORCH_THREADS": "1"}
    env["RNNLM_BATCH_INVARIANT"] = "true"  # scores exact whatever the batch (check_ranking)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rnnlm serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rnnlm serve not ready after {timeout_s} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base + "/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chromium_context(profile_dir: Path, **context_options):
    """A Playwright browser context in Debian's Chromium, with a fresh profile and no network chatter."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            **context_options,
        )
        try:
            yield context
        finally:
            context.close()


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_ready() -> None:
    missing = browser_missing()
    if missing and os.environ.get("RNNLM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (RNNLM_REQUIRE_BROWSER=1) but {missing}")
    if missing:
        pytest.skip(f"browser tests skipped: {missing}")


@pytest.fixture(scope="module")
def service(browser_ready, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two models, so the page shows its model picker: tiny-lstm (the default) and tiny-gru."""
    net, tok = build_tiny_model(cell="gru", seed=1)
    gru_dir = tmp_path_factory.mktemp("models-gru") / "tiny-gru"
    save_rnn(gru_dir, net, tok, {"test": {"perplexity": 2.0}, "note": "tiny test fixture"})
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_service([tiny_model_dir, gru_dir], log) as base:
        yield base


@pytest.fixture(scope="module")
def context(browser_ready, tmp_path_factory: pytest.TempPathFactory):
    with chromium_context(
        tmp_path_factory.mktemp("chromium-profile"), viewport={"width": 1280, "height": 900}
    ) as ctx:
        yield ctx


@pytest.fixture
def page(context, service: str):
    """A fresh tab on the playground; fails the test on any script error or console error."""
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "status of 4" not in msg.text
            else None
        ),
    )
    yield page
    page.close()
    assert not problems, problems


def api(base: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=30)


def fmt(x: float, digits: int = 2) -> str:
    """The page's number format: fixed digits, a real minus sign."""
    return f"{x:.{digits}f}".replace("-", MINUS)


def fmt_prob(p: float) -> str:
    """The page's probability format (JavaScript's toFixed(4), or toExponential(2) below 0.001)."""
    if p >= 0.001:
        return f"{p:.4f}"
    mantissa, exponent = f"{p:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def open_page(page, base: str, panel: str = "") -> None:
    page.goto(base + (f"#{panel}" if panel else ""))
    page.wait_for_selector("#model-select option", state="attached")  # /models has answered


def bars(page) -> list[tuple[str, float]]:
    return [
        (b.get_attribute("data-token"), float(b.get_attribute("data-prob")))
        for b in page.locator("#next-bars .bar").all()
    ]


def wait_for_chart(page, text: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('#next-result').dataset.text === t "
        "&& document.querySelector('#next-result').getAttribute('aria-busy') === 'false'",
        arg=text,
    )


def expected_bars(base: str, text: str, top_k: int = 10, model: str = "tiny-lstm"):
    data = api(base, "next-token", {"text": text, "top_k": top_k, "model": model}).json()
    return [(n["token"], n["prob"]) for n in data["next"]], data


# -- the page itself, no browser needed ------------------------------------------------------------
def test_page_assets_are_all_local():
    """No CDN, no web fonts, no external scripts: every URL the page names is relative."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    modules = sorted((STATIC / "js").glob("*.js"))
    js = "\n".join(m.read_text(encoding="utf-8") for m in modules)
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert {"static/style.css", "static/js/main.js"} <= set(refs)
    # ES modules, no build step: every import names a sibling module that exists.
    imports = re.findall(r'^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"', js, flags=re.M)
    assert imports and all(re.fullmatch(r"\./[\w-]+\.js", spec) for spec in imports), imports
    assert {spec[2:] for spec in imports} <= {m.name for m in modules}
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), ref
        assert not ref.startswith("/"), f"{ref}: keep URLs relative so a proxy sub-path works"
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert not re.search(r"https?://", js)
    # The only absolute URL anywhere is the SVG namespace inside the inline (data:) favicon.
    assert re.findall(r"https?://[^'\"\s)]+", html) == ["http://www.w3.org/2000/svg"]


# -- next token ---------------------------------------------------------------------------------
def test_typing_shows_the_api_top_k_as_bars(page, service):
    open_page(page, service)
    wait_for_chart(page, "人民日报")  # the prefilled example is charted on load

    text_box = page.locator("#next-text")
    text_box.fill("")
    text_box.press_sequentially("厨房里", delay=40)
    wait_for_chart(page, "厨房里")
    want, data = expected_bars(service, "厨房里")
    assert bars(page) == want
    assert float(page.locator("#next-stats").get_attribute("data-entropy")) == data["entropy"]
    assert fmt(data["entropy"]) + " nats" in page.locator("#next-stats").inner_text()
    assert page.locator("#next-tokens .chip").all_inner_texts() == data["tokens"]

    # Clicking a bar appends its token; special tokens (<eos>) cannot be appended.
    choice = page.locator("#next-bars .bar:not([aria-disabled])").first
    token = choice.get_attribute("data-token")
    choice.click()
    wait_for_chart(page, "厨房里" + token)
    assert text_box.input_value() == "厨房里" + token
    assert bars(page) == expected_bars(service, "厨房里" + token)[0]
    for special in page.locator("#next-bars .bar[aria-disabled]").all():
        assert special.get_attribute("data-token").startswith("<")

    # Keyboard: Enter on a focused bar appends too, and the focus stays on the chart.
    page.locator("#next-bars .bar:not([aria-disabled])").first.focus()
    second = page.evaluate("document.activeElement.dataset.token")
    page.keyboard.press("Enter")
    wait_for_chart(page, "厨房里" + token + second)
    assert page.evaluate("document.activeElement.classList.contains('bar')")

    # top_k drives the number of bars.
    text = "厨房里" + token + second
    page.locator("#next-topk").fill("3")
    page.wait_for_function("document.querySelectorAll('#next-bars .bar').length === 3")
    wait_for_chart(page, text)
    assert bars(page) == expected_bars(service, text, top_k=3)[0]

    # With the whole vocabulary shown, </s> and <unk> are there but clicking them appends nothing.
    page.locator("#next-topk").fill("100")
    wait_for_chart(page, text)
    page.wait_for_function("document.querySelectorAll('#next-bars .bar').length > 3")
    assert bars(page) == expected_bars(service, text, top_k=100)[0]
    eos = page.locator("#next-bars .bar[data-token='<eos>']")
    assert eos.get_attribute("aria-disabled") == "true"
    eos.click(force=True)  # Playwright treats aria-disabled as not clickable; a person can click it
    page.wait_for_timeout(300)  # longer than the debounce: a request would have been sent
    assert text_box.input_value() == text


def test_model_picker_lists_the_served_models_and_switches(page, service):
    open_page(page, service)
    served = httpx.get(service + "models").json()["models"]
    select = page.locator("#model-select")
    assert select.is_visible()
    assert select.locator("option").all_inner_texts() == [m["name"] for m in served]
    summary = page.locator("#model-summary").inner_text()
    assert "LSTM" in summary and f"{served[0]['parameters']:,}" in summary

    with page.expect_request(lambda r: r.url.endswith("/next-token")) as sent:
        select.select_option("tiny-gru")
    assert json.loads(sent.value.post_data)["model"] == "tiny-gru"
    page.wait_for_function("document.querySelector('#next-result').getAttribute('aria-busy') === 'false'")
    assert bars(page) == expected_bars(service, "人民日报", model="tiny-gru")[0]
    assert "GRU" in page.locator("#model-summary").inner_text()


# -- generate -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"prompt": "今天", "temperature": 0.9, "top_k": 0, "top_p": 1.0, "max_new_tokens": 40, "seed": 1234},
        {"prompt": "人民", "temperature": 0.0, "top_k": 5, "top_p": 0.9, "max_new_tokens": 12, "seed": 7},
        {"prompt": "", "temperature": 1.5, "top_k": 3, "top_p": 0.5, "max_new_tokens": 25, "seed": 99},
    ],
)
def test_generate_streams_the_same_text_as_the_api(page, service, params):
    open_page(page, service, "generate")
    page.locator("#gen-prompt").fill(params["prompt"])
    for field, selector in [
        ("temperature", "#gen-temperature"),
        ("top_k", "#gen-topk"),
        ("top_p", "#gen-topp"),
        ("max_new_tokens", "#gen-max"),
        ("seed", "#gen-seed"),
    ]:
        page.locator(selector).fill(str(params[field]))

    with page.expect_response(lambda r: r.url.endswith("/generate")) as answered:
        page.locator("#gen-start").click()
    assert answered.value.headers["content-type"].startswith("text/event-stream")
    assert json.loads(answered.value.request.post_data)["stream"] is True
    page.wait_for_selector("#gen-status[data-finish-reason]")

    want = api(service, "generate", {**params, "model": "tiny-lstm", "return_logprobs": True}).json()
    output = page.locator("#gen-output")
    assert output.get_attribute("data-text") == want["text"]
    text_tokens = output.locator(".tok:not(.special)")
    assert "".join(text_tokens.all_inner_texts()) == want["text"]  # what is shown, token by token
    shown = [float(t.get_attribute("data-logprob")) for t in output.locator(".tok").all()]
    assert shown == [lp["logprob"] for lp in want["logprobs"]]
    assert page.locator("#gen-status").get_attribute("data-finish-reason") == want["finish_reason"]
    assert f"seed {params['seed']}" in page.locator("#gen-status").inner_text()
    first = output.locator(".tok").first
    assert f"p = {fmt_prob(math.exp(want['logprobs'][0]['logprob']))}" in first.get_attribute("title")
    assert page.locator("#gen-start").is_enabled() and page.locator("#gen-stop").is_disabled()


def test_stop_aborts_a_running_generation(page, service):
    """The request is held open (a route that never answers); Stop must abort it and reset the buttons."""
    held = []
    page.route("**/generate", lambda route: held.append(route))
    open_page(page, service, "generate")
    page.locator("#gen-start").click()
    page.wait_for_function("document.querySelector('#gen-stop').disabled === false")
    assert held, "the page did not call /generate"
    assert page.locator("#gen-start").is_disabled()
    page.locator("#gen-stop").click()
    page.wait_for_selector("#gen-status[data-finish-reason='stopped']")
    assert page.locator("#gen-status").inner_text().startswith("stopped")
    assert page.locator("#gen-start").is_enabled() and page.locator("#gen-stop").is_disabled()
    page.unroute("**/generate")


# -- rerank ---------------------------------------------------------------------------------------
def rerank_rows(page) -> list[dict]:
    rows = []
    for row in page.locator("#rerank-rows tr").all():
        cells = row.locator("td")
        rows.append(
            {
                "index": int(row.get_attribute("data-index")),
                "logprob": cells.nth(2).inner_text(),
                "perplexity": cells.nth(3).inner_text(),
                "token_logprobs": [float(t.get_attribute("data-logprob")) for t in row.locator(".tok").all()],
            }
        )
    return rows


def shown(text: str) -> float:
    return float(text.replace(MINUS, "-"))


def check_ranking(page, want: dict) -> None:
    """The page shows what /score returns, to the last bit: the engine batches the page's request
    with whatever else is queued (the page sends /next-token at the same moment), but the service
    runs with RNNLM_BATCH_INVARIANT, so a score does not depend on its batch. The display is
    compared to its 2 decimals (±1 in the last)."""
    rows = rerank_rows(page)
    assert [r["index"] for r in rows] == want["ranking"]
    for row in rows:
        result = want["results"][row["index"]]
        assert shown(row["logprob"]) == pytest.approx(result["logprob"], abs=0.0051)
        assert shown(row["perplexity"]) == pytest.approx(result["perplexity"], abs=0.0051)
        assert row["token_logprobs"] == [t["logprob"] for t in result["token_logprobs"]]


def test_rerank_order_and_heat_map_match_score(page, service):
    open_page(page, service, "rerank")  # the first visit ranks the prefilled homophones
    page.wait_for_selector("#rerank-rows tr")
    candidates = page.locator("#rerank-candidates").input_value().splitlines()
    assert len(candidates) >= 3 and "我们明天去公园散步" in candidates
    want = api(service, "score", {"candidates": candidates, "per_token": True, "model": "tiny-lstm"}).json()
    check_ranking(page, want)
    assert page.locator("#rerank-rows tr .tok.special").count() == len(candidates)  # one <eos> each

    # A list the model reorders (the check above may see input order kept).
    reordered = ["厨房里石油用完了", "厨房里十油用完了", "今天天气很好", "厨房里食油用完了"]
    page.locator("#rerank-candidates").fill("\n".join(reordered))
    with page.expect_response(lambda r: r.url.endswith("/score")):
        page.locator("#rerank-start").click()
    want = api(service, "score", {"candidates": reordered, "per_token": True, "model": "tiny-lstm"}).json()
    assert want["ranking"] != sorted(want["ranking"])  # precondition: the order really changes
    page.wait_for_function(
        "first => document.querySelector('#rerank-rows tr').dataset.index === first",
        arg=str(want["ranking"][0]),
    )
    check_ranking(page, want)

    # Every option reaches the request: context, no <eos>, per-token normalization; blank lines dropped.
    new = ["你先走", "", "你走先", "先你走", "我们先走了"]
    page.locator("#rerank-candidates").fill("\n".join(new))
    page.locator("#rerank-context").fill("我们")
    page.locator("#rerank-eos").uncheck()
    page.locator("#rerank-normalize").select_option("token")
    page.locator("#rerank-start").click()
    page.wait_for_function("document.querySelectorAll('#rerank-rows tr').length === 4")
    want = api(
        service,
        "score",
        {
            "candidates": [c for c in new if c],
            "context": "我们",
            "eos": False,
            "normalize": "token",
            "per_token": True,
            "model": "tiny-lstm",
        },
    ).json()
    assert want["ranking"] != sorted(want["ranking"])
    check_ranking(page, want)
    assert page.locator("#rerank-rows .tok.special").count() == 0
    best = want["results"][want["ranking"][0]]["text"]
    assert page.locator("#rerank-rows tr").first.get_attribute("data-text") == best


# -- errors ---------------------------------------------------------------------------------------
def api_error(base: str, path: str, body: dict) -> dict:
    response = api(base, path, body)
    assert response.status_code in (413, 422), response.text
    return response.json()["error"]


def test_api_errors_are_shown_in_place(page, service):
    open_page(page, service)
    wait_for_chart(page, "人民日报")

    # next-token: top_k below its bound (422) and past the configured limit (413)
    for top_k in (0, 100_000):
        page.locator("#next-topk").fill(str(top_k))
        want = api_error(service, "next-token", {"text": "人民日报", "top_k": top_k, "model": "tiny-lstm"})
        error = page.locator("#next-error")
        error.wait_for(state="visible")
        page.wait_for_function(
            "m => document.querySelector('#next-error').textContent === m", arg=want["message"]
        )
        assert want["field"] == "top_k" and page.locator("#next-topk").get_attribute("aria-invalid") == "true"
    page.locator("#next-topk").fill("4")
    page.locator("#next-error").wait_for(state="hidden")
    assert page.locator("#next-topk").get_attribute("aria-invalid") is None
    wait_for_chart(page, "人民日报")
    assert len(bars(page)) == 4

    # generate: a negative temperature
    page.locator("#tab-generate").click()
    page.locator("#gen-temperature").fill("-1")
    page.locator("#gen-start").click()
    want = api_error(service, "generate", {"prompt": "今天", "temperature": -1, "model": "tiny-lstm"})
    page.locator("#gen-error").wait_for(state="visible")
    assert page.locator("#gen-error").inner_text() == want["message"]
    assert "temperature" in want["message"]
    assert page.locator("#gen-temperature").get_attribute("aria-invalid") == "true"
    assert page.locator("#gen-start").is_enabled()

    # rerank: nothing to rank
    page.locator("#tab-rerank").click()
    page.wait_for_selector("#rerank-rows tr")
    page.locator("#rerank-candidates").fill("\n  \n")
    page.locator("#rerank-start").click()
    want = api_error(service, "score", {"candidates": [], "model": "tiny-lstm"})
    page.locator("#rerank-error").wait_for(state="visible")
    assert page.locator("#rerank-error").inner_text() == want["message"]
    assert page.locator("#rerank-candidates").get_attribute("aria-invalid") == "true"


# -- offline, keyboard, phone width ----------------------------------------------------------------
def test_page_loads_only_from_the_service(page, service):
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    open_page(page, service)
    wait_for_chart(page, "人民日报")
    page.locator("#tab-rerank").click()
    page.wait_for_selector("#rerank-rows tr")
    outside = [u for u in requested if not (u.startswith(service) or u.startswith("data:"))]
    assert requested and not outside
    modules = {service + "static/js/" + m.name for m in (STATIC / "js").glob("*.js")}
    assert modules <= set(requested)  # every module is loaded (and from the service)
    assert {service + "static/style.css", service + "models"} <= set(requested)


def test_special_tokens_have_the_api_names(page, service):
    """The page names <eos> as the API does (no </s> on the page, <eos> in the JSON)."""
    open_page(page, service, "rerank")
    page.wait_for_selector("#rerank-rows tr")
    assert set(page.locator("#rerank-rows .tok.special").all_inner_texts()) == {"<eos>"}
    assert "<eos>" in page.locator("label[for='rerank-eos']").inner_text()
    assert "</s>" not in page.content()


def test_docs_render_offline_from_the_service(page, service):
    """/docs (Swagger UI) draws every operation of the API with no request leaving 127.0.0.1: its
    scripts and styles are the service's own (a request elsewhere is refused and recorded)."""
    outside: list[str] = []

    def local_only(route):
        url = route.request.url
        if url.startswith(service) or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(service + "docs")
    page.wait_for_selector(".opblock-summary-path")
    shown = {el.get_attribute("data-path") for el in page.locator(".opblock-summary-path").all()}
    spec = httpx.get(service + "openapi.json", timeout=30).json()
    assert shown == set(spec["paths"])
    assert page.locator(".swagger-ui .info .title").inner_text().startswith(spec["info"]["title"])
    assert not outside, outside
    page.unroute("**/*")


def test_tabs_work_from_the_keyboard(page, service):
    open_page(page, service)
    page.locator("#tab-next").focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#tab-generate").get_attribute("aria-selected") == "true"
    assert page.locator("#panel-generate").is_visible() and page.locator("#panel-next").is_hidden()
    assert page.evaluate("location.hash") == "#generate"
    assert page.evaluate("document.activeElement.id") == "tab-generate"
    page.keyboard.press("End")
    assert page.locator("#panel-rerank").is_visible()
    page.keyboard.press("Home")
    assert page.locator("#panel-next").is_visible()

    # Ctrl+Enter in the prompt generates; the generated tokens are reachable by keyboard.
    page.keyboard.press("ArrowRight")
    page.locator("#gen-max").fill("5")
    page.locator("#gen-seed").fill("3")
    page.locator("#gen-prompt").press("Control+Enter")
    page.wait_for_selector("#gen-status[data-finish-reason]")
    first = page.locator("#gen-output .tok").first
    assert first.get_attribute("tabindex") == "0"
    first.focus()
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.dataset.logprob")
    assert focused == page.locator("#gen-output .tok").nth(1).get_attribute("data-logprob")
    assert "p = " in page.locator("#gen-readout").inner_text()


@pytest.mark.parametrize("panel", ["next", "generate", "rerank"])
def test_phone_width_has_no_horizontal_scroll(page, service, panel):
    page.set_viewport_size({"width": 375, "height": 740})
    open_page(page, service, panel)
    if panel == "rerank":
        page.wait_for_selector("#rerank-rows tr")
    if panel == "next":
        wait_for_chart(page, "人民日报")
    assert page.locator(f"#panel-{panel}").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
