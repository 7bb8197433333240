"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def corpus_link(tiny_corpus, tmp_path):
    (tmp_path.parent / "corpus").mkdir(exist_ok=True)
    for f in tiny_corpus.iterdir():
        target = tmp_path.parent / "corpus" / f.name
        if not target.exists():
            target.write_bytes(f.read_bytes())
    return tmp_path
