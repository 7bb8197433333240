"""The rescoring library: n-best readers and writers, the formula, CER/WER, the weight search."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from model.inference.formula import rank
from model.inference.scoring import score_candidates
from model.models.loading import load_model
from model.rescoring.combine import CandidateScores, Weights, rescore, text_length
from model.rescoring.errors import (
    ErrorCount,
    chosen_errors,
    corpus_errors,
    first_pass_choice,
    oracle_errors,
    utterance_errors,
)
from model.rescoring.formats import (
    FormatOptions,
    NbestFormatError,
    Utterance,
    read_fairseq,
    read_jsonl,
    read_kaldi,
    read_nbest,
    read_nemo,
    write_nbest,
    write_text_atomically,
)
from model.rescoring.score import distinct_texts, load_scores, merge_scores, save_scores, score_texts
from model.rescoring.tune import TuneProblem, tune, tune_weights

NBEST = Path(__file__).parent / "fixtures" / "nbest"
LN2 = math.log(2)


def plain(utts: list[Utterance]) -> list[tuple]:
    """What a round trip must keep: ids, references, extras, and each candidate's fields."""
    return [
        (
            u.id,
            u.reference,
            u.extra,
            [(c.text, pytest.approx(c.score, abs=1e-9), c.extra) for c in u.candidates],
        )
        for u in utts
    ]


# -- readers and writers -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt,name,options",
    [
        ("jsonl", "tiny.jsonl", FormatOptions()),
        ("kaldi", "kaldi", FormatOptions(acoustic_scale=0.1)),
        ("fairseq", "fairseq.txt", FormatOptions()),
        ("nemo", "nemo.tsv", FormatOptions(beam_size=2, manifest=str(NBEST / "nemo_manifest.json"))),
    ],
)
def test_each_format_round_trips(tmp_path, fmt, name, options):
    utts = read_nbest(NBEST / name, fmt, options)
    assert utts and all(u.candidates for u in utts)
    out = tmp_path / ("out" if fmt == "kaldi" else name)
    if fmt == "nemo":
        options = FormatOptions(beam_size=2, manifest=options.manifest)
    write_nbest(out, fmt, utts, options)
    assert plain(read_nbest(out, fmt, options)) == plain(utts)


def test_jsonl_reads_the_contract_and_keeps_extra_fields(tmp_path):
    utts = read_jsonl(NBEST / "tiny.jsonl")
    assert [u.id for u in utts] == ["dev-000001", "dev-000002", "dev-000003"]
    assert utts[0].reference == "厨房里食油用完了" and utts[2].reference is None
    assert utts[0].extra == {"speaker": "A"} and utts[0].candidates[0].extra == {"source": "first-pass"}
    assert [c.score for c in utts[0].candidates] == [-12.3, -12.5, -14.0]
    out = tmp_path / "o.jsonl"
    write_nbest(out, "jsonl", utts)
    original = [json.loads(line) for line in (NBEST / "tiny.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == original


def test_rescored_jsonl_gains_the_contract_fields(tmp_path):
    utts = read_jsonl(NBEST / "tiny.jsonl")
    scores = {t: CandidateScores({"m": -float(len(t))}, len(t)) for t in distinct_texts(utts)}
    rescore(utts, scores, Weights(models={"m": 1.0}))
    out = tmp_path / "o.jsonl"
    write_nbest(out, "jsonl", utts)
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    cand = first["candidates"][0]
    assert cand["lm"] == {"m": -8.0} and cand["length"] == 8 and cand["total"] == pytest.approx(-12.3 - 8.0)
    assert cand["source"] == "first-pass" and first["speaker"] == "A"
    assert first["ranking"] == [0, 1, 2] and first["best"] == 0  # equal LM scores: first pass decides


def test_kaldi_scores_are_negated_weighted_costs_and_the_lm_cost_is_rewritten(tmp_path):
    utts = read_kaldi(NBEST / "kaldi", acoustic_scale=0.1)
    assert [u.id for u in utts] == ["utt1", "utt2"]
    assert utts[0].reference == "厨房 里 食油 用完 了"
    first = utts[0].candidates[0]
    assert first.text == "厨房 里 石油 用完 了"
    assert first.score == pytest.approx(-(0.1 * 10.5 + 1.75))
    scores = {t: CandidateScores({"m": -2.0}, 5) for t in distinct_texts(utts)}
    rescore(utts, scores, Weights(models={"m": 0.5}, length_bonus=0.25))
    write_nbest(tmp_path / "out", "kaldi", utts, FormatOptions(acoustic_scale=0.1))
    lm = dict(line.split() for line in (tmp_path / "out" / "lm_cost").read_text().splitlines())
    ac = dict(line.split() for line in (tmp_path / "out" / "ac_cost").read_text().splitlines())
    assert ac["utt1-1"] == "10.5"  # unchanged
    total = -(0.1 * 10.5 + 1.75) + 0.5 * -2.0 + 0.25 * 5
    assert float(lm["utt1-1"]) == pytest.approx(-total - 0.1 * 10.5)
    again = read_kaldi(tmp_path / "out", acoustic_scale=0.1)
    assert again[0].candidates[0].score == pytest.approx(total)  # Kaldi's cost at that scale is -total


def test_fairseq_keeps_its_lines_and_converts_base_2():
    utts = read_fairseq(NBEST / "fairseq.txt")
    assert [u.id for u in utts] == ["1", "0"]  # file order, not sorted
    u = utts[0]
    assert u.reference == "厨房里食油用完了" and u.extra["source"] == "la cuisine n a plus d huile"
    assert [c.text for c in u.candidates] == ["厨房里石油用完了", "厨房里食油用完了"]
    assert u.candidates[0].score == pytest.approx(-1.5 * LN2)
    assert u.candidates[1].extra == {
        "detok": "厨房里食油用完了",
        "positional_scores": "-0.2 -0.3 -0.2 -0.5 -0.55",
    }


def test_nemo_groups_the_beam_and_reads_references():
    utts = read_nemo(NBEST / "nemo.tsv", beam_size=2, manifest=NBEST / "nemo_manifest.json")
    assert [len(u.candidates) for u in utts] == [2, 2]
    assert [u.reference for u in utts] == ["厨房里食油用完了", "今天天气很好"]
    assert utts[1].candidates[1].score == -8.25
    with pytest.raises(NbestFormatError, match="not a multiple of the beam size 3"):
        read_nemo(NBEST / "nemo.tsv", beam_size=3)


@pytest.mark.parametrize(
    "fmt,files,line,message",
    [
        (
            "jsonl",
            {"x.jsonl": '{"id": "a", "candidates": [{"text": "t", "score": 1}]}\n{"id": "b", oops}\n'},
            2,
            "not valid JSON",
        ),
        ("jsonl", {"x.jsonl": '{"id": "a", "candidates": [{"text": "t", "score": "high"}]}\n'}, 1, "score"),
        ("jsonl", {"x.jsonl": '{"id": "a", "candidates": []}\n'}, 1, "non-empty"),
        ("fairseq", {"x.txt": "S-0\tsrc\nH-0\t-1.0\tok\nH-0\thigh\tscore\n"}, 3, "not a number"),
        ("fairseq", {"x.txt": "H-0\t-1.0\tok\nH-0\tno score\n"}, 2, "expected"),
        ("fairseq", {"x.txt": "S-0\tsrc\nH-0 -1.0 spaces not tabs\n"}, 2, "expected"),
        ("nemo", {"x.tsv": "a\t-1\nb no tab\n"}, 2, "expected '<text>"),
        (
            "kaldi",
            {"text": "u-1 a\nu-2 b\n", "ac_cost": "u-1 1\nu-2 nan\n", "lm_cost": "u-1 1\nu-2 1\n"},
            2,
            "finite",
        ),
        (
            "kaldi",
            {"text": "u-1 a\nbadkey b\n", "ac_cost": "u-1 1\n", "lm_cost": "u-1 1\n"},
            2,
            "<utterance-id>-<N>",
        ),
    ],
)
def test_a_malformed_line_is_named(tmp_path, fmt, files, line, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    target = tmp_path if fmt == "kaldi" else tmp_path / next(iter(files))
    with pytest.raises(NbestFormatError, match=message) as err:
        read_nbest(target, fmt, FormatOptions(beam_size=1))
    assert isinstance(err.value, ValueError)
    assert f":{line}:" in str(err.value)


def test_kaldi_costs_must_cover_every_hypothesis(tmp_path):
    (tmp_path / "text").write_text("u-1 a\nu-2 b\n")
    (tmp_path / "ac_cost").write_text("u-1 1\n")
    (tmp_path / "lm_cost").write_text("u-1 1\nu-2 1\n")
    with pytest.raises(NbestFormatError, match=r"text:2: key 'u-2' has no line in .*ac_cost"):
        read_kaldi(tmp_path)


def test_kaldi_reads_the_file_names_of_rnnlmrescore_archives(tmp_path):
    for ours, theirs in [("text", "words_text"), ("ac_cost", "acwt"), ("lm_cost", "lmwt.withlm")]:
        (tmp_path / theirs).write_bytes((NBEST / "kaldi" / ours).read_bytes())
    expected = read_kaldi(NBEST / "kaldi", 0.1)
    for u in expected:
        u.reference = None  # no reference file here
    assert plain(read_kaldi(tmp_path, 0.1)) == plain(expected)
    (tmp_path / "acwt").unlink()
    with pytest.raises(NbestFormatError, match="ac_cost: missing"):
        read_kaldi(tmp_path)


def test_atomic_write_leaves_the_old_file_and_no_temp_on_error(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomically(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


# -- the formula ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,unit,tokens,expected",
    [
        ("厨房里 食油", "chars", None, 5),
        ("厨房里 食油", "words", None, 2),
        ("厨房里食油用完了", "words", None, 1),  # unsegmented Chinese: one run, one word
        ("the cat  sat", "words", None, 3),
        ("the cat  sat", "chars", None, 9),
        ("厨房里食油", "tokens", 5, 5),
    ],
)
def test_length_units(text, unit, tokens, expected):
    assert text_length(text, unit, tokens) == expected


def test_tokens_need_the_model_count_and_units_are_checked():
    with pytest.raises(ValueError, match="token count"):
        text_length("abc", "tokens")
    with pytest.raises(ValueError, match="length_unit"):
        Weights(models={"m": 1.0}, length_unit="bytes")


def test_the_formula_on_a_hand_computed_case():
    w = Weights(models={"fwd": 0.8, "bwd": 0.3}, first_pass_weight=1.0, length_bonus=0.5)
    # 1 × -12.3 + 0.8 × -20 + 0.3 × -22 + 0.5 × 8 = -12.3 - 16 - 6.6 + 4 = -30.9
    assert w.total(-12.3, {"fwd": -20.0, "bwd": -22.0}, 8) == pytest.approx(-30.9)
    assert rank([1.0, 3.0, 3.0, -1.0]) == [1, 2, 0, 3]  # ties keep input order


def test_weights_file_round_trips_with_metadata(tmp_path):
    w = Weights(models={"a": 0.5}, length_bonus=-0.25, length_unit="chars", metadata={"metric": "cer"})
    w.save(tmp_path / "w.json")
    back = Weights.load(tmp_path / "w.json")
    assert back == w and back.to_dict()["metric"] == "cer"
    (tmp_path / "bad.json").write_text('{"models": {"a": "heavy"}}')
    with pytest.raises(ValueError, match=r"models\.a"):
        Weights.load(tmp_path / "bad.json")


# -- CER / WER / accuracy -----------------------------------------------------------------------------
def test_error_rates_on_hand_computed_cases():
    assert utterance_errors("abxde", "abcd", "cer") == ErrorCount(2, 4)  # c->x, +e
    assert utterance_errors("厨房 里石油", "厨房里食油", "cer") == ErrorCount(1, 5)  # spaces ignored
    assert utterance_errors("a c d", "a b c", "wer") == ErrorCount(2, 3)  # -b, +d
    assert utterance_errors("", "a b", "wer") == ErrorCount(2, 2)
    assert utterance_errors("a  b", "a b", "accuracy") == ErrorCount(0, 1)
    assert utterance_errors("b a", "a b", "accuracy") == ErrorCount(1, 1)
    total = corpus_errors([("abxde", "abcd"), ("abc", "abc"), ("a", "abcd")], "cer")
    assert total == ErrorCount(2 + 0 + 3, 4 + 3 + 4) and total.rate == pytest.approx(5 / 11)


def test_first_pass_oracle_and_chosen_errors_on_the_fixture():
    utts = read_jsonl(NBEST / "tiny.jsonl")
    assert first_pass_choice(utts) == [0, 0, 0]
    # first pass: 石油 for 食油 (1 of 8), 汽 for 气 (1 of 6); the third has no reference
    assert chosen_errors(utts, [0, 0, 0], "cer") == ErrorCount(2, 14)
    assert oracle_errors(utts, "cer") == ErrorCount(0, 14)
    assert chosen_errors(utts, [2, 1, 0], "cer") == ErrorCount(1, 14)


# -- the weight search ----------------------------------------------------------------------------------
def two_candidate_problem(rows, lengths=None):
    """rows: (score_0, lm_0, err_0, score_1, lm_1, err_1) per utterance."""
    return TuneProblem.build(
        scores=[[r[0], r[3]] for r in rows],
        logprobs=[[[r[1]], [r[4]]] for r in rows],
        lengths=lengths or [[5, 5] for _ in rows],
        errors=[[r[2], r[5]] for r in rows],
        total=2 * len(rows),
    )


def test_tune_finds_the_lm_weight_window():
    # utterance 1 wants w > 1 (−1 − 9w > −10w), utterance 2 wants w < 3 (−10w > −3 − 9w)
    problem = two_candidate_problem([(0, -10, 1, -1, -9, 0), (0, -10, 0, -3, -9, 1)])
    result = tune(problem)
    assert result.first_pass_errors == 1 and result.errors == 0 and result.oracle_errors == 0
    assert 1 < result.model_weights[0] < 3
    assert problem.error_count(result.model_weights, result.length_bonus) == 0
    assert tune(problem) == result  # deterministic


def test_tune_finds_the_length_bonus_window():
    # equal LM scores; utterance 1 needs b > 1 (−1 + 5b > 4b), utterance 2 needs b < 1.5 (3b > −3 + 5b)
    problem = two_candidate_problem([(0, -4, 1, -1, -4, 0), (0, -4, 0, -3, -4, 1)], lengths=[[4, 5], [3, 5]])
    result = tune(problem)
    assert result.errors == 0 and 1 < result.length_bonus < 1.5


def test_tune_never_ends_worse_than_the_first_pass():
    # the model is wrong everywhere: any weight on it only adds errors
    problem = two_candidate_problem([(0, -20, 0, -1, -5, 1), (0, -30, 0, -0.5, -2, 1)])
    result = tune(problem)
    assert result.errors == result.first_pass_errors == 0
    assert problem.error_count(result.model_weights, result.length_bonus) == 0


def test_tune_weights_builds_the_problem_from_utterances():
    utts = read_jsonl(NBEST / "tiny.jsonl")
    good = {u.reference for u in utts if u.reference}
    scores = {t: CandidateScores({"m": 0.0 if t in good else -5.0}, len(t)) for t in distinct_texts(utts)}
    weights, result = tune_weights(utts, scores, ["m"], "chars", "cer")
    assert result.first_pass_errors == 2 and result.errors == 0
    assert weights.models["m"] > 0 and weights.first_pass_weight == 1.0
    assert (
        weights.metadata["dev_error_before"] == pytest.approx(2 / 14)
        and weights.metadata["dev_error_after"] == 0
    )


# -- scoring with a model ---------------------------------------------------------------------------------
def test_score_texts_matches_the_scoring_library(tiny_model_dir, tmp_path):
    lm = load_model(tiny_model_dir)
    texts = ["厨房里食油用完了", "你先走吧", "", "今天天气很好"]
    calls = []
    scored = score_texts(lm, texts, progress=calls.append)
    direct = score_candidates(lm, texts)
    for r in direct.results:
        assert scored[r.text][0] == pytest.approx(r.logprob, abs=1e-4)  # float32, other batches
        assert scored[r.text][1] == len(r.text)  # a character model: tokens = characters
    assert sum(calls) == len(texts)
    merged = merge_scores({"tiny": scored})
    assert (
        merged["你先走吧"].logprobs == {"tiny": scored["你先走吧"][0]} and merged["你先走吧"].num_tokens == 4
    )
    save_scores(tmp_path / "s.json", {"tiny": scored})
    assert load_scores(tmp_path / "s.json") == {"tiny": scored}
