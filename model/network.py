"""The recurrent language model: embedding -> stacked RNN/GRU/LSTM -> linear over the vocabulary.

::

    ids (B, T) ─▶ Embedding ─▶ dropout ─▶ L recurrent layers ─▶ dropout ─▶ Linear ─▶ logits (B, T, V)
                                            ▲           │
                               state (L, B, S) ─────────┘ new state (L, B, S)

The recurrent state is one tensor of shape ``(num_layers, batch, state_width)``; for an LSTM the
last dimension holds ``[h ; c]``. One tensor is easy to slice, stack and carry, which is all the
training loop (truncated BPTT) and the serving engine (batched decoding) need to do with it.
A ``rnn_tanh`` layer is the classic ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


class RNNLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emb_dim, padding_idx=c.pad_id)
        rnn_cls = {"rnn_tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[c.cell]
        kwargs = {"nonlinearity": "tanh"} if c.cell == "rnn_tanh" else {}
        self.rnn = rnn_cls(
            c.emb_dim, c.hidden_dim, num_layers=c.num_layers, batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0, **kwargs,
        )
        self.drop = nn.Dropout(c.dropout)
        # Tied weights need the decoder input to match the embedding width: project if needed.
        self.proj = (
            nn.Linear(c.hidden_dim, c.emb_dim, bias=False)
            if c.tie_weights and c.hidden_dim != c.emb_dim else None
        )
        self.decoder = nn.Linear(c.emb_dim if self.proj is not None or c.tie_weights else c.hidden_dim,
                                 c.vocab_size)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight
        self.register_buffer("never_predict", torch.tensor(c.never_predict, dtype=torch.long),
                             persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        with torch.no_grad():
            self.embedding.weight[self.config.pad_id].zero_()
        nn.init.zeros_(self.decoder.bias)
        if self.config.cell == "lstm":  # forget-gate bias 1: remember by default
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    h = self.config.hidden_dim
                    with torch.no_grad():
                        p[h : 2 * h].fill_(1.0)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """The start state every sentence is scored from: zeros, shape (L, B, S)."""
        c = self.config
        device = device if device is not None else self.embedding.weight.device
        return torch.zeros(c.num_layers, batch_size, c.state_width, device=device)

    def _split(self, state: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.config.cell == "lstm":
            h, c = state.chunk(2, dim=-1)
            return h.contiguous(), c.contiguous()
        return state.contiguous()

    def _join(self, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        return torch.cat(state, dim=-1) if isinstance(state, tuple) else state

    def hidden(self, ids: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Top-layer features (B, T, D) feeding the output layer, and the new state (L, B, S)."""
        if state is None:
            state = self.initial_state(ids.size(0), ids.device)
        x = self._dropout(self._embed(ids))  # (B, T, E)
        out, new_state = self.rnn(x, self._split(state))  # (B, T, H)
        out = self._dropout(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return out, self._join(new_state)

    def _embed(self, ids: Tensor) -> Tensor:
        """Embedding lookup; in training, ``emb_dropout`` hides whole token types (every use of a
        dropped character in the batch sees zeros), which regularizes rare tokens."""
        p = self.config.emb_dropout
        if not (self.training and p > 0):
            return self.embedding(ids)
        weight = self.embedding.weight
        keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
        return F.embedding(ids, weight * keep, self.config.pad_id)

    def _dropout(self, x: Tensor) -> Tensor:
        """Dropout on (B, T, D); ``variational`` draws one mask per sequence for all T steps."""
        p = self.config.dropout
        if not (self.training and p > 0 and self.config.variational):
            return self.drop(x)
        keep = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - p) / (1 - p)  # (B, 1, D)
        return x * keep

    def output(self, feats: Tensor) -> Tensor:
        """Logits (..., V) from top-layer features (..., D) (scoring runs it chunk by chunk)."""
        logits = self.decoder(feats)
        if self.never_predict.numel():  # <pad>/<bos> are inputs only: probability exactly 0
            logits = logits.index_fill(-1, self.never_predict, float("-inf"))
        return logits

    def forward(
        self, ids: Tensor, state: Tensor | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``logits, state, loss = model(ids, state, targets)``.

        ``ids`` (B, T) token ids; ``state`` (L, B, S) or None for the start state; ``targets``
        (B, T) with ``pad_id`` where there is nothing to predict. ``loss`` is the mean
        cross-entropy over non-pad targets (None without targets).
        """
        feats, new_state = self.hidden(ids, state)
        logits = self.output(feats)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                ignore_index=self.config.pad_id,
            )
        return logits, new_state, loss

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Multiply-adds x2 of one forward step for one token (embedding lookup is free)."""
        c = self.config
        gates = {"rnn_tanh": 1, "gru": 3, "lstm": 4}[c.cell]
        flops = 0
        for layer in range(c.num_layers):
            inp = c.emb_dim if layer == 0 else c.hidden_dim
            flops += 2 * gates * c.hidden_dim * (inp + c.hidden_dim)
        if self.proj is not None:
            flops += 2 * c.hidden_dim * c.emb_dim
        flops += 2 * self.decoder.in_features * c.vocab_size
        return flops
