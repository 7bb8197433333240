"""Continuous batching for generation: every active sample is one row of one running batch.

::

    step k     rows  [a0 a1 b0 c0]       one lm.step for all rows, then each row picks its token
                        │  │     └─ c0 hits <eos>: leaves (its state row is dropped)
    step k+1   rows  [a0 a1 b0 d0 d1]    d (prefilled meanwhile) joins with its own state rows

A recurrent model carries a fixed-size state per row, so joining and leaving are just
``concat_states`` / ``select_state`` on dimension 1 of the state. Each row keeps its own
:class:`~model.inference.sampling.TokenChooser` (own parameters, own seeded generator), so a seeded request
gets the same tokens whatever else shares the batch: the loop does exactly what
:func:`model.inference.generation.generate_stream` does per row.

Each row also follows the stop strings incrementally and works out the text now safe to show
(held back while it may begin a stop string: :class:`~model.inference.sampling.StreamedText`, fed
only what a token added), so neither costs the event loop anything. A row whose reader has fallen behind
is *parked*: it leaves the batch with its state and log-probs, and rejoins them unchanged.

A short prompt can also be prefilled *in* the batch (:meth:`DecodeBatch.join_fresh`): its rows
join from the start state and feed one prompt token per step, choosing nothing until the prompt
is in. On a CPU a step at batch 1 is bound by reading the weights from memory, as a step of 64
rows nearly is, so a prompt fed beside the others costs almost nothing, where a prefill pass of
its own costs a step's weight traffic per prompt token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from model.inference.generation import TokenEvent
from model.inference.sampling import StoppingCriteria, StreamedText, TokenChooser, choose_tokens
from model.models.lm import LanguageModel
from model.models.positions import Alternatives, top_alternatives
from model.text.tokenizer import EOS_ID


@dataclass(eq=False)
class Row:
    """One sample of one request, while it generates."""

    owner: Any  # the request's stream (the engine delivers events to it)
    sample: int
    chooser: TokenChooser
    stopping: StoppingCriteria
    history: list[int]  # prompt ids + generated ids (for the repetition penalty)
    count: int = 0
    feed: list[int] = field(default_factory=list)  # prompt tokens still to feed (prefill in the batch)
    top_logprobs: int = 0  # alternatives to hand over with each token (the request's top_logprobs)
    out: StreamedText = field(init=False)  # the text so far, and how much of it was handed over

    def __post_init__(self) -> None:
        self.out = StreamedText(matcher=self.stopping.matcher())


@dataclass
class ShownTokenEvent(TokenEvent):
    """A token event with ``shown``: the text now safe to show (a client that appends every
    ``shown`` ends with exactly the final, trimmed text; see sampling.StreamedText)."""

    shown: str = ""


@dataclass
class DecodeBatch:
    """The running batch: rows, their state (dim 1) and their next-token log-probs (B, V)."""

    lm: LanguageModel
    rows: list[Row] = field(default_factory=list)
    state: Any = None
    logprobs: Tensor | None = None  # (B, V) float32 on the CPU
    next_ids: list[int] = field(default_factory=list)  # tokens chosen last, fed by the next step
    parked: dict[Any, tuple[list[Row], Tensor, Any]] = field(default_factory=dict)  # owner -> rows

    def __len__(self) -> int:
        """Rows held: in the batch or parked."""
        return len(self.rows) + sum(len(rows) for rows, _, _ in self.parked.values())

    def owners(self) -> list[Any]:
        """Every owner with rows held, parked ones included."""
        return list(dict.fromkeys([*(row.owner for row in self.rows), *self.parked]))

    def park(self, owners: set[Any]) -> None:
        """These owners' rows leave the batch with their state and log-probs, until :meth:`unpark`."""
        if not owners:
            return
        idx = [r for r, row in enumerate(self.rows) if row.owner in owners]
        assert self.logprobs is not None
        for owner in owners:
            sel = [r for r in idx if self.rows[r].owner is owner]
            if sel:
                rows = [self.rows[r] for r in sel]
                self.parked[owner] = (rows, self.logprobs[sel], self.lm.select_state(self.state, sel))
        self.keep([r for r, row in enumerate(self.rows) if row.owner not in owners])

    def unpark(self, owner: Any) -> None:
        """The owner's parked rows join the batch again, exactly as they left it."""
        rows, logprobs, state = self.parked.pop(owner)
        self.add(rows, logprobs, state)

    def drop(self, owner: Any) -> None:
        """Forget the owner's parked rows."""
        self.parked.pop(owner, None)

    def add(self, rows: list[Row], logprobs: Tensor, state: Any) -> None:
        """Join rows whose prefill gave ``logprobs`` (b, V) and ``state`` (b rows)."""
        logprobs = logprobs.float().cpu()
        if self.rows:
            assert self.logprobs is not None
            self.state = self.lm.concat_states([self.state, state])
            self.logprobs = torch.cat([self.logprobs, logprobs])
        else:
            self.state, self.logprobs = state, logprobs
        self.rows += rows

    def join_fresh(self, rows: list[Row]) -> None:
        """Join rows that start from the start state, each with its prompt (``<bos>`` first) in
        ``row.feed``: the next steps feed it a token at a time, then the row chooses as any other."""
        assert all(row.feed for row in rows)
        placeholder = torch.zeros(len(rows), self.lm.vocab_size)  # never read: they feed first
        self.add(rows, placeholder, self.lm.start_state(len(rows)))

    def keep(self, keep: list[int]) -> None:
        """Keep only these rows (in this order); the others leave now."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[r] for r in keep]
        if not keep:
            self.state, self.logprobs = None, None
            return
        assert self.logprobs is not None
        self.state = self.lm.select_state(self.state, keep)
        self.logprobs = self.logprobs[keep]

    def choose(self) -> list[tuple[Row, ShownTokenEvent]]:
        """Every row picks its token (a row still feeding its prompt takes the prompt's next
        token, and says nothing); rows that stop leave. Returns the events, in row order."""
        assert self.logprobs is not None
        ready = [i for i, row in enumerate(self.rows) if not row.feed]
        tokens = [row.feed.pop(0) if row.feed else -1 for row in self.rows]
        events, stopped = [], set()
        if ready:
            rows = [self.rows[i] for i in ready]
            logprobs = self.logprobs if len(ready) == len(self.rows) else self.logprobs[ready]
            alternatives = self._alternatives(rows, logprobs)
            chosen = choose_tokens([r.chooser for r in rows], logprobs, [r.history for r in rows])
            picked = logprobs[torch.arange(len(chosen)), torch.tensor(chosen)].tolist()
            tok = self.lm.tokenizer
            for i, row, token, lp, alts in zip(ready, rows, chosen, picked, alternatives, strict=True):
                tokens[i] = token
                row.history.append(token)
                row.count += 1
                piece = "" if token == EOS_ID else tok.piece(token)
                out = row.out
                added = out.grow(tok.append_piece(out.text, piece))
                stop, reason = row.stopping.step(out.matcher, token, row.count, added)
                shown = out.reveal(reason)
                event = ShownTokenEvent(row.sample, token, piece, lp, reason, alternatives=alts, shown=shown)
                events.append((row, event))
                if stop:
                    stopped.add(i)
        keep = [i for i in range(len(self.rows)) if i not in stopped]
        self.keep(keep)
        self.next_ids = [tokens[i] for i in keep]
        return events

    @staticmethod
    def _alternatives(rows: list[Row], logprobs: Tensor) -> list[Alternatives]:
        """Each row's ``top_logprobs`` most likely tokens under the raw model (its ``logprobs`` row),
        one top-k for the rows that ask; none for the others."""
        asking = [r for r, row in enumerate(rows) if row.top_logprobs > 0]
        out: list[Alternatives] = [[] for _ in rows]
        if asking:
            k = max(rows[r].top_logprobs for r in asking)
            for r, alts in zip(asking, top_alternatives(logprobs[asking], k), strict=True):
                out[r] = alts[: rows[r].top_logprobs]
        return out

    def step(self) -> None:
        """One batched model step for every remaining row, with the tokens just chosen."""
        if not self.rows:
            return
        ids = torch.tensor(self.next_ids, dtype=torch.long)  # (B,)
        logprobs, self.state = self.lm.step(self.state, ids)  # (B, V)
        self.logprobs = logprobs.float().cpu()
