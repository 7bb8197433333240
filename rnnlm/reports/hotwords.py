"""``rnnlm benchmark hotwords``: top-1 on the rare-name set (:mod:`model.quality.hotwords`) with and
without ``hotwords``; the bonus is chosen on the valid split's set and reported on test's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model.inference.formula import Formula, hotword_bonus
from model.models.loading import load_model
from model.quality.hotwords import HotwordItem, build_hotword_set, shuffled_hotwords
from model.quality.rerank import candidate_logprobs, homophone_index, rank_credit
from model.text.data import fetch_pd98_raw

from .blocks import write_report

BONUSES = (0.5, 1.0, 2.0, 4.0, 8.0)
BLOCK = "hotwords"


def top1(
    items: Sequence[HotwordItem], scores: list[list[float]], phrases: Sequence[str], bonus: float
) -> float:
    credit = 0.0
    for item, base, phrase in zip(items, scores, phrases, strict=True):
        hot = [(phrase, bonus)] if phrase else []
        credit += rank_credit(
            [
                Formula().total(s, hotwords=hotword_bonus(c, hot))
                for s, c in zip(base, item.candidates, strict=True)
            ],
            item.answer,
        )[0]
    return credit / max(len(items), 1)


def run_hotwords(
    data_dir: str, models: Sequence[str], out: str | Path, cache: str | None, size: int, command: str
) -> dict:
    raw = fetch_pd98_raw(cache)
    index = homophone_index(data_dir, 20, "runs/rerank")
    sets = {split: build_hotword_set(raw, index, split=split, size=size) for split in ("valid", "test")}
    rows = []
    for model_dir in models:
        lm = load_model(model_dir)
        scores = {
            split: [[float(t.sum()) for t in cand] for cand in candidate_logprobs(lm, items)]  # type: ignore[arg-type]
            for split, items in sets.items()
        }
        own = {split: [i.hotword for i in items] for split, items in sets.items()}
        bonus = max(BONUSES, key=lambda b: top1(sets["valid"], scores["valid"], own["valid"], b))
        test = sets["test"]
        rows.append(
            {
                "model": Path(model_dir).name,
                "bonus": bonus,
                "none": top1(test, scores["test"], [""] * len(test), 0.0),
                "hotwords": top1(test, scores["test"], own["test"], bonus),
                "other_names": top1(test, scores["test"], shuffled_hotwords(test), bonus),
            }
        )
    record = {"command": command, "items": {s: len(v) for s, v in sets.items()}, "rows": rows}
    write_report(out, BLOCK, record, render(record))
    return record


def render(record: dict) -> str:
    body = "| model | no hotwords | hotwords: the name (bonus) | control: another item's name |\n|---|---:|---:|---:|\n"
    for r in record["rows"]:
        body += f"| {r['model']} | {r['none']:.3f} | **{r['hotwords']:.3f}** ({r['bonus']:g}) | {r['other_names']:.3f} |\n"
    return (
        f"By `{record['command'] or 'rnnlm benchmark hotwords'}`: top-1 on {record['items']['test']} test items "
        f"(bonus per occurrence chosen on {record['items']['valid']} valid items).\n\n" + body
    )
