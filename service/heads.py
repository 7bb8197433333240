"""The task heads served beside the language models (RNNLM_HEAD_DIRS), each on its own worker thread.

::

    POST /tag      ─▶ ModelRegistry.head(name, "tagger")       404 `model`: none served, or no such name
    POST /classify ─▶ ModelRegistry.head(name, "classifier")   422 `model`: a language model or another kind
                   │
                   ▼
               HeadRunner.tag / .classify(texts)   on the event loop, before any work:
                   │    characters of the request  > RNNLM_MAX_REQUEST_TOKENS    413 `texts`
                   │    characters queued+running  > RNNLM_MAX_TOKENS_IN_FLIGHT  503 + Retry-After
                   │    requests waiting           ≥ RNNLM_ENGINE_QUEUE          503 + Retry-After
                   ▼
               the head's one worker thread (a ThreadPoolExecutor of one): the texts in chunks of
               about CHUNK_CHARS characters; between two chunks it stops once nobody waits for the
               answer (RNNLM_REQUEST_TIMEOUT_S passed: 504; the client gone; the service stopping)

A head is a checkpoint directory like a language model's (model/models/checkpoint.py: config.json
with its ``model_type``, verified weights, tokenizer.json, metrics.json), opened by its kind's
opener in :data:`OPENERS`; a broken one stops the start with a line naming it (service/startup.py),
as a broken language model does. Its name is its directory's base name, distinct from every served
model's. A head's encoder is a small RNN that reads whole texts, so it needs no engine of its own:
its requests queue for its thread, one at a time, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from model.heads.classifier import MODEL_TYPE as CLASSIFIER
from model.heads.classifier import Classifier, class_probabilities, load_classifier
from model.heads.tagger import MODEL_TYPE as TAGGER
from model.heads.tagger import Tagger, load_tagger, tag_spaced_texts
from model.models.checkpoint import CheckpointError, read_config
from model.text.tagged import TaggedWord, split_label
from model.text.tokenizer import Tokenizer

from .errors import ApiError, overloaded, too_large

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("rnnlm.service")
T = TypeVar("T")
CHUNK_CHARS = 4096  # characters the worker tags between two checks for work nobody waits for
RETRY_AFTER_S = 1.0
STOPPING_RETRY_S = 5
# what to serve for a kind of head, said when a request asks for one and none is served
HOW_TO_SERVE = {
    TAGGER: "a checkpoint written by `rnnlm train-tagger`",
    CLASSIFIER: "a checkpoint written by `rnnlm train-classifier`",
}


@dataclass(frozen=True)
class Classified:
    """One text's answer from a classifier: each label's probability, in the classifier's label order."""

    probabilities: dict[str, float]

    @property
    def label(self) -> str:  # the most probable (the first of equals, as classify_texts's argmax)
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def probability(self) -> float:
        return self.probabilities[self.label]


class Stopped(Exception):
    """The worker gave up a job nobody waits for any more."""


@dataclass(frozen=True)
class HeadLimits:
    """What one head admits (from the settings the engines use: service/settings.py)."""

    max_request_chars: int  # RNNLM_MAX_REQUEST_TOKENS: a character is a tagger's token
    max_chars_in_flight: int  # RNNLM_MAX_TOKENS_IN_FLIGHT
    max_queue: int  # RNNLM_ENGINE_QUEUE
    timeout_s: float | None  # RNNLM_REQUEST_TIMEOUT_S (None: no deadline)


def head_limits(settings: Settings) -> HeadLimits:
    return HeadLimits(
        max_request_chars=settings.max_request_tokens,
        max_chars_in_flight=settings.max_tokens_in_flight,
        max_queue=settings.engine_queue,
        timeout_s=settings.request_timeout_s or None,
    )


class HeadRunner:
    """One task head, its worker thread, and what it admits. Counters change on the event loop only."""

    def __init__(self, name: str, kind: str, net: Any, tokenizer: Tokenizer, metrics: dict) -> None:
        self.name, self.kind, self.net, self.tokenizer, self.metrics = name, kind, net, tokenizer, metrics
        self.limits: HeadLimits | None = None
        self.chars_in_flight = 0
        self.jobs = 0  # admitted and not finished: waiting for the thread or running on it
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.net.labels)

    @property
    def classes(self) -> list[str]:
        """What the head assigns: a tagger's part-of-speech tags (its labels are B/M/E/S × these)."""
        if self.kind == TAGGER:
            return sorted({split_label(label)[1] for label in self.labels})
        return list(self.labels)

    async def start(self, limits: HeadLimits) -> None:
        self.limits = limits
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"rnnlm-head-{self.name}"
        )

    async def stop(self, grace_s: float = 10.0) -> None:
        """Take no new work; a job still waiting is dropped, the running one ends within a chunk."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def tag(self, texts: Sequence[str], field: str = "texts") -> list[list[TaggedWord]]:
        """Each text's words with their tags and character spans (whitespace separates words and
        belongs to none: :func:`~model.heads.tagger.tag_spaced_texts`), on the head's thread."""
        tagger: Tagger = self.net
        texts = list(texts)

        def work(should_stop: Callable[[], bool]) -> list[list[TaggedWord]]:
            out: list[list[TaggedWord]] = []
            for chunk in chunks(texts, CHUNK_CHARS):
                if should_stop():
                    raise Stopped
                out.extend(tag_spaced_texts(tagger, self.tokenizer, chunk))
            return out

        return await self.run(work, sum(len(t) for t in texts), field)

    async def classify(self, texts: Sequence[str], field: str = "texts") -> list[Classified]:
        """Each text's labels with their probabilities, most probable first
        (:func:`~model.heads.classifier.class_probabilities`), on the head's thread."""
        classifier: Classifier = self.net
        texts = list(texts)

        def work(should_stop: Callable[[], bool]) -> list[Classified]:
            out: list[Classified] = []
            for chunk in chunks(texts, CHUNK_CHARS):
                if should_stop():
                    raise Stopped
                for row in class_probabilities(classifier, self.tokenizer, chunk).tolist():
                    out.append(Classified(dict(zip(classifier.labels, row, strict=True))))
            return out

        return await self.run(work, sum(len(t) for t in texts), field)

    async def run(self, work: Callable[[Callable[[], bool]], T], chars: int, field: str) -> T:
        """``work(should_stop)`` on the head's thread, admitted at ``chars`` (the limits above)."""
        if self._executor is None or self.limits is None:
            raise ApiError(
                503,
                "shutting_down",
                f"head {self.name!r} is stopping and takes no new work",
                headers={"Retry-After": str(STOPPING_RETRY_S)},
            )
        limits = self.limits
        if chars > limits.max_request_chars:
            raise too_large(
                field,
                f"this request has {chars} characters, more than the limit of {limits.max_request_chars} "
                "per request (RNNLM_MAX_REQUEST_TOKENS); send fewer or shorter texts, or split the request",
            )
        if self.chars_in_flight + chars > limits.max_chars_in_flight:
            raise overloaded(
                f"head {self.name!r} is busy: {self.chars_in_flight} characters are already queued or "
                f"running and this request has {chars} more, past the limit of {limits.max_chars_in_flight} "
                "(RNNLM_MAX_TOKENS_IN_FLIGHT); retry later",
                RETRY_AFTER_S,
            )
        if self.jobs >= limits.max_queue:
            raise overloaded(
                f"head {self.name!r} busy: {self.jobs} requests are already waiting (RNNLM_ENGINE_QUEUE); "
                "retry later",
                RETRY_AFTER_S,
            )
        stop = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._executor, work, stop.is_set)
        self.chars_in_flight += chars
        self.jobs += 1
        try:
            return await asyncio.wait_for(future, limits.timeout_s)
        except TimeoutError:
            raise ApiError(
                504, "timeout", "the request did not finish before its deadline (RNNLM_REQUEST_TIMEOUT_S)"
            ) from None
        finally:
            stop.set()  # answered, timed out or cancelled (a client gone): the work ends at its next check
            self.chars_in_flight -= chars
            self.jobs -= 1

    def describe(self) -> dict:
        parameters = sum(p.numel() for p in self.net.parameters())
        device = next(self.net.parameters()).device
        config = self.net.config.to_dict()
        architecture = {k: v for k, v in config.items() if k not in ("labels", "vocab_size", "pad_id")}
        return {"parameters": parameters, "device": str(device), "architecture": architecture}


def chunks(texts: list[str], max_chars: int) -> list[list[str]]:
    """Consecutive texts in groups of at most ``max_chars`` characters (a longer text alone)."""
    out: list[list[str]] = []
    size = 0
    for text in texts:
        if not out or size + len(text) > max_chars:
            out.append([])
            size = 0
        out[-1].append(text)
        size += len(text)
    return out


def _open_tagger(path: Path, device: str) -> HeadRunner:
    tagger, tokenizer, metrics = load_tagger(path, device)
    return HeadRunner(path.resolve().name, TAGGER, tagger, tokenizer, metrics)


def _open_classifier(path: Path, device: str) -> HeadRunner:
    classifier, tokenizer, metrics = load_classifier(path, device)
    return HeadRunner(path.resolve().name, CLASSIFIER, classifier, tokenizer, metrics)


# model_type in config.json -> opener
OPENERS: dict[str, Callable[[Path, str], HeadRunner]] = {TAGGER: _open_tagger, CLASSIFIER: _open_classifier}


def load_head(head_dir: str | Path, device: str) -> HeadRunner:
    """A head's checkpoint directory, opened by its kind; a CheckpointError names what is wrong."""
    path = Path(head_dir)
    model_type = read_config(path)["model_type"]
    opener = OPENERS.get(model_type)
    if opener is None:
        raise CheckpointError(
            f"{path / 'config.json'}: model_type {model_type!r} is not a task head "
            f"(RNNLM_HEAD_DIRS serves: {', '.join(sorted(OPENERS))}; language models go in RNNLM_MODEL_DIRS)"
        )
    log.info("loading head %s (%s) on %s", path.name, model_type, device)
    return opener(path, device)
