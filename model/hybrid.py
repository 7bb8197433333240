"""The hybrid model: an RNN that learns the residual over a Kneser-Ney n-gram (NgramRes).

::

    ids ─▶ RNNLM ─▶ features h (…, D) ─┬─▶ decoder ─▶ RNN logits (…, V) ─┐
                                        └─▶ β(h) = softplus(w·h + b) ─────┤ logits = RNN logits
    last order-1 ids ─▶ KN n-gram ─▶ ln P_ngram(· | history) (…, V) ──────┘         + β(h) · ln P_ngram
                                                                           P = softmax(logits)

The n-gram memorizes collocations from a single pass over the data; the RNN only has to learn
what the n-gram gets wrong (Li et al. 2022, "Residual learning of neural text generation with
n-gram language model"), and β lets it trust the n-gram more in some contexts than in others.
The result is one normalized distribution over the vocabulary, so it has a true perplexity and
``/score`` on it is exact.

Training without leaking the targets: an n-gram counted on the very sentences the RNN is trained
on has seen every training target, so it looks far better there than on new text, and the RNN
would learn to trust it blindly. So the training positions get the n-gram of *the other folds*
(the train sentences are split into K folds; fold k's positions see a model counted without fold
k), as Kneser-Ney's own discounts are estimated on held-out counts. Valid, test and serving use
the n-gram counted on all of train. See :mod:`model.fit`.

A hybrid checkpoint holds its network and points at its n-gram checkpoint::

    hybrid/config.json  {"model_type": "hybrid", "model": {…}, "ngram": {"path": "../kn5",
                         "config_sha256": "…"}, "weights_sha256": "…"}

Loading refuses if the n-gram changed since the hybrid was trained with it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import CONFIG, CheckpointError, load_network, save_network
from .config import ModelConfig
from .data import sha256_file
from .lm import LanguageModel, State, describe_rnn, in_padded_batches
from .network import RNNLM
from .ngram.model import NGramLanguageModel
from .ngram.torch_tables import TorchBackoffTables, histories_of
from .tokenizer import PAD_ID, Tokenizer

NGRAM_FLOOR = -60.0  # ln P_ngram is clamped here before scaling (<pad>/<bos> are -inf)


class HybridNet(nn.Module):
    """The trainable part: an :class:`RNNLM` plus the gate β(h) on the n-gram's log-probs."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = RNNLM(config)
        self.beta = nn.Linear(self.rnn.decoder.in_features, 1)
        nn.init.zeros_(self.beta.weight)
        nn.init.constant_(self.beta.bias, math.log(math.e - 1))  # softplus(b) = 1: trust it as is

    def combine(self, feats: Tensor, ngram_logp: Tensor) -> Tensor:
        """Logits (N, V) from RNN features (N, D) and the n-gram's log-probs (N, V)."""
        logits = self.rnn.output(feats).float()  # (N, V)
        beta = F.softplus(self.beta(feats).float())  # (N, 1)
        return logits + beta * ngram_logp.float().clamp(min=NGRAM_FLOOR)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class HybridLanguageModel(LanguageModel):
    """:class:`HybridNet` with its n-gram, behind the :class:`LanguageModel` interface."""

    kind = "hybrid"

    def __init__(
        self,
        net: HybridNet,
        ngram: NGramLanguageModel,
        tokenizer: Tokenizer,
        window: int = 256,
        max_batch: int = 64,
        chunk_rows: int = 4096,
    ) -> None:
        if ngram.tokenizer.tokens != tokenizer.tokens:
            raise ValueError("the hybrid's n-gram must use the network's vocabulary")
        self.net = net.eval()
        self.ngram = ngram
        self.tokenizer = tokenizer
        self.tables = TorchBackoffTables(ngram.tables, self.device)
        self.width = ngram.order - 1  # tokens of history the n-gram conditions on
        self.window, self.max_batch, self.chunk_rows = window, max_batch, chunk_rows
        self.metrics: dict = {}

    @property
    def device(self) -> torch.device:
        return self.net.rnn.embedding.weight.device

    def _logprobs(self, feats: Tensor, histories: Tensor) -> Tensor:
        """(N, V) normalized log-probs from features (N, D) and n-gram histories (N, W)."""
        ngram = self.tables.next_logprobs(histories)
        return torch.log_softmax(self.net.combine(feats, ngram), dim=-1)

    # -- scoring --------------------------------------------------------------------------------
    @torch.inference_mode()
    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        return in_padded_batches(seqs, self.max_batch, self.device, self._target_logprobs)

    def _target_logprobs(self, batch: Tensor) -> Tensor:
        B, L = batch.shape
        if L < 2:
            return torch.zeros(B, 0, device=batch.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T)
        feats = []
        state = None
        for start in range(0, inputs.size(1), self.window):
            f, state = self.net.rnn.hidden(inputs[:, start : start + self.window], state)
            feats.append(f)
        feats_all = torch.cat(feats, dim=1).reshape(B * (L - 1), -1)  # (B*T, D)
        position = torch.arange(L - 1, device=batch.device).repeat(B)  # every row starts at <bos>
        histories = histories_of(inputs.reshape(-1), position, self.width)  # (B*T, W)
        flat_targets = targets.reshape(-1)
        out = torch.zeros(B * (L - 1), device=batch.device)
        wanted = torch.nonzero(flat_targets != PAD_ID).squeeze(1)
        for start in range(0, len(wanted), self.chunk_rows):
            at = wanted[start : start + self.chunk_rows]
            logp = self._logprobs(feats_all[at], histories[at])
            out[at] = logp.gather(1, flat_targets[at].unsqueeze(1)).squeeze(1)
        return out.view(B, L - 1)

    # -- decoding -------------------------------------------------------------------------------
    def start_state(self, batch_size: int) -> State:
        rnn = self.net.rnn.initial_state(batch_size)
        return rnn, torch.full((batch_size, self.width), PAD_ID, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def step(self, state: State, ids: Tensor) -> tuple[Tensor, State]:
        rnn_state, history = state
        ids = ids.to(self.device).view(-1, 1)  # (B, 1)
        feats, rnn_state = self.net.rnn.hidden(ids, rnn_state)  # (B, 1, D)
        history = torch.cat([history, ids], dim=1)[:, 1:] if self.width else history  # (B, W)
        return self._logprobs(feats[:, 0], history), (rnn_state, history)

    @torch.inference_mode()
    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, State]:
        ids = torch.tensor(prefixes, dtype=torch.long, device=self.device)  # (B, T)
        state = None
        for start in range(0, ids.size(1), self.window):
            feats, state = self.net.rnn.hidden(ids[:, start : start + self.window], state)
        history = torch.full((ids.size(0), self.width), PAD_ID, dtype=torch.long, device=self.device)
        tail = ids[:, -self.width :] if self.width else ids[:, :0]
        if tail.size(1):
            history[:, self.width - tail.size(1) :] = tail
        return self._logprobs(feats[:, -1], history), (state, history)

    def select_state(self, state: State, rows: Sequence[int] | Tensor) -> State:
        rnn_state, history = state
        index = torch.as_tensor(rows, dtype=torch.long, device=history.device)
        return rnn_state.index_select(1, index), history.index_select(0, index)

    def concat_states(self, states: Sequence[State]) -> State:
        return (torch.cat([s[0] for s in states], dim=1), torch.cat([s[1] for s in states], dim=0))

    def describe(self) -> dict:
        c = self.net.config
        return {
            **super().describe(),
            **describe_rnn(self.net),
            "components": {
                "rnn": f"{c.num_layers}x{c.hidden_dim} {c.cell}",
                "ngram": f"order {self.ngram.order}, {self.ngram.smoothing}",
            },
            "device": str(self.device),
        }


# -- checkpoints ----------------------------------------------------------------------------------
def save_hybrid(
    out_dir: str | Path,
    net: HybridNet,
    tokenizer: Tokenizer,
    ngram_dir: str | Path,
    metrics: dict | None = None,
    card: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a hybrid checkpoint that refers to its n-gram by a path relative to ``out_dir``."""
    rel = os.path.relpath(Path(ngram_dir).resolve(), Path(out_dir).resolve())
    ngram = {"path": rel, "config_sha256": sha256_file(Path(ngram_dir) / CONFIG)}
    return save_network(
        out_dir,
        net,
        net.config,
        tokenizer,
        metrics,
        card,
        model_type="hybrid",
        extra={"ngram": ngram},
        dtype=dtype,
    )


def load_hybrid(model_dir: str | Path, device: str = "cpu") -> HybridLanguageModel:
    from .ngram.store import load_ngram

    d = Path(model_dir)
    net, tokenizer, metrics, config = load_network(d, "hybrid", HybridNet, device)
    try:
        path = (d / config["ngram"]["path"]).resolve()
        sha = config["ngram"]["config_sha256"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{d / CONFIG}: needs 'ngram' with 'path' and 'config_sha256' ({e})") from e
    if not (path / CONFIG).exists():
        raise CheckpointError(f"{d / CONFIG}: its n-gram {path} is missing")
    if sha256_file(path / CONFIG) != sha:
        raise CheckpointError(
            f"{path / CONFIG}: changed since the hybrid was trained with it (sha256 differs)"
        )
    try:
        lm = HybridLanguageModel(net, load_ngram(path), tokenizer)
    except ValueError as e:
        raise CheckpointError(f"{d}: {e}") from e
    lm.metrics = metrics
    return lm
