"""One interface for every language model this project serves (RNN, n-gram, mixture).

Everything downstream (evaluation, reranking, the engine, the service) talks to a
:class:`LanguageModel` and never asks which kind it holds. Three operations suffice:

* ``sequence_logprobs(seqs)``: for each id sequence, ``log P(s[i] | s[:i])`` for i >= 1.
  ``s[0]`` is the conditioning start (normally ``<bos>``), so a sentence scored the KenLM way is
  ``[<bos>, w1, …, wn, <eos>]`` and yields n + 1 log-probs.
* ``start_state(batch)`` / ``step(state, ids)``: one-token-at-a-time decoding with a batched
  state; ``step`` returns the next-token log-probs (B, V) after consuming ``ids`` (B,).
* ``select_state`` / ``concat_states``: keep or join rows of a state, so sequences can join and
  leave a running batch.

A model with hidden states (the recurrent kinds) also gives a text's vector, ``embed(seqs,
pooling)`` (:meth:`RecurrentLanguageModel.embed`); the other kinds refuse with
:class:`NoHiddenStates`.

All log-probs are natural logs, normalized over the whole vocabulary (``<pad>`` and ``<bos>``
get probability 0; ``<eos>`` and ``<unk>`` are ordinary outcomes).

Passes over many sequences (prefix.py, positions.py) are called from here and know a model only
by the protocols they declare (``ScoringModel``, ``TreeModel``, ``StepModel``): they never import
this module back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from model.models.network import RNNLM
from model.models.positions import PositionsResult, alternatives_each, alternatives_rnn_tree
from model.models.prefix import Plan, PrefixTree, TreeResult, score_each, score_rnn_tree
from model.text.batching import pad_batch
from model.text.tokenizer import BOS_ID, Tokenizer

State = Any
POOLINGS = ("last", "mean")  # how ``embed`` makes one vector of a text's hidden states


class NoHiddenStates(ValueError):
    """This model kind has no hidden states to make a text's vector of (an n-gram, a window
    model, a mixture): ``embed`` needs a recurrent model."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"a {kind} model has no hidden states to embed a text with; use a recurrent model (rnn or hybrid)"
        )
        self.kind = kind


def check_pooling(pooling: str) -> None:
    """ValueError naming ``pooling`` unless it is one of :data:`POOLINGS`."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")


class LanguageModel(ABC):
    kind: str = "abstract"
    tokenizer: Tokenizer
    metrics: dict[str, Any]  # training and evaluation figures from the checkpoint ({} if none)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @abstractmethod
    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        """Per-token log-probs of each sequence after its first element (float64 tensors)."""

    @abstractmethod
    def start_state(self, batch_size: int) -> State: ...

    @abstractmethod
    def step(self, state: State, ids: Tensor) -> tuple[Tensor, State]: ...

    @abstractmethod
    def select_state(self, state: State, rows: Sequence[int] | Tensor) -> State: ...

    @abstractmethod
    def concat_states(self, states: Sequence[State]) -> State: ...

    def prefill(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, State]:
        """Consume each prefix (starting with <bos>): next-token log-probs (B, V) and the state.

        Prefixes of equal length run together; the rows come back in input order.
        """
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prefixes):
            if len(p) == 0:
                raise ValueError("a prefix needs at least its start token")
            groups.setdefault(len(p), []).append(i)
        logprobs, states, order = [], [], []
        for rows in groups.values():
            lp, st = self._prefill_equal([prefixes[i] for i in rows])
            logprobs.append(lp)
            states.append(st)
            order += rows
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return (torch.cat(logprobs)[inverse], self.select_state(self.concat_states(states), inverse))

    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, State]:
        """Prefill rows of equal length; the default steps one token at a time."""
        state = self.start_state(len(prefixes))
        ids = torch.tensor(prefixes, dtype=torch.long)  # (B, T)
        for t in range(ids.size(1)):
            logprobs, state = self.step(state, ids[:, t])
        return logprobs, state

    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> Tensor:
        """(B, V) log-probs of the token after each prefix (each prefix starts with <bos>)."""
        return self.prefill(prefixes)[0]

    def score_tree(
        self, seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = (), **options: Any
    ) -> TreeResult:
        """Score ``seqs`` and, for each query prefix, the next-token log-probs (and, with
        ``with_state=True``, the state after it), in one pass. This default runs the model's
        own batched calls; a model that can share prefixes (the RNN) overrides it."""
        return score_each(self, seqs, queries, **options)

    def position_alternatives(
        self, seqs: Sequence[Sequence[int]], top_k: int, **options: Any
    ) -> PositionsResult:
        """For each sequence, every token's log-prob after its first (as ``sequence_logprobs``) and
        the ``top_k`` most likely tokens at its position, reading each sequence once
        (model/models/positions.py). This default steps the model; a recurrent one shares prefixes."""
        return alternatives_each(self, seqs, top_k, **options)

    @property
    def embedding_dim(self) -> int:
        """The width of :meth:`embed`'s vectors; a kind without hidden states raises
        :class:`NoHiddenStates` (cheap: ask it before any work)."""
        raise NoHiddenStates(self.kind)

    def embed(self, seqs: Sequence[Sequence[int]], pooling: str = "last", normalize: bool = False) -> Tensor:
        """Each text's vector (N, D) from the model's hidden states (``seqs``: each text's ids,
        without ``<bos>``). This default is for a kind that has none: it raises
        :class:`NoHiddenStates`; a recurrent model overrides it
        (:meth:`RecurrentLanguageModel.embed` defines the poolings)."""
        raise NoHiddenStates(self.kind)

    def set_numerics(self, precision: str = "fp32", batch_invariant: bool = False) -> None:
        """The precision of the model's products and batch-invariant scoring (model/models/precision.py);
        a kind without these options accepts only the defaults (ValueError otherwise)."""
        from model.models.precision import refuse_numerics

        refuse_numerics(self.kind, precision, batch_invariant)

    @property
    def precision(self) -> str:
        return "fp32"

    def context_width(self) -> int | None:
        """How many past tokens the next-token distribution depends on, <bos> included; None when
        the whole history matters (an RNN, the default). A search may merge hypotheses that agree on
        that many last tokens (model/decoding/beam.py): None is always exact."""
        return None

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "tokenizer": self.tokenizer.kind,
            "language": self.tokenizer.language,
            "normalizer": self.tokenizer.normalizer,
            "precision": self.precision,
        }


class RecurrentLanguageModel(LanguageModel):
    """A model whose recurrent part is an :class:`RNNLM` (the RNN, the hybrid), on one device.

    What they share is the fast path: prefix-shared scoring through the network's own cells,
    with the prefix-state cache (model/models/prefix.py), and the numerics options of its products
    (bf16, batch invariance). A kind gives the output layer of a pass (:meth:`tree_output`: the
    RNN's own, or the hybrid's RNN + n-gram) and its decoding state."""

    net: RNNLM  # the network whose cells run, in eval mode
    window: int  # time steps per forward call when scoring (bounds B x T x V memory)
    max_batch: int  # sequences per padded batch of ``sequence_logprobs``

    @property
    def device(self) -> torch.device:
        return self.net.embedding.weight.device

    def score_tree(
        self, seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = (), **options: Any
    ) -> TreeResult:
        """Prefix-shared: every distinct prefix of the batch is computed once (model/models/prefix.py)."""
        return score_rnn_tree(self, seqs, queries, **options)

    def position_alternatives(
        self, seqs: Sequence[Sequence[int]], top_k: int, **options: Any
    ) -> PositionsResult:
        """Prefix-shared, through the same cells and output layer as
        :meth:`score_tree` (model/models/positions.py)."""
        return alternatives_rnn_tree(self, seqs, top_k, **options)

    @property
    def embedding_dim(self) -> int:
        return self.net.config.hidden_dim

    @torch.inference_mode()
    def embed(self, seqs: Sequence[Sequence[int]], pooling: str = "last", normalize: bool = False) -> Tensor:
        """Each text's vector (N, H) float32 on the CPU, from the top recurrent layer's hidden states
        (:meth:`RNNLM.recurrent`: an LSTM's ``h``, before the projection; a hybrid's RNN part, its
        n-gram has none). ``seqs`` are the texts' ids without ``<bos>``; the model reads
        ``<bos> t1 … tn`` (no ``<eos>``), in its own reading direction (a backward model's ids are
        already right to left). With h_0 the state after ``<bos>`` and h_k the state after t_k:

        * ``pooling="last"``: h_n, the state after the text's last token;
        * ``pooling="mean"``: (h_1 + … + h_n) / n, the mean over the text's own tokens (h_0, the
          same for every text, is left out: it would only pull all vectors towards one point).

        An empty text (n = 0) gets h_0 under both. ``normalize``: each vector divided by its L2 norm.

        Texts of similar length run together, right-padded; a row's states never read its padding
        (position t depends on tokens up to t only) and the padding's states are masked out, so a
        text's vector does not depend on the others (equal within float rounding, 1e-5: the fused
        recurrent kernels, which the batch-invariant and bf16 options do not change)."""
        check_pooling(pooling)
        out = torch.zeros(len(seqs), self.embedding_dim)  # (N, H)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self.max_batch):
            rows = order[start : start + self.max_batch]
            batch = pad_batch([bos_prefix(seqs[i]) for i in rows]).to(self.device)  # (B, L)
            lengths = torch.tensor([len(seqs[i]) for i in rows], device=self.device)  # n per row
            out[rows] = self._pool(batch, lengths, pooling).float().cpu()
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def _pool(self, batch: Tensor, lengths: Tensor, pooling: str) -> Tensor:
        """(B, H) pooled top-layer states of ``batch`` (B, L) = ``<bos>`` + each text (n tokens,
        ``lengths`` (B,)) + padding, window by window (the state carried across windows)."""
        rows = torch.arange(batch.size(0), device=batch.device)
        last = h0 = summed = state = None
        for a in range(0, batch.size(1), self.window):
            h, state = self.net.recurrent(batch[:, a : a + self.window], state)  # (B, t, H)
            b = a + h.size(1)
            if a == 0:
                h0 = h[:, 0]  # (B, H): after <bos>, the empty text's vector
            if pooling == "last":
                picked = h[rows, (lengths - a).clamp(0, b - a - 1)]  # (B, H)
                here = ((lengths >= a) & (lengths < b)).unsqueeze(1)  # (B, 1): h_n is in this window
                last = picked if last is None else torch.where(here, picked, last)
            else:
                position = torch.arange(a, b, device=h.device)  # (t,)
                text = (position >= 1) & (position <= lengths.unsqueeze(1))  # (B, t): h_1 .. h_n
                part = (h * text.unsqueeze(-1)).sum(1)  # (B, H)
                summed = part if summed is None else summed + part
        if pooling == "last":
            assert last is not None  # every row has at least <bos>
            return last
        assert summed is not None and h0 is not None
        mean = summed / lengths.clamp(min=1).unsqueeze(1)  # (B, H)
        return torch.where((lengths == 0).unsqueeze(1), h0, mean)

    @abstractmethod
    def tree_output(self, tree: PrefixTree, plan: Plan) -> Callable[[Tensor, int], Tensor]:
        """The output layer of a prefix-tree pass over ``tree`` laid out by ``plan``:
        ``output(features, first)`` gives the logits (c, V) of the pass's feature rows
        ``first .. first + c`` (c, D) (model/models/prefix.py calls it chunk by chunk)."""

    def set_numerics(self, precision: str = "fp32", batch_invariant: bool = False) -> None:
        from model.models.precision import check_precision

        check_precision(precision, self.device)
        self.net.set_precision(precision)
        self.net.batch_invariant = batch_invariant

    @property
    def precision(self) -> str:
        return self.net.precision

    def describe(self) -> dict:
        return {
            **super().describe(),
            **describe_rnn(self.net),
            "device": str(self.device),
            "batch_invariant": self.net.batch_invariant,
        }


class RNNLanguageModel(RecurrentLanguageModel):
    """An :class:`RNNLM` network with its tokenizer, in eval mode, on one device."""

    kind = "rnn"

    def __init__(self, net: RNNLM, tokenizer: Tokenizer, window: int = 256, max_batch: int = 64):
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.window = window  # time steps per forward call when scoring (bounds B x T x V memory)
        self.metrics = {}
        self.max_batch = max_batch

    @torch.inference_mode()
    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        return in_padded_batches(seqs, self.max_batch, self.device, self._target_logprobs)

    def _target_logprobs(self, batch: Tensor) -> Tensor:
        """log P(batch[:, t+1] | batch[:, :t+1]) for every t, window by window: (B, L-1)."""
        state = None
        pieces = []
        steps = batch.size(1) - 1
        for start in range(0, steps, self.window):
            end = min(start + self.window, steps)
            logits, state, _ = self.net(batch[:, start:end], state)  # (B, T, V)
            targets = batch[:, start + 1 : end + 1]  # (B, T)
            picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            pieces.append(picked - torch.logsumexp(logits, dim=-1))
        if not pieces:
            return torch.zeros(batch.size(0), 0, device=batch.device)
        return torch.cat(pieces, dim=1)

    def start_state(self, batch_size: int) -> Tensor:
        return self.net.initial_state(batch_size)

    @torch.inference_mode()
    def step(self, state: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        logits, state = self.net.step(ids.to(self.device).view(-1), state)  # (B, V): explicit cells
        return torch.log_softmax(logits.float(), dim=-1), state

    def tree_output(self, tree: PrefixTree, plan: Plan) -> Callable[[Tensor, int], Tensor]:
        """The network's output layer: the features alone give the logits."""
        return lambda features, first: self.net.output(features)

    def select_state(self, state: Tensor, rows: Sequence[int] | Tensor) -> Tensor:
        index = torch.as_tensor(rows, dtype=torch.long, device=state.device)
        return state.index_select(1, index)

    def concat_states(self, states: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(states), dim=1)

    @torch.inference_mode()
    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        ids = torch.tensor(prefixes, dtype=torch.long, device=self.device)  # (B, T)
        state = None
        for start in range(0, ids.size(1), self.window):
            logits, state, _ = self.net(ids[:, start : start + self.window], state)  # (B, t, V)
        assert state is not None  # every prefix has at least its start token
        return torch.log_softmax(logits[:, -1].float(), dim=-1), state


def describe_rnn(net: Any) -> dict:
    """What ``describe`` says of a recurrent network (an RNNLM, or a hybrid that holds one)."""
    c = net.config
    return {
        "cell": c.cell,
        "num_layers": c.num_layers,
        "hidden_dim": c.hidden_dim,
        "parameters": net.num_parameters(),
    }


def in_padded_batches(
    seqs: Sequence[Sequence[int]],
    max_batch: int,
    device: torch.device,
    target_logprobs: Callable[[Tensor], Tensor],
) -> list[Tensor]:
    """``sequence_logprobs`` for a model that scores a padded (B, L) batch at once:
    ``target_logprobs(batch)`` gives (B, L-1); sequences of similar length run together."""
    results: list[Tensor] = [torch.empty(0)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), max_batch):
        rows = order[start : start + max_batch]
        batch = pad_batch([seqs[i] for i in rows]).to(device)  # (B, L)
        scores = target_logprobs(batch)  # (B, L-1)
        for r, i in enumerate(rows):
            results[i] = scores[r, : len(seqs[i]) - 1].double().cpu()
    return results


def bos_prefix(ids: Sequence[int]) -> list[int]:
    return [BOS_ID, *ids]
