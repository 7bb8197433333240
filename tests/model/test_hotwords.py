"""Hotwords (contextual biasing) in the scoring formula, and the rare-name set that measures them."""

from __future__ import annotations

import pytest

from model.inference.formula import hotword_bonus
from model.inference.scoring import ScoreOptions, score_candidates
from model.quality.confusion import HomophoneIndex
from model.quality.hotwords import build_hotword_set, names_in, shuffled_hotwords, tagged_words


@pytest.mark.parametrize(
    ("text", "hotwords", "bonus"),
    [
        ("李素丽在公交车上", [("李素丽", 2.0)], 2.0),
        ("李素利在公交车上", [("李素丽", 2.0)], 0.0),
        ("李素丽和李素丽", [("李素丽", 1.5), ("公交", 1.0)], 3.0),
        ("aaa", [("aa", 1.0)], 1.0),  # non-overlapping, as str.count
        ("任何文字", [], 0.0),
    ],
)
def test_hotword_bonus_is_per_occurrence(text, hotwords, bonus) -> None:
    assert hotword_bonus(text, hotwords) == pytest.approx(bonus)


def test_hotwords_turn_a_ranking_and_are_reported(tiny_model_dir) -> None:
    from model.models.loading import load_model

    lm = load_model(tiny_model_dir)
    plain = score_candidates(lm, ["厨房里食油用完了", "厨房里石油用完了"])
    loser = plain.ranking[-1]
    phrase = ["食油", "石油"][loser]
    biased = score_candidates(
        lm, ["厨房里食油用完了", "厨房里石油用完了"], ScoreOptions(hotwords=((phrase, 50.0),))
    )
    assert biased.ranking[0] == loser
    assert biased.results[loser].hotword_bonus == 50.0 and biased.results[1 - loser].hotword_bonus == 0.0
    assert biased.results[loser].logprob == pytest.approx(
        plain.results[loser].logprob
    )  # the LM term is untouched


@pytest.mark.parametrize("bad", [(("", 1.0),), (("名字", float("nan")),), (("名字", float("inf")),)])
def test_score_options_refuse_empty_phrases_and_infinite_bonuses(bad) -> None:
    with pytest.raises(ValueError, match="hotwords"):
        ScoreOptions(hotwords=bad)


def test_names_join_a_surname_and_a_given_name() -> None:
    words = tagged_words("19980101-01-001-002/m  [中国/ns  人民/n]nt  江/nr  泽民/nr  在/p  北京/ns  讲话/v")
    assert ("人民", "n") in words
    assert list(names_in(words)) == ["中国", "江泽民", "北京"]


def test_the_set_edits_only_the_rare_name_and_the_control_never_holds_it() -> None:
    common = "我们/r  今天/t  在/p  北京/ns  开会/v  。/w"
    rare = "记者/n  李/nr  素丽/nr  在/p  北京/ns  报道/v  了/u  这件事/r  。/w"
    raw = [common] * 18 + [rare, rare.replace("李/nr  素丽", "王/nr  小明")]
    index = HomophoneIndex(
        {"li": {"李": 30, "利": 30, "理": 30}, "su": {"素": 30, "速": 30}, "wang": {"王": 30, "网": 30}}, 20
    )
    items = build_hotword_set(raw, index, split="valid", size=10, distractors=2, max_train_count=0)
    assert [item.hotword for item in items] == ["李素丽"]  # 北京 is in train; 王小明 (test) is not valid
    assert items and all(item.hotword in item.candidates[item.answer] for item in items)
    for item in items:
        start = item.candidates[item.answer].index(item.hotword)
        for i, c in enumerate(item.candidates):
            if i != item.answer:
                diff = [
                    k for k, (a, b) in enumerate(zip(c, item.candidates[item.answer], strict=True)) if a != b
                ]
                assert len(diff) == 1 and start <= diff[0] < start + len(item.hotword)
    for item, other in zip(items, shuffled_hotwords(items), strict=True):
        assert not other or other not in item.candidates[item.answer]  # "" (no other name): no hotword
