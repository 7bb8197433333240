"""Tiny things the tagger tests share: a few hand-tagged sentences (TINY_LINES' characters), a
tagged corpus directory, and a forward and a backward character LM saved as checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from model.models.checkpoint import save_rnn
from model.models.config import ModelConfig
from model.models.network import RNNLM
from model.text.batching import pad_batch, with_boundaries
from model.text.data import write_corpus
from model.text.tokenizer import Tokenizer

from ..conftest import TINY_LINES, build_tiny_model

TAGGED_LINES = [
    "厨房/n  里/f  食油/n  用/v  完/v  了/u",
    "厨房/n  里/f  的/u  油/n  用/v  完/v  了/u",
    "你/r  先/d  走/v  吧/y",
    "我们/r  先/d  走/v  了/u",
    "今天/t  天气/n  很/d  好/a",
    "明天/t  天气/n  也/d  很/d  好/a",
    "人民日报/nt  发表/v  新年/t  讲话/n",
    "新华社/nt  记者/n  报道/v",
    "[中国/ns  人民/n  银行/n]nt  发布/v  消息/n",
    "他们/r  在/p  厨房/n  里/f  做饭/v",
]


def write_tagged_corpus(out: Path) -> Path:
    """train: all ten lines three times; valid: the first five; test: the last five."""
    write_corpus(
        out,
        {"train": TAGGED_LINES * 3, "valid": TAGGED_LINES[:5], "test": TAGGED_LINES[5:]},
        {"name": "tiny-tagged"},
    )
    return out


def backward_tiny_model(steps: int = 30, seed: int = 1) -> tuple[RNNLM, Tokenizer]:
    """A right-to-left model on the forward tiny model's vocabulary, hidden width 12 (not 16)."""
    torch.manual_seed(seed)
    forward = Tokenizer.build(TINY_LINES, kind="char")
    tok = Tokenizer(kind="char", tokens=forward.tokens, counts=forward.counts, direction="backward")
    net = RNNLM(ModelConfig(vocab_size=tok.vocab_size, emb_dim=16, hidden_dim=12, num_layers=2, dropout=0.0))
    batch = pad_batch([with_boundaries(tok.encode(s).ids) for s in TINY_LINES])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        _, _, loss = net(batch[:, :-1], None, batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), tok


def save_tiny_lms(out: Path) -> tuple[Path, Path]:
    """The forward tiny model and :func:`backward_tiny_model`, as checkpoints under ``out``."""
    forward, backward = out / "forward", out / "backward"
    save_rnn(forward, *build_tiny_model())
    save_rnn(backward, *backward_tiny_model())
    return forward, backward
