"""Training loop: sentence batches, truncated BPTT, clipping, AdamW/SGD, cosine schedule,
early stopping on valid perplexity, best checkpoint kept, resumable.

Sentence boundaries, decided deliberately: every sentence starts from the model's zero start
state, as it will when served. Nothing is carried across unrelated sentences, so the model is
trained for exactly the situation it is evaluated and served in. Long sentences are split into
BPTT windows with the state carried (detached) from window to window.

Unknown characters: a train character seen once is shown as ``<unk>`` with probability
``unk_replace`` (a fresh draw every time), so the model learns a sensible P(<unk> | context)
instead of assigning ~0 to the out-of-vocabulary characters real input contains.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .batching import bptt_windows, length_sorted_batches, pad_batch, with_boundaries
from .card import render_model_card
from .checkpoint import save_rnn
from .config import ModelConfig, TrainConfig
from .data import corpus_checksums, load_split
from .evaluate import evaluate_lines
from .lm import RNNLanguageModel
from .network import RNNLM
from .tokenizer import UNK_ID, Tokenizer


@dataclass
class TrainJob:
    data_dir: str  # corpus directory written by `rnnlm prepare-data`
    out_dir: str  # best checkpoint goes here
    run_dir: str  # resume state and the JSON-lines log go here
    model: dict  # ModelConfig fields except vocab_size
    train: TrainConfig
    tokenizer_kind: str = "char"
    min_count: int = 1
    command: str = ""  # the command line, recorded in the model card
    resume: bool = True


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``lr * min_lr_ratio``."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(net: RNNLM, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr)
    if cfg.optimizer == "adamw":
        decay = [p for n, p in net.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in net.named_parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    raise ValueError(f"optimizer must be adamw or sgd, got {cfg.optimizer!r}")


def run_training(job: TrainJob, device: str = "auto", progress: bool = True) -> dict:
    cfg = job.train
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dev = pick_device(device)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "log.jsonl"
    state_path = run_dir / "state.pt"

    train_lines = load_split(job.data_dir, "train")
    valid_lines = load_split(job.data_dir, "valid")
    tokenizer = Tokenizer.build(train_lines, kind=job.tokenizer_kind, min_count=job.min_count)
    train_seqs = [with_boundaries(tokenizer.encode(line).ids) for line in train_lines]
    rare = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    rare[tokenizer.rare_ids(1)] = True

    torch.manual_seed(cfg.seed)
    mconf = ModelConfig(vocab_size=tokenizer.vocab_size, **job.model)
    net = RNNLM(mconf).to(dev)
    opt = make_optimizer(net, cfg)

    steps_per_epoch = sum(
        math.ceil((len(train_seqs[i[-1]]) - 1) / cfg.bptt) if i else 0
        for i in [sorted(b, key=lambda j: len(train_seqs[j]))
                  for b in length_sorted_batches(train_seqs, cfg.batch_size, random.Random(0))]
    )
    total_steps = steps_per_epoch * cfg.epochs
    eval_every = cfg.eval_every or steps_per_epoch

    st = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "elapsed": 0.0, "best_valid": float("inf"),
          "bad_evals": 0, "history": [], "tokens_seen": 0, "next_eval": eval_every}
    if job.resume and state_path.exists():
        saved = torch.load(state_path, map_location=dev, weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        st = json.loads(saved["progress"])
        print(f"resumed from {state_path} at step {st['step']} (epoch {st['epoch']})")

    budget_s = cfg.max_minutes * 60
    t0 = time.time() - st["elapsed"]

    def progress_fraction() -> float:
        by_steps = st["step"] / max(total_steps, 1)
        by_time = (time.time() - t0) / budget_s if budget_s > 0 else 0.0
        return max(by_steps, by_time)

    def log(record: dict) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def validate() -> float:
        net.eval()
        metrics = evaluate_lines(RNNLanguageModel(net, tokenizer), valid_lines)
        net.train()
        return metrics["perplexity"]

    def save_resume_state() -> None:
        st["elapsed"] = time.time() - t0
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                    "progress": json.dumps(st)}, tmp)
        tmp.replace(state_path)

    base_metrics = {
        "data": {"dir": str(job.data_dir), "sha256": corpus_checksums(job.data_dir),
                 "train_lines": len(train_lines), "train_tokens": sum(len(s) - 1 for s in train_seqs)},
        "train_config": cfg.to_dict(),
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                      "min_count": job.min_count},
        "parameters": net.num_parameters(),
        "command": job.command,
        "hardware": {"device": str(dev), "platform": platform.platform(),
                     "processor": platform.processor() or platform.machine(),
                     "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "rnnlm_version": __version__,
    }

    stop = False
    net.train()
    bar = tqdm(total=total_steps, initial=st["step"], disable=not progress, dynamic_ncols=True,
               mininterval=2.0)
    running, rate_tokens, rate_t = None, 0, time.time()
    while st["epoch"] < cfg.epochs and not stop:
        batches = list(length_sorted_batches(train_seqs, cfg.batch_size,
                                             random.Random(cfg.seed + st["epoch"])))
        for b_index in range(st["batch_in_epoch"], len(batches)):
            batch = pad_batch([train_seqs[i] for i in batches[b_index]])  # (B, L)
            if cfg.unk_replace > 0:
                hide = rare[batch] & (torch.rand(batch.shape) < cfg.unk_replace)
                batch = batch.masked_fill(hide, UNK_ID)
            batch = batch.to(dev)
            state = None
            for inputs, targets in bptt_windows(batch, cfg.bptt):
                lr = lr_at(progress_fraction(), st["step"], cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                _, state, loss = net(inputs, state, targets)
                state = state.detach()  # truncated BPTT: carry the state, not the graph
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
                opt.step()
                n_tok = int((targets != mconf.pad_id).sum())
                st["step"] += 1
                st["tokens_seen"] += n_tok
                rate_tokens += n_tok
                running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
                if st["step"] % 50 == 0:
                    now = time.time()
                    tps = rate_tokens / max(now - rate_t, 1e-9)
                    rate_tokens, rate_t = 0, now
                    bar.set_postfix(loss=f"{running:.3f}", ppl=f"{math.exp(running):.1f}",
                                    lr=f"{lr:.2e}", tok_s=f"{tps:.0f}")
                    log({"event": "train", "step": st["step"], "epoch": st["epoch"], "loss": running,
                         "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tps,
                         "elapsed_s": time.time() - t0})
                bar.update(1)
            st["batch_in_epoch"] = b_index + 1
            out_of_time = budget_s > 0 and time.time() - t0 >= budget_s
            if st["step"] >= st["next_eval"] or out_of_time:
                st["next_eval"] = st["step"] + eval_every
                ppl = validate()
                record = {"event": "valid", "step": st["step"], "epoch": st["epoch"],
                          "valid_perplexity": ppl, "elapsed_s": time.time() - t0,
                          "tokens_seen": st["tokens_seen"]}
                st["history"].append(record)
                log(record)
                bar.write(json.dumps(record))
                if ppl < st["best_valid"]:
                    st["best_valid"], st["bad_evals"] = ppl, 0
                    metrics = {**base_metrics, "best": record, "valid": {"perplexity": ppl},
                               "train_time_s": time.time() - t0, "steps": st["step"]}
                    save_rnn(job.out_dir, net, tokenizer, metrics)
                else:
                    st["bad_evals"] += 1
                save_resume_state()
                if st["bad_evals"] >= cfg.patience:
                    bar.write(f"early stop: no valid improvement in {cfg.patience} evaluations")
                    stop = True
                if out_of_time:
                    bar.write(f"time budget of {cfg.max_minutes} min reached")
                    stop = True
                if stop:
                    break
        if not stop:
            st["epoch"] += 1
            st["batch_in_epoch"] = 0
            save_resume_state()
    bar.close()
    return finalize(job, dev, st, time.time() - t0)


def finalize(job: TrainJob, dev: torch.device, st: dict, train_time_s: float) -> dict:
    """Evaluate the best checkpoint on valid and test, and write metrics and the model card."""
    from .checkpoint import load_rnn

    net, tokenizer, metrics = load_rnn(job.out_dir, device=dev)
    lm = RNNLanguageModel(net, tokenizer)
    for split in ("valid", "test"):
        metrics[split] = evaluate_lines(lm, load_split(job.data_dir, split))
    metrics["train_time_s"] = train_time_s
    metrics["total_steps"] = st["step"]
    metrics["tokens_seen"] = st["tokens_seen"]
    metrics["history"] = st["history"]
    save_rnn(job.out_dir, net.cpu(), tokenizer, metrics, card=render_model_card(Path(job.out_dir).name,
                                                                              net.config, metrics))
    return metrics
