"""Sampling as small composable parts (the text-generation-inference layout).

::

    SamplingParams (checks itself against SAMPLING_PARAMS: the one definition of each range)
    log-probs (B, V) ─▶ [processors built only for non-default parameters] ─▶ chooser ─▶ ids (B,)
                         repetition penalty, temperature, top-k, top-p          Greedy | Sampling(seed)
    generated text ─▶ StoppingCriteria ─▶ (stop?, finish_reason)
                  └─▶ StreamedText ─▶ the text safe to show (held back while it may begin a stop string)

Every row of a batch carries its own parameters, seed and step count. A sampled token is drawn
by the Gumbel-max trick with *counter-based* noise: the noise of vocabulary entry ``v`` at a
row's step ``t`` is a hash of ``(seed, t, v)``, not the next number of a stateful generator. So
one vectorized argmax draws every row of a batch at once, and a seeded request gives the same
tokens alone or among any neighbours, and after a restart::

    token = argmax_v( scores[v] + G(seed, t, v) ),   G = -log(-log(U)),   U = (hash + 0.5) / 2^32

which samples exactly from softmax(scores) (Gumbel 1954; Maddison et al. 2014).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, append_piece

# -- the parameters: their ranges, in one place (the HTTP schemas are built from these) -------------
MAX_TEMPERATURE = 100.0
MIN_SCALE = 1e-4  # smallest temperature (other than 0) and repetition penalty: logits are divided by it
MAX_REPETITION_PENALTY = 100.0
MAX_SEED = 2**32 - 1  # the noise reads a seed's low 32 bits: a larger seed would repeat a smaller one


@dataclass(frozen=True)
class ParamSpec:
    """One parameter's range (``None``: open on that side; ``gt`` excludes its value) and what it
    does. The library checks a value against it; the service's request fields take their bounds
    and description from it (pydantic's ``ge``/``gt``/``le``)."""

    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def bounds(self) -> dict[str, float]:
        """The bounds that are set, by pydantic's names."""
        return {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le)) if v is not None}

    def check(self, name: str, value: float | None) -> None:
        """``ValueError`` naming ``name`` when ``value`` is out of range (None: unset, allowed)."""
        if value is None:
            return
        ok = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
        )  # NaN fails every comparison
        if not ok:
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        """The range in words: "non-negative", "at least 1", "in (0, 1]"."""
        low, opening = (self.gt, "(") if self.gt is not None else (self.ge, "[")
        if self.le is not None:
            return (
                f"in {opening}{_num(low)}, {_num(self.le)}]"
                if low is not None
                else f"at most {_num(self.le)}"
            )
        if low is None:
            return "any value"
        if low == 0:
            return "positive" if self.gt is not None else "non-negative"
        return f"{'more than' if self.gt is not None else 'at least'} {_num(low)}"


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


SAMPLING_PARAMS: dict[str, ParamSpec] = {
    "temperature": ParamSpec(
        f"0 means greedy (so does anything below {MIN_SCALE:g}).", ge=0.0, le=MAX_TEMPERATURE
    ),
    "top_k": ParamSpec("Sample from the k most likely tokens (0: off).", ge=0),
    "top_p": ParamSpec("Nucleus sampling mass (1: off).", gt=0.0, le=1.0),
    "repetition_penalty": ParamSpec(
        "> 1 discourages tokens already generated (1: off).", ge=MIN_SCALE, le=MAX_REPETITION_PENALTY
    ),
    "seed": ParamSpec(
        "Same seed, same output. Default: drawn at random and returned. Sample i uses seed + i.",
        ge=0,
        le=MAX_SEED,
    ),
}


def greedy_if_tiny(temperature: float) -> float:
    """A temperature below :data:`MIN_SCALE` is 0 (greedy): logits / 1e-300 overflow float32 into
    NaN probabilities, and the limit is greedy anyway (as in vLLM)."""
    return 0.0 if temperature < MIN_SCALE else temperature


@dataclass
class SamplingParams:
    """How each next token is chosen. Checks itself (as vLLM's ``SamplingParams``): a value out of
    its range in :data:`SAMPLING_PARAMS` is a ``ValueError`` naming the field."""

    temperature: float = 1.0  # 0 means greedy (so does anything below MIN_SCALE)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off; >1 discourages tokens already in the text
    seed: int | None = None  # None: drawn at random (and reported back)
    allow_unk: bool = False  # whether <unk> may be generated

    def __post_init__(self) -> None:
        self._verify_args()
        self.temperature = greedy_if_tiny(self.temperature)

    def _verify_args(self) -> None:
        for name, spec in SAMPLING_PARAMS.items():
            spec.check(name, getattr(self, name))


# -- logits processors: (scores (V,), history ids) -> scores -------------------------------------
class RepetitionPenalty:
    """CTRL-style: divide positive / multiply negative logits of tokens seen so far by ``penalty``."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, scores: Tensor, history: list[int]) -> Tensor:
        if not history:
            return scores
        idx = torch.tensor(sorted(set(history)), dtype=torch.long)
        picked = scores[idx]
        scores = scores.clone()
        scores[idx] = torch.where(picked > 0, picked / self.penalty, picked * self.penalty)
        return scores


class Temperature:
    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, scores: Tensor, history: list[int]) -> Tensor:
        return scores / self.temperature


class TopK:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, scores: Tensor, history: list[int]) -> Tensor:
        k = min(self.k, scores.numel())
        kth = torch.topk(scores, k).values[-1]
        return scores.masked_fill(scores < kth, float("-inf"))


class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches ``p``."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, scores: Tensor, history: list[int]) -> Tensor:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each token
        drop_sorted = before >= self.p
        drop_sorted[0] = False  # always keep the most likely token
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        return scores.masked_fill(drop, float("-inf"))


def build_processors(params: SamplingParams) -> list:
    """Only the processors whose parameter differs from its neutral default."""
    procs: list = []
    if params.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(params.repetition_penalty))
    if params.temperature not in (0.0, 1.0):
        procs.append(Temperature(params.temperature))
    if params.top_k > 0:
        procs.append(TopK(params.top_k))
    if params.top_p < 1.0:
        procs.append(TopP(params.top_p))
    return procs


# -- choosers -------------------------------------------------------------------------------------
class Greedy:
    def __call__(self, scores: Tensor) -> int:
        return int(torch.argmax(scores))


class Sampling:
    """Draws from softmax(scores) with counter-based noise of its seed: reproducible per request."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, scores: Tensor, step: int = 0) -> int:
        noise = gumbel_noise(torch.tensor([self.seed]), torch.tensor([step]), scores.size(-1))[0]
        return int(torch.argmax(scores.double() + noise))


# -- counter-based noise: a hash of (seed, step, vocabulary index) ---------------------------------
_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x · c) mod 2^32 for 32-bit values held in int64, without overflowing int64."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + ((hi * (c & 0xFFFF)) << 16)) & _MASK32


def mix32(x: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finalizer: a bijection on [0, 2^32) that mixes every bit."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def gumbel_noise(seeds: Tensor, steps: Tensor, vocab_size: int) -> Tensor:
    """(B, V) float64 standard Gumbel noise, a pure function of each row's (seed, step) and the
    vocabulary index: the same numbers whatever the batch, the device or the process."""
    row = mix32(mix32((seeds.long() & _MASK32) ^ 0x9E3779B9) ^ (steps.long() & _MASK32))  # (B,)
    index = torch.arange(vocab_size, dtype=torch.long)
    bits = mix32(mix32(row.unsqueeze(1) ^ index.unsqueeze(0)) ^ 0x85EBCA77)  # (B, V)
    uniform = (bits.double() + 0.5) / 2.0**32  # in (0, 1)
    return -torch.log(-torch.log(uniform))


def draw_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, (1,)))


@dataclass
class TokenChooser:
    """Processors + chooser for one sequence: ``next_id(logprobs (V,), history) -> id``."""

    params: SamplingParams
    seed: int = field(init=False)
    processors: list = field(init=False)
    chooser: Greedy | Sampling = field(init=False)
    step: int = field(init=False, default=0)  # tokens chosen so far: the noise counter

    def __post_init__(self) -> None:
        self.seed = self.params.seed if self.params.seed is not None else draw_seed()
        self.processors = build_processors(self.params)
        self.chooser = Greedy() if self.params.temperature == 0 else Sampling(self.seed)

    def next_id(self, logprobs: Tensor, history: list[int]) -> int:
        """The next token of one row: :func:`choose_tokens` with a batch of one."""
        return choose_tokens([self], logprobs.float().cpu().view(1, -1), [history])[0]


def choose_tokens(
    choosers: Sequence[TokenChooser], logprobs: Tensor, histories: Sequence[list[int]]
) -> list[int]:
    """The next token of every row: ``logprobs`` (B, V) on the CPU, one chooser and history per row.

    Masking, the greedy argmax and the Gumbel-max draw run once for all rows; only the
    processors (which differ per row) run per row. A row's token depends on its own scores, seed
    and step only (see the module docstring). Each chooser's step advances by one.
    """
    scores = logprobs.float().clone()  # (B, V)
    scores[:, PAD_ID] = float("-inf")
    scores[:, BOS_ID] = float("-inf")
    no_unk = [r for r, c in enumerate(choosers) if not c.params.allow_unk]
    if no_unk:
        scores[no_unk, UNK_ID] = float("-inf")
    greedy: list[int] = []
    sampled: list[int] = []
    for r, c in enumerate(choosers):
        if c.processors:
            row = scores[r]
            for proc in c.processors:
                row = proc(row, histories[r])
            scores[r] = row
        (greedy if isinstance(c.chooser, Greedy) else sampled).append(r)
    chosen = [0] * len(choosers)
    if greedy:
        for r, token in zip(greedy, scores[greedy].argmax(dim=-1).tolist(), strict=True):
            chosen[r] = token
    if sampled:
        seeds = torch.tensor([choosers[r].seed for r in sampled])
        steps = torch.tensor([choosers[r].step for r in sampled])
        noisy = scores[sampled].double() + gumbel_noise(seeds, steps, scores.size(1))  # (b, V)
        for r, token in zip(sampled, noisy.argmax(dim=-1).tolist(), strict=True):
            chosen[r] = token
    for c in choosers:
        c.step += 1
    return chosen


# -- stopping criteria ---------------------------------------------------------------------------
class _StopString:
    """One stop string and its KMP failure function, computed only as far as a match has got.

    ``border[i]``: the length of the longest proper prefix of ``text[: i + 1]`` that is also its
    suffix. A match that has reached ``q`` characters needs ``border[: q]``, so a 9,999-character
    stop string that the text only ever begins costs what its first few characters cost.
    """

    __slots__ = ("border", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.border: list[int] = [0]

    def extend(self, q: int) -> int:
        """Make sure ``border[: q]`` is known; returns the work done (characters compared)."""
        p, border, work = self.text, self.border, 0
        while len(border) < q:
            i = len(border)
            k = border[i - 1]
            while k and p[i] != p[k]:
                k = border[k - 1]
                work += 1
            border.append(k + 1 if p[i] == p[k] else 0)
            work += 1
        return work


@dataclass
class StoppingCriteria:
    """``(stop, finish_reason)`` after each token: ``eos``, ``stop`` (a stop string) or ``length``.

    ``__call__`` looks at the whole text (the reference loop). The engine keeps a
    :class:`StopMatcher` per sample instead and calls :meth:`step` with only the text a token
    added: the work per token is then independent of the stop strings' length.
    """

    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    _strings: list[_StopString] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._strings = [_StopString(s) for s in dict.fromkeys(self.stop) if s]

    def __call__(self, last_id: int, new_tokens: int, text: str) -> tuple[bool, str | None]:
        if last_id == EOS_ID:
            return True, "eos"
        for s in self.stop:
            if s and s in text:
                return True, "stop"
        if new_tokens >= self.max_new_tokens:
            return True, "length"
        return False, None

    def matcher(self) -> StopMatcher:
        """A fresh matcher for one sample (the failure functions are shared between samples)."""
        return StopMatcher(self._strings)

    def step(
        self, matcher: StopMatcher, last_id: int, new_tokens: int, added: str
    ) -> tuple[bool, str | None]:
        """``__call__`` for a sample whose text grew by ``added`` (fed to its ``matcher``)."""
        if last_id == EOS_ID:
            return True, "eos"
        if matcher.feed(added):
            return True, "stop"
        if new_tokens >= self.max_new_tokens:
            return True, "length"
        return False, None

    def trim(self, text: str) -> str:
        """The text up to (not including) the earliest stop string."""
        cut = min((text.find(s) for s in self.stop if s and s in text), default=-1)
        return text if cut < 0 else text[:cut]


class StopMatcher:
    """How far one growing text has got into each stop string (Knuth-Morris-Pratt, incremental).

    ``feed`` takes only the characters just added; per character and stop string the work is
    O(1) amortized, whatever the stop strings' length. After each feed:

    - ``cut``: where the earliest stop string starts, once one is complete (``trim``'s cut);
    - ``held``: the characters at the end that may still begin a stop string (today's hold-back:
      the longest suffix that is a proper prefix of some stop string);
    - ``work``: characters compared so far (what the tests bound).
    """

    __slots__ = ("_matched", "_strings", "cut", "length", "work")

    def __init__(self, strings: list[_StopString]) -> None:
        self._strings = strings
        self._matched = [0] * len(strings)  # characters of each stop string matched at the end
        self.length = 0  # characters fed so far
        self.cut: int | None = None
        self.work = 0

    @property
    def held(self) -> int:
        return max(self._matched, default=0) if self.cut is None else 0

    def safe_length(self) -> int:
        """Length of the prefix of the text that no stop string can still claim."""
        return self.cut if self.cut is not None else self.length - self.held

    def feed(self, added: str) -> bool:
        """Add ``added`` to the text; True when a stop string is now complete in it."""
        if self.cut is not None:  # already stopped: the text after the stop string is cut anyway
            self.length += len(added)
            return True
        cut: int | None = None
        for j, s in enumerate(self._strings):
            p, border, m, q = s.text, s.border, len(s.text), self._matched[j]
            for i, c in enumerate(added):
                while q and p[q] != c:
                    if len(border) < q:
                        self.work += s.extend(q)
                    q = border[q - 1]
                    self.work += 1
                self.work += 1
                if p[q] == c:
                    q += 1
                    if q == m:  # complete: the earliest match of this stop string
                        start = self.length + i + 1 - m
                        cut = start if cut is None else min(cut, start)
                        break
            self._matched[j] = q
        self.length += len(added)
        self.cut = cut
        return cut is not None


class StreamedText:
    """A sample's text as it grows, and how much of it is safe to show: the one stop-string hold-back.

    A token is streamed the moment it is chosen, but its text may be the start of a stop string
    (stop ``"。\\n"``: a ``。`` might be followed by ``\\n``). Such text is held back until it is
    ruled out, so a reader who appends every :meth:`reveal` ends with exactly the final, trimmed
    text::

        stop = ["END"]     token  text so far   shown   held back
                           "E"    "abE"         ""      "E"       (could start "END")
                           "x"    "abEx"        "Ex"    ""        (ruled out)
                           "E"    "abExE"       ""      "E"
                           "N"    "abExEN"      ""      "EN"
                           "D"    "abExEND"     ""      -         stop: final text "abEx"

    The stop strings are followed incrementally (``matcher``, a :class:`StopMatcher`): the work
    per token does not grow with their length. The engine keeps one per row, feeding ``matcher``
    through :meth:`StoppingCriteria.step`; :meth:`push` does both for a caller with only pieces.
    """

    def __init__(
        self, stop: Sequence[str] = (), joiner: str = "", *, matcher: StopMatcher | None = None
    ) -> None:
        self.joiner = joiner  # between pieces in push: "" for characters, " " for words (the tokenizer's)
        self.matcher = matcher if matcher is not None else StoppingCriteria(0, list(stop)).matcher()
        self.text = ""  # everything generated so far
        self.shown = 0  # characters of ``text`` already revealed
        self.final: str | None = None  # the trimmed text, once finished

    def grow(self, text: str) -> str:
        """``text`` (the text so far with one more token's) replaces the text; returns what it
        added, for the matcher (:meth:`StoppingCriteria.step`)."""
        added = text[len(self.text) :]
        self.text = text
        return added

    def reveal(self, finish_reason: str | None) -> str:
        """The text that has become safe to show: up to where a stop string may still begin, or,
        once finished, the rest of the final text (up to the stop string that ended it)."""
        if finish_reason is None:
            safe = self.matcher.safe_length()
        else:  # "stop": where the earliest stop string starts; eos / length: none can complete any more
            safe = self.matcher.cut if self.matcher.cut is not None else len(self.text)
            self.final = self.text[:safe]
        delta = self.text[self.shown : max(safe, self.shown)]
        self.shown = max(safe, self.shown)
        return delta

    def push(self, piece: str, finish_reason: str | None) -> str:
        """Add one token's text (``finish_reason``: set on the last); return the text now safe to show."""
        self.matcher.feed(self.grow(append_piece(self.text, piece, self.joiner)))
        return self.reveal(finish_reason)
