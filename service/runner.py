"""The served models, each behind a runner that owns one worker thread.

::

    route (event loop) ──await──▶ ModelRunner.score / next_token / generate / generate_stream
                                       │ submit                         (one worker thread per model:
                                       ▼                                  torch work never runs on
                                  model library (model/)                  the event loop, and calls
                                                                          to one model never overlap)

A runner is the seam where the batching engine (model/engine*.py) plugs in: it must offer the
same four coroutines. Streaming advances the generator one token per worker call, so other
requests interleave between tokens and a client that goes away stops the work at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch

from model.generation import GenerationRequest, Sample, TokenEvent, generate, generate_stream
from model.lm import LanguageModel
from model.loading import load_model
from model.scoring import NextToken, Ranking, ScoreOptions, next_token_distribution, score_candidates

from .errors import ApiError

log = logging.getLogger("rnnlm.service")
T = TypeVar("T")
_END = object()


class ModelRunner:
    """One model and the single thread that touches it."""

    def __init__(self, name: str, lm: LanguageModel) -> None:
        self.name = name
        self.lm = lm
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rnnlm-{name}")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    async def score(self, candidates: Sequence[str], options: ScoreOptions,
                    external_scores: Sequence[float] | None = None) -> Ranking:
        return await self._run(score_candidates, self.lm, list(candidates), options, external_scores)

    async def next_token(self, texts: Sequence[str], top_k: int) -> list[NextToken]:
        return await self._run(next_token_distribution, self.lm, list(texts), top_k)

    async def generate(self, request: GenerationRequest) -> list[Sample]:
        return await self._run(generate, self.lm, request)

    async def generate_stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        events: Iterator[TokenEvent] = await self._run(generate_stream, self.lm, request)
        try:
            while (event := await self._run(next, events, _END)) is not _END:
                yield event
        finally:
            with contextlib.suppress(RuntimeError):  # the executor is already shut down
                self._executor.submit(events.close)  # runs in the worker, after any step in flight

    def describe(self) -> dict:
        return self.lm.describe()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit CUDA request must be satisfiable."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"RNNLM_DEVICE={requested} but CUDA is not available on this machine "
                               "(use auto or cpu)")
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"RNNLM_DEVICE={requested} but only {torch.cuda.device_count()} "
                               "CUDA device(s) exist")
    return requested


class ModelRegistry:
    """The served models by name (a checkpoint directory's base name), in configured order."""

    def __init__(self, runners: Sequence[ModelRunner]) -> None:
        if not runners:
            raise ValueError("no models to serve")
        self.runners = {r.name: r for r in runners}
        if len(self.runners) != len(runners):
            names = [r.name for r in runners]
            raise ValueError(f"two model directories share a name: {names}; give each a distinct name")
        self.default = runners[0].name

    @classmethod
    def load(cls, model_dirs: Sequence[str | Path], device: str = "auto") -> ModelRegistry:
        dev = resolve_device(device)
        runners = []
        for d in model_dirs:
            path = Path(d)
            log.info("loading model %s on %s", path.name, dev)
            runners.append(ModelRunner(path.resolve().name, load_model(path, device=dev)))
        return cls(runners)

    def get(self, name: str | None) -> ModelRunner:
        if name is None:
            return self.runners[self.default]
        runner = self.runners.get(name)
        if runner is None:
            raise ApiError(404, "model_not_found",
                           f"`model`: no served model named {name!r} (served: {', '.join(self.runners)})",
                           field="model")
        return runner

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
