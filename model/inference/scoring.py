"""Scoring and reranking candidates, and the next-token distribution (what /score and /next-token compute).

How one candidate is laid out for the model, KenLM-style (``bos=True, eos=True``), with the
optional context "厨房里" that conditions every candidate but is never scored::

    fed to the model   <bos> 厨 房 里 食 油 用 完 了
    scored targets           ·  ·  ·  食 油 用 完 了 <eos>      num_tokens = 6

``bos=False`` means "this text does not start a sentence". KenLM then scores the first word from
an empty context (its unigram). An RNN has no such state: its only start state is the one after
``<bos>``, trained to mean "a sentence begins here". Scoring the first token from it would
silently keep the sentence-start assumption, so instead the first token of the text becomes
conditioning only, like the first token of a prompt in vLLM's ``prompt_logprobs``::

    bos=False          <bos> 你 先 走
    scored targets           ·  先 走 <eos>                        num_tokens = 3

With a non-empty context the first token is already context, so ``bos=False`` changes nothing
there. ``eos=False`` leaves out P(<eos>) (a prefix, not a finished sentence).

The combined score of each candidate (higher is better) is the rescoring formula of
:mod:`model.inference.formula` with the first-pass weight at 1::

    score = lm_weight × (logprob | logprob / num_tokens if normalize == "token")
            + external_score + length_bonus × length + hotword bonus

where ``length`` is counted in ``length_unit`` (:func:`text_length`): "tokens" (the candidate's
own tokens, without <bos>/<eos> or the context), "chars" (characters, whitespace excluded) or
"words" (whitespace-separated runs: an unsegmented Chinese sentence is one word). Without a
unit (``None``) it is ``num_tokens``, the scored tokens, <eos> included when scored: the original
behaviour, which ranks like "tokens" (the same <eos> is added to every candidate).

Candidates are ranked by score, best first; equal scores keep their input order. No candidate is
ever dropped: empty text, unknown characters (scored as ``<unk>`` and counted in ``oov``), emoji
and mixed scripts all get a score.

The work is split in two so a batching engine can compute the log-probs its own way (shared
prefixes, big batches) and reuse the bookkeeping: :func:`prepare_candidates` builds the id
sequences, :func:`combine_scores` turns their per-token log-probs into a :class:`Ranking`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from model.inference.formula import Formula, hotword_bonus, rank
from model.models.config import LENGTH_UNITS
from model.models.lm import LanguageModel
from model.text.tokenizer import BOS_ID, EOS, EOS_ID, SPECIALS, UNK_ID, Tokenizer

NORMALIZE = ("none", "token")


def text_length(text: str, unit: str, num_tokens: int | None = None) -> int:
    """Length of ``text`` in ``unit``: the model's tokens without <bos>/<eos> (``num_tokens``, which
    only the tokenizer knows), the characters that are not whitespace, or the whitespace-separated
    words (unsegmented Chinese: 1 per run of text)."""
    if unit == "chars":
        return sum(1 for ch in text if not ch.isspace())
    if unit == "words":
        return len(text.split())
    if unit == "tokens":
        if num_tokens is None:
            raise ValueError("length unit 'tokens' needs the model's token count")
        return num_tokens
    raise ValueError(f"length_unit must be one of {LENGTH_UNITS}, got {unit!r}")


@dataclass
class ScoreOptions:
    context: str = ""  # conditions every candidate, never scored
    bos: bool = True  # the text starts a sentence (score its first token from <bos>)
    eos: bool = True  # the text ends a sentence (score P(<eos>) after it)
    lm_weight: float = 1.0  # weight of the LM term in the combined score
    length_bonus: float = 0.0  # added per scored token (a word-insertion bonus; negative = penalty)
    normalize: str = "none"  # "none": LM term is the log-prob sum; "token": divided by num_tokens
    length_unit: str | None = None  # unit of the length term (LENGTH_UNITS); None: num_tokens
    hotwords: tuple[tuple[str, float], ...] = ()  # (phrase, bonus): bonus added per occurrence

    def __post_init__(self) -> None:
        for phrase, bonus in self.hotwords:
            if not phrase or not math.isfinite(bonus):
                raise ValueError("hotwords: each phrase must be non-empty and its bonus a finite number")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        if self.length_unit is not None and self.length_unit not in LENGTH_UNITS:
            raise ValueError(f"length_unit must be one of {LENGTH_UNITS}, got {self.length_unit!r}")

    @property
    def formula(self) -> Formula:
        """The weights of the combined score (the external score's is 1)."""
        return Formula(lm_weight=self.lm_weight, length_bonus=self.length_bonus)


def candidate_length(text: str, ids: Sequence[int], unit: str | None) -> int | None:
    """:func:`text_length` of a text already encoded as ``ids`` (counted, not encoded again)."""
    return None if unit is None else text_length(text, unit, len(ids))


@dataclass
class PreparedCandidate:
    text: str
    ids: list[int]  # what the model reads: <bos>, context, candidate, (<eos>)
    first_scored: int  # index into ids[1:] of the first scored target
    pieces: list[str]  # the text of each scored target (<eos> included when scored)
    oov: int  # candidate pieces that map to <unk>
    length: int | None = None  # in options.length_unit; None: num_tokens (known once scored)


@dataclass
class CandidateScore:
    text: str
    logprob: float  # sum of the scored tokens' natural-log probabilities
    num_tokens: int  # scored tokens, <eos> included when eos=True
    oov: int  # pieces of the candidate unknown to the vocabulary (scored as <unk>)
    perplexity: float | None  # exp(-logprob / num_tokens); None when nothing was scored
    score: float  # the combined score used for ranking
    rank: int = 0  # 1 = best
    tokens: list[str] = field(default_factory=list)  # scored tokens, in order
    token_logprobs: list[float] = field(default_factory=list)  # their log-probs (sum = logprob)
    length: int = 0  # what length_bonus multiplies: in options.length_unit, else num_tokens
    lm_term: float = 0.0  # what lm_weight multiplies: logprob, or its mean per token
    hotword_bonus: float = 0.0  # what the request's hotwords added to the score
    oov_logprob: float = 0.0  # the part of logprob scored at <unk> targets (0 when oov is 0)


@dataclass
class Ranking:
    results: list[CandidateScore]  # in input order
    ranking: list[int]  # candidate indices, best first
    positions: int  # token positions the model computed (for metrics)

    @property
    def tokens_scored(self) -> int:
        return sum(r.num_tokens for r in self.results)


def candidate_tokens(tokenizer: Tokenizer, candidates: Sequence[str], options: ScoreOptions) -> int:
    """The ids :func:`prepare_candidates` would build for ``candidates`` (``<bos>`` + context +
    candidate (+ ``<eos>``) each), counted from the pieces without looking any up."""
    per_candidate = 1 + len(tokenizer.split(options.context)) + (1 if options.eos else 0)
    return sum(per_candidate + len(tokenizer.split(text)) for text in candidates)


def prepare_candidates(
    tokenizer: Tokenizer,
    candidates: Sequence[str],
    options: ScoreOptions,
    external_scores: Sequence[float] | None = None,
) -> list[PreparedCandidate]:
    """Each candidate as the model reads it; checks the external scores match, before any work."""
    if external_scores is not None and len(external_scores) != len(candidates):
        raise ValueError(
            f"external_scores has {len(external_scores)} values for {len(candidates)} candidates"
        )
    context = tokenizer.encode(options.context)
    # Targets before this index are conditioning only: the context, or with bos=False the first token.
    first_scored = max(len(context.ids), 0 if options.bos else 1)
    prepared = []
    for text in candidates:
        enc = tokenizer.encode(text)
        tail = [EOS_ID] if options.eos else []
        pieces = [*context.tokens, *enc.tokens, *([EOS] if options.eos else [])]
        prepared.append(
            PreparedCandidate(
                text=text,
                ids=[BOS_ID, *context.ids, *enc.ids, *tail],
                first_scored=first_scored,
                pieces=pieces[first_scored:],
                oov=enc.oov,
                length=candidate_length(text, enc.ids, options.length_unit),
            )
        )
    return prepared


def combine_scores(
    prepared: Sequence[PreparedCandidate],
    target_logprobs: Sequence[Sequence[float] | torch.Tensor],
    options: ScoreOptions,
    external_scores: Sequence[float] | None = None,
) -> Ranking:
    """Turn each candidate's per-target log-probs (``len(ids) - 1`` of them) into a ranking."""
    if external_scores is not None and len(external_scores) != len(prepared):
        raise ValueError(f"external_scores has {len(external_scores)} values for {len(prepared)} candidates")
    formula = options.formula
    results = []
    for i, (cand, lps) in enumerate(zip(prepared, target_logprobs, strict=True)):
        token_lps = [float(x) for x in lps[cand.first_scored :]]
        logprob = math.fsum(token_lps)
        targets = cand.ids[1 + cand.first_scored :]
        oov_logprob = math.fsum(lp for t, lp in zip(targets, token_lps, strict=True) if t == UNK_ID)
        n = len(token_lps)
        lm_term = (logprob / n if n else 0.0) if options.normalize == "token" else logprob
        external = float(external_scores[i]) if external_scores is not None else 0.0
        length = n if cand.length is None else cand.length
        bonus = hotword_bonus(cand.text, options.hotwords)
        results.append(
            CandidateScore(
                text=cand.text,
                logprob=logprob,
                num_tokens=n,
                oov=cand.oov,
                perplexity=(math.exp(-logprob / n) if -logprob / n < 709 else math.inf) if n else None,
                score=formula.total(lm_term, external, length, bonus),
                tokens=cand.pieces,
                token_logprobs=token_lps,
                length=length,
                lm_term=lm_term,
                hotword_bonus=bonus,
                oov_logprob=oov_logprob,
            )
        )
    ranking = rank_results(results)
    positions = sum(len(c.ids) - 1 for c in prepared)
    return Ranking(results=results, ranking=ranking, positions=positions)


def rank_results(results: Sequence[CandidateScore]) -> list[int]:
    """Rank ``results`` by score (:func:`~model.inference.formula.rank`): each one's ``rank`` is
    set (1 = best) and the indices are returned, best first."""
    ranking = rank([r.score for r in results])
    for place, i in enumerate(ranking, start=1):
        results[i].rank = place
    return ranking


def score_candidates(
    lm: LanguageModel,
    candidates: Sequence[str],
    options: ScoreOptions | None = None,
    external_scores: Sequence[float] | None = None,
) -> Ranking:
    """Score and rank ``candidates`` with ``lm``: one batched ``sequence_logprobs`` call."""
    options = options or ScoreOptions()
    prepared = prepare_candidates(lm.tokenizer, candidates, options, external_scores)
    logprobs = lm.sequence_logprobs([c.ids for c in prepared]) if prepared else []
    return combine_scores(prepared, logprobs, options, external_scores)


# -- the next-token distribution ------------------------------------------------------------------
@dataclass
class Distribution:
    """The raw next-token distribution after one prefix (what the engine hands back)."""

    logprobs: torch.Tensor  # (V,) float32 on the CPU
    top_ids: list[int]  # the top_k most likely token ids, most likely first
    top_logprobs: list[float]
    entropy: float  # nats


def top_distributions(logprobs: torch.Tensor, top_k: Sequence[int]) -> list[Distribution]:
    """Row r of ``logprobs`` (B, V) with its ``top_k[r]`` best tokens and its entropy."""
    logprobs = logprobs.float().cpu()  # (B, V)
    k = min(max(top_k, default=1), logprobs.size(1))
    top = logprobs.topk(k, dim=-1)  # (B, k)
    ids, lps = top.indices.tolist(), top.values.tolist()
    entropy = torch.special.entr(logprobs.double().exp()).sum(dim=-1).tolist()  # (B,); entr(0) = 0
    return [Distribution(logprobs[r], ids[r][:kr], lps[r][:kr], entropy[r]) for r, kr in enumerate(top_k)]


@dataclass
class TokenProb:
    token: str  # the token's text (<eos> and the other specials by name)
    id: int
    prob: float
    logprob: float  # natural log
    special: bool  # one of <pad> <unk> <bos> <eos>: not text you could append


@dataclass
class NextToken:
    tokens: list[str]  # the context as the model sees it (after <bos>), one piece per token
    oov: int  # context pieces unknown to the vocabulary
    next: list[TokenProb]  # the top_k most likely next tokens, most likely first
    entropy: float  # of the whole next-token distribution, in nats


def next_token_prefixes(
    tokenizer: Tokenizer, texts: Sequence[str], top_k: int
) -> tuple[list, list[list[int]]]:
    """Each text encoded, and the prefix the model reads (``<bos>`` first)."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    encodings = [tokenizer.encode(t) for t in texts]
    return encodings, [[BOS_ID, *e.ids] for e in encodings]


def describe_next(
    tokenizer: Tokenizer, encodings: Sequence, dists: Sequence[Distribution]
) -> list[NextToken]:
    """What a user reads: the context's pieces and the top tokens as text, with probabilities."""
    return [
        NextToken(
            tokens=enc.tokens,
            oov=enc.oov,
            entropy=d.entropy,
            next=[
                TokenProb(
                    token=tokenizer.piece(i), id=i, prob=math.exp(lp), logprob=lp, special=i < len(SPECIALS)
                )
                for i, lp in zip(d.top_ids, d.top_logprobs, strict=True)
                if math.isfinite(lp)  # a token the model cannot produce is not a candidate
            ],
        )
        for enc, d in zip(encodings, dists, strict=True)
    ]


def next_token_distribution(lm: LanguageModel, texts: Sequence[str], top_k: int = 10) -> list[NextToken]:
    """The raw model's next-token distribution after each text (no temperature or filtering)."""
    encodings, prefixes = next_token_prefixes(lm.tokenizer, texts, top_k)
    dists = top_distributions(lm.next_token_logprobs(prefixes), [top_k] * len(prefixes))
    return describe_next(lm.tokenizer, encodings, dists)
