"""`rnnlm rescore`, `rnnlm tune` and `rnnlm rescoring-report` end to end on a tiny seeded model,
locally and through the service (its TestClient standing in for --url)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.inference.scoring import score_candidates
from model.models.checkpoint import save_rnn
from model.models.loading import load_model
from model.rescoring.formats import FormatOptions, read_nbest
from rnnlm import rescoring_cli
from rnnlm.cli import main
from service.app import create_app
from service.settings import Settings

from ..conftest import build_tiny_model

NBEST = Path(__file__).resolve().parents[1] / "model" / "fixtures" / "nbest"
LN2 = math.log(2)


@pytest.fixture(scope="module")
def gru_model_dir(tmp_path_factory):
    net, tok = build_tiny_model(cell="gru", seed=1)
    return save_rnn(tmp_path_factory.mktemp("models") / "tiny-gru", net, tok, {})


@pytest.fixture(scope="module")
def logprob(tiny_model_dir):
    lm = load_model(tiny_model_dir)
    return lambda text: score_candidates(lm, [text]).results[0].logprob


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(
        [*argv, "--no-progress"] if argv[0] in ("rescore", "tune", "rescoring-report") else list(argv)
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_rescore_jsonl_end_to_end(tmp_path, capsys, tiny_model_dir, logprob):
    out = tmp_path / "rescored.jsonl"
    code, stdout, _ = run(
        capsys, "rescore", str(NBEST / "tiny.jsonl"), "--out", str(out), "--model", str(tiny_model_dir)
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    inputs = [json.loads(line) for line in (NBEST / "tiny.jsonl").read_text(encoding="utf-8").splitlines()]
    changed = 0
    for row, given in zip(rows, inputs, strict=True):
        assert [c["text"] for c in row["candidates"]] == [
            c["text"] for c in given["candidates"]
        ]  # input order
        for c in row["candidates"]:
            lp = logprob(c["text"])
            assert c["lm"] == {"tiny-lstm": pytest.approx(lp, abs=1e-4)}
            assert c["length"] == len(c["text"])  # tokens of a character model
            assert c["total"] == pytest.approx(c["score"] + lp, abs=1e-4)  # lm_weight 1, no bonus
        totals = [c["total"] for c in row["candidates"]]
        assert row["ranking"] == sorted(range(len(totals)), key=lambda i: -totals[i])
        assert row["best"] == row["ranking"][0]
        changed += row["best"] != 0  # the fixture's first-pass 1-best is always candidate 0
    assert rows[0]["speaker"] == "A" and rows[0]["candidates"][0]["source"] == "first-pass"
    summary = json.loads(stdout)
    assert summary["utterances"] == 3 and summary["candidates"] == 7 and summary["changed_1best"] == changed
    assert summary["cer"]["first_pass"] == pytest.approx(2 / 14, abs=1e-6) and summary["cer"]["oracle"] == 0


@pytest.mark.parametrize(
    "fmt,name,extra",
    [
        ("kaldi", "kaldi", ["--acoustic-scale", "0.1"]),
        ("fairseq", "fairseq.txt", []),
        ("nemo", "nemo.tsv", ["--beam-size", "2", "--manifest", str(NBEST / "nemo_manifest.json")]),
    ],
)
def test_rescore_writes_each_format_back_with_the_new_total(
    tmp_path, capsys, tiny_model_dir, logprob, fmt, name, extra
):
    out = tmp_path / ("out" if fmt == "kaldi" else name)
    args = ["rescore", str(NBEST / name), "--format", fmt, "--out", str(out), "--model", str(tiny_model_dir)]
    code, stdout, _ = run(capsys, *args, "--length-bonus", "0.5", "--length-unit", "chars", *extra)
    assert code == 0
    options = FormatOptions(acoustic_scale=0.1, beam_size=2)
    before = read_nbest(NBEST / name, fmt, options)
    after = read_nbest(out, fmt, options)  # the writer's output reads back: its score is the new total
    for u, v in zip(before, after, strict=True):
        for c, d in zip(u.candidates, v.candidates, strict=True):
            chars = len(c.text.replace(" ", ""))
            assert d.text == c.text
            assert d.score == pytest.approx(c.score + logprob(c.text) + 0.5 * chars, abs=1e-4)
    assert json.loads(stdout)["utterances"] == len(before)


def test_a_malformed_file_is_status_2_naming_the_line_and_writes_nothing(tmp_path, capsys, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "candidates": [{"text": "你先走吧", "score": -1}]}\n{"id": "b"\n', encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "rescore", str(bad), "--out", str(out), "--model", str(tiny_model_dir))
    assert code == 2
    assert f"{bad}:2:" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "SECOND"], "several --model need --weights"),
        (["--beam-size", "0", "--format", "nemo"], "--beam-size"),
        (["--lm-weight", "nan"], "finite"),
    ],
)
def test_usage_errors_are_status_2(tmp_path, capsys, tiny_model_dir, gru_model_dir, extra, message):
    extra = [str(gru_model_dir) if x == "SECOND" else x for x in extra]
    out = tmp_path / "o.jsonl"
    code, _, err = run(
        capsys,
        "rescore",
        str(NBEST / "tiny.jsonl"),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        *extra,
    )
    assert code == 2 and message in err
    assert not out.exists()


def test_tune_then_rescore_with_the_weights(tmp_path, capsys, tiny_model_dir, gru_model_dir, monkeypatch):
    weights = tmp_path / "weights.json"
    cache = tmp_path / "scores.json"
    models = ["--model", str(tiny_model_dir), "--model", str(gru_model_dir)]
    code, stdout, _ = run(
        capsys,
        "tune",
        str(NBEST / "tiny.jsonl"),
        *models,
        "--metric",
        "cer",
        "--out",
        str(weights),
        "--scores",
        str(cache),
    )
    assert code == 0
    w = json.loads(weights.read_text())
    assert set(w["models"]) == {"tiny-lstm", "tiny-gru"} and w["first_pass_weight"] == 1.0
    assert w["metric"] == "cer" and w["dev_error_before"] == pytest.approx(2 / 14)
    assert w["dev_error_after"] <= w["dev_error_before"] and w["dev_oracle_error"] == 0
    assert w["dev_utterances"] == 2 and set(w["checkpoints"]) == {"tiny-lstm", "tiny-gru"}
    assert len(w["checkpoints"]["tiny-lstm"]) == 64  # the weights' sha256
    assert json.loads(stdout)["out"] == str(weights)

    # a second tune reads the cache: no model is loaded
    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again despite --scores")

    monkeypatch.setattr(rescoring_cli, "score_local", no_scoring)
    again = tmp_path / "weights2.json"
    code, _, _ = run(
        capsys, "tune", str(NBEST / "tiny.jsonl"), *models, "--out", str(again), "--scores", str(cache)
    )
    assert code == 0 and json.loads(again.read_text())["models"] == w["models"]
    monkeypatch.undo()

    out = tmp_path / "rescored.jsonl"
    code, stdout, _ = run(
        capsys, "rescore", str(NBEST / "tiny.jsonl"), "--out", str(out), *models, "--weights", str(weights)
    )
    assert code == 0
    assert json.loads(stdout)["cer"]["rescored"] == pytest.approx(w["dev_error_after"], abs=1e-6)
    code, _, err = run(
        capsys,
        "rescore",
        str(NBEST / "tiny.jsonl"),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--weights",
        str(weights),
    )
    assert code == 2 and "tiny-gru" in err  # the weights name a model that was not given


class Unclosed:
    """The app's TestClient for --url, left open when the command is done with it."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.base_url = client.base_url
        self.post = client.post

    def close(self) -> None:
        pass


def test_rescore_through_the_service_matches_local(
    tmp_path, capsys, tiny_model_dir, gru_model_dir, monkeypatch
):
    settings = Settings(model_dirs=[str(tiny_model_dir), str(gru_model_dir)], device="cpu")
    with TestClient(create_app(settings)) as client:
        monkeypatch.setattr(rescoring_cli, "http_client", lambda url, key: Unclosed(client))
        remote = tmp_path / "remote.jsonl"
        code, _, err = run(
            capsys,
            "rescore",
            str(NBEST / "tiny.jsonl"),
            "--out",
            str(remote),
            "--url",
            "http://rnnlm.test",
            "--model",
            "tiny-gru",
        )
        assert code == 0, err
        code, _, _ = run(
            capsys,
            "rescore",
            str(NBEST / "tiny.jsonl"),
            "--out",
            str(tmp_path / "default.jsonl"),
            "--url",
            "http://rnnlm.test",
        )
        assert code == 0
        code, _, err = run(
            capsys,
            "rescore",
            str(NBEST / "tiny.jsonl"),
            "--out",
            str(tmp_path / "x.jsonl"),
            "--url",
            "http://rnnlm.test",
            "--model",
            "nope",
        )
        assert code == 1 and "404" in err and not (tmp_path / "x.jsonl").exists()
        weights = tmp_path / "w.json"
        weights.write_text(
            json.dumps({"models": {"tiny-gru": 0.5}, "length_bonus": 1.0, "length_unit": "chars"})
        )
        by_weights = tmp_path / "by-weights.jsonl"
        code, _, _ = run(
            capsys,
            "rescore",
            str(NBEST / "tiny.jsonl"),
            "--out",
            str(by_weights),
            "--url",
            "http://t",
            "--weights",
            str(weights),
        )
        assert code == 0
    local = tmp_path / "local.jsonl"
    assert (
        run(capsys, "rescore", str(NBEST / "tiny.jsonl"), "--out", str(local), "--model", str(gru_model_dir))[
            0
        ]
        == 0
    )
    for r, lo in zip(remote.read_text().splitlines(), local.read_text().splitlines(), strict=True):
        a, b = json.loads(r), json.loads(lo)
        assert [c["lm"]["tiny-gru"] for c in a["candidates"]] == pytest.approx(
            [c["lm"]["tiny-gru"] for c in b["candidates"]], abs=1e-4
        )
        assert [c["length"] for c in a["candidates"]] == [c["length"] for c in b["candidates"]]
        assert a["ranking"] == b["ranking"]
    for r, w in zip(remote.read_text().splitlines(), by_weights.read_text().splitlines(), strict=True):
        for a, b in zip(json.loads(r)["candidates"], json.loads(w)["candidates"], strict=True):
            assert list(b["lm"]) == ["tiny-gru"] and b["lm"]["tiny-gru"] == pytest.approx(a["lm"]["tiny-gru"])
            assert b["total"] == pytest.approx(b["score"] + 0.5 * b["lm"]["tiny-gru"] + 1.0 * len(b["text"]))
    default = json.loads((tmp_path / "default.jsonl").read_text().splitlines()[0])
    assert list(default["candidates"][0]["lm"]) == ["tiny-lstm"]  # the server's first model


def test_rescoring_report_writes_the_table_and_its_json(tmp_path, capsys, tiny_model_dir, gru_model_dir):
    task = tmp_path / "task"
    task.mkdir()
    for split in ("dev", "test"):
        (task / f"{split}.jsonl").write_text(
            (NBEST / "tiny.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
        )
    out = tmp_path / "docs" / "RESCORING_RESULTS.md"
    code, stdout, err = run(
        capsys,
        "rescoring-report",
        "--task", str(task),
        "--model", str(tiny_model_dir),
        "--model", str(gru_model_dir),
        "--combo", "both=tiny-lstm+tiny-gru",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out.with_suffix(".json").read_text())
    systems = [r["system"] for r in data["rows"]]
    assert systems == ["first pass", "oracle", "tiny-lstm", "tiny-gru", "both (tiny-lstm+tiny-gru)"]
    first, oracle = data["rows"][0], data["rows"][1]
    assert first["test"] == pytest.approx(2 / 14) and oracle["test"] == 0
    for row in data["rows"][2:]:
        assert row["dev"] <= first["dev"]  # tuned on dev: never worse than the first pass there
        assert row["weights"]["first_pass_weight"] == 1.0
    assert set(data["rows"][4]["weights"]["models"]) == {"tiny-lstm", "tiny-gru"}
    assert out.read_text() == stdout and "| first pass | 14.29 | 14.29 |" in stdout
    page = tmp_path / "docs" / "RESULTS.md"
    page.write_text("# Results\n\nkept\n", encoding="utf-8")
    args = ["--task", str(task), "--model", str(tiny_model_dir), "--out", str(out), "--into", str(page)]
    for _ in range(2):  # the block is replaced, not appended twice
        assert run(capsys, "rescoring-report", *args)[0] == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nkept\n") and text.count(f"<!-- rescoring:{task.name}:start -->") == 1
    assert (
        f"## Rescoring n-best lists: the {task.name} task" in text
        and "| first pass | 14.29 | 14.29 |" in text
    )
    code, _, err = run(
        capsys,
        "rescoring-report",
        "--task",
        str(task),
        "--model",
        str(tiny_model_dir),
        "--combo",
        "x=tiny-lstm+nope",
        "--out",
        str(out),
    )
    assert code == 2 and "'nope'" in err


def test_the_scores_cache_is_not_reused_for_another_checkpoint_of_the_same_name(
    tmp_path, capsys, tiny_model_dir, gru_model_dir, monkeypatch
):
    """A model retrained under the same name (same directory name, other weights) is scored again."""
    cache = tmp_path / "scores.json"
    tune = ["tune", str(NBEST / "tiny.jsonl"), "--out", str(tmp_path / "w.json"), "--scores", str(cache)]
    assert run(capsys, *tune, "--model", str(tiny_model_dir))[0] == 0
    retrained = tmp_path / "retrained" / Path(tiny_model_dir).name  # the same name, the GRU's weights
    shutil.copytree(gru_model_dir, retrained)
    calls = []
    score_local = rescoring_cli.score_local

    def counting(*args, **kwargs):
        calls.append(args[0])
        return score_local(*args, **kwargs)

    monkeypatch.setattr(rescoring_cli, "score_local", counting)
    assert run(capsys, *tune, "--model", str(tiny_model_dir))[0] == 0
    assert calls == []  # the same checkpoint: read from the cache
    assert run(capsys, *tune, "--model", str(retrained))[0] == 0
    assert calls == [[str(retrained)]]


def test_strip_spaces_scores_word_segmented_text_as_characters(tmp_path, capsys, tiny_model_dir, logprob):
    out = tmp_path / "out"
    args = [
        "rescore",
        str(NBEST / "kaldi"),
        "--format",
        "kaldi",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
    ]
    assert run(capsys, *args, "--strip-spaces")[0] == 0
    after = read_nbest(out, "kaldi", FormatOptions())
    before = read_nbest(NBEST / "kaldi", "kaldi", FormatOptions())
    first = before[0].candidates[0]
    assert after[0].candidates[0].text == "厨房 里 石油 用完 了"  # written back as read
    assert after[0].candidates[0].score == pytest.approx(first.score + logprob("厨房里石油用完了"), abs=1e-4)
    assert logprob("厨房里石油用完了") != pytest.approx(logprob("厨房 里 石油 用完 了"), abs=1e-2)
