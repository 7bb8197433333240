"""The engine's vocabulary: its settings, its errors, its results and its observer hooks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

KINDS = ("score", "next_token", "generate", "embed", "decode")  # decode: a search run with run_job


@dataclass
class EngineConfig:
    """Batching, queueing and threading of one engine (one served model)."""

    max_wait_ms: float = 2.0  # under load, how long the first score/next-token request waits for company
    max_batch_sequences: int = 512  # score candidates + next-token prefixes in one batch
    max_batch_tokens: int = 32_768  # their tokens in one batch (a bigger single request runs alone)
    max_rows: int = 128  # generation rows (samples) in the running batch
    max_queue: int = 256  # requests waiting to start, all kinds together; past it: Overloaded
    timeout_s: float | None = None  # default per-request deadline (None: none)
    threads: int | None = None  # torch intra-op threads; None: every CPU this process may use
    max_logits: int = 1 << 22  # elements of one logits chunk (rows × vocabulary) when scoring
    prefix_sharing: bool = True  # compute each distinct prefix once (False: dense, for comparison)
    warmup: bool = True  # run one tiny batch at start, so the first request pays no set-up
    max_request_tokens: int | None = None  # tokens one score/next-token request may cost (TooCostly)
    max_tokens_in_flight: int | None = None  # their sum over requests queued or running (TokensInFlight)
    chunk_positions: int = 1024  # positions a one-shot pass computes between two checks (see core.py)
    prefix_cache_bytes: int = 0  # RNN states of recent prefixes kept for reuse (state_cache.py); 0: none
    batch_prefill_tokens: int = 8  # a prompt this short (with <bos>) is fed inside a running batch; 0: never

    def __post_init__(self) -> None:
        for name in (
            "max_batch_sequences",
            "max_batch_tokens",
            "max_rows",
            "max_queue",
            "max_logits",
            "chunk_positions",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("max_request_tokens", "max_tokens_in_flight"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None)")
        if (
            self.max_request_tokens is not None
            and self.max_tokens_in_flight is not None
            and self.max_request_tokens > self.max_tokens_in_flight
        ):
            raise ValueError(
                f"max_request_tokens ({self.max_request_tokens}) is more than max_tokens_in_flight "
                f"({self.max_tokens_in_flight}): such a request could never be admitted"
            )
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.prefix_cache_bytes < 0:
            raise ValueError("prefix_cache_bytes must be >= 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0 (or None)")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 (or None)")

    def torch_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


# -- errors -----------------------------------------------------------------------------------
class EngineError(RuntimeError):
    """Base class of the engine's own errors."""


class Overloaded(EngineError):
    """The queue is full: retry after ``retry_after_s`` seconds (HTTP 429/503 + Retry-After)."""

    def __init__(self, kind: str, queued: int, retry_after_s: float) -> None:
        super().__init__(
            f"engine overloaded: {queued} requests already waiting; retry {kind} after {retry_after_s:.0f} s"
        )
        self.kind = kind
        self.queued = queued
        self.retry_after_s = retry_after_s


class TokensInFlight(Overloaded):
    """The tokens of the requests queued or running, with this one's, would pass
    ``max_tokens_in_flight``: retry after ``retry_after_s`` seconds (HTTP 503 + Retry-After)."""

    def __init__(self, kind: str, tokens: int, in_flight: int, limit: int, retry_after_s: float) -> None:
        EngineError.__init__(
            self,
            f"engine busy: {in_flight} tokens are already in flight and this {kind} request needs {tokens} "
            f"more, past the limit of {limit}; retry after {retry_after_s:.0f} s",
        )
        self.kind = kind
        self.queued = 0
        self.retry_after_s = retry_after_s
        self.tokens = tokens
        self.in_flight = in_flight
        self.limit = limit


class TooCostly(EngineError):
    """One request costs more tokens than ``max_request_tokens`` (HTTP 413): it is refused before
    it is queued, whatever the load."""

    def __init__(self, kind: str, tokens: int, limit: int) -> None:
        super().__init__(
            f"this {kind} request needs {tokens} tokens of computation, more than the limit of {limit}"
        )
        self.kind = kind
        self.tokens = tokens
        self.limit = limit


class DeadlineExceeded(EngineError):
    """The request's deadline passed before its work was done (HTTP 504)."""


class EngineStopped(EngineError):
    """The engine is stopping or stopped and takes no more work (HTTP 503)."""


# -- results ----------------------------------------------------------------------------------
@dataclass
class ScoreResult:
    """Log-probs of one request's sequences, as ``lm.sequence_logprobs`` gives them."""

    token_logprobs: list[list[float]]  # per sequence: log P(s[i] | s[:i]) for i >= 1 (natural log)
    logprobs: list[float]  # per sequence: their sum
    positions_requested: int  # positions a per-sequence run feeds through the model
    positions_computed: int  # distinct prefixes among them: what this request costs on its own


# -- observability ----------------------------------------------------------------------------
class EngineObserver:
    """Hooks for metrics; the default does nothing. Subclass and pass it to :class:`Engine`.

    Every hook is called on the engine's worker thread: keep it fast and thread-safe
    (prometheus_client metrics are). ``kind`` is one of ``score``, ``next_token``, ``generate``.
    """

    def on_queue_wait(self, kind: str, seconds: float) -> None:
        """A request left the queue: for ``generate``, when its prefill starts."""

    def on_batch(self, kind: str, requests: int, rows: int) -> None:
        """A batch ran: ``requests`` of this kind in it, ``rows`` sequences (generate: one
        call per decoding step, rows = samples advanced)."""

    def on_positions(self, computed: int, requested: int) -> None:
        """A score/next-token batch fed ``computed`` positions for ``requested`` ones."""

    def on_generated(self, tokens: int) -> None:
        """Tokens generated by one decoding step."""

    def on_prefix_cache(
        self, hits: int, misses: int, evictions: int, bytes_delta: int, entries_delta: int
    ) -> None:
        """A score/next-token batch used the prefix-state cache: sequences and queries that started
        from a cached prefix (``hits``) or found none, entries evicted, and how its size changed."""

    def on_rejected(self, kind: str, reason: str) -> None:
        """A request was refused (``overloaded``, ``deadline``, ``stopped``) or cancelled."""


@dataclass
class KindStats:
    requests: int = 0
    batches: int = 0
    rows: int = 0  # summed over batches
    queue_wait_s: float = 0.0  # summed over requests
    rejected: int = 0

    def mean_batch_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


@dataclass
class EngineStats:
    """Totals since start, kept by the engine itself (benchmarks and tests read them)."""

    kinds: dict[str, KindStats] = field(default_factory=lambda: {k: KindStats() for k in KINDS})
    positions_computed: int = 0
    positions_requested: int = 0
    tokens_generated: int = 0
    cancelled: int = 0
    passes_stopped: int = 0  # one-shot passes dropped between chunks: nobody waited for them
    prefix_cache_hits: int = 0  # sequences and queries that started from a cached prefix state
    prefix_cache_misses: int = 0  # those that found none (with the cache on)
