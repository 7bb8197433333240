"""The weights file of the rescoring formula, and an n-best rescored with it.

::

    total = first_pass_weight × score + Σ_m models[m] × logprob_m + length_bonus × length

(:class:`model.inference.formula.Formula`, the formula ``POST /score`` and ``rnnlm tune`` use,
with an LM weight of 1 and no hotwords.)

``score`` is the candidate's first-pass score (log domain, higher is better); ``logprob_m`` the
natural-log probability of the whole sentence under model m (``<bos>`` context, ``<eos>``
scored); ``length`` is counted in ``length_unit``:

* ``tokens``: the model's tokens, without ``<bos>``/``<eos>`` (a character model: characters,
  spaces included; with several models, the first model's count);
* ``chars``: characters of the text, whitespace excluded;
* ``words``: whitespace-separated words. Unsegmented Chinese has no spaces, so a sentence of
  one run of characters is one word: use ``chars`` or ``tokens`` there.

Candidates are ranked by ``total``, best first; equal totals keep their input order
(:func:`model.inference.formula.rank`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.inference.formula import Formula, rank, weighted_sum
from model.inference.scoring import LENGTH_UNITS, text_length
from model.rescoring.formats import Utterance
from model.text.data import write_text_atomically


@dataclass
class Weights:
    """The weights of the formula; read from and written to the weights JSON (``rnnlm tune``)."""

    models: dict[str, float]  # model name (checkpoint directory basename) -> weight of its log-prob
    first_pass_weight: float = 1.0
    length_bonus: float = 0.0
    length_unit: str = "tokens"
    metadata: dict[str, Any] = field(default_factory=dict)  # anything else in the file, kept

    def __post_init__(self) -> None:
        if self.length_unit not in LENGTH_UNITS:
            raise ValueError(f"length_unit must be one of {LENGTH_UNITS}, got {self.length_unit!r}")
        for name, value in [
            ("first_pass_weight", self.first_pass_weight),
            ("length_bonus", self.length_bonus),
            *((f"models.{k}", v) for k, v in self.models.items()),
        ]:
            if not math.isfinite(value):
                raise ValueError(f"weights: {name} must be a finite number, got {value!r}")

    @property
    def formula(self) -> Formula:
        return Formula(first_pass_weight=self.first_pass_weight, length_bonus=self.length_bonus)

    def total(self, score: float, logprobs: Mapping[str, float], length: int) -> float:
        return self.formula.total(weighted_sum(logprobs, self.models), score, length)

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_pass_weight": self.first_pass_weight,
            "length_bonus": self.length_bonus,
            "length_unit": self.length_unit,
            "models": dict(self.models),
            **self.metadata,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "weights") -> Weights:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a JSON object")
        models = d.get("models")
        if not isinstance(models, Mapping) or not models:
            raise ValueError(f'{where}: "models" must be a non-empty object {{"<model name>": <weight>}}')
        numbers = {"first_pass_weight": 1.0, "length_bonus": 0.0}
        for key in numbers:
            value = d.get(key, numbers[key])
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f'{where}: "{key}" must be a number')
            numbers[key] = float(value)
        for name, value in models.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f'{where}: "models.{name}" must be a number')
        unit = d.get("length_unit", "tokens")
        known = {"first_pass_weight", "length_bonus", "length_unit", "models"}
        try:
            return cls(
                models={str(k): float(v) for k, v in models.items()},
                length_unit=unit,
                metadata={k: v for k, v in d.items() if k not in known},
                **numbers,
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Weights:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        return cls.from_dict(d, str(path))

    def save(self, path: str | Path) -> None:
        write_text_atomically(Path(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n")


@dataclass
class CandidateScores:
    """What the models said about one candidate text."""

    logprobs: dict[str, float]  # model name -> log-prob
    num_tokens: int  # the first model's tokens, without <bos>/<eos>


def rescore(utterances: Sequence[Utterance], scores: Mapping[str, CandidateScores], weights: Weights) -> None:
    """Fill in each candidate's ``lm``, ``length``, ``total`` and each utterance's ``ranking``."""
    for u in utterances:
        for c in u.candidates:
            s = scores[c.text]
            missing = [m for m in weights.models if m not in s.logprobs]
            if missing:
                raise ValueError(f"the weights name model {missing[0]!r}, which did not score the candidates")
            c.lm = dict(s.logprobs)
            c.length = text_length(c.text, weights.length_unit, s.num_tokens)
            c.total = weights.total(c.score, s.logprobs, c.length)
        u.ranking = rank([c.total for c in u.candidates if c.total is not None])
