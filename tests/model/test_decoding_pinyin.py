"""The pinyin task as confusion networks (model/quality/pinyin_cn.py): exact slot posteriors, the
same utterances as the n-best task, and decoding them."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from model.decoding import DecodeOptions, decode_cn
from model.models.ngram.model import build_ngram
from model.quality.pinyin_cn import pinyin_cn_set, slot_posteriors, write_pinyin_cns
from model.quality.tasks import TaskConfig, build_lattice, build_task, sentence_logprobs

from .test_tasks import TRAIN, VALID, index, lm, write_task_corpus  # noqa: F401 (fixtures)


def test_slot_posteriors_are_the_brute_force_marginals(lm):  # noqa: F811
    lattice = [["厨", "出"], ["房", "方", "放"], ["里"], ["食", "石", "十"], ["油"]]
    texts = ["".join(p) for p in itertools.product(*lattice)]
    joint = torch.tensor(sentence_logprobs(lm, texts), dtype=torch.float64)
    joint -= torch.logsumexp(joint, dim=0)
    slots = slot_posteriors(lm, lattice)
    for k, slot in enumerate(slots):
        assert sorted(c for c, _ in slot) == sorted(lattice[k])
        assert [s for _, s in slot] == sorted((s for _, s in slot), reverse=True)  # best first
        for ch, score in slot:
            mask = torch.tensor([t[k] == ch for t in texts])
            assert score == pytest.approx(float(torch.logsumexp(joint[mask], dim=0)), abs=1e-5)
        assert math.fsum(math.exp(s) for _, s in slot) == pytest.approx(1.0, abs=1e-5)


def test_only_a_bigram_gives_exact_posteriors():
    kn3 = build_ngram(lm_tokenizer(), TRAIN, order=3)
    with pytest.raises(ValueError, match="bigram"):
        slot_posteriors(kn3, [["厨"]])


def lm_tokenizer():
    from model.text.tokenizer import Tokenizer

    return Tokenizer.build(TRAIN, kind="char")


def test_the_sets_hold_the_n_best_tasks_utterances(lm, index, tmp_path):  # noqa: F811
    cfg = TaskConfig(sentences=4, nbest=5, beam=8, seed=3)
    data = write_task_corpus(tmp_path / "corpus")
    build_task("pinyin", data, tmp_path / "task", cfg)
    manifest = write_pinyin_cns(data, tmp_path / "task", cfg)
    for name in ("dev", "test"):
        nbest = [json.loads(line) for line in (tmp_path / "task" / f"{name}.jsonl").read_text().splitlines()]
        cns = [json.loads(line) for line in (tmp_path / "task" / f"{name}.cn.jsonl").read_text().splitlines()]
        assert [u["id"] for u in cns] == [u["id"] for u in nbest]
        assert [u["reference"] for u in cns] == [u["reference"] for u in nbest]
        assert [u["pinyin"] for u in cns] == [u["pinyin"] for u in nbest]
        for u in cns:
            assert len(u["slots"]) == len(u["reference"])
        assert 0 <= manifest["sets"][name]["lattice_oracle_cer"] <= manifest["sets"][name]["consensus_cer"]
    assert json.loads((tmp_path / "task" / "cn-manifest.json").read_text())["task"] == "pinyin-cn"


def test_a_set_decodes_with_the_first_pass_as_its_model(lm, index):  # noqa: F811
    utterances, figures = pinyin_cn_set(lm, index, VALID, TaskConfig(sentences=3, seed=0))
    assert figures["utterances"] == len(utterances) == 3
    for u in utterances:
        lattice, _ = build_lattice(u["reference"], index)
        assert [sorted(c for c, _ in slot) for slot in u["slots"]] == [sorted(s) for s in lattice]
        best = decode_cn(lm, u["slots"], DecodeOptions(beam=8, lm_weight=0.0))[0]
        assert best.text == "".join(slot[0][0] for slot in u["slots"])  # no LM: each slot's best
