"""The pinyin task as confusion networks: every syllable's characters with the first pass's posteriors.

The pinyin task (:mod:`model.quality.tasks`) hands a second pass the first pass's 20 best
sentences. Here the same utterances (same sentences, same ids: ``dev-000001`` …) are written as
what a recognizer's confusion network holds instead: one slot per character, every character
read that way in train (:func:`~model.quality.tasks.build_lattice`), each with its log posterior
under the first pass (the Kneser-Ney bigram), computed exactly by forward-backward over the
slots::

    α_k(c)  = log Σ_c' exp(α_{k-1}(c') + log P(c | c'))         α_0(c) = log P(c | <bos>)
    β_k(c)  = log Σ_c" exp(log P(c" | c) + β_{k+1}(c"))          β_K(c) = log P(<eos> | c)
    score_k(c) = α_k(c) + β_k(c) - log Z                          (log Z = log Σ_c exp α_K + β_K)

So ``score_k(c)`` is the log of the first pass's probability that slot k is ``c``, summed over all
its sentences, and a slot's scores sum to 1 in probability. A character that is not Chinese is a
slot of its own, with score 0. Each line of ``dev.cn.jsonl`` / ``test.cn.jsonl`` is::

    {"id": "dev-000001", "reference": "…", "slots": [[["出", -0.12], ["初", -2.6], …], …],
     "pinyin": "chu fang li …", "source": {"split": "valid", "line": 17, "sentence": 2}}

best-scored alternative first. Beside them, ``cn-manifest.json`` records the parameters and each
set's figures: the per-slot argmax ("consensus") CER, the lattice oracle CER (characters no slot
offers), slots and alternatives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from model.models.lm import LanguageModel
from model.quality.confusion import HomophoneIndex
from model.quality.tasks import PARAMETERS, SETS, TaskConfig, build_lattice, drawn_sentences, first_pass_model
from model.rescoring.errors import ErrorCount, utterance_errors
from model.text.data import load_split, write_text_atomically
from model.text.tokenizer import BOS_ID, EOS_ID

Slots = list[list[tuple[str, float]]]


def slot_posteriors(lm: LanguageModel, lattice: Sequence[Sequence[str]]) -> Slots:
    """Each slot's characters with their log posterior under ``lm`` (a bigram: order 2 at most),
    best first (ties: the lattice's order)."""
    order = getattr(lm, "order", None)
    if order is None or order > 2:
        raise ValueError("exact slot posteriors need a first pass that looks one token back (a bigram)")
    ids = [torch.tensor([lm.tokenizer.encode(ch).ids[0] for ch in slot]) for slot in lattice]  # (C_k,)
    # next[k]: (C_k, V) log P(· | c) for each character c of slot k; start: (V,) after <bos>.
    start = lm.next_token_logprobs([[BOS_ID]])[0].double()
    after = [lm.next_token_logprobs([[BOS_ID, int(i)] for i in slot_ids]).double() for slot_ids in ids]
    alpha = [start[ids[0]]]  # (C_0,)
    for k in range(1, len(ids)):
        trans = after[k - 1][:, ids[k]]  # (C_{k-1}, C_k)
        alpha.append(torch.logsumexp(alpha[-1][:, None] + trans, dim=0))
    beta = [after[-1][:, EOS_ID]]  # (C_K,)
    for k in range(len(ids) - 2, -1, -1):
        trans = after[k][:, ids[k + 1]]  # (C_k, C_{k+1})
        beta.insert(0, torch.logsumexp(trans + beta[0][None, :], dim=1))
    log_z = torch.logsumexp(alpha[-1] + beta[-1], dim=0)
    slots: Slots = []
    for chars, a, b in zip(lattice, alpha, beta, strict=True):
        post = (a + b - log_z).tolist()
        ranked = sorted(range(len(chars)), key=lambda i: -post[i])
        slots.append([(chars[i], round(post[i], 6)) for i in ranked])
    return slots


def pinyin_cn_set(
    lm: LanguageModel,
    index: HomophoneIndex,
    lines: Sequence[str],
    cfg: TaskConfig,
    name: str = "dev",
    split: str = "valid",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The confusion networks of one set (the utterances of :func:`~model.quality.tasks.pinyin_set`)."""
    utterances: list[dict[str, Any]] = []
    consensus = oracle = ErrorCount(0, 0)
    alternatives = 0
    for line_no, sent_no, sentence in drawn_sentences(lines, cfg.seed, cfg.min_len, cfg.max_len):
        if len(utterances) == cfg.sentences:
            break
        lattice, readings = build_lattice(sentence, index, cfg.max_candidates)
        slots = slot_posteriors(lm, lattice)
        utterances.append(
            {
                "id": f"{name}-{len(utterances) + 1:06d}",
                "reference": sentence,
                "slots": [[[c, s] for c, s in slot] for slot in slots],
                "pinyin": " ".join(
                    r if r is not None else ch for ch, r in zip(sentence, readings, strict=True)
                ),
                "source": {"split": split, "line": line_no, "sentence": sent_no},
            }
        )
        consensus += utterance_errors("".join(slot[0][0] for slot in slots), sentence, "cer")
        best = "".join(ch if ch in slot else slot[0] for ch, slot in zip(sentence, lattice, strict=True))
        oracle += utterance_errors(best, sentence, "cer")
        alternatives += sum(len(slot) for slot in slots)
    slots_total = sum(len(u["slots"]) for u in utterances)
    figures = {
        "utterances": len(utterances),
        "slots": slots_total,
        "alternatives_per_slot": alternatives / max(slots_total, 1),
        "consensus_cer": consensus.rate,  # each slot's best-scored character
        "lattice_oracle_cer": oracle.rate,  # the best any path can do
    }
    return utterances, figures


def write_pinyin_cns(
    data_dir: str | Path, out_dir: str | Path, cfg: TaskConfig | None = None
) -> dict[str, Any]:
    """Write ``dev.cn.jsonl``, ``test.cn.jsonl`` and ``cn-manifest.json`` to ``out_dir`` (beside the
    n-best files ``rnnlm task pinyin`` writes with the same ``cfg``). Returns the manifest."""
    cfg = cfg or TaskConfig()
    started = time.time()
    data = Path(data_dir)
    train = load_split(data, "train")
    if not train:
        raise ValueError(f"{data / 'train.txt'}: no lines to count the first-pass model on")
    lm = first_pass_model(train, cfg.first_pass_order)
    index = HomophoneIndex(HomophoneIndex.count_readings(train), cfg.min_count)
    files: dict[str, str] = {}
    sets: dict[str, Any] = {}
    for name, split in SETS:
        utterances, figures = pinyin_cn_set(lm, index, load_split(data, split), cfg, name, split)
        files[f"{name}.cn.jsonl"] = "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in utterances)
        sets[name] = {"file": f"{name}.cn.jsonl", "split": split, **figures}
    manifest = {
        "task": "pinyin-cn",
        "parameters": {k: v for k, v in asdict(cfg).items() if k in PARAMETERS["pinyin"]},
        "data": {"dir": str(data)},
        "score": f"log posterior of the slot's character under the first pass (Kneser-Ney {cfg.first_pass_order}-gram)",
        "sets": sets,
        "elapsed_seconds": round(time.time() - started, 2),
    }
    files["cn-manifest.json"] = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    out = Path(out_dir)
    for filename, text in files.items():
        write_text_atomically(out / filename, text)
    return manifest
