"""Which model the service serves by default, decided on valid data by a command, not by hand.

Every candidate reranks the homophone and word-order sets drawn from the *valid* split; the one
with the best mean top-1 wins (ties: the lower valid perplexity). A backward (right-to-left) model
is measured and served but never the default: it scores whole sentences and cannot generate. The choice and the figures
behind it go to ``weights/DEFAULT.json``, which the service reads for its default model list::

    {"default": "weights/pd98-char-hybrid", "serve": ["weights/pd98-char-hybrid", …],
     "measured_on": "valid", "candidates": {…}, "command": "rnnlm benchmark choose-default …"}

Models of another language (``also_serve``: the English one) are served after the candidates; they
are chosen on their own language's data (docs/RESULTS.md), never against these sets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from model.models.evaluate import evaluate_lines
from model.models.loading import load_model
from model.quality.rerank import SetSpec, build_and_save_set, rerank
from model.text.data import load_split, write_text_atomically


def choose_default(
    models: Sequence[str],
    data_dir: str,
    specs: Sequence[SetSpec],
    sets_dir: str,
    out: str,
    device: str = "cpu",
    command: str = "",
    also_serve: Sequence[str] = (),
) -> dict:
    if any(spec.split != "valid" for spec in specs):
        raise ValueError("the default is chosen on the valid split only")
    sets = {spec.kind: build_and_save_set(data_dir, spec, sets_dir)[0] for spec in specs}
    sets = {kind: items for kind, items in sets.items() if items}  # a tiny corpus may yield none
    if not sets:
        raise ValueError(f"{data_dir}: no reranking item could be drawn from the valid split")
    valid = load_split(data_dir, "valid")
    candidates = {}
    for model_dir in models:
        lm = load_model(model_dir, device=device)
        figures = {kind: rerank(lm, items)[0].summary()["top1"] for kind, items in sets.items()}
        figures["mean_top1"] = sum(figures.values()) / len(sets)
        figures["valid_perplexity"] = evaluate_lines(lm, valid)["perplexity"]
        figures["kind"] = lm.kind
        figures["direction"] = lm.tokenizer.direction
        candidates[model_dir] = figures
    eligible = [m for m in candidates if candidates[m]["direction"] == "forward"]
    if not eligible:
        raise ValueError("no forward model to serve by default (backward models cannot generate)")
    best = max(eligible, key=lambda m: (candidates[m]["mean_top1"], -candidates[m]["valid_perplexity"]))
    record = {
        "default": best,
        "serve": [best, *[m for m in models if m != best], *[m for m in also_serve if m not in models]],
        "also_serve": list(also_serve),
        "measured_on": "valid",
        "sets": {spec.kind: spec.name for spec in specs if spec.kind in sets},
        "candidates": candidates,
        "command": command,
    }
    write_text_atomically(Path(out), json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return record
