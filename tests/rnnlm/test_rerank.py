"""Confusion sets, rerank metrics and the ``rnnlm benchmark rerank`` command, on tiny data."""

import json

import pytest
import torch

from model.models.loading import load_model
from model.quality.confusion import (
    HomophoneIndex,
    build_set,
    context_readings,
    load_items,
    save_items,
    split_sentences,
)
from model.quality.rerank import RerankResult, bootstrap_ci, paired_difference, rank_credit, rerank
from model.text.batching import with_boundaries
from model.text.data import load_split, write_corpus
from rnnlm.cli import main

# shi: 石 食 十 时 实 事 是 市; you: 油 有 又; le: 了
TRAIN = [
    "石油价格上涨了",
    "食油用完了",
    "十个人来了",
    "时间到了",
    "实在很好",
    "事情很多",
    "这是好的",
    "市场很大",
    "油价又涨了",
    "我有油",
] * 5
HELDOUT = [
    "厨房里食油用完了。今天市场里石油很多！",
    "他们说：“是时候了。”这个事情实在很好。",
    "油价又涨了十个",
    "我先走了。你走先吧",
]


@pytest.fixture(scope="module")
def index() -> HomophoneIndex:
    return HomophoneIndex.from_lines(TRAIN, min_count=5)


@pytest.mark.parametrize(
    "line, sentences",
    [
        ("没有句号", ["没有句号"]),
        ("你好。再见！", ["你好。", "再见！"]),
        ("他说：“你好。”我们走吧？好", ["他说：“你好。”", "我们走吧？", "好"]),
        ("。。", ["。。"]),
    ],
)
def test_split_sentences(line, sentences):
    assert split_sentences(line) == sentences


def test_context_readings_follow_the_sentence():
    assert context_readings("银行行长") == ["yin", "hang", "hang", "zhang"]
    assert context_readings("３个A。") == [None, "ge", None, None]


def test_homophone_index_counts_readings_in_context(index):
    assert set(index.homophones("食", "shi")) == {"石", "十", "时", "实", "事", "是", "市"}
    assert index.homophones("食", None) == []
    rare = HomophoneIndex.from_lines(TRAIN, min_count=6)  # every line is there 5 times
    assert rare.homophones("食", "shi") == []


def test_homophone_items_swap_one_character_for_a_frequent_homophone(index):
    items = build_set("homophone", HELDOUT, index, size=10, distractors=4, seed=3, min_len=4)
    assert len(items) >= 3
    for item in items:
        original = item.reference
        assert item.edits[item.answer] is None
        assert len(set(item.candidates)) == len(item.candidates) == 5
        for cand, edit in zip(item.candidates, item.edits, strict=True):
            if edit is None:
                continue
            diff = [i for i, (a, b) in enumerate(zip(original, cand, strict=True)) if a != b]
            assert diff == [edit["pos"]]
            assert original[edit["pos"]] == edit["from"] and cand[edit["pos"]] == edit["to"]
            reading = context_readings(original)[edit["pos"]]
            assert edit["to"] in index.homophones(edit["from"], reading)


def test_sets_are_reproducible_and_depend_on_the_seed(index):
    a = build_set("homophone", HELDOUT, index, size=10, distractors=3, seed=1, min_len=4)
    b = build_set("homophone", HELDOUT, index, size=10, distractors=3, seed=1, min_len=4)
    assert a == b
    others = [
        build_set("homophone", HELDOUT, index, size=10, distractors=3, seed=s, min_len=4) for s in range(2, 6)
    ]
    assert any(o != a for o in others)
    assert len({i.answer for s in others for i in s}) > 1  # the original moves around


def test_wordorder_items_swap_adjacent_characters():
    items = build_set("wordorder", HELDOUT, size=10, distractors=3, seed=0, min_len=4)
    assert len(items) >= 3
    for item in items:
        original = item.reference
        positions = [e["pos"] for e in item.edits if e is not None]
        assert len(set(positions)) == 3
        for cand, edit in zip(item.candidates, item.edits, strict=True):
            if edit is not None:
                p = edit["pos"]
                assert cand == original[:p] + original[p + 1] + original[p] + original[p + 2 :]
                assert cand != original


def test_sentences_without_enough_edits_are_skipped(index):
    assert build_set("homophone", ["了了了了了了"], index, size=5, distractors=1, min_len=2) == []
    assert build_set("wordorder", ["好好好好好"], size=5, distractors=1, min_len=2) == []
    with pytest.raises(ValueError, match="HomophoneIndex"):
        build_set("homophone", HELDOUT, None)
    with pytest.raises(ValueError, match="kind"):
        build_set("typo", HELDOUT, index)


def test_saved_sets_round_trip_and_bad_lines_are_named(index, tmp_path):
    items = build_set("homophone", HELDOUT, index, size=10, distractors=2, seed=0, min_len=4)
    path = save_items(tmp_path / "set.jsonl", items)
    assert load_items(path) == items
    path.write_text(path.read_text(encoding="utf-8") + '{"id": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"set.jsonl:{len(items) + 1}"):
        load_items(path)


@pytest.mark.parametrize(
    "scores, answer, top1, rr",
    [
        ([-1.0, -2.0, -3.0], 0, 1.0, 1.0),
        ([-1.0, -2.0, -3.0], 1, 0.0, 1 / 2),
        ([-1.0, -2.0, -3.0], 2, 0.0, 1 / 3),
        ([-1.0, -1.0, -3.0], 0, 1 / 2, (1 + 1 / 2) / 2),  # a tie at the top is a coin toss
        ([-0.5, -1.0, -1.0, -1.0], 2, 0.0, (1 / 2 + 1 / 3 + 1 / 4) / 3),
        ([-2.0] * 6, 4, 1 / 6, sum(1 / r for r in range(1, 7)) / 6),  # no information: chance
    ],
)
def test_rank_credit(scores, answer, top1, rr):
    got_top1, got_rr = rank_credit(scores, answer)
    assert got_top1 == pytest.approx(top1)
    assert got_rr == pytest.approx(rr)


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_items():
    small = [1.0, 0.0] * 10
    large = [1.0, 0.0] * 1000
    lo, hi = bootstrap_ci(small, seed=0)
    assert lo < 0.5 < hi
    lo2, hi2 = bootstrap_ci(large, seed=0)
    assert lo < lo2 < 0.5 < hi2 < hi
    assert bootstrap_ci(small, seed=0) == (lo, hi)  # seeded
    assert paired_difference([1, 1, 1], [0, 1, 0])["mean"] == pytest.approx(2 / 3)


def test_result_summary_counts_items():
    items = build_set("wordorder", HELDOUT, size=10, distractors=2, seed=0, min_len=4)
    scores = [[0.0 if j == it.answer else -1.0 for j in range(len(it.candidates))] for it in items]
    summary = RerankResult.from_scores(items, scores).summary()
    assert summary["items"] == len(items)
    assert summary["top1"] == summary["mrr"] == 1.0
    assert summary["chance_top1"] == pytest.approx(1 / 3)


def test_rerank_scores_are_the_models_total_logprob(tiny_model_dir, index):
    lm = load_model(tiny_model_dir)
    items = build_set("homophone", HELDOUT, index, size=10, distractors=3, seed=0, min_len=4)
    result, per_token = rerank(lm, items)
    for item, scores, tokens in zip(items, result.scores, per_token, strict=True):
        for cand, score, lp in zip(item.candidates, scores, tokens, strict=True):
            direct = lm.sequence_logprobs([with_boundaries(lm.tokenizer.encode(cand).ids)])[0]
            assert len(lp) == len(cand) + 1  # every character and <eos>
            assert score == pytest.approx(float(direct.sum()), abs=1e-4)
            assert torch.all(lp <= 0)
    assert result.top1 == [rank_credit(s, i.answer)[0] for s, i in zip(result.scores, items, strict=True)]


def test_cli_builds_saves_and_rescores_the_same_set(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "corpus"
    write_corpus(data, {"train": TRAIN, "valid": HELDOUT, "test": HELDOUT}, {"name": "tiny"})
    sets = tmp_path / "sets"
    argv = [
        "benchmark",
        "rerank",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--size",
        "4",
        "--distractors",
        "2",
        "--min-len",
        "4",
        "--min-count",
        "5",
        "--sets-dir",
        str(sets),
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == str(tiny_model_dir) and report["kind"] == "rnn"
    for kind in ("homophone", "wordorder"):
        r = report[kind]
        assert r["items"] >= 3
        assert 0 <= r["top1"] <= 1 and r["top1"] <= r["mrr"] <= 1
        assert r["top1_ci95"][0] <= r["top1"] <= r["top1_ci95"][1]
        assert r["chance_top1"] == pytest.approx(1 / 3)
    homophone = report["homophone"]
    assert main(["benchmark", "rerank", "--model", str(tiny_model_dir), "--items", homophone["set"]]) == 0
    again = json.loads(capsys.readouterr().out)[homophone["set"]]
    assert again["top1"] == homophone["top1"] and again["mrr"] == homophone["mrr"]


def test_cli_errors_name_the_problem(tiny_model_dir, tmp_path, capsys):
    assert main(["benchmark", "rerank", "--model", str(tiny_model_dir)]) == 2
    assert "--data" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert main(["benchmark", "rerank", "--model", str(missing), "--items", str(missing)]) == 1  # failure
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "rerank", "--model", str(tiny_model_dir), "--size", "0", "--data", "x"])
    assert "positive" in capsys.readouterr().err


# -- the results table -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quality_run(tmp_path_factory):
    """One `rnnlm benchmark quality` run on a tiny corpus: n-grams built, a seeded RNN, sets of 4 items."""
    from model.models.checkpoint import save_rnn
    from model.models.config import ModelConfig
    from model.models.network import RNNLM
    from model.text.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("quality")
    train = TRAIN + ["厨房里的油用完了", "你先走吧", "油价上涨了"] * 3
    write_corpus(root / "data", {"train": train, "valid": HELDOUT, "test": HELDOUT[::-1]}, {"name": "tiny"})
    torch.manual_seed(0)
    tok = Tokenizer.build(train, kind="char")  # the vocabulary the n-grams build too
    net = RNNLM(
        ModelConfig(
            vocab_size=tok.vocab_size,
            cell="lstm",
            emb_dim=8,
            hidden_dim=8,
            num_layers=1,
            dropout=0.0,
            tie_weights=True,
        )
    )
    save_rnn(root / "weights" / "tiny-rnn", net, tok, {"train_time_s": 12.0, "command": "rnnlm train (test)"})
    argv = [
        "benchmark",
        "quality",
        "--data",
        str(root / "data"),
        "--out",
        str(root / "RESULTS.md"),
        "--weights",
        str(root / "weights"),
        "--ngram-dir",
        str(root / "ngram"),
        "--sets-dir",
        str(root / "sets"),
        "--size",
        "4",
        "--distractors",
        "2",
        "--min-len",
        "4",
        "--min-count",
        "5",
    ]
    assert main(argv) == 0
    return root, argv


def test_quality_writes_every_row_with_its_command(quality_run):
    root, _ = quality_run
    result = json.loads((root / "RESULTS.json").read_text(encoding="utf-8"))
    names = [r["name"] for r in result["rows"]]
    assert names[:6] == [
        "unigram",
        "add-k 3-gram",
        "interpolated 5-gram",
        "Katz backoff 5-gram",
        "Kneser-Ney 3-gram",
        "Kneser-Ney 5-gram",
    ]
    assert names[6].startswith("tiny-rnn (LSTM 1×8)")
    assert "linear mixture" in names[7] and "log-linear" in names[8]
    markdown = (root / "RESULTS.md").read_text(encoding="utf-8")
    for row in result["rows"]:
        assert row["name"] in markdown and row["command"]
        assert 0 <= row["homophone"]["top1"] <= row["homophone"]["mrr"] <= 1
    rnn = result["rows"][6]
    assert rnn["train_time_s"] == 12.0 and rnn["size_bytes"] > 0
    assert result["rows"][8]["perplexity"] is None  # the log-linear score is not a distribution
    assert "## Where the RNN loses" in markdown and "## Quoted (not measured here)" in markdown


def test_quality_numbers_match_the_single_model_commands(quality_run, capsys):
    from model.models.evaluate import evaluate_lines
    from model.models.mixture import MixtureLanguageModel

    root, _ = quality_run
    result = json.loads((root / "RESULTS.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in result["rows"]}
    kn5_dir = root / "ngram" / "data-char-kn5"
    test = load_split(root / "data", "test")
    kn5, rnn = load_model(kn5_dir), load_model(root / "weights" / "tiny-rnn")
    assert rows["Kneser-Ney 5-gram"]["perplexity"] == pytest.approx(evaluate_lines(kn5, test)["perplexity"])
    mixture = next(r for r in result["rows"] if "linear mixture" in r["name"])
    lam = float(mixture["note"].split("λ = ")[1].split()[0])
    mixed = evaluate_lines(MixtureLanguageModel(rnn, kn5, lam), test)["perplexity"]
    assert mixture["perplexity"] == pytest.approx(mixed, rel=1e-3)  # λ is printed with 3 decimals
    spec = [
        "--size",
        "4",
        "--distractors",
        "2",
        "--min-len",
        "4",
        "--min-count",
        "5",
        "--sets-dir",
        str(root / "sets"),
    ]
    assert main(["benchmark", "rerank", "--model", str(kn5_dir), "--data", str(root / "data"), *spec]) == 0
    alone = json.loads(capsys.readouterr().out)
    for kind in ("homophone", "wordorder"):
        assert alone[kind]["top1"] == rows["Kneser-Ney 5-gram"][kind]["top1"]
        assert alone[kind]["mrr"] == rows["Kneser-Ney 5-gram"][kind]["mrr"]


def test_quality_analysis_margins_start_at_the_edit(quality_run):
    root, _ = quality_run
    analysis = json.loads((root / "RESULTS.json").read_text(encoding="utf-8"))["analysis"]
    for kind in ("homophone", "wordorder"):
        for profile in analysis["positions"][kind].values():
            assert profile["pairs"] == 8
            assert profile["mean_margin"]["before"] == pytest.approx(0.0, abs=1e-4)  # shared prefix
            total = sum(v for k, v in profile["mean_margin"].items())
            assert total == pytest.approx(profile["mean_total"], abs=1e-6)


def test_quality_reuses_cached_ngrams(quality_run, capsys):
    root, argv = quality_run
    stamp = (root / "ngram" / "data-char-kn5" / "config.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (root / "ngram" / "data-char-kn5" / "config.json").stat().st_mtime_ns == stamp
    assert "building" not in capsys.readouterr().err


def test_loglinear_weights_and_mixtures_combine_per_token():
    from model.quality.combine import loglinear_logprobs, mix_logprobs

    a, b = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -0.5])
    assert torch.equal(mix_logprobs(a, b, 1.0), a) and torch.equal(mix_logprobs(a, b, 0.0), b)
    expected = torch.log(0.25 * torch.exp(a) + 0.75 * torch.exp(b))
    assert torch.allclose(mix_logprobs(a, b, 0.25), expected)
    assert torch.allclose(loglinear_logprobs(a, b, 0.25), 0.25 * a + 0.75 * b)


def test_loglinear_option_reranks_with_the_weighted_sum(quality_run, capsys):
    root, _ = quality_run
    models = [str(root / "weights" / "tiny-rnn"), str(root / "ngram" / "data-char-kn5")]
    base = [
        "benchmark",
        "rerank",
        "--model",
        models[0],
        "--model",
        models[1],
        "--data",
        str(root / "data"),
        "--size",
        "4",
        "--distractors",
        "2",
        "--min-len",
        "4",
        "--min-count",
        "5",
        "--sets-dir",
        str(root / "sets"),
    ]
    for alpha, same_as in (("1", 0), ("0", 1)):
        assert main([*base, "--loglinear", alpha]) == 0
        first, second, combined = (json.loads(line) for line in capsys.readouterr().out.splitlines())
        assert combined["components"] == models
        alone = (first, second)[same_as]
        for kind in ("homophone", "wordorder"):
            pick = (combined[kind]["top1"], combined[kind]["mrr"])
            assert pick == (alone[kind]["top1"], alone[kind]["mrr"])
    assert main([*base[:4], *base[6:], "--loglinear", "0.5"]) == 2  # one model
    assert "exactly two" in capsys.readouterr().err
    assert main([*base, "--loglinear", "1.5"]) == 2
    assert "exactly two" in capsys.readouterr().err


def test_loglinear_weight_is_tuned_for_accuracy():
    from model.quality.combine import tune_loglinear_weight

    items = build_set("wordorder", HELDOUT, size=10, distractors=2, seed=0, min_len=4)
    good = [[torch.tensor([0.0 if j == it.answer else -1.0]) for j in range(3)] for it in items]
    bad = [[torch.tensor([-1.0 if j == it.answer else 0.0]) for j in range(3)] for it in items]
    # every α above 1/2 trusts the good model enough; the tie goes to the one nearest 1/2
    assert tune_loglinear_weight({"s": items}, {"s": good}, {"s": bad}) == 0.55
    assert tune_loglinear_weight({"s": items}, {"s": bad}, {"s": good}) == 0.45
    assert tune_loglinear_weight({"s": items}, {"s": good}, {"s": good}) == 0.5  # flat: no preference
