"""``rnnlm train``: the training loop (:mod:`model.training.trainer`) in its classic setting.

``TrainConfig()``'s defaults: whole sentences only, each from the model's zero start state as it
will be served (nothing is carried across unrelated sentences; a long sentence is split into
BPTT windows with the state carried), for ``epochs`` passes with early stopping on valid
perplexity (``patience``), in fp32, the run resumable from its ``run_dir``. ``rnnlm fit`` runs the
same loop with the shipped recipe (:meth:`TrainConfig.recipe`).
"""

from __future__ import annotations

from model.training.config import TrainJob
from model.training.run import run
from model.training.trainer import Trainer

__all__ = ["TrainJob", "Trainer", "run_training"]


def run_training(job: TrainJob, device: str = "auto", progress: bool = True) -> dict:
    """Train ``job`` (resuming its run if ``job.resume`` and there is one), then evaluate the best
    checkpoint; see :func:`model.training.run.run`."""
    return run(job, device, final_eval=True, progress_bar=progress)
