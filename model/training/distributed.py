"""Several processes on one run (``torchrun --nproc-per-node N -m rnnlm.cli train ...``).

Every rank builds the same global batch of ``batch_size`` rows (stream rows or sentences) and
trains on its rows ``rank::N`` under DistributedDataParallel (gloo on the CPU, NCCL on GPUs, one
GPU per rank)::

    global batch (B, L)   row 0  row 1  row 2  row 3  row 4  ...   (padded to the batch's longest)
    rank 0 of 2           row 0         row 2         row 4  ...
    rank 1 of 2                  row 1         row 3         ...

All ranks cut the same BPTT windows and take the same optimizer steps. Each rank's loss is its
summed token loss times N over the window's global token count (:func:`shard_loss`); DDP averages
gradients over ranks, so the gradient is exactly that of the global batch's mean loss however
unevenly its tokens fall, and clipping sees it whole. Rank 0 validates, writes checkpoints, the
log and the resume state; what it decides (stop early, out of time, the time-based learning rate)
is broadcast, so every rank stops at the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from model.models.device import resolve_device


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's processes; one process alone is rank 0 of 1."""

    rank: int = 0  # RANK: 0 writes checkpoints, the log and the resume state
    world_size: int = 1  # WORLD_SIZE: processes sharing each global batch
    local_rank: int = 0  # LOCAL_RANK: which GPU of this machine the process takes

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Ranks:
        """The ranks torchrun sets in the environment (none set: one process)."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


# Ranks wait in a collective while rank 0 validates; a large valid split may take minutes.
COLLECTIVE_TIMEOUT = timedelta(hours=1)


def start_process_group(ranks: Ranks, requested: str) -> torch.device:
    """Join torchrun's process group: NCCL with one GPU per rank (``cuda:LOCAL_RANK``, whatever
    CUDA index was asked), else gloo on the CPU."""
    if resolve_device(requested).startswith("cuda"):
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return device


def shard_rows(batch: Tensor | None, ranks: Ranks, pad_id: int = 0) -> Tensor | None:
    """This rank's rows of a global (B, L, ...) tensor: ``rank::world_size``. A rank left without a
    row (a short last batch) gets one all-pad row: it still joins every step, adding 0."""
    if batch is None or not ranks.distributed:
        return batch
    rows = batch[ranks.rank :: ranks.world_size]  # (B / N, L, ...)
    return rows if rows.size(0) else torch.full_like(batch[:1], pad_id)


def shard_loss(summed: Tensor, global_tokens: int, world_size: int) -> Tensor:
    """This rank's part of the global batch's mean token loss, scaled for DDP.

    The loss of the global batch is (sum over all its non-pad tokens) / (their count). Each rank
    sums over its own tokens and divides by the global count (known to every rank: each builds the
    whole batch); DDP then averages gradients over ranks, hence the factor ``world_size``. The
    result is the single-process gradient of the global batch, whatever share of tokens each rank
    holds (a mean per rank, averaged, would weight a short row as much as a long one; a rank with
    no tokens adds 0 here where a mean would be NaN). One process: sum / count, the plain mean.
    """
    return summed * (world_size / max(global_tokens, 1))
