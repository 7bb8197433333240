"""A fixed-window neural language model (Bengio et al. 2003): the rung between n-grams and RNNs.

::

    last n ids (N, n) ─▶ Embedding (N, n, E) ─▶ concat (N, n·E) ─▶ tanh(Linear) (N, H) ─▶ Linear ─▶ logits (N, V)

Like an n-gram it sees only the previous ``context`` tokens (left-padded with ``<pad>``, whose
embedding is zero, at a sentence start); unlike one it shares statistical strength between
similar characters through their embeddings. Its decoding state is the window itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model.models.config import known_fields
from model.models.lm import LanguageModel
from model.models.ngram.torch_tables import histories_of
from model.text.batching import pad_batch
from model.text.tokenizer import PAD_ID, Tokenizer


@dataclass
class WindowConfig:
    vocab_size: int  # size of the tokenizer's vocabulary, specials included
    context: int = 4  # how many previous tokens the model sees (a 5-gram's history)
    emb_dim: int = 128  # width of each token's embedding
    hidden_dim: int = 1024  # width of the tanh hidden layer
    dropout: float = 0.3  # on the concatenated embeddings and the hidden layer
    tie_weights: bool = False  # the window model keeps separate input and output embeddings
    pad_id: int = 0
    never_predict: tuple[int, ...] = (0, 2)  # <pad>, <bos>

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowConfig:
        return cls(**known_fields(cls, d))


class WindowNet(nn.Module):
    never_predict: Tensor  # ids that get probability 0 (a buffer)

    def __init__(self, config: WindowConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embedding = nn.Embedding(c.vocab_size, c.emb_dim, padding_idx=c.pad_id)
        self.hidden = nn.Linear(c.context * c.emb_dim, c.hidden_dim)
        self.decoder = nn.Linear(c.hidden_dim, c.vocab_size)
        self.drop = nn.Dropout(c.dropout)
        self.register_buffer(
            "never_predict", torch.tensor(c.never_predict, dtype=torch.long), persistent=False
        )

    def features(self, histories: Tensor) -> Tensor:
        """(N, context) left-padded ids -> hidden features (N, H)."""
        x = self.drop(self.embedding(histories).flatten(1))  # (N, n·E)
        return self.drop(torch.tanh(self.hidden(x)))  # (N, H)

    def output(self, feats: Tensor) -> Tensor:
        logits = self.decoder(feats)  # (N, V)
        return logits.index_fill(-1, self.never_predict, float("-inf"))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class WindowLanguageModel(LanguageModel):
    kind = "window"

    def __init__(self, net: WindowNet, tokenizer: Tokenizer, chunk_rows: int = 8192) -> None:
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.width = net.config.context
        self.chunk_rows = chunk_rows
        self.metrics: dict = {}

    @property
    def device(self) -> torch.device:
        return self.net.embedding.weight.device

    def _logprobs(self, histories: Tensor) -> Tensor:
        return torch.log_softmax(self.net.output(self.net.features(histories)).float(), dim=-1)

    @torch.inference_mode()
    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        out = []
        for s in seqs:
            ids = torch.as_tensor(list(s), dtype=torch.long, device=self.device)
            if len(ids) < 2:
                out.append(torch.zeros(0, dtype=torch.float64))
                continue
            inputs, targets = ids[:-1], ids[1:]
            hist = histories_of(inputs, torch.arange(len(inputs), device=self.device), self.width)
            logp = torch.cat(
                [self._logprobs(hist[i : i + self.chunk_rows]) for i in range(0, len(hist), self.chunk_rows)]
            )
            out.append(logp.gather(1, targets.unsqueeze(1)).squeeze(1).double().cpu())
        return out

    def start_state(self, batch_size: int) -> Tensor:
        return torch.full((batch_size, self.width), PAD_ID, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def step(self, state: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        ids = ids.to(self.device).view(-1, 1)
        state = torch.cat([state, ids], dim=1)[:, 1:]  # (B, n)
        return self._logprobs(state), state

    @torch.inference_mode()
    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        ids = pad_batch(prefixes).to(self.device)
        state = self.start_state(len(prefixes))
        tail = ids[:, -self.width :]
        state[:, self.width - tail.size(1) :] = tail
        return self._logprobs(state), state

    def select_state(self, state: Tensor, rows: Sequence[int] | Tensor) -> Tensor:
        return state.index_select(0, torch.as_tensor(rows, dtype=torch.long, device=state.device))

    def concat_states(self, states: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(states), dim=0)

    def context_width(self) -> int | None:
        """The previous ``context`` tokens decide the next one, as in an n-gram."""
        return self.width

    def describe(self) -> dict:
        c = self.net.config
        return {
            **super().describe(),
            "context": c.context,
            "hidden_dim": c.hidden_dim,
            "parameters": self.net.num_parameters(),
            "device": str(self.device),
        }


def load_window(model_dir: str, device: str = "cpu") -> WindowLanguageModel:
    from model.models.checkpoint import load_network

    net, tokenizer, metrics, _ = load_network(model_dir, "window", WindowNet, device, WindowConfig)
    lm = WindowLanguageModel(net, tokenizer)
    lm.metrics = metrics
    return lm
