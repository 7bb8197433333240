"""`rnnlm fit` (stream then sentences, for every kind), `rnnlm publish` and the default-model choice,
smoke-run on the tiny corpus (as pytorch/examples runs each model with --dry-run)."""

from __future__ import annotations

import json

import pytest
import torch

from model.models.loading import load_model
from model.training.config import TrainConfig
from model.training.data import Corpus
from model.training.optim import lr_at
from rnnlm.cli import main

TINY_RNN = [
    "--model",
    "emb_dim=16",
    "--model",
    "hidden_dim=16",
    "--model",
    "dropout=0.1",
    "--model",
    "variational=true",
    "--model",
    "emb_dropout=0.1",
]
BUDGET = [
    "--max-minutes",
    "0",
    "--max-tokens",
    "3000",
    "--batch-size",
    "4",
    "--bptt",
    "8",
    "--eval-every-tokens",
    "1000",
    "--warmup-steps",
    "2",
    "--lr",
    "0.01",
    "--device",
    "cpu",
]


def fit(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(
        [
            "fit",
            "--data",
            str(tmp_path.parent / "corpus"),
            "--out",
            str(out),
            "--run-dir",
            str(tmp_path / f"{name}-run"),
            *BUDGET,
            *extra,
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("rnn", TINY_RNN),
        ("hybrid", [*TINY_RNN, "--ngram-order", "3", "--folds", "3"]),
        ("window", ["--model", "context=3", "--model", "emb_dim=8", "--model", "hidden_dim=16"]),
    ],
)
def test_fit_each_kind_keeps_the_best_valid_checkpoint(corpus_link, capsys, kind, extra):
    tmp = corpus_link
    out = fit(tmp, kind, "--kind", kind, "--ngram-dir", str(tmp / f"{kind}-ngram"), *extra)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lm = load_model(out)
    assert lm.kind == kind
    log = [json.loads(line) for line in (tmp / f"{kind}-run" / "log.jsonl").read_text().splitlines()]
    valid = [r for r in log if r["event"] == "valid"]
    phases = {r["phase"] for r in valid}
    assert phases == {"stream", "sentence"}  # both phases ran and were validated
    best = min(r["valid_perplexity"] for r in valid)
    assert best < valid[0]["valid_perplexity"] or len(valid) == 1
    # the final figure is the kept checkpoint's, measured the `rnnlm evaluate` way (fp16 weights)
    assert printed["valid"] == pytest.approx(best, rel=1e-2)
    assert printed["valid"] < lm.vocab_size


def test_a_hybrid_starts_from_a_trained_rnn(corpus_link, capsys):
    tmp = corpus_link
    rnn = fit(tmp, "base", *TINY_RNN)
    capsys.readouterr()
    hybrid = fit(
        tmp,
        "hyb",
        "--kind",
        "hybrid",
        "--ngram-order",
        "3",
        "--folds",
        "2",
        "--init-from",
        str(rnn),
        "--ngram-dir",
        str(tmp / "kn3"),
        "--max-tokens",
        "200",
        *TINY_RNN,
    )
    assert "initialized from" in capsys.readouterr().out
    assert json.loads((hybrid / "metrics.json").read_text())["init_from"] == str(rnn)


def test_publish_evaluates_here_and_writes_the_card(corpus_link, capsys):
    tmp = corpus_link
    src = fit(
        tmp,
        "src",
        "--kind",
        "hybrid",
        "--ngram-order",
        "3",
        "--folds",
        "2",
        "--ngram-dir",
        str(tmp / "kn3b"),
        *TINY_RNN,
    )
    capsys.readouterr()
    assert (
        main(
            [
                "publish",
                str(src),
                "--to",
                str(tmp / "weights" / "h"),
                "--data",
                str(tmp.parent / "corpus"),
                "--ngram",
                str(tmp / "kn3b"),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = (tmp / "weights" / "h" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "hybrid" in card and f"{printed['test']:.2f}" in card
    config = json.loads((tmp / "weights" / "h" / "config.json").read_text())
    assert config["ngram"]["path"] == "../../kn3b"
    assert load_model(tmp / "weights" / "h").kind == "hybrid"


def test_folds_partition_the_sentences():
    seqs = [[2, 5, 3], [2, 6, 7, 3], [2, 3], [2, 8, 3], [2, 9, 9, 3]]
    c = Corpus.build(seqs, folds=2, seed=0)
    assert sorted(c.sentence_fold) == [0, 0, 0, 1, 1]
    assert len(c.inputs) == sum(len(s) - 1 for s in seqs)
    assert torch.equal(c.tokens[c.inputs + 1][c.position == 0], torch.tensor([5, 6, 3, 8, 9]))


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig.recipe(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0.0, 0, cfg) == pytest.approx(0.1)
    assert lr_at(0.0, 20, cfg) == pytest.approx(1.0)
    assert lr_at(1.0, 1000, cfg) == pytest.approx(0.1)


def test_fit_config_refuses_nonsense():
    with pytest.raises(ValueError, match="kind"):
        TrainConfig.recipe(kind="transformer")
    with pytest.raises(ValueError, match="budget"):
        TrainConfig.recipe(max_minutes=0, max_tokens=0)


def test_choose_default_picks_the_best_valid_reranker(tiny_corpus, tiny_model_dir, tmp_path, capsys):
    from model.models.ngram.model import build_ngram
    from model.models.ngram.store import save_ngram
    from model.text.tokenizer import Tokenizer

    from ..conftest import TINY_LINES

    save_ngram(tmp_path / "kn2", build_ngram(Tokenizer.build(TINY_LINES), TINY_LINES, order=2))
    out = tmp_path / "DEFAULT.json"
    code = main(
        [
            "benchmark",
            "choose-default",
            "--model",
            str(tiny_model_dir),
            "--model",
            str(tmp_path / "kn2"),
            "--data",
            str(tiny_corpus),
            "--out",
            str(out),
            "--size",
            "3",
            "--distractors",
            "2",
            "--min-len",
            "4",
            "--min-count",
            "1",
            "--sets-dir",
            str(tmp_path / "sets"),
        ]
    )
    assert code == 0
    record = json.loads(out.read_text())
    figures = record["candidates"]
    best = max(figures, key=lambda m: (figures[m]["mean_top1"], -figures[m]["valid_perplexity"]))
    assert record["default"] == best and record["serve"][0] == best
    assert record["measured_on"] == "valid" and set(record["serve"]) == set(figures)
    assert record["also_serve"] == []


def test_choose_default_serves_another_language_after_the_candidates(tiny_corpus, tiny_model_dir, tmp_path):
    out = tmp_path / "DEFAULT.json"
    other = tmp_path / "english"
    args = ["benchmark", "choose-default", "--model", str(tiny_model_dir), "--data", str(tiny_corpus)]
    args += ["--out", str(out), "--size", "3", "--distractors", "2", "--min-len", "4"]
    assert main([*args, "--sets-dir", str(tmp_path / "sets"), "--also-serve", str(other)]) == 0
    record = json.loads(out.read_text())
    assert record["serve"] == [str(tiny_model_dir), str(other)] and record["also_serve"] == [str(other)]
    assert str(other) not in record["candidates"]  # served, not measured against these sets


def test_reverse_trains_a_backward_model_that_scores_whole_sentences(corpus_link, capsys):
    """`--reverse`: the checkpoint's tokenizer reads right to left; its sentence log-prob is the
    network's log-prob of the reversed ids, and `rnnlm evaluate` measures it like any model."""
    from model.models.evaluate import evaluate_lines
    from model.text.batching import with_boundaries

    tmp = corpus_link
    out = fit(tmp, "backward", "--reverse", *TINY_RNN)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lm = load_model(out)
    assert lm.tokenizer.direction == "backward"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokenizer"]["direction"] == "backward"
    assert "reads right to left" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    valid_lines = (tmp.parent / "corpus" / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert evaluate_lines(lm, valid_lines)["perplexity"] == pytest.approx(printed["valid"], rel=1e-4)
    line = valid_lines[0]
    ids = [lm.tokenizer.token_id(ch) for ch in line][::-1]
    backward = float(lm.sequence_logprobs([with_boundaries(ids)])[0].sum())
    forward_order = float(lm.sequence_logprobs([with_boundaries(ids[::-1])])[0].sum())
    scored = float(lm.sequence_logprobs([with_boundaries(lm.tokenizer.encode(line).ids)])[0].sum())
    assert scored == pytest.approx(backward, abs=1e-5)
    assert scored != pytest.approx(forward_order, abs=1e-3)  # the order is what the model learned


def test_reverse_ngram_counts_right_to_left(corpus_link, capsys):
    tmp = corpus_link
    out = tmp / "kn-backward"
    code = main(
        ["train-ngram", "--data", str(tmp.parent / "corpus"), "--out", str(out), "--order", "3", "--reverse"]
    )
    assert code == 0
    lm = load_model(out)
    assert lm.tokenizer.direction == "backward"
    assert json.loads((out / "metrics.json").read_text())["tokenizer"]["direction"] == "backward"


def test_a_backward_model_is_served_but_never_the_default(tiny_corpus, tiny_model_dir, tmp_path, capsys):
    from model.models.ngram.model import build_ngram
    from model.models.ngram.store import save_ngram
    from model.text.tokenizer import Tokenizer

    from ..conftest import TINY_LINES

    backward = tmp_path / "kn3-backward"
    save_ngram(backward, build_ngram(Tokenizer.build(TINY_LINES, direction="backward"), TINY_LINES, order=3))
    out = tmp_path / "DEFAULT.json"
    args = ["benchmark", "choose-default", "--data", str(tiny_corpus), "--out", str(out), "--size", "3"]
    args += ["--distractors", "2", "--min-len", "4", "--min-count", "1", "--sets-dir", str(tmp_path / "sets")]
    assert main([*args, "--model", str(backward), "--model", str(tiny_model_dir)]) == 0
    record = json.loads(out.read_text())
    assert record["default"] == str(tiny_model_dir)
    assert record["serve"] == [str(tiny_model_dir), str(backward)]
    assert record["candidates"][str(backward)]["direction"] == "backward"
    assert main([*args, "--model", str(backward)]) != 0  # nothing forward to serve by default
