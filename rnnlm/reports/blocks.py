"""Marked blocks in a generated markdown page: a command owns the text between its markers.

::

    <!-- rescoring:pinyin:start -->
    … written by `rnnlm rescoring-report … --into docs/RESULTS.md` …
    <!-- rescoring:pinyin:end -->

:func:`put_block` replaces a block (or appends it); :func:`carried_blocks` lists the blocks of an
old page, so a command that regenerates the whole page keeps what other commands wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- (?P<name>[\w:.-]+):start -->\n.*?\n<!-- (?P=name):end -->", re.DOTALL)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def put_block(doc: str, name: str, text: str) -> str:
    """``doc`` with the block ``name`` holding ``text`` (replaced in place, or appended)."""
    start, end = markers(name)
    block = f"{start}\n{text.strip()}\n{end}"
    if start in doc and end in doc[doc.index(start) :]:
        head, rest = doc[: doc.index(start)], doc[doc.index(start) :]
        return head + block + rest[rest.index(end) + len(end) :]
    return doc.rstrip() + "\n\n" + block + "\n"


def carried_blocks(doc: str, prefix: str) -> list[str]:
    """The whole blocks (markers included) of ``doc`` whose names start with ``prefix``, in order."""
    return [m.group(0) for m in _BLOCK.finditer(doc) if m.group("name").startswith(prefix)]


def write_report(out: str | Path, name: str, record: dict, markdown: str) -> None:
    """A measurement's two forms: ``<stem>-<name>.json`` beside the page ``out``, and the block
    ``name`` of that page (the rest of the page is kept; each file written in one rename)."""
    from model.text.data import write_text_atomically

    page = Path(out)
    twin = page.with_name(f"{page.stem}-{name}.json")
    write_text_atomically(twin, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    old = page.read_text(encoding="utf-8") if page.exists() else ""
    write_text_atomically(page, put_block(old, name, markdown))
