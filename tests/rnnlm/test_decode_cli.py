"""``rnnlm decode`` (rnnlm/decode_cli.py): confusion networks and SLF lattices from files."""

from __future__ import annotations

import argparse
import gzip
import json

import pytest

from model.inference.scoring import score_candidates
from model.models.loading import load_model
from rnnlm.decode_cli import add_parser, run

CNS = [
    {"id": "u1", "slots": [[["厨", -0.1], ["出", -0.3]], [["房", -0.2], ["方", -0.2]]], "reference": "厨房"},
    {"id": "u2", "slots": [[["你", -0.1]], [["先", -0.1], ["", -1.0]], [["走", 0.0]]], "reference": "你先走"},
]
SLF = """VERSION=1.0
N=4 L=4
I=0 W=!NULL
I=1 W=厨
I=2 W=出
I=3 W=!NULL
J=0 S=0 E=1 a=-1.0
J=1 S=0 E=2 a=-0.5
J=2 S=1 E=3 a=0.0
J=3 S=2 E=3 a=0.0
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rnnlm")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["decode", *argv])


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_confusion_networks_to_nbest_with_cer(tiny_model_dir, tmp_path, capsys):
    cn = write_jsonl(tmp_path / "cn.jsonl", CNS)
    out = tmp_path / "nbest.jsonl"
    args = parse(
        ["--cn", cn, "--model", str(tiny_model_dir), "--out", str(out), "--nbest", "3", "--beam", "4"]
    )
    assert args.handler is run
    assert run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == 2 and summary["metric"] == "cer" and summary["reference_units"] == 5
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["u1", "u2"] and rows[0]["reference"] == "厨房"
    assert len(rows[0]["results"]) == 3  # 4 paths, 3 asked for
    lm = load_model(tiny_model_dir)
    for r in rows[0]["results"]:
        assert set(r) == {"text", "score", "lm_logprob", "acoustic", "num_tokens"}
        assert r["lm_logprob"] == score_candidates(lm, [r["text"]]).results[0].logprob
        assert r["score"] == pytest.approx(r["acoustic"] + r["lm_logprob"])
    scores = [r["score"] for r in rows[0]["results"]]
    assert scores == sorted(scores, reverse=True)


def test_a_lattice_directory_with_references(tiny_model_dir, tmp_path, capsys):
    lattices = tmp_path / "lat"
    lattices.mkdir()
    (lattices / "a.lat").write_text(SLF, encoding="utf-8")
    (lattices / "b.slf.gz").write_bytes(gzip.compress(SLF.encode("utf-8")))
    (lattices / "notes.txt").write_text("not a lattice", encoding="utf-8")
    refs = write_jsonl(
        tmp_path / "refs.jsonl", [{"id": "a", "reference": "厨"}, {"id": "b", "reference": "出"}]
    )
    out = tmp_path / "nbest.jsonl"
    args = parse(
        ["--slf", str(lattices), "--model", str(tiny_model_dir), "--references", refs, "--out", str(out)]
    )
    assert run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == 2 and summary["with_reference"] == 2
    assert summary["errors"] == 1  # both lattices decode to the same text; one reference differs
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["a", "b"]


def test_limit_and_no_references(tiny_model_dir, tmp_path, capsys):
    cn = write_jsonl(tmp_path / "cn.jsonl", [{k: v for k, v in c.items() if k != "reference"} for c in CNS])
    assert run(parse(["--cn", cn, "--model", str(tiny_model_dir), "--limit", "1"])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == 1 and "error_rate" not in summary


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "cn.jsonl:2:"),
        ('{"id": "x"}', "cn.jsonl:2: missing 'slots'"),
        ('{"id": "x", "slots": [[["a"]]]}', r"cn.jsonl:2: slots[0][0] must be a [word, score] pair"),
        ('{"id": "x", "slots": [[["a", 1]]], "reference": 3}', "cn.jsonl:2: 'reference' must be a string"),
    ],
)
def test_a_malformed_line_is_status_2_naming_file_and_line(tiny_model_dir, tmp_path, capsys, line, message):
    path = tmp_path / "cn.jsonl"
    path.write_text(json.dumps(CNS[0], ensure_ascii=False) + "\n" + line + "\n", encoding="utf-8")
    assert run(parse(["--cn", str(path), "--model", str(tiny_model_dir)])) == 2
    assert message in capsys.readouterr().err


def test_a_bad_lattice_names_its_file_and_line(tiny_model_dir, tmp_path, capsys):
    lattices = tmp_path / "lat"
    lattices.mkdir()
    (lattices / "bad.lat").write_text(SLF.replace("J=3 S=2 E=3", "J=3 S=2 E=9"), encoding="utf-8")
    assert run(parse(["--slf", str(lattices), "--model", str(tiny_model_dir)])) == 2
    err = capsys.readouterr().err
    assert "bad.lat" in err and "line 10: E=9 names node 9" in err


def test_missing_inputs_are_status_1(tiny_model_dir, tmp_path, capsys):
    cn = write_jsonl(tmp_path / "cn.jsonl", CNS)
    assert run(parse(["--cn", cn, "--model", str(tmp_path / "nope")])) == 1
    assert run(parse(["--cn", str(tmp_path / "none.jsonl"), "--model", str(tiny_model_dir)])) == 1
    assert run(parse(["--slf", str(tmp_path), "--model", str(tiny_model_dir)])) == 1  # no lattice files
    assert capsys.readouterr().err.count("error:") == 3


def test_options_out_of_range_are_usage_errors(tiny_model_dir):
    with pytest.raises(SystemExit):
        parse(["--cn", "x", "--model", "m", "--beam", "0"])
    with pytest.raises(SystemExit):
        parse(["--cn", "x", "--slf", "y", "--model", "m"])
    with pytest.raises(SystemExit):
        parse(["--cn", "x", "--model", "m", "--lm-weight", "nan"])
