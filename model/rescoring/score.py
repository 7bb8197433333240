"""Each model scores each distinct candidate text once: the log-probs every rescoring step reuses.

Texts are scored the way ``POST /score`` scores them with its defaults (``<bos>`` context,
``<eos>`` scored: :func:`model.inference.scoring.prepare_candidates` and ``combine_scores``), through the
model's :meth:`~model.models.lm.LanguageModel.score_tree`: an RNN computes each distinct prefix once,
and the candidates of one n-best list mostly share long prefixes. Texts go in chunks, in the
order given (one utterance's candidates together); ``progress(n)`` is called after each chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from model.inference.scoring import ScoreOptions, combine_scores, prepare_candidates
from model.models.lm import LanguageModel
from model.rescoring.combine import CandidateScores
from model.rescoring.formats import Utterance
from model.text.data import write_text_atomically

CHUNK = 512  # texts per scoring call: big enough for full batches, small enough for a live progress bar
Progress = Callable[[int], None]


def distinct_texts(utterances: Iterable[Utterance]) -> list[str]:
    """Every candidate text once, in first-seen order."""
    return list(dict.fromkeys(c.text for u in utterances for c in u.candidates))


def score_texts(
    lm: LanguageModel, texts: Sequence[str], progress: Progress | None = None
) -> dict[str, tuple[float, int]]:
    """text -> (log-prob with <eos>, tokens without <bos>/<eos>)."""
    options = ScoreOptions()  # <bos> context, <eos> scored, as POST /score's defaults
    out: dict[str, tuple[float, int]] = {}
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start : start + CHUNK]
        prepared = prepare_candidates(lm.tokenizer, chunk, options)
        tree = lm.score_tree([c.ids for c in prepared])  # shared prefixes computed once
        for r in combine_scores(prepared, tree.logprobs, options).results:
            out[r.text] = (r.logprob, r.num_tokens - 1)  # num_tokens counts <eos>
        if progress is not None:
            progress(len(chunk))
    return out


def merge_scores(per_model: Mapping[str, Mapping[str, tuple[float, int]]]) -> dict[str, CandidateScores]:
    """{model: {text: (logprob, tokens)}} -> {text: CandidateScores}; tokens from the first model."""
    names = list(per_model)
    if not names:
        return {}
    texts = per_model[names[0]]
    return {
        t: CandidateScores(logprobs={m: per_model[m][t][0] for m in names}, num_tokens=texts[t][1])
        for t in texts
    }


# -- the cache file of `rnnlm tune --scores` ------------------------------------------------------
def save_scores(
    path: str | Path,
    per_model: Mapping[str, Mapping[str, tuple[float, int]]],
    checkpoints: Mapping[str, str] | None = None,
) -> None:
    """Write the scores, with what each model name stood for (``checkpoints``: name -> the
    checkpoint's id), so a later run reuses them only for the same checkpoints."""
    obj = {m: {t: [lp, n] for t, (lp, n) in scores.items()} for m, scores in per_model.items()}
    doc = {"models": obj, "checkpoints": dict(checkpoints or {})}
    write_text_atomically(Path(path), json.dumps(doc, ensure_ascii=False) + "\n")


def saved_checkpoints(path: str | Path) -> dict[str, str]:
    """What each model name of a scores file stood for (empty for files written without it)."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8")).get("checkpoints", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def load_scores(path: str | Path) -> dict[str, dict[str, tuple[float, int]]]:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        return {
            m: {t: (float(v[0]), int(v[1])) for t, v in scores.items()} for m, scores in obj["models"].items()
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: not a scores file written by `rnnlm tune --scores` ({e})") from None
