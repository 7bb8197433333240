"""N-best lists in four formats, read into one in-memory type and written back in their own layout.

Every reader returns a list of :class:`Utterance` (id, optional reference, candidates in input
order); every writer takes that list back. A candidate's ``score`` is always the first-pass score
in the natural-log domain, higher is better; what each format stores and how it maps:

============  ==============================================  ===========================================
format        on disk                                         first-pass ``score``
============  ==============================================  ===========================================
``jsonl``     ``{"id", "reference"?, "candidates": [{"text",  ``score`` as written
              "score"}, ...]}`` one utterance a line
``kaldi``     a directory: ``text`` (``uttid-N w1 w2 …``),    ``-(acoustic_scale × ac_cost + lm_cost)``
              ``ac_cost`` and ``lm_cost`` (``uttid-N cost``),  (costs are negated log-likelihoods)
              optional ``reference`` (``uttid w1 w2 …``)
``fairseq``   ``fairseq-generate`` output: ``S-i``, ``T-i``,   ``H`` score × ln 2 (fairseq prints base 2)
              ``H-i\\tscore\\ttext`` (+ ``D-i``, ``P-i``, ``A-i``)
``nemo``      ``text\\tscore`` a line, each utterance's beam   ``score`` as written
              of ``beam_size`` lines consecutive
============  ==============================================  ===========================================

After rescoring (:mod:`model.rescoring.combine`) the writers put the new total where each format
keeps its score: JSONL adds ``lm``, ``length``, ``total``, ``ranking`` and ``best``; Kaldi writes
``lm_cost = -total - acoustic_scale × ac_cost`` (``ac_cost`` unchanged, so Kaldi's own total
cost at that acoustic scale is ``-total``); fairseq writes ``total / ln 2`` on ``H`` and ``D``
lines; NeMo writes ``total``. Candidates keep their input order everywhere.

A malformed line raises :class:`NbestFormatError` (a ``ValueError``) naming the file and line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.models.checkpoint import write_dir_atomically
from model.text.data import write_text_atomically

FORMATS = ("jsonl", "kaldi", "fairseq", "nemo")
LN2 = math.log(2.0)
KALDI_FILES = ("text", "ac_cost", "lm_cost")
# the same three under the names Kaldi's steps/rnnlmrescore.sh gives them in its archives.N/
KALDI_ALIASES = {"text": "words_text", "ac_cost": "acwt", "lm_cost": "lmwt.withlm"}


class NbestFormatError(ValueError):
    """A file that is not the n-best format it was read as; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass
class Candidate:
    text: str
    score: float  # first-pass score, natural log, higher is better
    extra: dict[str, Any] = field(default_factory=dict)  # other fields, written back untouched
    lm: dict[str, float] | None = None  # after rescoring: each model's log-prob of the text
    length: int | None = None  # after rescoring: the length in the chosen unit
    total: float | None = None  # after rescoring: the combined score


@dataclass
class Utterance:
    id: str
    candidates: list[Candidate]
    reference: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ranking: list[int] | None = None  # after rescoring: candidate indices, best first

    @property
    def best(self) -> int | None:
        return self.ranking[0] if self.ranking else None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); undecodable bytes name the file."""
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise NbestFormatError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from e


def _float(path: Path, number: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise NbestFormatError(path, number, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise NbestFormatError(path, number, f"{what} {text!r} is not a finite number")
    return value


# -- JSONL ----------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[Utterance]:
    path = Path(path)
    utterances: list[Utterance] = []
    seen: set[str] = set()
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise NbestFormatError(path, number, f"not valid JSON ({e.msg} at column {e.colno})") from None
        utterances.append(_utterance_from_json(path, number, obj))
        if utterances[-1].id in seen:
            raise NbestFormatError(path, number, f"utterance id {utterances[-1].id!r} appears twice")
        seen.add(utterances[-1].id)
    return utterances


def _utterance_from_json(path: Path, number: int, obj: Any) -> Utterance:
    if not isinstance(obj, dict):
        raise NbestFormatError(path, number, "expected a JSON object (one utterance)")
    uid = obj.get("id")
    if not isinstance(uid, str | int) or isinstance(uid, bool):
        raise NbestFormatError(path, number, '"id" is missing or not a string')
    reference = obj.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise NbestFormatError(path, number, '"reference" must be a string')
    raw = obj.get("candidates")
    if not isinstance(raw, list) or not raw:
        raise NbestFormatError(path, number, '"candidates" must be a non-empty list')
    candidates = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            raise NbestFormatError(path, number, f'candidates[{i}] needs a string "text"')
        score = c.get("score")
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            raise NbestFormatError(path, number, f"candidates[{i}].score must be a finite number")
        extra = {k: v for k, v in c.items() if k not in ("text", "score")}
        candidates.append(Candidate(text=c["text"], score=float(score), extra=extra))
    extra = {k: v for k, v in obj.items() if k not in ("id", "reference", "candidates")}
    return Utterance(id=str(uid), candidates=candidates, reference=reference, extra=extra)


def utterance_to_json(u: Utterance) -> dict[str, Any]:
    """One JSONL line's object: input fields untouched, the rescoring fields added when present."""
    candidates = []
    for c in u.candidates:
        obj: dict[str, Any] = {"text": c.text, "score": c.score, **c.extra}
        if c.total is not None:
            obj.update(lm=c.lm or {}, length=c.length, total=c.total)
        candidates.append(obj)
    out: dict[str, Any] = {"id": u.id}
    if u.reference is not None:
        out["reference"] = u.reference
    out["candidates"] = candidates
    out.update(u.extra)
    if u.ranking is not None:
        out.update(ranking=u.ranking, best=u.ranking[0])
    return out


def format_jsonl(utterances: Iterable[Utterance]) -> str:
    return "".join(json.dumps(utterance_to_json(u), ensure_ascii=False) + "\n" for u in utterances)


# -- Kaldi ----------------------------------------------------------------------------------------
def _kaldi_key(path: Path, number: int, key: str) -> tuple[str, int]:
    uid, sep, n = key.rpartition("-")
    if not sep or not uid or not n.isdigit():
        raise NbestFormatError(
            path, number, f"key {key!r} is not <utterance-id>-<N> (as lattice-to-nbest names them)"
        )
    return uid, int(n)


def _kaldi_costs(path: Path) -> dict[str, tuple[int, float]]:
    costs: dict[str, tuple[int, float]] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise NbestFormatError(path, number, "expected '<uttid>-<N> <cost>'")
        _kaldi_key(path, number, parts[0])
        if parts[0] in costs:
            raise NbestFormatError(path, number, f"key {parts[0]!r} appears twice")
        costs[parts[0]] = (number, _float(path, number, parts[1], "cost"))
    return costs


def _kaldi_file(d: Path, name: str) -> Path:
    for candidate in (d / name, d / KALDI_ALIASES[name]):
        if candidate.is_file():
            return candidate
    raise NbestFormatError(
        d / name,
        None,
        f"missing (a Kaldi n-best directory needs text, ac_cost, lm_cost; or "
        f"{', '.join(KALDI_ALIASES.values())} as steps/rnnlmrescore.sh names them)",
    )


def read_kaldi(directory: str | Path, acoustic_scale: float = 1.0) -> list[Utterance]:
    """A directory with ``text``, ``ac_cost``, ``lm_cost`` (or ``words_text``, ``acwt``,
    ``lmwt.withlm``, the names in Kaldi's ``steps/rnnlmrescore.sh`` archives), and optionally
    ``reference``."""
    d = Path(directory)
    if not d.is_dir():
        raise NbestFormatError(d, None, "a Kaldi n-best is a directory holding text, ac_cost and lm_cost")
    text_file, ac_file, lm_file = (_kaldi_file(d, name) for name in KALDI_FILES)
    ac, lm = _kaldi_costs(ac_file), _kaldi_costs(lm_file)
    groups: dict[str, list[tuple[int, Candidate]]] = {}
    keys: set[str] = set()
    for number, line in _lines(text_file):
        if not line.strip():
            continue
        key, *rest = line.split(maxsplit=1)
        words = rest[0] if rest else ""
        uid, n = _kaldi_key(text_file, number, key)
        if key in keys:
            raise NbestFormatError(text_file, number, f"key {key!r} appears twice")
        keys.add(key)
        for path, costs in ((ac_file, ac), (lm_file, lm)):
            if key not in costs:
                raise NbestFormatError(text_file, number, f"key {key!r} has no line in {path}")
        ac_cost, lm_cost = ac[key][1], lm[key][1]
        cand = Candidate(
            text=" ".join(words.split()),
            score=-(acoustic_scale * ac_cost + lm_cost),
            extra={"key": key, "ac_cost": ac_cost, "lm_cost": lm_cost},
        )
        groups.setdefault(uid, []).append((n, cand))
    for path, costs in ((ac_file, ac), (lm_file, lm)):
        for key, (number, _) in costs.items():
            if key not in keys:
                raise NbestFormatError(path, number, f"key {key!r} has no line in {text_file}")
    references: dict[str, str] = {}
    if (d / "reference").is_file():
        for _number, line in _lines(d / "reference"):
            if line.strip():
                uid, *rest = line.split(maxsplit=1)
                references[uid] = " ".join(rest[0].split()) if rest else ""
    return [
        Utterance(
            id=uid,
            candidates=[c for _, c in sorted(group, key=lambda nc: nc[0])],
            reference=references.get(uid),
        )
        for uid, group in groups.items()
    ]


def kaldi_files(utterances: Iterable[Utterance], acoustic_scale: float = 1.0) -> dict[str, str]:
    """The files of a Kaldi n-best directory. A rescored candidate's ``lm_cost`` becomes
    ``-total - acoustic_scale × ac_cost``; ``ac_cost`` and ``text`` are written unchanged."""
    text, ac, lm, ref = [], [], [], []
    for u in utterances:
        if u.reference is not None:
            ref.append(f"{u.id} {u.reference}".rstrip() + "\n")
        for n, c in enumerate(u.candidates, start=1):
            key = str(c.extra.get("key", f"{u.id}-{n}"))
            ac_cost = float(c.extra.get("ac_cost", 0.0))
            score = c.total if c.total is not None else c.score
            lm_cost = -score - acoustic_scale * ac_cost
            if c.total is None and "lm_cost" in c.extra:
                lm_cost = float(c.extra["lm_cost"])  # unchanged: write back exactly what was read
            text.append(f"{key} {c.text}".rstrip() + "\n")
            ac.append(f"{key} {ac_cost!r}\n")
            lm.append(f"{key} {lm_cost!r}\n")
    files = {"text": "".join(text), "ac_cost": "".join(ac), "lm_cost": "".join(lm)}
    if ref:
        files["reference"] = "".join(ref)
    return files


# -- fairseq-generate -----------------------------------------------------------------------------
FAIRSEQ_LINE = re.compile(r"^([A-Z])-(\d+)\t(.*)$")


def read_fairseq(path: str | Path) -> list[Utterance]:
    """``fairseq-generate`` output. Sentence i's n-best are its ``H-i`` lines (in order); ``S-i``
    is kept as ``source``, ``T-i`` is the reference; ``D-i``, ``P-i`` and ``A-i`` lines belong to
    the ``H-i`` line before them and are written back with it. Other lines (fairseq's log, the
    BLEU summary) are skipped."""
    path = Path(path)
    utts: dict[str, Utterance] = {}
    last: dict[str, Candidate] = {}
    for number, line in _lines(path):
        m = FAIRSEQ_LINE.match(line)
        if not m:
            if re.match(r"^[STHDPA]-", line):
                raise NbestFormatError(path, number, "expected '<letter>-<sentence number>\\t...'")
            continue
        kind, sid, rest = m.groups()
        u = utts.setdefault(sid, Utterance(id=sid, candidates=[]))
        if kind == "S":
            u.extra["source"] = rest
        elif kind == "T":
            u.reference = rest
        elif kind in ("H", "D"):
            score_text, sep, text = rest.partition("\t")
            if not sep:
                raise NbestFormatError(path, number, f"expected '{kind}-{sid}\\t<score>\\t<text>'")
            score = _float(path, number, score_text, "score") * LN2
            if kind == "H":
                last[sid] = Candidate(text=text, score=score)
                u.candidates.append(last[sid])
            elif sid not in last:
                raise NbestFormatError(path, number, f"D-{sid} before any H-{sid} line")
            else:
                last[sid].extra["detok"] = text
        elif kind in ("P", "A"):
            if sid not in last:
                raise NbestFormatError(path, number, f"{kind}-{sid} before any H-{sid} line")
            last[sid].extra["positional_scores" if kind == "P" else "alignment"] = rest
    for sid, u in utts.items():
        if not u.candidates:
            raise NbestFormatError(path, None, f"sentence {sid} has no H-{sid} line (no hypotheses)")
    return list(utts.values())


def format_fairseq(utterances: Iterable[Utterance]) -> str:
    """Back in fairseq-generate's layout; ``H``/``D`` carry the new total in base 2, as fairseq."""
    out = []
    for u in utterances:
        if "source" in u.extra:
            out.append(f"S-{u.id}\t{u.extra['source']}\n")
        if u.reference is not None:
            out.append(f"T-{u.id}\t{u.reference}\n")
        for c in u.candidates:
            score = (c.total if c.total is not None else c.score) / LN2
            out.append(f"H-{u.id}\t{score!r}\t{c.text}\n")
            if "detok" in c.extra:
                out.append(f"D-{u.id}\t{score!r}\t{c.extra['detok']}\n")
            if "positional_scores" in c.extra:
                out.append(f"P-{u.id}\t{c.extra['positional_scores']}\n")
            if "alignment" in c.extra:
                out.append(f"A-{u.id}\t{c.extra['alignment']}\n")
    return "".join(out)


# -- NeMo beam TSV --------------------------------------------------------------------------------
def read_nemo(path: str | Path, beam_size: int, manifest: str | Path | None = None) -> list[Utterance]:
    """NeMo's beam file (``eval_beamsearch_ngram.py --preds_output_folder``): ``text\\tscore`` a
    line, ``beam_size`` consecutive lines per utterance. Utterance ids are their index (0, 1, …);
    references come from NeMo's JSON-lines manifest (its ``"text"``), one line per utterance."""
    path = Path(path)
    if beam_size < 1:
        raise ValueError(f"--beam-size must be at least 1, got {beam_size}")
    candidates: list[Candidate] = []
    for number, line in _lines(path):
        text, sep, score = line.rpartition("\t")
        if not sep:
            raise NbestFormatError(path, number, "expected '<text>\\t<score>'")
        candidates.append(Candidate(text=text, score=_float(path, number, score, "score")))
    if len(candidates) % beam_size:
        raise NbestFormatError(
            path,
            len(candidates),
            f"{len(candidates)} lines is not a multiple of the beam size {beam_size} (check --beam-size)",
        )
    refs: list[str] | None = None
    if manifest is not None:
        refs = []
        for number, line in _lines(Path(manifest)):
            if line.strip():
                try:
                    refs.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise NbestFormatError(manifest, number, 'expected a JSON object with "text"') from None
        if len(refs) * beam_size != len(candidates):
            raise NbestFormatError(
                manifest,
                None,
                f"{len(refs)} utterances, but the beam file has {len(candidates) // beam_size}",
            )
    return [
        Utterance(
            id=str(i),
            candidates=candidates[i * beam_size : (i + 1) * beam_size],
            reference=refs[i] if refs is not None else None,
        )
        for i in range(len(candidates) // beam_size)
    ]


def format_nemo(utterances: Iterable[Utterance]) -> str:
    return "".join(
        f"{c.text}\t{(c.total if c.total is not None else c.score)!r}\n"
        for u in utterances
        for c in u.candidates
    )


# -- one entry point per direction ----------------------------------------------------------------
@dataclass
class FormatOptions:
    acoustic_scale: float = 1.0  # kaldi: weight of ac_cost in the first-pass score
    beam_size: int = 0  # nemo: candidates per utterance
    manifest: str | None = None  # nemo: references, one JSON line per utterance


def read_nbest(path: str | Path, fmt: str, options: FormatOptions | None = None) -> list[Utterance]:
    options = options or FormatOptions()
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "kaldi":
        return read_kaldi(path, options.acoustic_scale)
    if fmt == "fairseq":
        return read_fairseq(path)
    if fmt == "nemo":
        if options.beam_size < 1:
            raise ValueError("the nemo format needs --beam-size (candidates per utterance)")
        return read_nemo(path, options.beam_size, options.manifest)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def write_nbest(
    path: str | Path, fmt: str, utterances: list[Utterance], options: FormatOptions | None = None
) -> None:
    """Write atomically: a file (a directory for Kaldi) appears complete or not at all."""
    options = options or FormatOptions()
    path = Path(path)
    if fmt == "kaldi":
        files = kaldi_files(utterances, options.acoustic_scale)

        def fill(d: Path) -> None:
            for name, text in files.items():
                (d / name).write_text(text, encoding="utf-8", newline="\n")

        write_dir_atomically(path, fill)
        return
    writers = {"jsonl": format_jsonl, "fairseq": format_fairseq, "nemo": format_nemo}
    if fmt not in writers:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    write_text_atomically(path, writers[fmt](utterances))
