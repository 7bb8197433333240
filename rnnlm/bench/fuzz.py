"""The long fuzz run: tests/service/test_fuzz.py with many examples per operation, its outcome recorded in
docs/RELIABILITY.md (between the ``fuzz:results`` markers).

    .venv/bin/python -m rnnlm.bench.fuzz                  # 500 examples per operation and property
    .venv/bin/python -m rnnlm.bench.fuzz --examples 100 --out none
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "RELIABILITY.md"
START, END = "<!-- fuzz:results -->", "<!-- fuzz:end -->"


class Outcomes:
    """A pytest plugin that counts test outcomes."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1
            if report.outcome == "failed":
                self.failed.append(report.nodeid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=500, help="examples per operation (RNNLM_FUZZ_EXAMPLES)")
    p.add_argument("--out", default=str(DOC), help="Markdown file to update ('none': do not)")
    args = p.parse_args(argv)
    os.environ["RNNLM_FUZZ_EXAMPLES"] = str(args.examples)
    outcomes = Outcomes()
    start = time.monotonic()
    tests = str(REPO / "tests" / "service" / "test_fuzz.py")
    rc = pytest.main(["-q", "-p", "no:cacheprovider", tests], plugins=[outcomes])
    took = time.monotonic() - start
    command = " ".join([".venv/bin/python -m rnnlm.bench.fuzz", *(sys.argv[1:] if argv is None else argv)])
    counts = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.counts.items()))
    text = (
        f"- command: `{command}`; run {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{took:.0f} s\n- {args.examples} schemathesis examples per operation (valid and invalid) and "
        f"{max(20, args.examples * 2)} hypothesis examples per library property: tests {counts}; "
        f"{'no failure' if rc == 0 else 'FAILED: ' + ', '.join(outcomes.failed)}"
    )
    print(text)
    if args.out != "none":
        path = Path(args.out)
        doc = path.read_text(encoding="utf-8")
        if START in doc and END in doc:
            doc = doc[: doc.index(START) + len(START)] + "\n" + text + "\n" + doc[doc.index(END) :]
            path.write_text(doc, encoding="utf-8")
            print(f"updated {path}")
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
