"""Re-take the playground screenshots in this folder against a real ``rnnlm serve``.

    python docs/screenshots/capture.py [--model-dir weights/pd98-char-lstm]

Uses the same service and browser helpers as tests/service/test_playground.py (Debian's chromium and
the ``playwright`` package). Generation uses a fixed seed, so a re-take with the same weights
shows the same text.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from tests.service.test_playground import chromium_context, running_service  # noqa: E402


def capture(base: str, out: Path, profile: Path) -> list[Path]:
    shots = []
    with chromium_context(profile, viewport={"width": 1280, "height": 900}) as ctx:
        page = ctx.new_page()
        page.goto(base)
        page.wait_for_selector("#model-select option", state="attached")
        page.locator("#next-text").fill("人民日报记者")
        page.wait_for_function("document.querySelector('#next-result').dataset.text === '人民日报记者'")
        page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
        shots.append(out / "next-token.png")
        page.screenshot(path=shots[-1], full_page=True)

        page.locator("#tab-generate").click()
        page.locator("#gen-prompt").fill("中国人民")
        page.locator("#gen-seed").fill("2026")
        page.locator("#gen-start").click()
        page.wait_for_selector("#gen-status[data-finish-reason]")
        page.locator("#gen-output .tok").nth(3).hover()  # fill the probability read-out
        shots.append(out / "generate.png")
        page.screenshot(path=shots[-1], full_page=True)

        page.locator("#tab-rerank").click()
        page.wait_for_selector("#rerank-rows tr")
        page.locator("#rerank-rows tr .tok").nth(3).hover()
        shots.append(out / "rerank.png")
        page.screenshot(path=shots[-1], full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.locator("#tab-next").click()
        page.wait_for_selector("#next-bars .bar")
        page.evaluate("document.activeElement.blur()")
        shots.append(out / "phone-next-token.png")
        page.screenshot(path=shots[-1], full_page=True)
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        action="append",
        default=None,
        help="checkpoint directory to serve (repeatable; default weights/pd98-char-lstm)",
    )
    parser.add_argument("--out", default=str(HERE), help="where to write the PNGs")
    args = parser.parse_args()
    model_dirs = [Path(d) for d in (args.model_dir or [REPO / "weights" / "pd98-char-lstm"])]
    with tempfile.TemporaryDirectory() as tmp, running_service(model_dirs, Path(tmp) / "serve.log") as base:
        for shot in capture(base, Path(args.out), Path(tmp) / "profile"):
            print(shot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
