"""The training loop: truncated BPTT with gradient clipping, as pytorch/examples'
word_language_model trains, in two phases that share one warm-up + cosine schedule::

    phase "stream"    the train sentences back to back in B rows, windows of T tokens, the state
                      carried from window to window: no padding, long context, every step full
    phase "sentence"  the last ``sentence_fraction`` of the run: whole sentences, each from the
                      zero state, exactly as ``/score`` and ``rnnlm evaluate`` use the model

``rnnlm fit`` (:meth:`TrainConfig.recipe`) runs both to a time or token budget; ``rnnlm train``
(``TrainConfig()``) runs the sentence phase alone, for epochs, with early stopping. Either way
the run validates now and then, keeps the checkpoint with the best valid perplexity (with its
card), can resume (``job.resume``), and runs under torchrun (:mod:`model.training.distributed`).
``max_minutes`` limits the whole run, the final evaluation included
(:class:`~model.training.budget.TimeBudget`): it is checked after every optimizer step.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.text.tokenizer import PAD_ID
from model.training import checkpointing as ckpt
from model.training.budget import TimeBudget, count_tokens
from model.training.card import render_model_card
from model.training.checkpointing import Progress
from model.training.config import TrainJob
from model.training.data import (
    TrainingData,
    Window,
    noised,
    sentence_batches,
    sentence_steps,
    stream_batches,
    stream_steps,
)
from model.training.distributed import Ranks, shard_loss, shard_rows
from model.training.evaluation import time_final_evaluation, validation_figures
from model.training.objective import build_objective
from model.training.optim import lr_at, make_optimizer


class Trainer:
    """One run's data, network, optimizer and :class:`Progress`, and the few things it does (a
    step, a validation, a save), read top to bottom in :meth:`run`."""

    def __init__(
        self,
        job: TrainJob,
        device: torch.device,
        progress_bar: bool = True,
        ranks: Ranks | None = None,
        log=print,
        final_eval: bool = True,
    ) -> None:
        started = time.time()  # the budget counts the set-up (tokenizing, a hybrid's n-grams) too
        self.cpu0 = time.process_time()
        cfg = self.cfg = job.train
        self.job, self.device, self.ranks, self.final_eval = job, device, ranks or Ranks(), final_eval
        self.log_line = log
        if cfg.batch_size < self.ranks.world_size:
            raise ValueError(
                f"batch_size ({cfg.batch_size}) is the global batch: give at least one row "
                f"per process ({self.ranks.world_size})"
            )
        self.run_dir = Path(job.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path, self.state_path = self.run_dir / "log.jsonl", self.run_dir / "state.pt"

        folds = cfg.folds if cfg.kind == "hybrid" else 1
        self.data = d = TrainingData(
            job.data_dir,
            job.tokenizer,
            job.min_count,
            job.reverse,
            job.vocabulary_from,
            folds,
            cfg.seed,
            normalizer=job.normalizer,
        )
        self.tokenizer, self.corpus = d.tokenizer, d.corpus.to(device)
        self.gen = torch.Generator().manual_seed(cfg.seed)

        torch.manual_seed(cfg.seed)
        self.net, self.objective = build_objective(job, self.tokenizer, self.corpus, device, self.say)
        self.width = self.objective.width
        self.opt = make_optimizer(self.net, cfg)

        sentences_only = cfg.sentence_fraction >= 1
        per_epoch = (
            sentence_steps(self.corpus.sentences, cfg.batch_size, cfg.bptt)
            if sentences_only
            else stream_steps(self.corpus, cfg.batch_size, cfg.bptt)
        )
        self.total_steps = per_epoch * cfg.epochs  # 0: no limit by epochs
        self.eval_every = cfg.eval_every or (0 if cfg.eval_every_tokens else per_epoch)
        self.progress = Progress(
            next_eval=self.eval_every,
            next_eval_tokens=cfg.eval_every_tokens,
            phase="sentence" if sentences_only else "stream",
        )
        if job.resume and self.state_path.exists():
            fields = ckpt.load_resume_state(self.state_path, self.net, self.opt, device)
            self.progress = Progress(**fields)
            self.say(
                f"resumed from {self.state_path} at step {self.progress.step} (epoch {self.progress.epoch})"
            )
        # What the steps run: the objective itself, or DDP around it (same parameters; DDP averages
        # their gradients over the ranks in backward). Validation and saving use self.objective.
        self.model: torch.nn.Module = self.objective
        if self.ranks.distributed:
            ids = [device] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.objective, device_ids=ids)
            torch.manual_seed(cfg.seed + self.ranks.rank)  # dropout draws differ by rank
        # the final evaluation: the last validation (other_s), then valid and test as served
        final_tokens = count_tokens(self.tokenizer, d.valid_lines) + count_tokens(
            self.tokenizer, d.test_lines
        )
        self.budget = TimeBudget(
            cfg.max_minutes, final_tokens if final_eval else 0, self.progress.elapsed + time.time() - started
        )
        self.t0 = time.time() - self.progress.elapsed  # training time: logs, resume
        self.base_metrics = ckpt.run_metadata(
            job, cfg, self.tokenizer, self.net, d, device, self.ranks.world_size
        )
        self.bar = tqdm(
            total=self.total_steps or None,
            initial=self.progress.step,
            disable=not progress_bar or not self.ranks.main,
            dynamic_ncols=True,
            mininterval=2.0,
        )
        self.running_loss: float | None = None
        self.rate_tokens, self.rate_t = 0, time.time()

    def say(self, message: str) -> None:
        if self.ranks.main:
            bar = getattr(self, "bar", None)
            if bar is not None and not bar.disable:
                bar.write(message)
            else:
                self.log_line(message)

    # -- the schedule -------------------------------------------------------------------------------
    def fraction_done(self) -> float:
        """The share of the run used: by steps (epochs), tokens or time, whichever is furthest."""
        p, cfg = self.progress, self.cfg
        by_steps = p.step / self.total_steps if self.total_steps else 0.0
        by_tokens = p.tokens_seen / cfg.max_tokens if cfg.max_tokens > 0 else 0.0
        return max(by_steps, by_tokens, self.clock()[0])

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

    def ended(self) -> str | None:
        """What ended the run, if something has: the time budget, the token budget or the epochs."""
        p, cfg = self.progress, self.cfg
        if self.clock()[1]:
            return "budget"
        if cfg.max_tokens > 0 and p.tokens_seen >= cfg.max_tokens:
            return "tokens"
        if cfg.epochs > 0 and (p.epoch >= cfg.epochs or p.step >= self.total_steps):
            return "epochs"
        return None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    # -- batches and steps --------------------------------------------------------------------------
    def batches(self, epoch: int):
        """This epoch's batches in the current phase's layout, train singletons noised."""
        cfg, c = self.cfg, self.corpus
        if self.progress.phase == "stream":
            tokens = noised(c.tokens, self.data.rare, cfg.unk_replace, self.gen).to(self.device)
            offset = random.Random(cfg.seed + epoch).randrange(cfg.bptt)
            return stream_batches(c, tokens, cfg.batch_size, cfg.bptt, offset, self.width)
        folds = c.sentence_fold if cfg.kind == "hybrid" else None
        return sentence_batches(
            c.sentences,
            folds,
            cfg.batch_size,
            cfg.bptt,
            self.width,
            self.device,
            random.Random(cfg.seed + epoch),
            lambda batch: noised(batch, self.data.rare, cfg.unk_replace, self.gen),
        )

    def train_batch(self, windows: list[Window], state):
        """Every BPTT window of one batch, the state carried; (state, whether the batch was
        finished): the run's end (time, tokens) is checked before every window."""
        for i, window in enumerate(windows):
            if i and self.fraction_done() >= 1:
                return state, False
            state = self.step(window, state)
        return state, True

    def step(self, w: Window, state):
        """One optimizer step on this rank's rows of a global window."""
        cfg, p, world = self.cfg, self.progress, self.ranks.world_size
        lr = lr_at(self.fraction_done(), p.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        global_tokens = int((w.y != PAD_ID).sum())
        fold = w.fold if cfg.kind == "hybrid" else None
        x, y, hist, fold = (shard_rows(t, self.ranks) for t in (w.x, w.y, w.hist, fold))
        with self.autocast():
            summed, _, state = self.model(x, y, hist, fold, state)
        loss = shard_loss(summed, global_tokens, world)
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
        return state.detach() if state is not None else None  # truncated BPTT: the state, not the graph

    def report(self, lr: float, grad_norm: float) -> None:
        now, p = time.time(), self.progress
        tps = self.rate_tokens / max(now - self.rate_t, 1e-9)
        self.rate_tokens, self.rate_t = 0, now
        loss = self.running_loss or 0.0
        self.bar.set_postfix(
            loss=f"{loss:.3f}", ppl=f"{math.exp(loss):.1f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}"
        )
        self.log(
            {
                "event": "train",
                "step": p.step,
                "epoch": p.epoch,
                "phase": p.phase,
                "tokens_seen": p.tokens_seen,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tps,
                "elapsed_s": round(now - self.t0, 2),
            }
        )

    # -- validation and saving ----------------------------------------------------------------------
    def validate(self) -> dict:
        """Per-sentence valid figures of the current weights (each sentence from the zero state,
        <eos> counted, OOVs included, as ``rnnlm evaluate`` measures), batched as training is."""
        start = time.time()
        cfg = self.cfg
        figures = validation_figures(
            self.objective, self.data, cfg.batch_size, cfg.bptt, self.width, self.device, self.autocast
        )
        if self.budget.final_tokens:
            self.budget.other_s = time.time() - start  # the last validation is part of the final evaluation
        return figures

    def due_for_validation(self) -> bool:
        p = self.progress
        by_steps = self.eval_every > 0 and p.step >= p.next_eval
        return by_steps or (self.cfg.eval_every_tokens > 0 and p.tokens_seen >= p.next_eval_tokens)

    def evaluate_and_keep(self) -> str | None:
        """Validate, keep the checkpoint if it is the best so far; "patience" if training should
        stop. Several processes: rank 0 does it, the others wait for its decision (every rank
        calls this at the same step)."""
        p = self.progress
        p.next_eval = p.step + self.eval_every if self.eval_every else 0
        p.next_eval_tokens = p.tokens_seen + self.cfg.eval_every_tokens
        reason = self.validate_and_save() if self.ranks.main else None
        if not self.ranks.distributed:
            return reason
        # rank 0's decision and progress (best valid, history): every rank takes the same path on
        decision: list = [reason, asdict(p)]
        dist.broadcast_object_list(decision, src=0)
        for name, value in decision[1].items():  # in place: the loop holds self.progress
            setattr(p, name, value)
        return decision[0]

    def validate_and_save(self) -> str | None:
        """Rank 0's part of :meth:`evaluate_and_keep` (all of it for one process)."""
        p, cfg = self.progress, self.cfg
        valid = self.validate()
        record = {
            "event": "valid",
            "step": p.step,
            "epoch": p.epoch,
            "phase": p.phase,
            "tokens_seen": p.tokens_seen,
            "valid_perplexity": valid["perplexity"],
            "elapsed_s": round(time.time() - self.t0, 2),
            "cpu_s": round(time.process_time() - self.cpu0, 1),  # this process, all threads, set-up included
            "world_size": self.ranks.world_size,
        }
        p.history.append(record)
        self.log(record)
        self.say(json.dumps(record))
        if valid["perplexity"] < p.best_valid:
            p.best_valid, p.bad_evals = valid["perplexity"], 0
            self.save(record, valid)
        else:
            p.bad_evals += 1
        self.save_resume_state()
        if cfg.patience > 0 and p.bad_evals >= cfg.patience:
            self.say(f"early stop: no valid improvement in {cfg.patience} evaluations")
            return "patience"
        return None

    def save(self, best: dict, valid: dict) -> None:
        p, job = self.progress, self.job
        metrics = {
            **self.base_metrics,
            "best": best,
            "valid": valid,
            "train_time_s": time.time() - self.t0,
            "steps": p.step,
            "tokens_seen": p.tokens_seen,
        }
        # A card from the start: a run killed now still leaves a described checkpoint (its test
        # figures come with the final evaluation). None without a final evaluation.
        card = None
        if self.final_eval:
            ngram = Path(job.ngram_dir).name if self.cfg.kind == "hybrid" else ""
            model = self.objective.net.config.to_dict()
            card = render_model_card(Path(job.out_dir).name, model, metrics, ngram, self.cfg.ngram_order)
        ckpt.save_checkpoint(job.out_dir, self.net, self.tokenizer, self.cfg, metrics, card, job.ngram_dir)

    def save_resume_state(self) -> None:
        if self.job.resume and self.ranks.main:  # one writer; the others never read it until a restart
            self.progress.elapsed = time.time() - self.t0
            ckpt.save_resume_state(self.state_path, self.net, self.opt, asdict(self.progress))

    def log(self, record: dict) -> None:
        if self.ranks.main:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> str:
        """Train until the epochs, the token or time budget, early stopping or Ctrl-C end it;
        says which: epochs, tokens, budget, patience or interrupted."""
        p = self.progress
        self.net.train()
        start = {"event": "start", "step": p.step, "epoch": p.epoch, "phase": p.phase}
        self.log({**start, "world_size": self.ranks.world_size, "global_batch_size": self.cfg.batch_size})
        try:
            if self.budget.limit_s > 0 and self.budget.final_tokens:
                if math.isinf(p.best_valid):
                    self.evaluate_and_keep()  # a checkpoint to time the final evaluation with
                if self.ranks.main:  # rank 0 keeps the time for all
                    time_final_evaluation(self.budget, self.job.out_dir, self.data, self.device, self.say)
            return self._train()
        except KeyboardInterrupt:
            if not self.ranks.main:  # rank 0 keeps what there is; no collective can be trusted now
                return "interrupted"
            self.say("interrupted: evaluating the best checkpoint (Ctrl-C again to abort)")
            if math.isinf(p.best_valid):  # nothing kept yet: keep what there is
                self.validate_and_save()
            return "interrupted"
        finally:
            self.bar.close()

    def _train(self) -> str:
        cfg, p = self.cfg, self.progress
        while True:
            state = None
            for index, windows in enumerate(self.batches(p.epoch)):
                if index < p.batch_in_epoch:  # trained before a resume
                    continue
                if p.phase == "sentence":
                    state = None  # every sentence from the zero state
                state, whole = self.train_batch(windows, state)
                if whole:
                    p.batch_in_epoch = index + 1  # a batch cut by the budget is redone on resume
                ended = self.fraction_done() >= 1 and self.ended()
                switch = p.phase == "stream" and self.fraction_done() >= 1 - cfg.sentence_fraction
                if ended or switch or self.due_for_validation():
                    reason = self.evaluate_and_keep()
                    if reason:
                        return reason
                if ended:
                    return self.stop(ended)
                if switch:
                    p.phase = "sentence"
                    self.say(f"phase: sentence (at {p.tokens_seen} tokens)")
                    break
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
            self.save_resume_state()
            ended = self.ended()
            if ended:
                if not p.history or p.history[-1]["step"] < p.step:  # the last steps were never validated
                    reason = self.evaluate_and_keep()
                    if reason:
                        return reason
                return self.stop(ended)

    def stop(self, reason: str) -> str:
        if reason == "budget":
            self.say(
                f"time budget: training stops to leave {self.budget.reserve_s():.0f} s for the final evaluation"
            )
        return reason
