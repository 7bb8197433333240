"""Training loop: sentence batches, truncated BPTT, clipping, AdamW/SGD, cosine schedule,
early stopping on valid perplexity, best checkpoint kept, resumable.

Sentence boundaries, decided deliberately: every sentence starts from the model's zero start
state, as it will when served. Nothing is carried across unrelated sentences, so the model is
trained for exactly the situation it is evaluated and served in. Long sentences are split into
BPTT windows with the state carried (detached) from window to window.

Unknown characters: a train character seen once is shown as ``<unk>`` with probability
``unk_replace`` (a fresh draw every time), so the model learns a sensible P(<unk> | context)
instead of assigning ~0 to the out-of-vocabulary characters real input contains.

The time budget (``max_minutes``) is a limit on the whole run, set-up and final evaluation
included (:class:`TimeBudget`); it is checked after every optimizer step. Every checkpoint
written has its model card; the last one, however the run ends (epochs, patience, budget,
Ctrl-C), also has its test figures.

Several processes (``torchrun --nproc-per-node N -m rnnlm.cli train ...``): every rank builds the
same global batch of ``batch_size`` sentences and trains on its rows ``rank::N`` under
DistributedDataParallel (gloo on the CPU, NCCL on GPUs, one GPU per rank)::

    global batch (B, L)   row 0  row 1  row 2  row 3  row 4  ...   (padded to the batch's longest)
    rank 0 of 2           row 0         row 2         row 4  ...
    rank 1 of 2                  row 1         row 3         ...

All ranks pad to the global batch's length, so they cut the same BPTT windows and take the same
optimizer steps. Each rank's loss is its summed token loss times N over the window's global token
count (:func:`shard_loss`); DDP averages gradients over ranks, so the gradient is exactly that of
the global batch's mean loss however unevenly its tokens fall, and clipping sees it whole. Rank 0
validates, writes checkpoints, the log and the resume state; what it decides (stop early, out of
time, the time-based learning rate) is broadcast, so every rank stops at the same step.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import __version__
from model.models.checkpoint import save_rnn
from model.models.config import ModelConfig, TrainConfig
from model.models.device import pick_device, resolve_device
from model.models.evaluate import evaluate_lines
from model.models.lm import RNNLanguageModel
from model.models.network import RNNLM
from model.text.batching import bptt_windows, length_sorted_batches, pad_batch, with_boundaries
from model.text.data import corpus_checksums, load_split
from model.text.tokenizer import UNK_ID, Tokenizer
from model.training.budget import TimeBudget, count_tokens, timing_sample
from model.training.card import render_model_card
from model.training.optim import adamw, lr_at


@dataclass
class TrainJob:
    data_dir: str  # corpus directory written by `rnnlm prepare-data`
    out_dir: str  # best checkpoint goes here
    run_dir: str  # resume state and the JSON-lines log go here
    model: dict  # ModelConfig fields except vocab_size
    train: TrainConfig
    tokenizer_kind: str = "char"
    min_count: int = 1
    reverse: bool = False  # a right-to-left model (backward tokenizer)
    command: str = ""  # the command line, recorded in the model card
    resume: bool = True


def make_optimizer(net: RNNLM, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return adamw(net, cfg.lr, cfg.weight_decay)
    raise ValueError(f"optimizer must be adamw or sgd, got {cfg.optimizer!r}")


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


def shard_rows(batch: Tensor, ranks: Ranks, pad_id: int) -> Tensor:
    """This rank's rows of a global (B, L) batch: ``rank::world_size``, same length L. A rank left
    without a row (a short last batch) gets one all-pad row: it still joins every step, adding 0."""
    rows = batch[ranks.rank :: ranks.world_size]  # (B / N, L)
    return rows if rows.size(0) else torch.full_like(batch[:1], pad_id)


def shard_loss(logits: Tensor, targets: Tensor, pad_id: int, global_tokens: int, world_size: int) -> Tensor:
    """This rank's part of the global batch's mean token loss, scaled for DDP.

    The loss of the global batch is (sum over all its non-pad tokens) / (their count). Each rank
    sums over its own tokens and divides by the global count (known to every rank: each builds the
    whole batch); DDP then averages gradients over ranks, hence the factor ``world_size``. The
    result is the single-process gradient of the global batch, whatever share of tokens each rank
    holds (a mean per rank, averaged, would weight a short row as much as a long one; a rank with
    no tokens adds 0 here where a mean would be NaN). One process: sum / count, the plain mean.
    """
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=pad_id, reduction="sum"
    )
    return total * (world_size / max(global_tokens, 1))


@dataclass
class Progress:
    """Everything a resumed run needs besides the weights and the optimizer (saved as JSON)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    best_valid: float = math.inf
    bad_evals: int = 0
    tokens_seen: int = 0
    next_eval: int = 0
    history: list[dict] = field(default_factory=list)


class Trainer:
    """One training run: its data, network, optimizer and :class:`Progress`, and the few things
    it does (a step, a validation, a save), as nanoGPT's train.py reads top to bottom."""

    def __init__(
        self, job: TrainJob, device: torch.device, progress_bar: bool = True, ranks: Ranks | None = None
    ) -> None:
        started = time.time()  # the budget counts the set-up (reading, tokenizing) too
        cfg = self.cfg = job.train
        self.job, self.device, self.ranks = job, device, ranks or Ranks()
        if cfg.batch_size < self.ranks.world_size:
            raise ValueError(
                f"batch_size ({cfg.batch_size}) is the global batch: give at least one sentence "
                f"per process ({self.ranks.world_size})"
            )
        self.run_dir = Path(job.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path, self.state_path = self.run_dir / "log.jsonl", self.run_dir / "state.pt"

        train_lines = load_split(job.data_dir, "train")
        self.valid_lines = load_split(job.data_dir, "valid")
        test_lines = load_split(job.data_dir, "test")  # read now: a missing split fails before training
        self.tokenizer = Tokenizer.build(
            train_lines,
            kind=job.tokenizer_kind,
            min_count=job.min_count,
            direction="backward" if job.reverse else "forward",
        )
        self.valid_tokens = count_tokens(self.tokenizer, self.valid_lines)
        test_tokens = count_tokens(self.tokenizer, test_lines)
        self.train_seqs = [with_boundaries(self.tokenizer.encode(line).ids) for line in train_lines]
        self.rare = torch.zeros(self.tokenizer.vocab_size, dtype=torch.bool)
        self.rare[self.tokenizer.rare_ids(1)] = True

        torch.manual_seed(cfg.seed)
        self.config = ModelConfig(vocab_size=self.tokenizer.vocab_size, **job.model)
        self.net = RNNLM(self.config).to(device)
        self.opt = make_optimizer(self.net, cfg)
        self.total_steps = self.steps_per_epoch() * cfg.epochs
        self.eval_every = cfg.eval_every or self.steps_per_epoch()
        self.progress = Progress(next_eval=self.eval_every)
        if job.resume and self.state_path.exists():
            self.resume()
        # What the steps run: the network itself, or DDP around it (same parameters; DDP averages
        # their gradients over the ranks in backward). Validation and saving use self.net.
        self.model: torch.nn.Module = self.net
        if self.ranks.distributed:
            self.model = DistributedDataParallel(
                self.net, device_ids=[device] if device.type == "cuda" else None
            )
            torch.manual_seed(cfg.seed + self.ranks.rank)  # dropout and <unk> draws differ by rank
        # the final evaluation: the last validation, then test
        setup_s = time.time() - started
        self.budget = TimeBudget(
            cfg.max_minutes, self.valid_tokens + test_tokens, self.progress.elapsed + setup_s
        )
        self.t0 = time.time() - self.progress.elapsed  # training time: logs, resume
        self.base_metrics = self.describe(len(train_lines))
        self.bar = tqdm(
            total=self.total_steps,
            initial=self.progress.step,
            disable=not progress_bar or not self.ranks.main,
            dynamic_ncols=True,
            mininterval=2.0,
        )
        self.running_loss: float | None = None
        self.rate_tokens, self.rate_t = 0, time.time()

    # -- set-up ---------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass: one per BPTT window of each (length-sorted) batch."""
        seqs, cfg = self.train_seqs, self.cfg
        return sum(
            math.ceil((len(seqs[i[-1]]) - 1) / cfg.bptt) if i else 0
            for i in [
                sorted(b, key=lambda j: len(seqs[j]))
                for b in length_sorted_batches(seqs, cfg.batch_size, random.Random(0))
            ]
        )

    def resume(self) -> None:
        saved = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.net.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.progress = Progress(**json.loads(saved["progress"]))
        if self.ranks.main:
            print(
                f"resumed from {self.state_path} at step {self.progress.step} (epoch {self.progress.epoch})"
            )

    def describe(self, train_lines: int) -> dict:
        job, dev = self.job, self.device
        return {
            "data": {
                "dir": str(job.data_dir),
                "sha256": corpus_checksums(job.data_dir),
                "train_lines": train_lines,
                "train_tokens": sum(len(s) - 1 for s in self.train_seqs),
            },
            "train_config": self.cfg.to_dict(),
            "tokenizer": {
                "kind": self.tokenizer.kind,
                "vocab_size": self.tokenizer.vocab_size,
                "min_count": job.min_count,
                "direction": self.tokenizer.direction,
            },
            "parameters": self.net.num_parameters(),
            "command": job.command,
            "hardware": {
                "device": str(dev),
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "world_size": self.ranks.world_size,
                "torch": torch.__version__,
            },
            "rnnlm_version": __version__,
        }

    # -- budget ---------------------------------------------------------------------------------
    def fraction_done(self) -> float:
        by_steps = self.progress.step / max(self.total_steps, 1)
        return max(by_steps, self.clock()[0])

    def out_of_time(self) -> bool:
        return self.clock()[1]

    def clock(self) -> tuple[float, bool]:
        """The budget's fraction used and whether it has run out, as rank 0 reads them: every rank
        must set the same learning rate and stop at the same step (one small broadcast, made only
        with a time budget on several processes; every rank calls this at the same points)."""
        fraction, out = self.budget.fraction(), self.budget.out_of_time()
        if self.ranks.distributed and self.budget.limit_s > 0:
            agreed = torch.tensor([fraction, float(out)], dtype=torch.float64, device=self.device)
            dist.broadcast(agreed, src=0)
            fraction, out = float(agreed[0]), bool(agreed[1])
        return fraction, out

    def time_evaluation(self) -> None:
        """Time an evaluation of a sample of valid, so the budget can keep time for the final
        evaluation before the first validation has run."""
        sample = timing_sample(self.valid_lines)
        start = time.time()
        evaluate_lines(RNNLanguageModel(self.net, self.tokenizer), sample)
        self.net.train()
        self.budget.measured(time.time() - start, count_tokens(self.tokenizer, sample))
        self.bar.write(self.budget.describe())
        warning = self.budget.too_small()
        if warning:
            self.bar.write(warning)

    # -- training -------------------------------------------------------------------------------
    def batch(self, rows: list[int]) -> torch.Tensor:
        """A padded (B, L) global batch, train singletons shown as <unk> with probability unk_replace."""
        batch = pad_batch([self.train_seqs[i] for i in rows])  # (B, L)
        if self.cfg.unk_replace > 0:
            hide = self.rare[batch] & (torch.rand(batch.shape) < self.cfg.unk_replace)
            batch = batch.masked_fill(hide, UNK_ID)
        return batch.to(self.device)

    def train_batch(self, batch: torch.Tensor) -> bool:
        """Every BPTT window of one global batch (this rank's rows of it), each sentence from the
        zero state, the state carried. False when the time budget ended it part-way (checked after
        every step)."""
        state = None
        pad = self.config.pad_id
        mine = shard_rows(batch, self.ranks, pad) if self.ranks.distributed else batch
        windows = zip(bptt_windows(batch, self.cfg.bptt), bptt_windows(mine, self.cfg.bptt), strict=True)
        for (_, all_targets), (inputs, targets) in windows:
            state = self.step(inputs, targets, state, int((all_targets != pad).sum()))
            if self.out_of_time():
                return False
        return True

    def step(
        self, inputs: torch.Tensor, targets: torch.Tensor, state: torch.Tensor | None, global_tokens: int
    ) -> torch.Tensor:
        """One optimizer step on this rank's (B / N, T) window of a global window of
        ``global_tokens`` non-pad targets."""
        cfg, p, world = self.cfg, self.progress, self.ranks.world_size
        lr = lr_at(self.fraction_done(), p.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        logits, state, _ = self.model(inputs, state)  # (B / N, T, V)
        loss = shard_loss(logits, targets, self.config.pad_id, global_tokens, world)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP: the gradients are averaged over the ranks here, before clipping
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip)
        self.opt.step()
        p.step += 1
        p.tokens_seen += global_tokens
        self.rate_tokens += global_tokens
        mean = loss.detach().clone()
        if self.ranks.distributed:  # the global batch's mean loss, for the log
            dist.all_reduce(mean)
        value = mean.item() / world
        self.running_loss = value if self.running_loss is None else 0.98 * self.running_loss + 0.02 * value
        if p.step % 50 == 0:
            self.report(lr, float(grad_norm))
        self.bar.update(1)
        return state.detach()  # truncated BPTT: carry the state, not the graph

    def report(self, lr: float, grad_norm: float) -> None:
        now = time.time()
        tps = self.rate_tokens / max(now - self.rate_t, 1e-9)
        self.rate_tokens, self.rate_t = 0, now
        loss = self.running_loss or 0.0
        self.bar.set_postfix(
            loss=f"{loss:.3f}", ppl=f"{math.exp(loss):.1f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}"
        )
        self.log(
            {
                "event": "train",
                "step": self.progress.step,
                "epoch": self.progress.epoch,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tps,
                "elapsed_s": now - self.t0,
            }
        )

    # -- validation and saving ------------------------------------------------------------------
    def validate(self) -> dict:
        """Valid figures of the current weights (timed: the budget learns what evaluation costs)."""
        start = time.time()
        metrics = evaluate_lines(RNNLanguageModel(self.net, self.tokenizer), self.valid_lines)
        self.net.train()
        self.budget.measured(time.time() - start, self.valid_tokens)
        return metrics

    def evaluate_and_keep(self) -> str | None:
        """Validate, keep the checkpoint if it is the best so far; why training should stop, or None.
        Several processes: rank 0 does it, the others wait for its decision (every rank calls this
        at the same step)."""
        self.progress.next_eval = self.progress.step + self.eval_every
        reason = self.validate_and_save() if self.ranks.main else None
        if not self.ranks.distributed:
            return reason
        # rank 0's decision and progress (best valid, history): every rank takes the same path on
        decision: list = [reason, asdict(self.progress)]
        dist.broadcast_object_list(decision, src=0)
        for name, value in decision[1].items():  # in place: the loop holds self.progress
            setattr(self.progress, name, value)
        return decision[0]

    def validate_and_save(self) -> str | None:
        """Rank 0's part of :meth:`evaluate_and_keep` (all of it for one process)."""
        p, cfg = self.progress, self.cfg
        valid = self.validate()
        ppl = valid["perplexity"]
        record = {
            "event": "valid",
            "step": p.step,
            "epoch": p.epoch,
            "valid_perplexity": ppl,
            "elapsed_s": time.time() - self.t0,
            "tokens_seen": p.tokens_seen,
            "world_size": self.ranks.world_size,
        }
        p.history.append(record)
        self.log(record)
        self.bar.write(json.dumps(record))
        if ppl < p.best_valid:
            p.best_valid, p.bad_evals = ppl, 0
            metrics = {
                **self.base_metrics,
                "best": record,
                "valid": valid,
                "train_time_s": time.time() - self.t0,
                "steps": p.step,
            }
            # A card from the start: a run killed now still leaves a described checkpoint (its
            # test figures come with the final evaluation).
            card = render_model_card(Path(self.job.out_dir).name, self.net.config, metrics)
            save_rnn(self.job.out_dir, self.net, self.tokenizer, metrics, card=card)
        else:
            p.bad_evals += 1
        self.save_resume_state()
        if p.bad_evals >= cfg.patience:
            self.bar.write(f"early stop: no valid improvement in {cfg.patience} evaluations")
            return "patience"
        if self.budget.out_of_time():
            self.bar.write(
                f"time budget: training stops to leave {self.budget.reserve_s():.0f} s for the final evaluation"
            )
            return "budget"
        return None

    def save_resume_state(self) -> None:
        if not self.ranks.main:  # one writer; the others never read it until a restart
            return
        self.progress.elapsed = time.time() - self.t0
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(
            {
                "model": self.net.state_dict(),
                "optimizer": self.opt.state_dict(),
                "progress": json.dumps(asdict(self.progress)),
            },
            tmp,
        )
        tmp.replace(self.state_path)

    def log(self, record: dict) -> None:
        if not self.ranks.main:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> str:
        """Train until the epochs, early stopping, the time budget or Ctrl-C end it; says which."""
        self.net.train()
        self.log(
            {
                "event": "start",
                "step": self.progress.step,
                "epoch": self.progress.epoch,
                "world_size": self.ranks.world_size,
                "global_batch_size": self.cfg.batch_size,
            }
        )
        if self.budget.limit_s > 0 and self.ranks.main:  # rank 0 keeps the time for all
            self.time_evaluation()
        try:
            return self._train()
        except KeyboardInterrupt:
            if not self.ranks.main:  # rank 0 keeps what there is; no collective can be trusted now
                return "interrupted"
            self.bar.write("interrupted: evaluating the best checkpoint on test (Ctrl-C again to abort)")
            if math.isinf(self.progress.best_valid):  # nothing kept yet: keep what there is
                self.validate_and_save()
            return "interrupted"
        finally:
            self.bar.close()

    def _train(self) -> str:
        cfg, p = self.cfg, self.progress
        while p.epoch < cfg.epochs:
            batches = list(
                length_sorted_batches(self.train_seqs, cfg.batch_size, random.Random(cfg.seed + p.epoch))
            )
            for b_index in range(p.batch_in_epoch, len(batches)):
                if self.train_batch(self.batch(batches[b_index])):
                    p.batch_in_epoch = b_index + 1  # a batch cut by the budget is redone on resume
                if p.step >= p.next_eval or self.out_of_time():
                    reason = self.evaluate_and_keep()
                    if reason:
                        return reason
            p.epoch += 1
            p.batch_in_epoch = 0
            self.save_resume_state()
        if not p.history or p.history[-1]["step"] < p.step:  # the last steps were never validated
            self.evaluate_and_keep()
        return "epochs"


def run_training(job: TrainJob, device: str = "auto", progress: bool = True) -> dict:
    """Train ``job`` (resuming its run if there is one), then evaluate the best checkpoint on test.
    ``metrics["stopped_by"]`` says what ended training: epochs, patience, budget or interrupted.

    Under torchrun (RANK and WORLD_SIZE set) every rank trains its share of each global batch;
    rank 0 then evaluates on test and returns the metrics, the others return only
    ``{"rank": ..., "stopped_by": ...}``."""
    if job.train.threads > 0:
        torch.set_num_threads(job.train.threads)
    ranks = Ranks.from_env()
    dev = start_process_group(ranks, device) if ranks.distributed else pick_device(device)
    try:
        trainer = Trainer(job, dev, progress, ranks)
        stopped_by = trainer.run()
    finally:
        if ranks.distributed:
            dist.destroy_process_group()
    if not ranks.main:
        return {"rank": ranks.rank, "stopped_by": stopped_by}
    return finalize(job, dev, trainer.progress, time.time() - trainer.t0, stopped_by)


def finalize(
    job: TrainJob, dev: torch.device, progress: Progress, train_time_s: float, stopped_by: str = ""
) -> dict:
    """Evaluate the best checkpoint on test (its valid figures were measured when it was kept),
    and write metrics and the model card."""
    from model.models.checkpoint import load_rnn

    start = time.time()
    net, tokenizer, metrics = load_rnn(job.out_dir, device=dev)
    lm = RNNLanguageModel(net, tokenizer)
    splits = ("test",) if "tokens" in metrics.get("valid", {}) else ("valid", "test")  # older runs
    for split in splits:
        metrics[split] = evaluate_lines(lm, load_split(job.data_dir, split))
    metrics["train_time_s"] = train_time_s
    metrics["final_eval_s"] = time.time() - start
    metrics["total_steps"] = progress.step
    metrics["tokens_seen"] = progress.tokens_seen
    metrics["history"] = progress.history
    metrics["stopped_by"] = stopped_by
    save_rnn(
        job.out_dir,
        net.cpu(),
        tokenizer,
        metrics,
        card=render_model_card(Path(job.out_dir).name, net.config, metrics),
    )
    return metrics
