"""The recurrent language model: embedding -> stacked RNN/GRU/LSTM -> linear over the vocabulary.

::

    ids (B, T) ─▶ Embedding ─▶ dropout ─▶ L recurrent layers ─▶ dropout ─▶ Linear ─▶ logits (B, T, V)
                                            ▲           │
                               state (L, B, S) ─────────┘ new state (L, B, S)

The recurrent state is one tensor of shape ``(num_layers, batch, state_width)``; for an LSTM the
last dimension holds ``[h ; c]``. One tensor is easy to slice, stack and carry, which is all the
training loop (truncated BPTT) and the serving engine (batched decoding) need to do with it.
A ``rnn_tanh`` layer is the classic ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)``.

Every matrix product of the explicit cells (scoring, next-token, generation) goes through
:meth:`RNNLM.product`, where two inference options apply:

* ``batch_invariant``: a float32 product's result for one row depends on how many rows the
  kernel is given (its blocking changes with the row count: up to ~4e-6 per gate value here),
  so a sentence's log-probs moved with whatever else shared its batch. With the option on,
  every product runs on tiles of exactly ``BATCH_INVARIANT_TILE`` rows (the last padded with
  zeros), so each kernel call sees one shape and a row's result does not depend on the others;
  everything else (log-softmax, logsumexp, the gate nonlinearities) is computed row by row and
  already is invariant. It costs most on narrow products (a one-row step pays for a tile)::

        rows  0 ─┐ tile of R rows ──────────┐
        rows  R ─┤ tile of R rows ──────────┼─▶ one baddbmm: T products of R rows ─▶ out (n, M)
        rows 2R ─┘ n - 2R rows + zeros ─────┘                     (padding dropped)

* ``precision``: ``bf16`` multiplies bfloat16 copies of the weights with the rows cast to
  bfloat16 (the kernel accumulates in float32) and hands back float32, so states, gates and
  log-probs stay float32 (model/models/precision.py). It applies to the products this class makes
  itself (the explicit cells, the projection and the output layer), without autograd; the
  fused ``nn.LSTM``/``GRU``/``RNN`` kernels of ``forward`` and all of training stay float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.models.config import ModelConfig

BATCH_INVARIANT_TILE = 8  # rows per kernel call when ``batch_invariant`` (see the module docstring)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}  # precision name -> product dtype


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
        self.batch_invariant = False  # products in fixed row tiles (inference only; see ``product``)
        self.precision = "fp32"  # the products' precision (``set_precision``)
        self._low: dict[str, Tensor] = {}  # weight name -> its bfloat16 copy (precision bf16)

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
        out, new_state = self.recurrent(ids, state)  # (B, T, H)
        out = self._dropout(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return out, new_state

    def recurrent(self, ids: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The top recurrent layer's hidden states (B, T, H) after each token (an LSTM's ``h``,
        before dropout and the projection), and the new state (L, B, S). Position t depends only
        on ``ids[:, :t+1]``: padding after a row's end leaves its earlier positions as they are."""
        if state is None:
            state = self.initial_state(ids.size(0), ids.device)
        x = self._dropout(self._embed(ids))  # (B, T, E)
        out, new_state = self.rnn(x, self._split(state))  # (B, T, H)
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
        logits = self.linear(feats, self.decoder, "decoder.weight")
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

    # -- the one matrix product of the explicit cells ----------------------------------------------
    def set_precision(self, precision: str) -> None:
        """Run the explicit cells' products in ``precision`` (a key of ``PRECISIONS``): bf16 keeps
        bfloat16 copies of the product weights next to the float32 ones (call it after loading;
        training changes only the float32 weights)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self._low = {}
        if precision != "fp32":
            dtype = PRECISIONS[precision]
            with torch.no_grad():
                self._low = {
                    name: p.detach().to(dtype)
                    for name, p in self.named_parameters()
                    if p.dim() == 2 and not name.startswith("embedding")
                }
                if self.config.tie_weights:
                    self._low["decoder.weight"] = self.embedding.weight.detach().to(dtype)

    def linear(self, x: Tensor, layer: nn.Linear, name: str) -> Tensor:
        """``layer(x)``, through :meth:`product` when an inference option is on (``name``: the
        weight's parameter name; a layer outside this network, like the hybrid's gate, has no
        low-precision copy and multiplies in float32)."""
        if self.batch_invariant or self._low:
            return self.product(x, layer.weight, layer.bias, name)
        return layer(x)

    def product(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, name: str = "") -> Tensor:
        """``x @ weight.T + bias`` for rows ``x`` (…, K) -> (…, M) in float32; ``bias`` is (M,)
        or (N, M) for 2-D ``x``. ``name`` (the weight's parameter name) finds its low-precision
        copy, used only without autograd (training always multiplies the float32 weights)."""
        if x.dim() != 2:  # leading dimensions as rows
            return self.product(x.reshape(-1, x.size(-1)), weight, bias, name).view(*x.shape[:-1], -1)
        low = None if torch.is_grad_enabled() else self._low.get(name)
        if low is None:
            return self._rows(x, weight, bias)
        out = self._rows(x.to(low.dtype), low, None).float()  # (N, M)
        return out + bias if bias is not None else out

    def _rows(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        wt = weight.t()
        if not self.batch_invariant or torch.is_grad_enabled():
            return torch.addmm(bias, x, wt) if bias is not None else x @ wt
        tile, n = BATCH_INVARIANT_TILE, x.size(0)
        pad = -n % tile
        if pad:
            x = F.pad(x, (0, 0, 0, pad))  # (N + pad, K)
            bias = F.pad(bias, (0, 0, 0, pad)) if bias is not None and bias.dim() == 2 else bias
        tiles = x.size(0) // tile
        if x.dtype != torch.float32:  # bfloat16 bmm has no fast CPU kernel: one mm per tile
            out = x.new_empty(x.size(0), wt.size(1))  # (N + pad, M)
            for a in range(0, x.size(0), tile):
                if bias is None:
                    torch.mm(x[a : a + tile], wt, out=out[a : a + tile])
                else:
                    b = bias[a : a + tile] if bias.dim() == 2 else bias
                    torch.addmm(b, x[a : a + tile], wt, out=out[a : a + tile])
            return out[:n]
        x3 = x.view(tiles, tile, x.size(1))  # (T, R, K): one kernel call, T products of R rows
        w3 = wt.expand(tiles, *wt.shape)  # (T, K, M), no copy
        if bias is None:
            out = torch.bmm(x3, w3)
        else:
            b3 = bias.view(tiles, tile, -1) if bias.dim() == 2 else bias
            out = torch.baddbmm(b3, x3, w3)  # (T, R, M)
        return out.view(-1, wt.size(1))[:n]

    # -- the recurrent layers as explicit cells ---------------------------------------------------
    # ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` run whole sequences in one fused kernel. Prefix-shared
    # scoring (model/models/prefix.py) must start each row from a different parent and read inner states,
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
        return self.product(x, w_ih, bias, f"rnn.weight_ih_l{layer}")

    def cell_step(self, layer: int, gi: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step of one layer for B rows (gate order i f g o, and r z n, as torch's), from the
        input half ``gi`` (B, G·H) and the previous (h, c); returns the new (h, c)."""
        _, w_hh, _, b_hh = self.layer_weights(layer)
        cell = self.config.cell
        if cell == "gru":
            gh = self.product(h, w_hh, b_hh, f"rnn.weight_hh_l{layer}")  # (B, 3H)
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return n + z * (h - n), None
        gates = self.product(h, w_hh, gi, f"rnn.weight_hh_l{layer}")  # (B, G·H)
        if cell == "rnn_tanh":
            return torch.tanh(gates), None
        assert c is not None
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def top_features(self, h: Tensor) -> Tensor:
        """Top-layer output (…, H) -> what the output layer reads (…, D)."""
        h = self.drop(h)
        return h if self.proj is None else self.linear(h, self.proj, "proj.weight")

    def step(self, ids: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One token per row through the explicit cells: logits (B, V) and the new state (L, B, S)."""
        feats, state = self.step_features(ids, state)
        return self.output(feats), state

    def step_features(self, ids: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One token per row through the explicit cells: the features (B, D) the output layer
        reads, and the new state (L, B, S)."""
        x = self.drop(self.embedding(ids))  # (B, E)
        lstm = self.config.cell == "lstm"
        new = []
        for layer in range(self.config.num_layers):
            h, c = state[layer].chunk(2, dim=-1) if lstm else (state[layer], None)
            h, c = self.cell_step(layer, self.input_gates(layer, x), h, c)
            new.append(torch.cat([h, c], dim=-1) if lstm else h)  # type: ignore[list-item]
            x = self.drop(h)
        return self.top_features(h), torch.stack(new)

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
