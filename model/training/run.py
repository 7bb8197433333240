"""One training run from start to finish: the process group under torchrun, the loop, then the
final evaluation of the kept checkpoint on valid and test, its metrics and its model card.

``rnnlm fit`` (:func:`model.training.fit.fit`) and ``rnnlm train``
(:func:`model.training.train.run_training`) both come here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from model.models.checkpoint import read_config
from model.models.device import pick_device
from model.training.card import render_model_card
from model.training.checkpointing import write_card, write_metrics
from model.training.config import TrainJob
from model.training.distributed import Ranks, start_process_group
from model.training.evaluation import final_evaluation
from model.training.trainer import Trainer


def run(
    job: TrainJob, device: str = "auto", log=print, final_eval: bool = True, progress_bar: bool = False
) -> dict:
    """Train ``job`` (resuming its run if it keeps one), keep the best checkpoint on valid,
    evaluate it on valid and test and write its metrics and model card; ``max_minutes`` covers
    all of it (the final evaluation and card are skipped, and not reserved for, with
    ``final_eval=False``). ``metrics["stopped_by"]`` says what ended training: epochs, tokens,
    budget, patience or interrupted.

    Under torchrun (RANK and WORLD_SIZE set) every rank trains its share of each global batch;
    rank 0 then evaluates and returns the metrics, the others return only
    ``{"rank": ..., "stopped_by": ...}``."""
    cfg = job.train
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ranks = Ranks.from_env()
    dev = start_process_group(ranks, device) if ranks.distributed else pick_device(device)
    try:
        trainer = Trainer(job, dev, progress_bar, ranks, log, final_eval)
        params = sum(p.numel() for p in trainer.net.parameters())
        trainer.say(
            f"{cfg.kind}: {params:,} parameters on {dev}; budget {cfg.epochs} epochs / "
            f"{cfg.max_minutes} min / {cfg.max_tokens} tokens"
        )
        stopped_by = trainer.run()
    finally:
        if ranks.distributed:
            dist.destroy_process_group()
    if not ranks.main:
        return {"rank": ranks.rank, "stopped_by": stopped_by}
    train_time_s = time.time() - trainer.t0

    start = time.time()
    if final_eval:
        _, metrics = final_evaluation(job.out_dir, job.data_dir, dev, log)
    else:
        metrics = json.loads((Path(job.out_dir) / "metrics.json").read_text(encoding="utf-8"))
    p = trainer.progress
    metrics.update(
        train_time_s=train_time_s,
        total_steps=p.step,
        tokens_seen=p.tokens_seen,
        history=p.history,
        stopped_by=stopped_by,
    )
    if final_eval:
        metrics["final_eval_s"] = time.time() - start
    write_metrics(job.out_dir, metrics)
    if final_eval:
        ngram = Path(job.ngram_dir).name if cfg.kind == "hybrid" else ""
        model = read_config(job.out_dir)["model"]
        write_card(
            job.out_dir, render_model_card(Path(job.out_dir).name, model, metrics, ngram, cfg.ngram_order)
        )
    return metrics
