"""`rnnlm task pinyin|wordorder`: the files it writes, and nothing written on any error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.text.data import write_corpus
from rnnlm.cli import main

TRAIN = [
    "厨房里食油用完了。",
    "石油价格今年上涨了。",
    "十个人在厨房里做饭。",
    "他们是银行的职员。",
    "我们一起去银行办事。",
    "新华社记者报道了这件事。",
] * 3
VALID = ["厨房里石油用完了。他们去市场买食品。", "我们一起去银行。"]
TEST = ["新华社记者在银行办事。", "石油价格上涨了１０％。"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    write_corpus(tmp_path / "corpus", {"train": TRAIN, "valid": VALID, "test": TEST}, {"name": "tiny"})
    return tmp_path / "corpus"


@pytest.mark.parametrize(
    "action,extra",
    [("pinyin", ["--beam", "8", "--max-candidates", "4"]), ("wordorder", ["--max-chunk", "2"])],
)
def test_task_writes_dev_test_and_manifest(corpus, tmp_path, capsys, action, extra):
    out = tmp_path / "out"
    args = ["task", action, "--data", str(corpus), "--out", str(out), "--sentences", "2", "--nbest", "3"]
    assert main([*args, *extra]) == 0
    printed = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert printed["sets"] == manifest["sets"]
    assert manifest["task"] == action and manifest["parameters"]["nbest"] == 3
    for name in ("dev", "test"):
        lines = (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == manifest["sets"][name]["utterances"] == 2
        for line in lines:
            u = json.loads(line)
            assert 1 <= len(u["candidates"]) <= 3
    if action == "pinyin":
        assert manifest["parameters"]["max_candidates"] == 4
        assert 0 <= manifest["sets"]["test"]["oracle_cer"] <= manifest["sets"]["test"]["first_pass_cer"]
    else:
        assert manifest["sets"]["dev"]["oracle_accuracy"] == 1.0


def test_a_bad_data_directory_is_named_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-corpus"
    assert main(["task", "pinyin", "--data", str(missing), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not out.exists()


def test_a_missing_split_fails_before_anything_is_written(corpus, tmp_path, capsys):
    (corpus / "test.txt").unlink()  # dev could be built; the task is written whole or not at all
    out = tmp_path / "out"
    assert main(["task", "wordorder", "--data", str(corpus), "--out", str(out)]) == 1
    assert "test.txt" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "options,message",
    [
        (["--beam", "2", "--nbest", "5"], "--beam"),
        (["--min-len", "20", "--max-len", "10"], "--max-len"),
        (["--sentences", "0"], "--sentences"),
        (["--max-candidates", "-1"], "--max-candidates"),
    ],
)
def test_out_of_range_options_are_usage_errors(corpus, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    try:
        status = main(["task", "pinyin", "--data", str(corpus), "--out", str(out), *options])
    except SystemExit as e:  # argparse's own checks leave through SystemExit(2)
        status = e.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_task_help_lists_both_actions(capsys):
    with pytest.raises(SystemExit) as done:
        main(["task", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "pinyin" in out and "wordorder" in out


def test_rerank_sets_become_nbest_files_with_the_reference_among_the_candidates(corpus, tmp_path, capsys):
    from model.quality.confusion import load_items
    from model.rescoring.formats import read_jsonl

    out, sets = tmp_path / "rerank", tmp_path / "sets"
    args = ["task", "rerank", "--kind", "wordorder", "--data", str(corpus), "--out", str(out)]
    assert main([*args, "--size", "2", "--distractors", "2", "--sets-dir", str(sets)]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for name, split in (("dev", "valid"), ("test", "test")):
        items = load_items(sets / f"{manifest['sets'][name]['set']}.jsonl")
        assert split in manifest["sets"][name]["set"]
        utterances = read_jsonl(out / f"{name}.jsonl")
        assert utterances and len(utterances) == manifest["sets"][name]["utterances"]
        assert [u.reference for u in utterances] == [i.reference for i in items]
        for u, item in zip(utterances, items, strict=True):
            assert [c.text for c in u.candidates] == item.candidates
            assert {c.score for c in u.candidates} == {0.0}


def test_pinyin_cn_writes_confusion_networks_beside_the_nbest(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["task", "pinyin", "--data", str(corpus), "--out", str(out), "--sentences", "2", "--nbest", "3"]
    assert main([*args, "--beam", "8", "--cn"]) == 0
    for name in ("dev", "test"):
        nbest = [json.loads(line)["id"] for line in (out / f"{name}.jsonl").read_text().splitlines()]
        cns = [json.loads(line) for line in (out / f"{name}.cn.jsonl").read_text().splitlines()]
        assert [u["id"] for u in cns] == nbest  # the same utterances
        assert all(u["slots"] and all(slot for slot in u["slots"]) for u in cns)
