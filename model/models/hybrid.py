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
the n-gram counted on all of train. See :mod:`model.training.fit`.

A hybrid checkpoint holds its network and points at its n-gram checkpoint::

    hybrid/config.json  {"model_type": "hybrid", "model": {…}, "ngram": {"path": "../kn5",
                         "config_sha256": "…"}, "weights_sha256": "…"}

Loading refuses if the n-gram changed since the hybrid was trained with it.

Served, the hybrid runs on the RNN's fast paths (:class:`~model.models.lm.RecurrentLanguageModel`): the
LSTM's explicit cells over the prefix tree and in every decoding step, the prefix-state cache,
batch-invariant and bf16 products; only the output layer differs. The n-gram part of a position
is read from its contexts (table indices, carried from step to step like KenLM's state, or
computed for every node of a prefix tree at once) in a few microseconds per position
(:mod:`model.models.ngram.torch_tables`, ``python -m rnnlm.bench.ngram``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.models.checkpoint import CONFIG, CheckpointError, load_network, save_network
from model.models.config import ModelConfig
from model.models.lm import RecurrentLanguageModel, State, describe_rnn, in_padded_batches
from model.models.network import RNNLM
from model.models.ngram.model import NGramLanguageModel, histories_array
from model.models.ngram.torch_tables import TorchBackoffTables, histories_of
from model.text.data import sha256_file
from model.text.tokenizer import PAD_ID, Tokenizer

if TYPE_CHECKING:
    from model.models.prefix import Plan, PrefixTree, TreeResult

NGRAM_FLOOR = -60.0  # ln P_ngram is clamped here before scaling (<pad>/<bos> are -inf)
GATE_BLOCK = 64  # batch-invariant β: softplus on whole blocks of this many values (see ``gate``)


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
        """Logits (N, V) from RNN features (N, D) and the n-gram's log-probs (N, V).

        The output layer takes the RNN's numerics options (batch invariance, bf16); the gate
        stays float32. Without autograd the sum is made in place (the same two roundings, one
        (N, V) buffer fewer)."""
        logits = self.rnn.output(feats).float()  # (N, V)
        beta = self.gate(feats)  # (N, 1)
        ngram = ngram_logp.float().clamp(min=NGRAM_FLOOR)  # (N, V), a new tensor
        if torch.is_grad_enabled():
            return logits + beta * ngram
        return logits.add_(ngram.mul_(beta))

    def gate(self, feats: Tensor) -> Tensor:
        """β(h) = softplus(w·h + b), (N, 1) float32, from features (N, D).

        With the RNN's batch invariance on, a row's β must not depend on the others: w·h is a
        row-wise sum (a one-column product's kernel changes with the row count, even in fixed
        tiles), and softplus runs on a length padded to whole vector blocks (the last few values
        of a tensor take a scalar path that rounds otherwise)."""
        if not (self.rnn.batch_invariant and not torch.is_grad_enabled()):
            return F.softplus(self.beta(feats).float())
        x = ((feats * self.beta.weight[0]).sum(-1) + self.beta.bias).float()  # (N,)
        n = x.numel()
        return F.softplus(F.pad(x, (0, -n % GATE_BLOCK)))[:n].unsqueeze(1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class HybridLanguageModel(RecurrentLanguageModel):
    """:class:`HybridNet` with its n-gram, behind the :class:`LanguageModel` interface.

    The recurrent part is the RNN's (``self.net``: its cells, prefix-shared scoring, the
    prefix-state cache, bf16 and batch-invariant products); the output layer adds β(h) · ln
    P_ngram, the n-gram looked up from each row's contexts (:class:`TorchBackoffTables`). A
    decoding state is ``(RNN state (L, B, S), n-gram contexts (B, order-1))``; a cached prefix
    keeps only its RNN state (its contexts follow from its tokens)."""

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
        self.hybrid = net.eval()
        self.net = net.rnn  # the cells every fast path runs
        self.ngram = ngram
        self.tokenizer = tokenizer
        self.tables = TorchBackoffTables(ngram.tables, self.device)
        self.width = ngram.order - 1  # tokens of history the n-gram conditions on
        self.window, self.max_batch, self.chunk_rows = window, max_batch, chunk_rows
        self.metrics: dict = {}

    def _logprobs(self, feats: Tensor, contexts: Tensor) -> Tensor:
        """(N, V) normalized log-probs from features (N, D) and n-gram contexts (N, W)."""
        return torch.log_softmax(self._logits(feats, contexts), dim=-1)

    def _logits(self, feats: Tensor, contexts: Tensor) -> Tensor:
        return self.hybrid.combine(feats, self.tables.context_logprobs(contexts))

    def _contexts_after(self, prefixes: Sequence[Sequence[int]]) -> Tensor:
        """(B, W) the n-gram contexts after each prefix (its last W tokens)."""
        histories = torch.from_numpy(histories_array(prefixes, self.ngram.order)).to(self.device)
        return self.tables.context_indices(histories)

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
            f, state = self.net.hidden(inputs[:, start : start + self.window], state)
            feats.append(f)
        feats_all = torch.cat(feats, dim=1).reshape(B * (L - 1), -1)  # (B*T, D)
        position = torch.arange(L - 1, device=batch.device).repeat(B)  # every row starts at <bos>
        histories = histories_of(inputs.reshape(-1), position, self.width)  # (B*T, W)
        contexts = self.tables.context_indices(histories)  # (B*T, W)
        flat_targets = targets.reshape(-1)
        out = torch.zeros(B * (L - 1), device=batch.device)
        wanted = torch.nonzero(flat_targets != PAD_ID).squeeze(1)
        for start in range(0, len(wanted), self.chunk_rows):
            at = wanted[start : start + self.chunk_rows]
            logp = self._logprobs(feats_all[at], contexts[at])
            out[at] = logp.gather(1, flat_targets[at].unsqueeze(1)).squeeze(1)
        return out.view(B, L - 1)

    def tree_output(self, tree: PrefixTree, plan: Plan) -> Callable[[Tensor, int], Tensor]:
        """RNN logits + β · the n-gram after each row's node: the contexts of every node of the
        tree in one look-up per order (a node's from its parent's), then each row's."""
        device = self.device
        parent = torch.tensor(tree.parent, dtype=torch.long, device=device)
        token = torch.tensor(tree.token, dtype=torch.long, device=device)
        contexts = self.tables.tree_contexts(parent, token)  # (M, W): after each node
        row_of = torch.tensor(plan.row_of_node, dtype=torch.long, device=device)
        node_of_row = torch.zeros(plan.num_rows + len(plan.seeds), dtype=torch.long, device=device)
        fed = torch.nonzero(row_of >= 0).squeeze(1)  # computed nodes and seeds
        node_of_row[row_of[fed]] = fed
        row_contexts = contexts[node_of_row]  # (rows, W)
        return lambda features, first: self._logits(features, row_contexts[first : first + len(features)])

    def score_tree(
        self, seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = (), **options: Any
    ) -> TreeResult:
        """The RNN's prefix-shared pass (:meth:`tree_output` adds the n-gram); a query's state
        gets its n-gram contexts beside its RNN state."""
        res = super().score_tree(seqs, queries, **options)
        if res.states is not None:  # the queries' RNN states, with their n-gram contexts
            res.states = (res.states, self._contexts_after(queries))
        return res

    # -- decoding -------------------------------------------------------------------------------
    def start_state(self, batch_size: int) -> State:
        return self.net.initial_state(batch_size), self.tables.start_contexts(batch_size)

    @torch.inference_mode()
    def step(self, state: State, ids: Tensor) -> tuple[Tensor, State]:
        rnn_state, contexts = state
        ids = ids.to(self.device).view(-1)  # (B,)
        feats, rnn_state = self.net.step_features(ids, rnn_state)  # (B, D): explicit cells
        contexts = self.tables.advance(contexts, ids)  # (B, W)
        return self._logprobs(feats, contexts), (rnn_state, contexts)

    @torch.inference_mode()
    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, State]:
        ids = torch.tensor(prefixes, dtype=torch.long, device=self.device)  # (B, T)
        state = None
        for start in range(0, ids.size(1), self.window):
            feats, state = self.net.hidden(ids[:, start : start + self.window], state)
        contexts = self._contexts_after(prefixes)
        return self._logprobs(feats[:, -1], contexts), (state, contexts)

    def select_state(self, state: State, rows: Sequence[int] | Tensor) -> State:
        rnn_state, contexts = state
        index = torch.as_tensor(rows, dtype=torch.long, device=contexts.device)
        return rnn_state.index_select(1, index), contexts.index_select(0, index)

    def concat_states(self, states: Sequence[State]) -> State:
        return (torch.cat([s[0] for s in states], dim=1), torch.cat([s[1] for s in states], dim=0))

    def describe(self) -> dict:
        c = self.hybrid.config
        return {
            **super().describe(),
            **describe_rnn(self.hybrid),
            "components": {
                "rnn": f"{c.num_layers}x{c.hidden_dim} {c.cell}",
                "ngram": f"order {self.ngram.order}, {self.ngram.smoothing}",
            },
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
    from model.models.ngram.store import load_ngram

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
