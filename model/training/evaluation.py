"""The run's evaluations: its validations, and the final evaluation the time budget keeps time for.

A validation scores valid on the network being trained, batched as training is; the final
evaluation loads the kept checkpoint as it is served and scores valid and test with the same
:func:`~model.models.evaluate.evaluate_lines` that ``rnnlm evaluate`` runs. Both score each
sentence from the zero state, ``<eos>`` counted, OOVs included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from model.models.evaluate import evaluate_lines, figures
from model.training.budget import TimeBudget, count_tokens, timing_sample
from model.training.data import TrainingData, sentence_batches


@torch.no_grad()
def validation_figures(
    objective: torch.nn.Module,
    data: TrainingData,
    batch_size: int,
    bptt: int,
    width: int,
    device: torch.device,
    autocast: Callable[[], Any],
) -> dict:
    """Valid's perplexity and friends (as :func:`~model.models.evaluate.figures` reports them)
    under the objective in training: each sentence from the zero state, the n-gram of a hybrid
    the full one."""
    objective.eval()
    total, count = 0.0, 0
    with autocast():
        for windows in sentence_batches(data.valid_seqs, None, batch_size, bptt, width, device):
            state = None
            for w in windows:
                loss, n, state = objective(w.x, w.y, w.hist, None, state)
                total, count = total + float(loss), count + n
    objective.train()
    chars = sum(len(line) + 1 for line in data.valid_lines)
    return figures(-total, count, len(data.valid_lines), data.valid_oov, chars)


def time_final_evaluation(
    budget: TimeBudget, out_dir: str, data: TrainingData, device: torch.device, say=print
) -> None:
    """Time the final evaluation's path (the saved checkpoint, loaded as served, scoring
    sentences) on a sample of valid, so the budget keeps that time for it."""
    from model.models.loading import load_model

    sample = timing_sample(data.valid_lines)
    start = time.time()
    evaluate_lines(load_model(out_dir, str(device)), sample)
    budget.measured(time.time() - start, count_tokens(data.tokenizer, sample))
    say(budget.describe())
    warning = budget.too_small()
    if warning:
        say(warning)


def final_evaluation(out_dir: str, data_dir: str, device: torch.device, log=print) -> tuple[Any, dict]:
    """The kept checkpoint, loaded as served, and its metrics with valid and test measured."""
    from model.models.loading import load_model
    from model.text.data import load_split

    lm = load_model(out_dir, str(device))
    metrics = dict(lm.metrics)
    for split in ("valid", "test"):
        metrics[split] = evaluate_lines(lm, load_split(data_dir, split))
        ppl = metrics[split]["perplexity"]
        log(f"{split}: perplexity {ppl:.2f}" if math.isfinite(ppl) else f"{split}: perplexity {ppl}")
    return lm, metrics
