"""Fast training on a token stream, then on whole sentences: the recipe the shipped models use.

Two phases share one warm-up + cosine schedule, fitted to a wall-clock or token budget::

    phase "stream"    the train sentences concatenated, cut into B rows, windows of T tokens, the
                      state carried from window to window (pytorch/examples word_language_model):
                      no padding, long context, every step full.
    phase "sentence"  the last ``sentence_fraction`` of the budget: every sentence from the zero
                      state, exactly as ``/score`` and ``rnnlm evaluate`` use the model.

Stream layout (B = 3 rows; each row a contiguous slice of the stream, read in windows)::

    row 0  <bos> 人 民 日 报 <bos> 今 天 …   ─▶ window 1 | window 2 | …  (state carried per row)
    row 1  …
    row 2  …

Three kinds train here through one objective (``rnn``, ``hybrid`` = RNN residual over a KN
n-gram, see :mod:`model.models.hybrid`, and ``window`` = Bengio's fixed-window model), so they are
compared on equal terms. Regularization: dropout (variational if asked), embedding dropout,
weight decay, and ``<unk>`` noise on train singletons (see :mod:`model.training.train`). The checkpoint
with the best per-sentence valid perplexity is kept; the final figures are computed from it by
the same :func:`~model.models.evaluate.evaluate_lines` that ``rnnlm evaluate`` runs.

``max_minutes`` limits the whole run, the final evaluation included, as in :mod:`model.training.train`
(:class:`~model.training.budget.TimeBudget`): a timed run validates and saves at step 0, times the final
evaluation's path on a sample of valid, and stops training early enough to leave that time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import __version__
from model.models.config import FitConfig, ModelConfig
from model.models.device import pick_device
from model.models.evaluate import evaluate_lines
from model.models.ngram.torch_tables import TorchBackoffTables, histories_of
from model.text.batching import length_sorted_batches, pad_batch, with_boundaries
from model.text.data import corpus_checksums, load_split, write_text_atomically
from model.text.tokenizer import PAD_ID, UNK_ID, Tokenizer
from model.training.budget import TimeBudget, count_tokens, timing_sample
from model.training.optim import adamw, lr_at


@dataclass
class FitJob:
    data_dir: str  # corpus directory from `rnnlm prepare-data`
    out_dir: str  # the best checkpoint goes here
    run_dir: str  # log.jsonl goes here
    model: dict[str, Any]  # ModelConfig (rnn, hybrid) or WindowConfig (window) fields, no vocab_size
    fit: FitConfig = field(default_factory=FitConfig)
    ngram_dir: str = ""  # hybrid: the full-train n-gram checkpoint (built and saved here if missing)
    init_from: str = ""  # start from this checkpoint's weights (same kind; a new vocabulary is mapped)
    vocabulary_from: str = ""  # read with this checkpoint's tokenizer instead of one built from train
    reverse: bool = False  # a right-to-left model: the tokenizer reads each sentence backward
    tokenizer: str = "char"  # char | word (whitespace-separated words, as PTB and WikiText-2 are prepared)
    command: str = ""


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """Train sentences as one token array plus the index maps of both phases."""

    tokens: Tensor  # (S,) every sentence's [<bos>, …, <eos>] back to back (CPU: noised per epoch)
    inputs: Tensor  # (N,) index into tokens of each input position (all but each <eos>)
    position: Tensor  # (N,) index of the input token in its sentence (<bos> is 0)
    fold: Tensor  # (N,) the sentence's fold
    sentences: list[list[int]]
    sentence_fold: list[int]

    def to(self, device: torch.device) -> Corpus:
        """The index maps moved to ``device`` once (they are the same every epoch)."""
        return replace(
            self, inputs=self.inputs.to(device), position=self.position.to(device), fold=self.fold.to(device)
        )

    @classmethod
    def build(cls, seqs: list[list[int]], folds: int, seed: int) -> Corpus:
        fold_of = list(range(len(seqs)))
        random.Random(seed).shuffle(fold_of)
        sentence_fold = [f % max(folds, 1) for f in fold_of]
        starts, inputs, position, fold = 0, [], [], []
        for s, f in zip(seqs, sentence_fold, strict=True):
            inputs.append(torch.arange(starts, starts + len(s) - 1))
            position.append(torch.arange(len(s) - 1))
            fold.append(torch.full((len(s) - 1,), f))
            starts += len(s)
        tokens = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
        return cls(tokens, torch.cat(inputs), torch.cat(position), torch.cat(fold), seqs, sentence_fold)


def noised(tokens: Tensor, rare: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Show each train-singleton token as <unk> with probability p (a fresh draw per epoch)."""
    if p <= 0:
        return tokens
    hide = rare[tokens] & (torch.rand(tokens.shape, generator=gen) < p)
    return tokens.masked_fill(hide, UNK_ID)


# -- one objective for every kind -----------------------------------------------------------------
class Objective(nn.Module):
    """Summed cross-entropy of a batch of positions, whatever the kind of model."""

    def __init__(
        self,
        net: nn.Module,
        kind: str,
        width: int,
        fold_tables: TorchBackoffTables | None,
        full_tables: TorchBackoffTables | None,
    ) -> None:
        super().__init__()
        self.net: Any = net  # RNNLM | HybridNet | WindowNet (their kind-specific methods are used)
        self.kind, self.width = kind, width
        self.fold_tables, self.full_tables = fold_tables, full_tables

    def forward(
        self, x: Tensor, y: Tensor, hist: Tensor | None, fold: Tensor | None, state: Tensor | None
    ) -> tuple[Tensor, int, Tensor | None]:
        """x, y (B, T); hist (B, T, W) n-gram/window histories; fold (B, T) or None (use the
        full n-gram). Returns (sum of -log P over non-pad targets, their count, new state)."""
        mask = y != PAD_ID  # (B, T)
        targets = y[mask]  # (M,)
        if self.kind == "window":
            assert hist is not None
            logits = self.net.output(self.net.features(hist[mask]))  # (M, V)
        else:
            rnn = self.net.rnn if self.kind == "hybrid" else self.net
            feats, state = rnn.hidden(x, state)  # (B, T, D)
            picked = feats[mask]  # (M, D)
            if self.kind == "hybrid":
                assert hist is not None
                logits = self.net.combine(picked, self._ngram_logprobs(hist[mask], fold, mask))
            else:
                logits = rnn.output(picked)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        return loss, int(targets.numel()), state

    def _ngram_logprobs(self, hist: Tensor, fold: Tensor | None, mask: Tensor) -> Tensor:
        """The n-gram's log-probs: each train position from the model without its fold."""
        with torch.no_grad(), torch.autocast(hist.device.type, enabled=False):
            if fold is None or self.fold_tables is None:
                assert self.full_tables is not None
                return self.full_tables.next_logprobs(hist)
            return self.fold_tables.next_logprobs(hist, fold[mask])


# -- the run --------------------------------------------------------------------------------------
@dataclass
class Progress:
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    best_valid: float = math.inf
    phase: str = "stream"
    history: list[dict] = field(default_factory=list)


VOCAB_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")  # the tensors indexed by token id


def remap_vocabulary(tensors: dict[str, Tensor], source: Tokenizer, target: Tokenizer) -> dict[str, Tensor]:
    """A checkpoint's weights for another vocabulary (training on more text starts from a model
    trained on less): a token both know keeps its rows; a new token starts as ``<unk>`` did,
    its output bias lowered by ln(new tokens + 1) so the new tokens share ``<unk>``'s probability."""
    index = torch.tensor([source.token_id(t) if i >= 4 else i for i, t in enumerate(target.tokens)])
    new = sum(1 for t in target.tokens[4:] if source.token_id(t) == UNK_ID)
    out = dict(tensors)
    for k, v in tensors.items():
        if k.endswith(VOCAB_ROWS) and v.shape[0] == source.vocab_size:
            out[k] = v[index].clone()
            if k.endswith("decoder.bias"):
                out[k][(index == UNK_ID) & (torch.arange(len(index)) >= 4)] -= math.log(new + 1)
    return out


def vocabulary_overlap(source: Tokenizer, target: Tokenizer) -> str:
    known = sum(1 for t in target.tokens[4:] if source.token_id(t) != UNK_ID)
    return (
        f"{known} of {target.vocab_size - 4} tokens from the checkpoint, {target.vocab_size - 4 - known} new"
    )


def build_net(kind: str, model: dict[str, Any], vocab_size: int) -> nn.Module:
    if kind == "window":
        from model.models.window import WindowConfig, WindowNet

        return WindowNet(WindowConfig(vocab_size=vocab_size, **model))
    config = ModelConfig(vocab_size=vocab_size, **model)
    if kind == "hybrid":
        from model.models.hybrid import HybridNet

        return HybridNet(config)
    from model.models.network import RNNLM

    return RNNLM(config)


class Fitter:
    """State of one :func:`fit` run and its few operations: step, validate, save."""

    def __init__(self, job: FitJob, device: torch.device, log=print, final_eval: bool = True) -> None:
        started = time.time()  # the budget counts the set-up (tokenizing, the hybrid's n-grams) too
        self.cpu0 = time.process_time()
        self.job, self.cfg, self.device, self.say = job, job.fit, device, log
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.train_lines = load_split(job.data_dir, "train")
        self.valid_lines = load_split(job.data_dir, "valid")
        if job.vocabulary_from:
            self.tokenizer = Tokenizer.load(Path(job.vocabulary_from) / "tokenizer.json")
        else:
            self.tokenizer = Tokenizer.build(
                self.train_lines, kind=job.tokenizer, direction="backward" if job.reverse else "forward"
            )
        seqs = [with_boundaries(self.tokenizer.encode(line).ids) for line in self.train_lines]
        self.corpus = Corpus.build(seqs, cfg.folds if cfg.kind == "hybrid" else 1, cfg.seed).to(device)
        self.valid_seqs = [with_boundaries(self.tokenizer.encode(line).ids) for line in self.valid_lines]
        self.rare = torch.zeros(self.tokenizer.vocab_size, dtype=torch.bool)
        self.rare[self.tokenizer.rare_ids(1)] = True
        self.gen = torch.Generator().manual_seed(cfg.seed)

        self.net = build_net(cfg.kind, job.model, self.tokenizer.vocab_size).to(device)
        if job.init_from:
            self._load_weights(job.init_from)
        width = {"window": getattr(self.net.config, "context", 0), "hybrid": cfg.ngram_order - 1}.get(
            cfg.kind, 0
        )
        fold_tables, full_tables = self._ngram_tables() if cfg.kind == "hybrid" else (None, None)
        self.objective = Objective(self.net, cfg.kind, width, fold_tables, full_tables)
        self.opt = adamw(self.net, cfg.lr, cfg.weight_decay)
        self.progress = Progress(phase="stream" if cfg.sentence_fraction < 1 else "sentence")
        self.run_dir = Path(job.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / "log.jsonl"
        # the final evaluation: the last validation (other_s), then valid and test as served
        final_tokens = self.valid_tokens() + count_tokens(self.tokenizer, load_split(job.data_dir, "test"))
        self.budget = TimeBudget(cfg.max_minutes, final_tokens if final_eval else 0, time.time() - started)
        self.t0 = time.time()  # training time: logs and metrics

    # -- setup ------------------------------------------------------------------------------------
    def _ngram_tables(self) -> tuple[TorchBackoffTables | None, TorchBackoffTables]:
        from model.models.ngram.model import from_sequences
        from model.models.ngram.store import load_ngram, save_ngram

        cfg, job = self.cfg, self.job
        seqs, folds = self.corpus.sentences, self.corpus.sentence_fold
        prune = cfg.ngram_prune or None  # the fold models are pruned as the full one is
        fold_tables = []
        for k in range(cfg.folds):
            held_in = [s for s, f in zip(seqs, folds, strict=True) if f != k]
            fold_tables.append(
                from_sequences(self.tokenizer, held_in, cfg.ngram_order, "kn", prune=prune).tables
            )
        if job.ngram_dir and Path(job.ngram_dir, "config.json").exists():
            full = load_ngram(job.ngram_dir)
            if full.tokenizer.to_dict() != self.tokenizer.to_dict() or full.order != cfg.ngram_order:
                raise ValueError(f"{job.ngram_dir}: not an order-{cfg.ngram_order} n-gram of this vocabulary")
        else:
            full = from_sequences(self.tokenizer, seqs, cfg.ngram_order, "kn", prune=prune)
            if not job.ngram_dir:
                raise ValueError("a hybrid needs ngram_dir: where its n-gram is (or will be saved)")
            save_ngram(
                job.ngram_dir,
                full,
                {
                    "model_type": "ngram",
                    "order": cfg.ngram_order,
                    "smoothing": "kn",
                    "prune": cfg.ngram_prune,
                    "built_by": "rnnlm fit",
                },
            )
        self.say(f"n-gram: {cfg.folds} held-out fold models and the full model, order {cfg.ngram_order}")
        folded = (
            TorchBackoffTables(fold_tables, self.device) if fold_tables else None
        )  # folds 0: the full one
        return folded, TorchBackoffTables(full.tables, self.device)

    def _load_weights(self, path: str) -> None:
        """Start from a checkpoint's weights. A hybrid may start from a plain RNN checkpoint of
        the same shape: its RNN is taken over and β starts at 1."""
        from safetensors.torch import load_file

        tensors = {k: v.float() for k, v in load_file(str(Path(path) / "model.safetensors")).items()}
        own = self.net.state_dict()
        source = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))["model_type"]
        if self.cfg.kind == "hybrid" and source == "rnn":
            tensors = {"rnn." + k: v for k, v in tensors.items()}
            tensors.update({k: v for k, v in own.items() if k.startswith("beta.")})
        for k in [k for k in own if k.endswith("decoder.weight") and k not in tensors]:
            tensors[k] = tensors[k.replace("decoder.weight", "embedding.weight")]
        source_tokenizer = Tokenizer.load(Path(path) / "tokenizer.json")
        if source_tokenizer.tokens != self.tokenizer.tokens:
            tensors = remap_vocabulary(tensors, source_tokenizer, self.tokenizer)
            self.say(f"vocabulary mapped: {vocabulary_overlap(source_tokenizer, self.tokenizer)}")
        self.net.load_state_dict(tensors, strict=True)
        self.say(f"initialized from {path}")

    # -- budget -----------------------------------------------------------------------------------
    def fraction_done(self) -> float:
        cfg = self.cfg
        by_tokens = self.progress.tokens / cfg.max_tokens if cfg.max_tokens > 0 else 0.0
        return max(self.budget.fraction(), by_tokens)

    def valid_tokens(self) -> int:
        return sum(len(s) - 1 for s in self.valid_seqs)

    def time_final_evaluation(self) -> None:
        """Time the final evaluation's path (the saved checkpoint, loaded as served, scoring
        sentences) on a sample of valid, so the budget keeps that time for it."""
        from model.models.loading import load_model

        sample = timing_sample(self.valid_lines)
        start = time.time()
        evaluate_lines(load_model(self.job.out_dir, str(self.device)), sample)
        self.budget.measured(time.time() - start, count_tokens(self.tokenizer, sample))
        self.say(self.budget.describe())
        warning = self.budget.too_small()
        if warning:
            self.say(warning)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    # -- batches ----------------------------------------------------------------------------------
    def stream_batches(self, epoch: int):
        """(x, y, hist, fold) windows of (B, T) over the noised stream, rows read in order."""
        c, cfg = self.corpus, self.cfg
        tokens = noised(c.tokens, self.rare, cfg.unk_replace, self.gen).to(self.device)
        x_all, y_all = tokens[c.inputs], tokens[c.inputs + 1]
        hist_all = histories_of(x_all, c.position, self.objective.width) if self.objective.width else None
        offset = random.Random(cfg.seed + epoch).randrange(cfg.bptt)
        B = cfg.batch_size
        L = (len(x_all) - offset) // B
        view = lambda t: t[offset : offset + B * L].view(B, L, *t.shape[1:])  # noqa: E731
        x, y, f = view(x_all), view(y_all), view(c.fold)
        h = view(hist_all) if hist_all is not None else None
        for start in range(0, L, cfg.bptt):
            end = min(start + cfg.bptt, L)
            yield (
                x[:, start:end],
                y[:, start:end],
                h[:, start:end] if h is not None else None,
                f[:, start:end],
                start == 0,
            )

    def sentence_batches(
        self, seqs: list[list[int]], folds: list[int] | None, rng: random.Random | None, noise: bool
    ):
        """(x, y, hist, fold, new_rows) windows over padded sentence batches (state reset per batch)."""
        for rows in length_sorted_batches(seqs, self.cfg.batch_size, rng):
            batch = pad_batch([seqs[i] for i in rows])  # (B, L)
            if noise:
                batch = noised(batch, self.rare, self.cfg.unk_replace, self.gen)
            batch = batch.to(self.device)
            x, y = batch[:, :-1], batch[:, 1:]
            B, T = x.shape
            position = torch.arange(T, device=self.device).repeat(B)
            hist = (
                histories_of(x.reshape(-1), position, self.objective.width).view(B, T, -1)
                if self.objective.width
                else None
            )
            fold = (
                torch.tensor([folds[i] for i in rows], device=self.device)[:, None].expand(B, T)
                if folds is not None
                else None
            )
            for start in range(0, T, self.cfg.bptt):
                end = min(start + self.cfg.bptt, T)
                yield (
                    x[:, start:end],
                    y[:, start:end],
                    hist[:, start:end] if hist is not None else None,
                    fold[:, start:end] if fold is not None else None,
                    start == 0,
                )

    # -- steps ------------------------------------------------------------------------------------
    def train_step(
        self, x: Tensor, y: Tensor, hist: Tensor | None, fold: Tensor | None, state: Tensor | None
    ) -> tuple[float, int, Tensor | None]:
        lr = lr_at(self.fraction_done(), self.progress.step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with self.autocast():
            loss_sum, n, state = self.objective(x, y, hist, fold, state)
        loss = loss_sum / max(n, 1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.clip)
        self.opt.step()
        self.progress.step += 1
        self.progress.tokens += n
        return float(loss.detach()), n, state.detach() if state is not None else None

    @torch.no_grad()
    def validate(self) -> float:
        """Per-sentence valid perplexity (each sentence from the zero state, <eos> counted)."""
        start = time.time()
        self.net.eval()
        total, count = 0.0, 0
        with self.autocast():
            state = None
            for x, y, hist, _, new in self.sentence_batches(self.valid_seqs, None, None, noise=False):
                loss, n, state = self.objective(x, y, hist, None, None if new else state)
                total, count = total + float(loss), count + n
        self.net.train()
        if self.budget.final_tokens:
            self.budget.other_s = time.time() - start  # the last validation is part of the final evaluation
        return math.exp(total / max(count, 1))

    def log(self, record: dict) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def evaluate_and_keep(self) -> None:
        p = self.progress
        ppl = self.validate()
        record = {
            "event": "valid",
            "step": p.step,
            "tokens_seen": p.tokens,
            "phase": p.phase,
            "elapsed_s": round(time.time() - self.t0, 2),
            "cpu_s": round(
                time.process_time() - self.cpu0, 1
            ),  # CPU time of this run (all threads), set-up included
            "valid_perplexity": ppl,
        }
        p.history.append(record)
        self.log(record)
        self.say(json.dumps(record))
        if ppl < p.best_valid:
            p.best_valid = ppl
            self.save(record)

    def save(self, best: dict) -> None:
        from model.models.checkpoint import save_network

        cfg, job = self.cfg, self.job
        dtype = {"float32": None, "float16": torch.float16}[cfg.save_dtype]
        net = self.net
        metrics = {
            **self.base_metrics(),
            "best": best,
            "train_time_s": time.time() - self.t0,
            "steps": self.progress.step,
            "tokens_seen": self.progress.tokens,
        }
        if cfg.kind == "hybrid":
            from model.models.hybrid import save_hybrid

            save_hybrid(job.out_dir, net, self.tokenizer, job.ngram_dir, metrics, dtype=dtype)  # type: ignore[arg-type]
        else:
            save_network(
                job.out_dir,
                net,
                net.config,
                self.tokenizer,
                metrics,
                model_type=cfg.kind,
                dtype=dtype,
            )

    def base_metrics(self) -> dict:
        return {
            "model_type": self.cfg.kind,
            "data": {
                "dir": str(self.job.data_dir),
                "sha256": corpus_checksums(self.job.data_dir),
                "train_lines": len(self.train_lines),
                "train_tokens": len(self.corpus.inputs),
            },
            "fit_config": asdict(self.cfg),
            "tokenizer": {
                "kind": "char",
                "vocab_size": self.tokenizer.vocab_size,
                "min_count": 1,
                "direction": self.tokenizer.direction,
            },
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "command": self.job.command,
            "init_from": self.job.init_from,
            "hardware": {
                "device": str(self.device),
                "platform": platform.platform(),
                "gpu": torch.cuda.get_device_name(0) if self.device.type == "cuda" else None,
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
            "rnnlm_version": __version__,
        }

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> Progress:
        cfg, p = self.cfg, self.progress
        self.net.train()
        if self.budget.limit_s > 0 and self.budget.final_tokens:
            self.evaluate_and_keep()  # a checkpoint to time the final evaluation with
            self.time_final_evaluation()
        next_eval = cfg.eval_every_tokens
        rate_t, rate_tokens, running = time.time(), 0, None
        epoch = 0
        while self.fraction_done() < 1.0:
            if p.phase == "stream":
                batches = self.stream_batches(epoch)
            else:
                c = self.corpus
                folds = c.sentence_fold if cfg.kind == "hybrid" else None
                batches = self.sentence_batches(c.sentences, folds, random.Random(cfg.seed + epoch), True)
            state = None
            for x, y, hist, fold, new_rows in batches:
                if p.phase == "sentence" and new_rows:
                    state = None
                loss, n, state = self.train_step(x, y, hist, fold if cfg.kind == "hybrid" else None, state)
                running = loss if running is None else 0.98 * running + 0.02 * loss
                rate_tokens += n
                if p.step % 100 == 0:
                    now = time.time()
                    self.log(
                        {
                            "event": "train",
                            "step": p.step,
                            "tokens_seen": p.tokens,
                            "phase": p.phase,
                            "loss": running,
                            "lr": lr_at(self.fraction_done(), p.step, cfg),
                            "tokens_per_s": rate_tokens / max(now - rate_t, 1e-9),
                            "elapsed_s": round(now - self.t0, 2),
                        }
                    )
                    rate_t, rate_tokens = now, 0
                switch = p.phase == "stream" and self.fraction_done() >= 1 - cfg.sentence_fraction
                if p.tokens >= next_eval or switch or self.fraction_done() >= 1.0:
                    next_eval = p.tokens + cfg.eval_every_tokens
                    self.evaluate_and_keep()
                if switch:
                    p.phase = "sentence"
                    self.say(f"phase: sentence (at {p.tokens} tokens)")
                    break
                if self.fraction_done() >= 1.0:
                    break
            epoch += 1
        p.elapsed_s = time.time() - self.t0
        return p


def fit(job: FitJob, device: str = "auto", log=print, final_eval: bool = True) -> dict:
    """Train ``job`` to its budget, keep the best checkpoint on valid, evaluate it on valid and test
    and write its model card; ``max_minutes`` covers all of it (the final evaluation is skipped,
    and not reserved for, with ``final_eval=False``)."""
    from model.models.loading import load_model
    from model.training.card import render_fit_card

    dev = pick_device(device)
    fitter = Fitter(job, dev, log, final_eval)
    params = sum(p.numel() for p in fitter.net.parameters())
    log(
        f"{job.fit.kind}: {params:,} parameters on {dev}; budget {job.fit.max_minutes} min / "
        f"{job.fit.max_tokens} tokens"
    )
    progress = fitter.run()
    from model.models.loading import OPENERS  # noqa: F401  (every kind registered)

    start = time.time()
    lm = load_model(job.out_dir, str(dev))
    metrics = dict(lm.metrics)
    for split in ("valid", "test") if final_eval else ():
        metrics[split] = evaluate_lines(lm, load_split(job.data_dir, split))
        log(f"{split}: perplexity {metrics[split]['perplexity']:.2f}")
    metrics.update(
        train_time_s=progress.elapsed_s,
        total_steps=progress.step,
        tokens_seen=progress.tokens,
        history=progress.history,
    )
    if final_eval:
        metrics["final_eval_s"] = time.time() - start
    write_metrics(job.out_dir, metrics)
    if final_eval:
        config = json.loads((Path(job.out_dir) / "config.json").read_text(encoding="utf-8"))
        ngram = Path(job.ngram_dir).name if job.fit.kind == "hybrid" else ""
        card = render_fit_card(Path(job.out_dir).name, config["model"], metrics, ngram, job.fit.ngram_order)
        write_card(job.out_dir, card)
    return metrics


def write_metrics(model_dir: str | Path, metrics: dict) -> None:
    """Replace a checkpoint's metrics.json in one rename (never half-written)."""
    write_text_atomically(
        Path(model_dir) / "metrics.json", json.dumps(metrics, ensure_ascii=False, indent=2) + "\n"
    )


def write_card(model_dir: str | Path, card: str) -> None:
    """Replace a checkpoint's MODEL_CARD.md in one rename."""
    write_text_atomically(Path(model_dir) / "MODEL_CARD.md", card)


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
    from model.training.card import render_fit_card

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
    write_card(dst, render_fit_card(dst.name, config["model"], metrics, ngram=ngram_name, order=order))
    return metrics
