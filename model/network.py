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
    never_predict: Tensor  # ids that get probability 0 (a buffer)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emb_dim, padding_idx=c.pad_id)
        rnn_cls = {"rnn_tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[c.cell]
        kwargs = {"nonlinearity": "tanh"} if c.cell == "rnn_tanh" else {}
        self.rnn = rnn_cls(
            c.emb_dim,
            c.hidden_dim,
            num_layers=c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
            **kwargs,
        )
        self.drop = nn.Dropout(c.dropout)
        # Tied weights need the decoder input to match the embedding width: project if needed.
        self.proj = (
            nn.Linear(c.hidden_dim, c.emb_dim, bias=False)
            if c.tie_weights and c.hidden_dim != c.emb_dim
            else None
        )
        self.decoder = nn.Linear(
            c.emb_dim if self.proj is not None or c.tie_weights else c.hidden_dim, c.vocab_size
        )
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight
        self.register_buffer(
            "never_predict", torch.tensor(c.never_predict, dtype=torch.long), persistent=False
        )
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
                logits.reshape(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=self.config.pad_id,
            )
        return logits, new_state, loss

    # -- the recurrent layers as explicit cells ---------------------------------------------------
    # ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` run whole sequences in one fused kernel. Prefix-shared
    # scoring (model/prefix.py) must start each row from a different parent and read inner states,
    # and one-token decoding steps pay a fused kernel's set-up on every call; both use these cells,
    # which do the same arithmetic with the same weights (tests check them within 1e-5).
    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        rnn = self.rnn
        return (
            getattr(rnn, f"weight_ih_l{layer}"),
            getattr(rnn, f"weight_hh_l{layer}"),
            getattr(rnn, f"bias_ih_l{layer}", None),
            getattr(rnn, f"bias_hh_l{layer}", None),
        )

    def input_gates(self, layer: int, x: Tensor) -> Tensor:
        """The input half of every gate, for many rows in one product: (N, G·H).

        LSTM and tanh-RNN fold both biases in here; a GRU keeps b_hh with the hidden half (its
        candidate gate multiplies the hidden half by the reset gate)."""
        w_ih, _, b_ih, b_hh = self.layer_weights(layer)
        bias = b_ih
        if self.config.cell != "gru" and b_hh is not None:
            bias = b_hh if bias is None else bias + b_hh
        return torch.addmm(bias, x, w_ih.t()) if bias is not None else x @ w_ih.t()

    def cell_step(self, layer: int, gi: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step of one layer for B rows (gate order i f g o, and r z n, as torch's), from the
        input half ``gi`` (B, G·H) and the previous (h, c); returns the new (h, c)."""
        _, w_hh, _, b_hh = self.layer_weights(layer)
        cell = self.config.cell
        if cell == "gru":
            gh = torch.addmm(b_hh, h, w_hh.t()) if b_hh is not None else h @ w_hh.t()  # (B, 3H)
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return n + z * (h - n), None
        gates = torch.addmm(gi, h, w_hh.t())  # (B, G·H)
        if cell == "rnn_tanh":
            return torch.tanh(gates), None
        assert c is not None
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def top_features(self, h: Tensor) -> Tensor:
        """Top-layer output (…, H) -> what the output layer reads (…, D)."""
        h = self.drop(h)
        return self.proj(h) if self.proj is not None else h

    def step(self, ids: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One token per row through the explicit cells: logits (B, V) and the new state (L, B, S)."""
        x = self.drop(self.embedding(ids))  # (B, E)
        lstm = self.config.cell == "lstm"
        new = []
        for layer in range(self.config.num_layers):
            h, c = state[layer].chunk(2, dim=-1) if lstm else (state[layer], None)
            h, c = self.cell_step(layer, self.input_gates(layer, x), h, c)
            new.append(torch.cat([h, c], dim=-1) if lstm else h)  # type: ignore[list-item]
            x = self.drop(h)
        return self.output(self.top_features(h)), torch.stack(new)

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
