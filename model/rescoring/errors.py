"""Error rates of chosen hypotheses against references: CER, WER and exact-match accuracy.

Corpus rates, as speech toolkits report them: the edit distances (substitutions + deletions +
insertions, by rapidfuzz's Levenshtein) summed over utterances, divided by the summed reference
lengths. CER counts characters with whitespace removed (so segmentation does not count); WER
counts whitespace-separated words. ``accuracy`` counts utterances whose hypothesis equals the
reference (whitespace runs compared as one space); its "error" is the share that do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from model.rescoring.formats import Utterance

METRICS = ("cer", "wer", "accuracy")


def units(text: str, metric: str) -> list[str]:
    if metric == "cer":
        return [ch for ch in text if not ch.isspace()]
    if metric == "wer":
        return text.split()
    raise ValueError(f"metric must be cer or wer here, got {metric!r}")


@dataclass(frozen=True)
class ErrorCount:
    errors: int  # edit operations (cer, wer) or wrong utterances (accuracy)
    total: int  # reference units (cer, wer) or utterances (accuracy)

    @property
    def rate(self) -> float:
        """The error rate (0 with nothing to count)."""
        return self.errors / self.total if self.total else 0.0

    def __add__(self, other: ErrorCount) -> ErrorCount:
        return ErrorCount(self.errors + other.errors, self.total + other.total)


def utterance_errors(hypothesis: str, reference: str, metric: str) -> ErrorCount:
    if metric == "accuracy":
        return ErrorCount(int(" ".join(hypothesis.split()) != " ".join(reference.split())), 1)
    ref = units(reference, metric)
    return ErrorCount(Levenshtein.distance(units(hypothesis, metric), ref), len(ref))


def corpus_errors(pairs: Iterable[tuple[str, str]], metric: str) -> ErrorCount:
    """Summed over (hypothesis, reference) pairs."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    total = ErrorCount(0, 0)
    for hyp, ref in pairs:
        total = total + utterance_errors(hyp, ref, metric)
    return total


def candidate_errors(utterances: Sequence[Utterance], metric: str) -> list[list[ErrorCount]]:
    """Per utterance (with a reference), each candidate's errors, in input order."""
    return [
        [utterance_errors(c.text, u.reference, metric) for c in u.candidates]
        for u in utterances
        if u.reference is not None
    ]


def chosen_errors(utterances: Sequence[Utterance], choice: Sequence[int], metric: str) -> ErrorCount:
    """Errors of candidate ``choice[i]`` of each utterance that has a reference."""
    return corpus_errors(
        (
            (u.candidates[i].text, u.reference)
            for u, i in zip(utterances, choice, strict=True)
            if u.reference is not None
        ),
        metric,
    )


def oracle_errors(utterances: Sequence[Utterance], metric: str) -> ErrorCount:
    """The best the lists allow: each utterance's candidate with the fewest errors."""
    total = ErrorCount(0, 0)
    for row in candidate_errors(utterances, metric):
        total = total + min(row, key=lambda e: e.errors)
    return total


def first_pass_choice(utterances: Sequence[Utterance]) -> list[int]:
    """Each utterance's first-pass 1-best (highest score; ties: the earlier candidate)."""
    return [max(range(len(u.candidates)), key=lambda i: (u.candidates[i].score, -i)) for u in utterances]
