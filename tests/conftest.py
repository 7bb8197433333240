"""Shared fixtures: a tiny corpus and tiny seeded models, built in well under a second each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.models.checkpoint import save_rnn
from model.models.config import ModelConfig
from model.models.network import RNNLM
from model.text.batching import pad_batch, with_boundaries
from model.text.data import write_corpus
from model.text.tokenizer import Tokenizer

TINY_LINES = [
    "厨房里食油用完了",
    "厨房里的油用完了",
    "你先走吧",
    "我们先走了",
    "今天天气很好",
    "明天天气也很好",
    "人民日报发表新年讲话",
    "新华社记者报道",
    "中国人民银行发布消息",
    "他们在厨房里做饭",
] * 3

# Tiny models run fastest on one thread, and the tests then leave the other core to whatever else
# runs on the machine (a training run, a server under test).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "pd98-char-lstm"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    write_corpus(
        out, {"train": TINY_LINES, "valid": TINY_LINES[:5], "test": TINY_LINES[5:10]}, {"name": "tiny"}
    )
    return out


def build_tiny_model(cell: str = "lstm", steps: int = 30, seed: int = 0) -> tuple[RNNLM, Tokenizer]:
    """A seeded 2-layer model trained a few steps on TINY_LINES (deterministic)."""
    torch.manual_seed(seed)
    tok = Tokenizer.build(TINY_LINES, kind="char")
    net = RNNLM(
        ModelConfig(
            vocab_size=tok.vocab_size,
            cell=cell,
            emb_dim=16,
            hidden_dim=16,
            num_layers=2,
            dropout=0.0,
            tie_weights=True,
        )
    )
    batch = pad_batch([with_boundaries(tok.encode(s).ids) for s in TINY_LINES])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        _, _, loss = net(batch[:, :-1], None, batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net, tok = build_tiny_model()
    out = tmp_path_factory.mktemp("models") / "tiny-lstm"
    save_rnn(out, net, tok, {"test": {"perplexity": 1.0}, "note": "tiny test fixture"})
    return out
