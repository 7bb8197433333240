"""The rescoring tasks' n-best files: the pinyin lattice and beam search, the word-order lists, and
the files on disk (tiny hand-written corpus, seeded; no data/pd98 needed)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from model.quality.confusion import HomophoneIndex, context_readings
from model.quality.tasks import (
    TaskConfig,
    beam_search,
    build_lattice,
    build_task,
    first_pass_model,
    pinyin_set,
    reorderings,
    sentence_logprobs,
    wordorder_set,
)
from model.rescoring.formats import read_jsonl
from model.text.batching import with_boundaries
from model.text.data import sha256_file, write_corpus
from model.text.tokenizer import BOS_ID, EOS_ID

TRAIN = [
    "厨房里食油用完了。",
    "石油价格今年上涨了。",
    "十个人在厨房里做饭。",
    "他们是银行的职员。",
    "我们一起去银行办事。",
    "食品安全非常重要。",
    "今天的天气很好。",
    "明天天气也很好。",
    "他在市场买了石头。",
    "新华社记者报道了这件事。",
] * 3
VALID = [
    "厨房里石油用完了。他们去市场买食品。",
    "今天的天气也很好。我们一起去银行。",
    "十个人在市场里做饭。",
]
TEST = [
    "新华社记者在银行办事。",
    "明天的石油价格很好。",
    "他们是市场的职员。",
]


@pytest.fixture(scope="module")
def lm():
    return first_pass_model(TRAIN, 2)


@pytest.fixture(scope="module")
def index():
    return HomophoneIndex.from_lines(TRAIN, min_count=1)


def write_task_corpus(path: Path, valid: list[str] = VALID, test: list[str] = TEST) -> Path:
    write_corpus(path, {"train": TRAIN, "valid": valid, "test": test}, {"name": "tiny tasks"})
    return path


def test_the_lattice_offers_every_train_character_read_like_the_syllable(index):
    lattice, readings = build_lattice("厨房里石油用完了。", index)
    assert readings[3] == "shi"
    train_shi = {
        ch for line in TRAIN for ch, r in zip(line, context_readings(line), strict=True) if r == "shi"
    }
    assert train_shi >= {"石", "食", "十", "是", "市"}
    assert set(lattice[3]) == train_shi
    assert len(lattice[3]) == len(set(lattice[3]))
    # capped: the K characters read that way most often in train (事 石 食: twice per copy of
    # TRAIN, 十 市 是 once), ties by code point
    capped, _ = build_lattice("厨房里石油用完了。", index, max_candidates=2)
    assert capped[3] == ["事", "石"]


def test_a_character_the_recognizer_never_saw_with_its_reading_cannot_be_written(lm, index):
    lattice, _ = build_lattice("厨房里时油用完了。", index)
    assert "时" not in lattice[3]  # never in train: the oracle misses it, as a real recognizer does
    nbest = beam_search(lm, lattice, beam=64, nbest=10)
    assert all(text[3] != "时" for text, _ in nbest)


def test_non_chinese_characters_pass_through(lm, index):
    sentence = "油价涨了３％，OK。"
    lattice, readings = build_lattice(sentence, index)
    for i, ch in enumerate(sentence):
        if ch in "３％，OK。":
            assert lattice[i] == [ch] and readings[i] is None
    for text, _ in beam_search(lm, lattice, beam=16, nbest=5):
        assert len(text) == len(sentence)
        assert [text[i] for i in range(4, len(text))] == list("３％，OK。")


def exhaustive(lm, lattice):
    texts = ["".join(p) for p in itertools.product(*lattice)]
    scores = sentence_logprobs(lm, texts)
    return sorted(zip(texts, scores, strict=True), key=lambda ts: (-ts[1], ts[0]))


def test_a_wide_beam_finds_exactly_the_exhaustive_nbest(lm, index):
    lattice, _ = build_lattice("石油是食品。", index, max_candidates=3)
    paths = 1
    for slot in lattice:
        paths *= len(slot)
    assert paths > 20
    truth = exhaustive(lm, lattice)
    found = beam_search(lm, lattice, beam=paths, nbest=10)
    assert [t for t, _ in found] == [t for t, _ in truth[:10]]
    assert [s for _, s in found] == pytest.approx([s for _, s in truth[:10]], abs=1e-9)


def test_a_narrow_beam_never_beats_the_exhaustive_best_and_keeps_its_nbest_sorted(lm, index):
    lattice, _ = build_lattice("石油是食品。", index)
    truth = exhaustive(lm, lattice)
    assert len(truth) == 6 * 6 * 6
    found = beam_search(lm, lattice, beam=4, nbest=4)
    assert len(found) == 4
    assert found[0][1] <= truth[0][1] + 1e-9
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    assert len({t for t, _ in found}) == 4


def test_scores_are_the_bigrams_whole_sentence_logprob(lm, index):
    lattice, _ = build_lattice("厨房里石油用完了。", index)
    for text, score in beam_search(lm, lattice, beam=8, nbest=5):
        # step through the model by hand: <bos> context, every character, then <eos>
        ids = lm.tokenizer.encode(text).ids
        logp, state = lm.step(lm.start_state(1), torch.tensor([BOS_ID]))
        total = 0.0
        for token in [*ids, EOS_ID]:
            total += float(logp[0, token])
            logp, state = lm.step(state, torch.tensor([token]))
        assert score == pytest.approx(total, abs=1e-3)
        seq = with_boundaries(ids)
        assert score == pytest.approx(float(lm.sequence_logprobs([seq])[0].sum()), abs=1e-9)


def test_pinyin_sets_are_distinct_sorted_nbests_with_the_error_figures(lm, index):
    cfg = TaskConfig(sentences=5, nbest=6, beam=12, seed=3)
    utterances, figures = pinyin_set(lm, index, VALID, cfg, "dev", "valid")
    assert len(utterances) == figures["utterances"] == 5  # 5 usable sentences in VALID
    for u in utterances:
        texts = [c["text"] for c in u["candidates"]]
        scores = [c["score"] for c in u["candidates"]]
        assert 1 <= len(texts) <= 6 and len(set(texts)) == len(texts)
        assert scores == sorted(scores, reverse=True)
        assert all(len(t) == len(u["reference"]) for t in texts)
        assert len(u["pinyin"].split()) == len(u["reference"])
    assert 0 <= figures["oracle_cer"] <= figures["first_pass_cer"] <= 1
    assert figures["reference_chars"] == sum(len(u["reference"]) for u in utterances)


def test_reorderings_swap_adjacent_chunks_of_chinese_characters():
    assert reorderings("你先走", max_chunk=1) == ["先你走", "你走先"]
    assert reorderings("你先走", max_chunk=2) == ["先你走", "先走你", "走你先", "你走先"]
    assert reorderings("好好", max_chunk=1) == []  # the same text is never a distractor
    assert reorderings("你，走", max_chunk=3) == []  # punctuation is not moved


def test_wordorder_lists_hold_the_reference_and_its_best_scored_reorderings(lm):
    cfg = TaskConfig(sentences=5, nbest=4, seed=1)
    utterances, figures = wordorder_set(lm, VALID, cfg, "dev", "valid")
    assert figures["utterances"] == len(utterances) == 5
    correct = 0
    for u in utterances:
        texts = [c["text"] for c in u["candidates"]]
        scores = [c["score"] for c in u["candidates"]]
        assert u["reference"] in texts and len(set(texts)) == len(texts) == 4
        assert all(sorted(t) == sorted(u["reference"]) for t in texts)
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx(sentence_logprobs(lm, texts), abs=1e-9)
        # the distractors are the reorderings the first pass likes best
        others = reorderings(u["reference"], cfg.max_chunk)
        worst_kept = min(s for t, s in zip(texts, scores, strict=True) if t != u["reference"])
        assert sum(s > worst_kept + 1e-9 for s in sentence_logprobs(lm, others)) <= 2
        correct += texts[0] == u["reference"]
    assert figures["first_pass_accuracy"] == correct / 5


@pytest.mark.parametrize("task", ["pinyin", "wordorder"])
def test_task_files_parse_as_nbest_jsonl_and_dev_never_reads_test(tmp_path, task):
    data = write_task_corpus(tmp_path / "corpus")
    cfg = TaskConfig(sentences=4, nbest=3, beam=6)
    manifest = build_task(task, data, tmp_path / "out", cfg)
    valid_text = (data / "valid.txt").read_text(encoding="utf-8")
    test_text = (data / "test.txt").read_text(encoding="utf-8")
    for name, own, other in (("dev", valid_text, test_text), ("test", test_text, valid_text)):
        path = tmp_path / "out" / f"{name}.jsonl"
        parsed = read_jsonl(path)  # the rescoring tools' reader
        raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [u.id for u in parsed] == [f"{name}-{i:06d}" for i in range(1, len(raw) + 1)]
        for u, obj in zip(parsed, raw, strict=True):
            assert u.reference in own and u.reference not in other
            assert obj["source"]["split"] == ("valid" if name == "dev" else "test")
            assert all(isinstance(c["score"], float) for c in obj["candidates"])
            assert set(obj["candidates"][0]) == {"text", "score"}
        assert manifest["sets"][name]["utterances"] == len(raw)
    assert manifest["data"]["sha256"] == {
        s: sha256_file(data / f"{s}.txt") for s in ("train", "valid", "test")
    }
    assert json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert ("pypinyin" in manifest) == (task == "pinyin")
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_outputs_are_deterministic_for_a_seed(tmp_path):
    data = write_task_corpus(tmp_path / "corpus")
    files = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 5)):
        build_task("pinyin", data, tmp_path / run, TaskConfig(sentences=2, nbest=3, beam=6, seed=seed))
        files[run] = (tmp_path / run / "dev.jsonl").read_bytes()
    assert files["a"] == files["b"]
    assert files["a"] != files["c"]  # another seed draws other sentences


def test_nothing_is_written_when_a_split_is_missing(tmp_path):
    data = write_task_corpus(tmp_path / "corpus")
    (data / "test.txt").unlink()
    with pytest.raises(FileNotFoundError):
        build_task("wordorder", data, tmp_path / "out", TaskConfig(sentences=2, nbest=3))
    assert not (tmp_path / "out").exists()


def test_bad_parameters_are_refused(index):
    with pytest.raises(ValueError, match="max_len"):
        TaskConfig(min_len=10, max_len=5)
    with pytest.raises(ValueError, match="nbest"):
        TaskConfig(nbest=0)
    with pytest.raises(ValueError, match="task must be"):
        build_task("spelling", ".", ".", TaskConfig())
    backward = first_pass_model(TRAIN, 2)
    backward.tokenizer.direction = "backward"
    with pytest.raises(ValueError, match="forward character model"):
        beam_search(backward, build_lattice("石油是食品。", index)[0], beam=4, nbest=2)
