"""The engine: one worker thread per served model, fed by the event loop through a bounded queue.

::

    event loop (any number of callers)            worker thread (all torch work, inference_mode)
    ─────────────────────────────────             ──────────────────────────────────────────────
    await score(seqs) ──┐                          loop:
    await next_token()──┤   (embed() and run_job() too:
                        │    their own pass in the batch)
                        ├─▶ one-shot queue ──────▶   1. one-shot batch: requests gathered for up to
                        │   (bounded: Overloaded)       max_wait_ms → ONE prefix-tree pass
    generate(request) ──┴─▶ waiting generations ──▶  2. admit waiting generations: ONE prefill pass,
            ▲                                           their rows join the running batch
            └── events via call_soon_threadsafe ◀──  3. decoding step: every row picks its token,
                                                        finished/cancelled rows leave, ONE lm.step

An idle engine starts a lone one-shot request at once (as soon as the event-loop turn that submitted
it ends). Under load (the last one-shot batch held several requests, or generations are decoding;
a new engine assumes load) the first one waits up to max_wait_ms for company;
while the worker is busy (a batch, a decoding step) newcomers pile up and go together into the next
batch. Each loop runs at most one one-shot batch and one decoding step, so neither kind starves the
other.

Passes run in chunks of ``chunk_positions`` positions. Between two chunks of a pass, work nobody
waits for any more (every request of it cancelled or past its deadline) stops, and others get in
(:meth:`Engine._serve_between_chunks`): the queued one-shot requests that cost at most a chunk,
the waiting generations whose prompts cost at most a chunk, and one decoding step of the running
batch, whatever the pass (a scoring or echo pass, or a prefill). So a 10,000-character prompt or a
large scoring request holds its model a chunk at a time (tens of ms), generations keep stepping
beside it, and a pass ends within a chunk of its client leaving.

What gets in is admission.py's (the queue bound, the per-request and in-flight token bounds);
a stream (stream.py) knows its engine only as a ``StreamOwner`` (``cancel_stream``, ``wake``).

The prefix-state cache is read and filled per scope (model/models/state_cache.py): a request carries the
scope of its caller's context (or ``cache_scope=``), and the service makes it the tenant's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch

from model.inference.engine.admission import Admission
from model.inference.engine.decode import DecodeBatch, Row
from model.inference.engine.stream import GenerationStream, StreamStalled
from model.inference.engine.types import (
    DeadlineExceeded,
    EngineConfig,
    EngineObserver,
    EngineStats,
    EngineStopped,
    ScoreResult,
)
from model.inference.generation import GenerationRequest, sample_choosers, seeded
from model.inference.sampling import StoppingCriteria
from model.inference.scoring import Distribution, top_distributions
from model.models.lm import LanguageModel, check_pooling
from model.models.positions import PositionsResult
from model.models.prefix import PassStopped, requested_positions
from model.models.state_cache import PrefixStateCache, cache_scope, current_scope
from model.text.tokenizer import BOS_ID, EOS_ID

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[LanguageModel, Callable[[], bool]], T]  # job(lm, should_stop) -> its answer (run_job)
TRIM_AFTER_TOKENS = 16_384  # a one-shot pass at least this costly hands its freed memory back after


def _libc_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator keeps its own ways
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def give_memory_back() -> None:
    """Return freed heap memory to the system (glibc keeps it for reuse otherwise, so the RSS
    would stay at a big pass's peak long after it)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class PassTiming:
    """Where one next-token request's time went in the engine, in seconds: the worker fills it in
    before answering (pass one to :meth:`Engine.next_token`; a Server-Timing header reports it)."""

    queue_s: float = 0.0  # queued until the worker took its batch
    model_s: float = 0.0  # its batch's pass through the network (log-softmax included)
    select_s: float = 0.0  # top-k and entropy of its batch's next-token rows


@dataclass(eq=False)
class _OneShot:
    """A queued score, next-token, embed request or job."""

    kind: str  # "score" | "next_token" | "embed" | a job's kind ("decode")
    seqs: list[list[int]]  # candidates (score), prefixes (next_token) or texts without <bos> (embed)
    top_k: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float | None
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    tokens: int = 0  # its cost: the tokens it computes (Σ sequence lengths), counted in flight
    released: bool = False  # its tokens no longer count in flight
    timing: PassTiming | None = None  # filled in before it is answered, when asked for
    sealed: bool = False  # its event-loop turn is over: requests submitted with it are queued too
    cache_scope: Hashable = field(default_factory=current_scope)  # the caller's (state_cache.py)
    every_position: bool = False  # an alternatives() request: every position of its sequences
    embed: tuple[str, bool] | None = None  # an embed() request: its pooling and normalize
    job: Job | None = None  # a run_job() request: what the worker calls

    def __post_init__(self) -> None:
        self.tokens = sum(len(s) for s in self.seqs)

    def gone(self, now: float) -> bool:
        """Nobody waits for its answer any more: cancelled (client gone) or past its deadline."""
        return self.cancelled or (self.deadline is not None and now > self.deadline)


def _resolve(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if not fut.done():
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def _push_streams(items: list[tuple[GenerationStream, list, BaseException | bool]]) -> None:
    for stream, events, end in items:
        stream.push(events, end)


def _scoped(scope: Hashable | None) -> contextlib.AbstractContextManager:
    """The prefix-cache scope given to a call, for the request it submits (None: the context's)."""
    return contextlib.nullcontext() if scope is None else cache_scope(scope)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the answer any more
        loop.call_soon_threadsafe(fn, *args)


class Engine:
    """Batched scoring, next-token and generation for one :class:`LanguageModel`."""

    def __init__(
        self, lm: LanguageModel, config: EngineConfig | None = None, observer: EngineObserver | None = None
    ) -> None:
        self.lm = lm
        self.config = config or EngineConfig()
        self.observer = observer or EngineObserver()
        self.stats = EngineStats()
        self._cv = threading.Condition()
        self._oneshot: deque[_OneShot] = deque()
        self._waiting: deque[GenerationStream] = deque()
        self._decode = DecodeBatch(lm)  # touched by the worker thread only
        self._rows_left: dict[GenerationStream, int] = {}  # worker only: live rows per stream
        self._closing = False
        self._abort = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.admission = Admission(self.config, self.stats, self.observer)  # its state under _cv
        # RNN states of recent prefixes (worker thread only, so no lock): one-shot passes start from them
        cache_bytes = self.config.prefix_cache_bytes
        self.prefix_cache = PrefixStateCache(cache_bytes) if cache_bytes else None
        self._cache_seen = (0, 0, 0, 0, 0)  # its hits, misses, evictions, bytes, entries last reported
        # requests in the last one-shot batch (worker only): >1 means load; a new engine assumes load
        # until a lone batch shows it idle
        self._last_batch_requests = 2

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker thread (and warm the model up); returns once it takes requests."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"rnnlm-engine-{self.lm.kind}", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Take no new work; let in-flight work finish for up to ``grace_s`` seconds, then end
        what is left with :class:`EngineStopped`, and join the worker thread."""
        if self._thread is None:
            return
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        await asyncio.to_thread(self._thread.join, grace_s)
        if self._thread.is_alive():
            with self._cv:
                self._abort = True
                self._cv.notify_all()
            await asyncio.to_thread(self._thread.join)

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def queue_depth(self) -> int:
        """Requests waiting to start (one-shot and generations)."""
        return len(self._oneshot) + len(self._waiting)

    @property
    def tokens_in_flight(self) -> int:
        """Tokens of the score/next-token requests queued or running (their admitted cost)."""
        return self.admission.tokens_in_flight

    @property
    def active_rows(self) -> int:
        """Samples in the running generation batch."""
        return len(self._decode)

    # -- requests ----------------------------------------------------------------------------
    async def score(
        self,
        seqs: Sequence[Sequence[int]],
        *,
        timeout_s: float | None = None,
        cache_scope: Hashable | None = None,
    ) -> ScoreResult:
        """Log-probs of each id sequence (as ``lm.sequence_logprobs``: every token after the
        first, usually ``[<bos>, ..., <eos>]``), batched with other requests. ``cache_scope``: the
        prefix-state cache scope it reads and fills (None: the calling context's, see
        :func:`model.models.state_cache.cache_scope`)."""
        seqs = self._checked(seqs, min_len=0)
        if not seqs:
            return ScoreResult([], [], 0, 0)
        with _scoped(cache_scope):
            return await self._submit("score", seqs, 0, timeout_s)

    async def next_token(
        self,
        prefixes: Sequence[Sequence[int]],
        *,
        top_k: int = 10,
        timeout_s: float | None = None,
        timing: PassTiming | None = None,
        cache_scope: Hashable | None = None,
    ) -> list[Distribution]:
        """The next-token distribution after each prefix (each starts with ``<bos>``); ``timing``,
        if given, is filled in with where the request's time went; ``cache_scope`` as :meth:`score`."""
        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        prefixes = self._checked(prefixes, min_len=1)
        if not prefixes:
            return []
        with _scoped(cache_scope):
            return await self._submit("next_token", prefixes, top_k, timeout_s, timing)

    async def alternatives(
        self, seqs: Sequence[Sequence[int]], *, top_k: int, timeout_s: float | None = None
    ) -> PositionsResult:
        """Each sequence's tokens after its first, with their log-probs and the ``top_k`` most
        likely tokens at each position (``lm.position_alternatives``: one pass over each sequence).
        Queued and costed as a next-token request of the same tokens, so its cost grows with the
        sequences' length, not its square as a next-token question per prefix would."""
        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        seqs = self._checked(seqs, min_len=0)
        if not seqs:
            return PositionsResult([], 0)
        return await self._submit("next_token", seqs, top_k, timeout_s, every_position=True)

    async def embed(
        self,
        seqs: Sequence[Sequence[int]],
        *,
        pooling: str = "last",
        normalize: bool = False,
        timeout_s: float | None = None,
    ) -> torch.Tensor:
        """Each text's vector (N, D) float32 on the CPU (``lm.embed``: ``seqs`` are the texts' ids
        without ``<bos>``), batched with the other embed requests of the same pooling. Queued,
        admitted and costed as the other one-shot requests (a text costs its tokens and ``<bos>``);
        a model kind without hidden states raises :class:`~model.models.lm.NoHiddenStates` at once,
        before anything is queued. Its pass runs whole (no chunks: RNNLM_MAX_REQUEST_TOKENS bounds it)."""
        check_pooling(pooling)
        dim = self.lm.embedding_dim  # NoHiddenStates here, on the caller's side
        seqs = self._checked(seqs, min_len=0)
        if not seqs:
            return torch.zeros(0, dim)
        return await self._submit("embed", seqs, 0, timeout_s, embed=(pooling, normalize))

    async def run_job(self, kind: str, job: Job[T], tokens: int, *, timeout_s: float | None = None) -> T:
        """``job(lm, should_stop)`` on the worker thread (a search with the model in the loop, such as
        a lattice decode), queued and admitted as a one-shot request that costs ``tokens`` (the
        caller's bound on the rows it steps: TooCostly, TokensInFlight as for :meth:`score`). The
        job should ask ``should_stop()`` now and then: it turns True when nobody waits for the
        answer any more (cancelled, past its deadline), and the job then raises
        :class:`~model.models.prefix.PassStopped`; each call also lets the model's other work in
        (small queued requests, a decoding step of the running generations), as between the
        chunks of a long pass. An exception of the job is raised here."""
        if kind not in self.stats.kinds:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(self.stats.kinds)}")
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        return await self._submit(kind, [], 0, timeout_s, job=(job, tokens))

    def generate(self, request: GenerationRequest, *, timeout_s: float | None = None) -> GenerationStream:
        """Queue a generation; iterate the returned stream for its events. Call it on the event
        loop. Raises :class:`Overloaded` / :class:`EngineStopped` at once, before any event."""
        if request.n < 1:
            raise ValueError("n must be >= 1")
        if request.n > self.config.max_rows:
            raise ValueError(f"n must be <= {self.config.max_rows} (the engine's max_rows)")
        request = seeded(request)
        prompt_ids = self.lm.tokenizer.encode(request.prompt).ids
        stream = GenerationStream(self, request, prompt_ids, self._deadline(timeout_s), self.lm.tokenizer)
        if request.max_new_tokens <= 0:  # nothing to generate, as generate_stream does
            stream.push([], True)
            return stream
        with self._cv:
            self._admit_locked("generate")
            self._waiting.append(stream)
            self.stats.kinds["generate"].requests += 1
            self._cv.notify()
        return stream

    # -- submission helpers (event loop) -----------------------------------------------------
    def _checked(self, seqs: Sequence[Sequence[int]], min_len: int) -> list[list[int]]:
        vocab = self.lm.vocab_size
        out = []
        for i, s in enumerate(seqs):
            s = [int(t) for t in s]
            if len(s) < min_len:
                raise ValueError(f"sequence {i} is empty; a prefix needs at least its start token")
            if s and (min(s) < 0 or max(s) >= vocab):
                raise ValueError(f"sequence {i} has a token id outside the vocabulary [0, {vocab})")
            out.append(s)
        return out

    def _deadline(self, timeout_s: float | None) -> float | None:
        timeout_s = timeout_s if timeout_s is not None else self.config.timeout_s
        return None if timeout_s is None else time.monotonic() + timeout_s

    def _admit_locked(self, kind: str) -> None:
        running = not self._closing and self._thread is not None and self._thread.is_alive()
        self.admission.admit_locked(kind, len(self._oneshot) + len(self._waiting), running)

    async def _submit(
        self,
        kind: str,
        seqs: list[list[int]],
        top_k: int,
        timeout_s: float | None,
        timing: PassTiming | None = None,
        every_position: bool = False,
        embed: tuple[str, bool] | None = None,
        job: tuple[Job, int] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        item = _OneShot(kind, seqs, top_k, loop, loop.create_future(), self._deadline(timeout_s))
        item.timing = timing
        item.every_position = every_position
        if embed is not None:
            item.embed = embed
            item.tokens += len(seqs)  # each text is read after its <bos>
        if job is not None:
            item.job, item.tokens = job  # its cost is what the caller says it is
        self.admission.refuse_too_costly(kind, item.tokens)
        with self._cv:
            self._admit_locked(kind)
            self.admission.reserve_locked(item)
            self._oneshot.append(item)
            self.stats.kinds[kind].requests += 1
            self._cv.notify()
        loop.call_soon(self._seal, item)  # after the requests submitted in this same turn (a gather)
        try:
            if item.deadline is None:
                return await item.future
            return await asyncio.wait_for(item.future, max(0.0, item.deadline - time.monotonic()))
        except TimeoutError:
            self._withdraw(item, "deadline")
            raise DeadlineExceeded(f"{kind} did not finish before its deadline") from None
        except asyncio.CancelledError:
            self._withdraw(item, "cancelled")
            raise

    def refuse_by_cost(self, kind: str, tokens: int) -> None:
        """Raise now what :meth:`score` / :meth:`next_token` would raise by cost for a request of
        ``tokens``, so a caller can ask before it tokenizes (a megabyte of text is tens of ms of
        Python): :class:`TooCostly` past ``max_request_tokens``, :class:`TokensInFlight` when the
        tokens do not fit in flight now (a look only: the submission reserves, and checks again)."""
        self.admission.refuse_too_costly(kind, tokens)
        with self._cv:
            self.admission.refuse_in_flight_locked(kind, tokens)

    def _release(self, items: Sequence[_OneShot]) -> None:
        with self._cv:
            for item in items:
                self.admission.release_locked(item)

    def _withdraw(self, item: _OneShot, reason: str) -> None:
        with self._cv:
            item.cancelled = True
            if item in self._oneshot:
                self._oneshot.remove(item)
                self.admission.release_locked(item)  # never started: its cost leaves with it
            if reason == "cancelled":
                self.stats.cancelled += 1
            else:
                self.stats.kinds[item.kind].rejected += 1
        self.observer.on_rejected(item.kind, reason)

    def _seal(self, item: _OneShot) -> None:
        """``item``'s event-loop turn is over: an idle engine may start it now (see
        ``_oneshot_ready_locked``); its turn's other requests are queued behind it."""
        with self._cv:
            item.sealed = True
            self._cv.notify()

    # -- what a GenerationStream asks of its engine (stream.StreamOwner) ------------------------
    def wake(self) -> None:
        """Have the worker look again (a paused stream's reader has caught up)."""
        with self._cv:
            self._cv.notify()

    def cancel_stream(self, stream: GenerationStream) -> None:
        """Drop a generation its caller has left: still waiting, it leaves the queue; running,
        the worker drops its rows before the next step."""
        with self._cv:
            if stream in self._waiting:
                self._waiting.remove(stream)
            self.stats.cancelled += 1
            self._cv.notify()

    # -- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_num_threads(self.config.torch_threads())
        try:
            with torch.inference_mode():
                if self.config.warmup:
                    self.lm.score_tree([[BOS_ID, EOS_ID]], [[BOS_ID]], with_state=True)
                self._ready.set()
                while self._iteration():
                    pass
        except BaseException:
            log.exception("engine worker failed")
            raise
        finally:
            self._ready.set()
            self._fail_everything(EngineStopped("the engine stopped before this request finished"))

    def _iteration(self) -> bool:
        work = self._take_work()
        if work is None:
            return False
        batch, admits, expired = work
        self._release([item for item in expired if isinstance(item, _OneShot)])
        for item in expired:
            self._fail(item, DeadlineExceeded("deadline passed while queued"))
        if batch:
            self._run_oneshot(batch)
        if admits:
            self._prefill(admits)
        if self._decode.rows or self._decode.parked:
            self._decode_step()
        return True

    def _take_work(self) -> tuple[list[_OneShot], list[GenerationStream], list] | None:
        """Block until there is something to do; pop it. None: time to exit."""
        wait_s = self.config.max_wait_ms / 1000
        with self._cv:
            while True:
                if self._abort:
                    return None
                now = time.monotonic()
                ready = self._oneshot_ready_locked(now, wait_s)
                free = self.config.max_rows - len(self._decode)
                can_admit = bool(self._waiting) and self._waiting[0].request.n <= free
                wake = self._parked_wake(now)  # paused streams: due now (True) or when (a time)
                if ready or can_admit or self._decode.rows or wake is True:
                    break
                if self._closing and not self._oneshot and not self._waiting:
                    return None
                timeout = self._oneshot[0].submitted + wait_s - now if self._oneshot else None
                if isinstance(wake, float):
                    timeout = wake - now if timeout is None else min(timeout, wake - now)
                self._cv.wait(timeout)
            expired: list = []
            batch = self._pop_batch_locked(now, expired) if ready else []
            if batch:
                self._last_batch_requests = len(batch)  # the load the next lone request reads
            admits = self._pop_admits_locked(now, free, expired)
            return batch, admits, expired

    def _oneshot_ready_locked(self, now: float, wait_s: float) -> bool:
        """Whether the queued score/next-token requests start now. They wait up to ``wait_s`` for
        company only under load (the last one-shot batch held several requests, or generation rows
        are decoding); an idle engine starts a lone request as soon as the event-loop turn that
        submitted it is over (so a ``gather`` of requests still goes as one batch): nobody else is
        coming, and waiting would only add ``max_wait_ms`` to its latency."""
        if not self._oneshot:
            return False
        if self._closing or now - self._oneshot[0].submitted >= wait_s:
            return True
        if self._last_batch_requests <= 1 and not self._decode.rows and self._oneshot[0].sealed:
            return True
        c = self.config
        return (
            sum(len(i.seqs) for i in self._oneshot) >= c.max_batch_sequences
            or sum(i.tokens for i in self._oneshot) >= c.max_batch_tokens
        )

    def _pop_batch_locked(self, now: float, expired: list) -> list[_OneShot]:
        c = self.config
        batch: list[_OneShot] = []
        n_seqs = n_tokens = 0
        while self._oneshot:
            item = self._oneshot[0]
            if item.deadline is not None and now > item.deadline:
                expired.append(self._oneshot.popleft())
                continue
            if batch and (
                n_seqs + len(item.seqs) > c.max_batch_sequences or n_tokens + item.tokens > c.max_batch_tokens
            ):
                break
            batch.append(self._oneshot.popleft())
            n_seqs += len(item.seqs)
            n_tokens += item.tokens
        return batch

    def _pop_admits_locked(
        self, now: float, free: int, expired: list, max_prompt: int | None = None
    ) -> list[GenerationStream]:
        """The waiting generations that start now, in order, within ``free`` rows (and, with
        ``max_prompt``, only while the head's prompt, ``<bos>`` included, is at most that long)."""
        admits = []
        while self._waiting:
            stream = self._waiting[0]
            if stream.deadline is not None and now > stream.deadline:
                expired.append(self._waiting.popleft())
                continue
            if stream.request.n > free or (
                max_prompt is not None and len(stream.prompt_ids) + 1 > max_prompt
            ):
                break  # first come, first served: nobody overtakes the head of the line
            admits.append(self._waiting.popleft())
            free -= stream.request.n
        return admits

    def _fail(self, item: _OneShot | GenerationStream, exc: BaseException) -> None:
        if isinstance(item, GenerationStream):
            self._rows_left.pop(item, None)
            _call_soon(item.loop, item.push, [], exc)
        else:
            _call_soon(item.loop, _resolve, item.future, None, exc)

    def _fail_everything(self, exc: BaseException) -> None:
        with self._cv:
            pending: list = [*self._oneshot, *self._waiting]
            self._oneshot.clear()
            self._waiting.clear()
            self._closing = True
            for item in pending:
                if isinstance(item, _OneShot):
                    self.admission.release_locked(item)
        pending += self._decode.owners()
        self._decode.keep([])
        self._decode.parked.clear()
        for item in pending:
            self._fail(item, exc)

    # one-shot batches ---------------------------------------------------------------------
    def _run_oneshot(self, batch: list[_OneShot], nested: bool = False) -> None:
        """One prefix-tree pass for the batch, in chunks of ``config.chunk_positions`` positions.
        Between two chunks, a batch whose every request is gone (cancelled, or past its deadline) is
        dropped with its tensors; otherwise the queued requests that cost at most one chunk run
        first, as a batch of their own (``nested``: such a batch, which lets nobody in). Its
        requests' tokens count in flight until the pass ends."""
        try:
            positions = [item for item in batch if item.every_position]
            if positions:
                self._run_positions(positions, nested)
            embeds = [item for item in batch if item.embed is not None]
            if embeds:
                self._run_embeds(embeds)
            jobs = [item for item in batch if item.job is not None]
            if jobs:
                self._run_jobs(jobs, nested)
            rest = [
                item for item in batch if not item.every_position and item.embed is None and item.job is None
            ]
            if rest:
                self._run_oneshot_pass(rest, nested)
        finally:
            self._release(batch)
            if not nested and sum(item.tokens for item in batch) >= TRIM_AFTER_TOKENS:
                give_memory_back()

    def _serve_small_between_chunks(self) -> None:
        """Run, as one batch, the queued requests that cost at most one chunk each: a big pass
        holds up small requests by a chunk, not by the whole pass."""
        c = self.config
        small: list[_OneShot] = []
        expired: list[_OneShot] = []
        with self._cv:
            now = time.monotonic()
            n_seqs = n_tokens = 0
            for item in list(self._oneshot):
                if item.deadline is not None and now > item.deadline:
                    self._oneshot.remove(item)
                    self.admission.release_locked(item)
                    expired.append(item)
                elif (
                    item.tokens <= c.chunk_positions
                    and n_tokens + item.tokens <= c.max_batch_tokens
                    and n_seqs + len(item.seqs) <= c.max_batch_sequences
                ):
                    self._oneshot.remove(item)
                    small.append(item)
                    n_seqs += len(item.seqs)
                    n_tokens += item.tokens
        for item in expired:
            self._fail(item, DeadlineExceeded("deadline passed while queued"))
        if small:
            self._run_oneshot(small, nested=True)

    def _run_oneshot_pass(self, batch: list[_OneShot], nested: bool) -> None:
        start = time.monotonic()
        for item in batch:
            self.stats.kinds[item.kind].queue_wait_s += start - item.submitted
            self.observer.on_queue_wait(item.kind, start - item.submitted)
        scored = [item for item in batch if item.kind == "score"]
        asked = [item for item in batch if item.kind == "next_token"]
        seqs = [s for item in scored for s in item.seqs]
        prefixes = [p for item in asked for p in item.seqs]

        def nobody_waits() -> bool:
            now = time.monotonic()
            return all(item.gone(now) for item in batch)

        def between_chunks() -> bool:
            if self._abort or nobody_waits():  # stop() past its grace period, or nobody to answer
                return True
            if not nested:
                self._serve_between_chunks(0)
            return False

        try:
            if nobody_waits():
                raise PassStopped("every request of the batch was gone before it started")
            res = self.lm.score_tree(
                seqs,
                prefixes,
                share=self.config.prefix_sharing,
                max_logits=self.config.max_logits,
                should_stop=between_chunks,
                chunk_positions=self.config.chunk_positions,
                cache=self.prefix_cache,
                scopes=[item.cache_scope for item in (*scored, *asked) for _ in item.seqs],
            )
            results = self._split_scores(scored, res) + self._split_next(asked, res.next_logprobs, start)
        except PassStopped:  # nobody waits for any of it: its work and memory are dropped here
            self.stats.passes_stopped += 1
            self._release(batch)  # given back before anyone hears of it
            for item in batch:
                if self._abort:
                    self._fail(item, EngineStopped("the engine stopped before this request finished"))
                else:
                    self._fail(item, DeadlineExceeded(f"{item.kind} did not finish before its deadline"))
            return
        except Exception as e:  # a failed batch fails its requests, never the engine
            log.exception("batch failed")
            self._release(batch)
            for item in batch:
                self._fail(item, e)
            return
        for kind, items, rows in (("score", scored, seqs), ("next_token", asked, prefixes)):
            if items:
                self.stats.kinds[kind].batches += 1
                self.stats.kinds[kind].rows += len(rows)
                self.observer.on_batch(kind, len(items), len(rows))
        self.stats.positions_computed += res.computed
        self.stats.positions_requested += res.requested
        self.observer.on_positions(res.computed, res.requested)
        self._report_prefix_cache()
        self._release(batch)
        for item, result in zip(scored + asked, results, strict=True):  # counted first, then answered
            _call_soon(item.loop, _resolve, item.future, result, None)
        took = time.monotonic() - start
        self.admission.observe_request(took / len(batch))
        self.admission.observe_tokens(took, sum(item.tokens for item in batch))

    def _run_positions(self, items: list[_OneShot], nested: bool) -> None:
        """:meth:`alternatives` requests, one pass each, in chunks as a scoring pass (see
        :meth:`_run_one_by_one`)."""

        def run(item: _OneShot, should_stop: Callable[[], bool]) -> Any:
            return self.lm.position_alternatives(
                item.seqs,
                item.top_k,
                max_logits=self.config.max_logits,
                should_stop=should_stop,
                chunk_positions=self.config.chunk_positions,
            )

        def count(item: _OneShot, res: Any) -> None:
            requested = requested_positions(item.seqs)
            self.stats.kinds[item.kind].rows += len(item.seqs)
            self.stats.positions_computed += res.computed
            self.stats.positions_requested += requested
            self.observer.on_batch(item.kind, 1, len(item.seqs))
            self.observer.on_positions(res.computed, requested)

        self._run_one_by_one(items, nested, "alternatives", run, count)

    def _run_jobs(self, items: list[_OneShot], nested: bool) -> None:
        """:meth:`run_job` requests, one after the other (see :meth:`_run_one_by_one`)."""

        def run(item: _OneShot, should_stop: Callable[[], bool]) -> Any:
            assert item.job is not None
            return item.job(self.lm, should_stop)

        def count(item: _OneShot, result: Any) -> None:
            self.stats.kinds[item.kind].rows += 1
            self.observer.on_batch(item.kind, 1, 1)

        self._run_one_by_one(items, nested, None, run, count)

    def _run_one_by_one(
        self,
        items: list[_OneShot],
        nested: bool,
        what: str | None,
        run: Callable[[_OneShot, Callable[[], bool]], Any],
        count: Callable[[_OneShot, Any], None],
    ) -> None:
        """Requests that each run alone (``run(item, should_stop)``): between the steps or chunks of
        each, the small queued requests and a decoding step run (unless ``nested``), and a request
        nobody waits for any more stops there. Each request's tokens count in flight until it is
        answered; ``count`` records what it computed. ``what`` names it in errors (default: its kind)."""
        for item in items:
            start = time.monotonic()
            name = what or item.kind
            self.stats.kinds[item.kind].queue_wait_s += start - item.submitted
            self.observer.on_queue_wait(item.kind, start - item.submitted)

            def should_stop(item: _OneShot = item) -> bool:
                if self._abort or item.gone(time.monotonic()):
                    return True
                if not nested:
                    self._serve_between_chunks(0)
                return False

            try:
                if item.gone(start):
                    raise PassStopped(f"the request was gone before its {name} started")
                result = run(item, should_stop)
            except PassStopped:  # nobody waits for it: its work and memory are dropped here
                self.stats.passes_stopped += 1
                self._release([item])
                stopped = EngineStopped("the engine stopped before this request finished")
                self._fail(item, stopped if self._abort else DeadlineExceeded(f"{name} did not finish"))
                continue
            except Exception as e:  # a failure fails its request, never the engine
                if not isinstance(e, ValueError):  # a ValueError says what is wrong with its input
                    log.exception("%s failed", name)
                self._release([item])
                self._fail(item, e)
                continue
            self.stats.kinds[item.kind].batches += 1
            count(item, result)
            self._release([item])  # counted first, then answered
            _call_soon(item.loop, _resolve, item.future, result, None)
            self.admission.observe_tokens(time.monotonic() - start, item.tokens)

    def _run_embeds(self, items: list[_OneShot]) -> None:
        """:meth:`embed` requests: one ``lm.embed`` call for those of each (pooling, normalize),
        skipping any nobody waits for. Each request's tokens count in flight until it is answered."""
        start = time.monotonic()
        groups: dict[tuple[str, bool], list[_OneShot]] = {}
        for item in items:
            self.stats.kinds[item.kind].queue_wait_s += start - item.submitted
            self.observer.on_queue_wait(item.kind, start - item.submitted)
            if item.gone(start):
                self._release([item])
                self._fail(item, DeadlineExceeded("embed did not finish before its deadline"))
                continue
            assert item.embed is not None
            groups.setdefault(item.embed, []).append(item)
        for (pooling, normalize), group in groups.items():
            began = time.monotonic()
            try:
                vectors = self.lm.embed([s for item in group for s in item.seqs], pooling, normalize)
            except Exception as e:  # a failed pass fails its requests, never the engine
                log.exception("embed pass failed")
                self._release(group)
                for item in group:
                    self._fail(item, e)
                continue
            rows = sum(len(item.seqs) for item in group)
            self.stats.kinds["embed"].batches += 1
            self.stats.kinds["embed"].rows += rows
            self.observer.on_batch("embed", len(group), rows)
            self._release(group)  # counted first, then answered
            offset = 0
            for item in group:
                result = vectors[offset : offset + len(item.seqs)]
                offset += len(item.seqs)
                _call_soon(item.loop, _resolve, item.future, result, None)
            self.admission.observe_tokens(time.monotonic() - began, sum(item.tokens for item in group))

    def _report_prefix_cache(self) -> None:
        """Hand the cache's changes since the last report to the stats and the observer."""
        cache = self.prefix_cache
        if cache is None:
            return
        seen = self._cache_seen
        now = (cache.stats.hits, cache.stats.misses, cache.stats.evictions, cache.nbytes, len(cache))
        delta = [b - a for a, b in zip(seen, now, strict=True)]
        self._cache_seen = now
        self.stats.prefix_cache_hits += delta[0]
        self.stats.prefix_cache_misses += delta[1]
        if any(delta):
            self.observer.on_prefix_cache(*delta)

    def _split_scores(self, items: list[_OneShot], res: Any) -> list[ScoreResult]:
        out, offset = [], 0
        for item in items:
            n = len(item.seqs)
            token_lps = [lp.tolist() for lp in res.logprobs[offset : offset + n]]
            requested = requested_positions(item.seqs)
            computed = (
                res.tree.distinct_prefixes(range(offset, offset + n)) if res.tree is not None else requested
            )
            out.append(ScoreResult(token_lps, [math.fsum(t) for t in token_lps], requested, computed))
            offset += n
        return out

    def _split_next(
        self, items: list[_OneShot], logprobs: torch.Tensor | None, started: float
    ) -> list[list[Distribution]]:
        """Each request's distributions (``started``: when the pass began, for the timings)."""
        if not items:
            return []
        assert logprobs is not None  # the queries were asked for
        t0 = time.monotonic()
        dists = top_distributions(logprobs, [item.top_k for item in items for _ in item.seqs])
        t1 = time.monotonic()
        for item in items:
            if item.timing is not None:  # before it is answered: its caller reads it then
                item.timing.queue_s, item.timing.model_s, item.timing.select_s = (
                    started - item.submitted,
                    t0 - started,
                    t1 - t0,
                )
        out, q = [], 0
        for item in items:
            out.append(dists[q : q + len(item.seqs)])
            q += len(item.seqs)
        return out

    # generation -------------------------------------------------------------------------
    def _prefill(self, admits: list[GenerationStream], nested: bool = False) -> None:
        """Start these generations: their prompts' pass (short prompts may instead be fed inside
        the running batch), then their rows join the batch. The pass runs in chunks of
        ``config.chunk_positions`` positions; between two, the model's other work goes on
        (:meth:`_serve_between_chunks`; ``nested``: a pass run there, which lets nobody in), and a
        pass none of whose streams is still wanted (cancelled, past its deadline) stops."""
        start = time.monotonic()
        for stream in admits:
            self.stats.kinds["generate"].queue_wait_s += start - stream.submitted
            self.observer.on_queue_wait("generate", start - stream.submitted)
        # short prompts join a running batch and are fed there, a token per step (decode.py says
        # why); the others, and any prompt when nothing runs, get a prefill pass of their own
        limit = self.config.batch_prefill_tokens if self._decode.rows else 0
        fed = [s for s in admits if len(s.prompt_ids) + 1 <= limit]
        if fed:
            fresh = [row for stream in fed for row in self._rows_for(stream)]
            for row in fresh:
                row.feed = [BOS_ID, *row.owner.prompt_ids]
            self._decode.join_fresh(fresh)
        admits = [s for s in admits if s not in fed]
        if not admits:
            return
        queries = [[BOS_ID, *s.prompt_ids] for s in admits]

        def nobody_waits() -> bool:
            now = time.monotonic()
            return all(s.cancelled or (s.deadline is not None and now > s.deadline) for s in admits)

        def between_chunks() -> bool:
            if self._abort or nobody_waits():  # stop() past its grace period, or nobody to answer
                return True
            if not nested:
                self._serve_between_chunks(sum(s.request.n for s in admits))
            return False

        try:
            res = self.lm.score_tree(
                [],
                queries,
                with_state=True,
                max_logits=self.config.max_logits,
                should_stop=between_chunks,
                chunk_positions=self.config.chunk_positions,
            )
        except PassStopped:  # nobody waits for any of it: its work and memory are dropped here
            self.stats.passes_stopped += 1
            for stream in admits:
                self._fail(
                    stream,
                    EngineStopped("the engine stopped")
                    if self._abort
                    else DeadlineExceeded("generation did not finish before its deadline"),
                )
            return
        except Exception as e:
            log.exception("prefill failed")
            for stream in admits:
                self._fail(stream, e)
            return
        rows, index = [], []
        for q, stream in enumerate(admits):
            own = self._rows_for(stream)
            rows += own
            index += [q] * len(own)
        assert res.next_logprobs is not None
        self._decode.add(rows, res.next_logprobs[index], self.lm.select_state(res.states, index))

    def _serve_between_chunks(self, reserved_rows: int) -> None:
        """Between two chunks of a long pass (a prefill, a scoring or an echo pass): the queued
        requests that cost at most a chunk, the waiting generations whose prompts do (their own
        prefill, at most a chunk; the rows of a prefill under way, ``reserved_rows``, are counted
        as taken), and one decoding step of the running batch. Another client's short request,
        or its generation's next token, thus waits a chunk, not a pass."""
        self._serve_small_between_chunks()
        expired: list = []
        with self._cv:
            free = self.config.max_rows - len(self._decode) - reserved_rows
            short = self._pop_admits_locked(time.monotonic(), free, expired, self.config.chunk_positions)
        for stream in expired:
            self._fail(stream, DeadlineExceeded("deadline passed while queued"))
        if short:
            self._prefill(short, nested=True)
        if self._decode.rows or self._decode.parked:
            self._decode_step()

    def _rows_for(self, stream: GenerationStream) -> list[Row]:
        """The stream's ``n`` sample rows (each with its own seeded chooser), counted as live."""
        req = stream.request
        choosers = sample_choosers(replace(req, sampling=replace(req.sampling, seed=stream.seed)))
        stopping = StoppingCriteria(req.max_new_tokens, req.stop)
        self._rows_left[stream] = req.n
        return [
            Row(stream, i, chooser, stopping, list(stream.prompt_ids), top_logprobs=req.top_logprobs)
            for i, chooser in enumerate(choosers)
        ]

    def _parked_wake(self, now: float) -> bool | float | None:
        """True when a paused stream needs the worker now, else the earliest time one will."""
        wake: float | None = None
        for stream in self._decode.parked:
            at = stream.wake_at()
            if stream.cancelled or stream.caught_up() or (at is not None and at <= now):
                return True
            if at is not None:
                wake = at if wake is None else min(wake, at)
        return wake

    def _pace(self, now: float) -> None:
        """Backpressure: streams whose reader has fallen behind leave the batch (their rows keep
        their state); they rejoin once it catches up, or end once paused past ``stall_s``.
        Cancelled and expired ones rejoin, to leave with the others just below."""
        for stream in list(self._decode.parked):
            expired = stream.deadline is not None and now > stream.deadline
            if stream.stalled(now) and not (stream.cancelled or expired):
                self._decode.drop(stream)
                stream.stalled_out = True
                self.stats.kinds["generate"].rejected += 1
                self.observer.on_rejected("generate", "stalled")
                log.warning("stream ended: its reader took nothing for %.0f s (stall limit)", stream.stall_s)
                self._fail(stream, StreamStalled(f"the reader took nothing for {stream.stall_s:g} s"))
            elif stream.cancelled or expired or stream.caught_up():
                stream.paused_since = None
                self._decode.unpark(stream)
        behind = {row.owner for row in self._decode.rows if not row.owner.cancelled and row.owner.behind()}
        for stream in behind:
            stream.paused_since = now
        self._decode.park(behind)

    def _decode_step(self) -> None:
        now = time.monotonic()
        self._pace(now)
        keep: list[int] = []
        expired: dict[Any, Any] = {}
        for r, row in enumerate(self._decode.rows):
            stream = row.owner
            if stream.cancelled:
                self._rows_left.pop(stream, None)
            elif stream.deadline is not None and now > stream.deadline:
                expired[stream] = None
            else:
                keep.append(r)
        self._decode.keep(keep)  # cancelled and expired rows leave before anything is computed
        for stream in expired:
            self._fail(stream, DeadlineExceeded("generation did not finish before its deadline"))
        if not self._decode.rows:
            return
        n_rows = len(self._decode.rows)
        try:
            events = self._decode.choose()
        except Exception as e:
            log.exception("choosing tokens failed")
            self._fail_rows(e)
            return
        per_stream: dict[GenerationStream, list] = {}
        for row, ev in events:
            per_stream.setdefault(row.owner, []).append(ev)
            if ev.finish_reason is not None:
                self._rows_left[row.owner] -= 1
        self.stats.kinds["generate"].batches += 1
        self.stats.kinds["generate"].rows += n_rows
        self.stats.tokens_generated += len(events)
        self.observer.on_batch("generate", len(per_stream), n_rows)
        self.observer.on_generated(len(events))
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for stream, evs in per_stream.items():
            done = self._rows_left.get(stream) == 0
            if done:
                del self._rows_left[stream]
            stream.handed(len(evs))
            by_loop.setdefault(stream.loop, []).append((stream, evs, done))
        for loop, items in by_loop.items():  # hand the tokens over first, then compute the next
            _call_soon(loop, _push_streams, items)
        try:
            self._decode.step()
        except Exception as e:
            log.exception("decoding step failed")
            self._fail_rows(e)

    def _fail_rows(self, exc: BaseException) -> None:
        streams = list(dict.fromkeys(row.owner for row in self._decode.rows))
        self._decode.keep([])
        for stream in streams:
            self._fail(stream, exc)
