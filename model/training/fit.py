"""``rnnlm fit``: the shipped recipe, and ``rnnlm publish``.

The recipe (:meth:`TrainConfig.recipe <model.training.config.TrainConfig.recipe>`) runs the
training loop of :mod:`model.training.trainer` on the token stream, then on whole sentences for
the last ``sentence_fraction`` of a wall-clock or token budget, in bf16, for any kind (rnn,
hybrid, window); the checkpoint with the best per-sentence valid perplexity is kept and its final
figures are computed by the same :func:`~model.models.evaluate.evaluate_lines` that
``rnnlm evaluate`` runs. ``max_minutes`` limits the whole run, the final evaluation included: a
timed run validates and saves at step 0, times the final evaluation's path on a sample of valid,
and stops training early enough to leave that time.
"""

from __future__ import annotations

import os
from pathlib import Path

from model.models.evaluate import evaluate_lines
from model.text.data import load_split
from model.training.checkpointing import write_card, write_metrics
from model.training.config import TrainJob
from model.training.run import run


def fit(job: TrainJob, device: str = "auto", log=print, final_eval: bool = True) -> dict:
    """Train ``job`` to its budget, keep the best checkpoint on valid, evaluate it on valid and test
    and write its model card; ``max_minutes`` covers all of it (the final evaluation is skipped,
    and not reserved for, with ``final_eval=False``)."""
    return run(job, device, log, final_eval)


def publish(
    src: str | Path, dst: str | Path, data_dir: str | Path, ngram_dir: str | Path | None = None, log=print
) -> dict:
    """Copy a trained checkpoint to ``dst`` (e.g. from a GPU run into ``weights/``), point a
    hybrid at ``ngram_dir``, evaluate valid and test here, and write metrics and the model card.
    The copy is made next to ``dst`` and renamed into place."""
    import shutil

    from model.models.checkpoint import CONFIG, read_config, write_dir_atomically, write_json
    from model.models.loading import load_model
    from model.text.data import sha256_file
    from model.training.card import render_model_card

    src, dst = Path(src), Path(dst)
    config = read_config(src)

    def fill(d: Path) -> None:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, d / f.name)
        if config["model_type"] == "hybrid":
            if ngram_dir is None:
                raise ValueError("a hybrid needs --ngram: the n-gram checkpoint it is served with")
            rel = os.path.relpath(Path(ngram_dir).resolve(), dst.resolve())
            config["ngram"] = {"path": rel, "config_sha256": sha256_file(Path(ngram_dir) / CONFIG)}
            write_json(d / CONFIG, config)

    write_dir_atomically(dst, fill)
    lm = load_model(dst)
    metrics = dict(lm.metrics)
    for split in ("valid", "test"):
        metrics[split] = evaluate_lines(lm, load_split(data_dir, split))
        log(f"{dst}: {split} perplexity {metrics[split]['perplexity']:.2f}")
    write_metrics(dst, metrics)
    ngram_name, order = "", 0
    if config["model_type"] == "hybrid":
        ngram_name, order = str(Path(ngram_dir or "").name), lm.ngram.order  # type: ignore[attr-defined]
    write_card(dst, render_model_card(dst.name, config["model"], metrics, ngram=ngram_name, order=order))
    return metrics
