import json
import os

import pytest
import torch

from model.models.checkpoint import CONFIG, METRICS, TOKENIZER, WEIGHTS, CheckpointError, load_rnn, save_rnn
from model.models.loading import load_model

from ..conftest import build_tiny_model


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_save_load_gives_identical_logits(tmp_path, cell):
    net, tok = build_tiny_model(cell=cell, steps=3)
    save_rnn(tmp_path / "m", net, tok, {"note": "x"})
    loaded, loaded_tok, metrics = load_rnn(tmp_path / "m")
    ids = torch.tensor([tok.encode("厨房里食油用完了").ids])
    assert torch.equal(net(ids)[0], loaded(ids)[0])
    assert loaded_tok.tokens == tok.tokens
    assert metrics == {"note": "x"}


def test_tampered_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (d / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_rnn(d)


def test_truncated_or_missing_files_name_the_path(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(d / WEIGHTS)):
        load_rnn(d)
    (d / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_rnn(d)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_rnn(tmp_path / "nowhere")


def test_pickle_is_refused_even_with_a_matching_hash(tiny_model_dir, tmp_path):
    import shutil

    from model.text.data import sha256_file

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    torch.save({"embedding.weight": torch.zeros(3)}, d / WEIGHTS)  # a pickle, hash "fixed" below
    config = json.loads((d / CONFIG).read_text())
    config["weights_sha256"] = sha256_file(d / WEIGHTS)
    (d / CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_rnn(d)


def test_vocabulary_that_does_not_match_the_weights(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    tok = json.loads((d / TOKENIZER).read_text(encoding="utf-8"))
    tok["tokens"] = tok["tokens"][:-1]
    (d / TOKENIZER).write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CheckpointError, match="vocabulary does not match"):
        load_rnn(d)


def test_save_replaces_atomically(tmp_path):
    net, tok = build_tiny_model(steps=1)
    save_rnn(tmp_path / "m", net, tok, {"v": 1})
    save_rnn(tmp_path / "m", net, tok, {"v": 2})
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or old dirs left


def test_load_model_dispatches_on_model_type(tiny_model_dir):
    lm = load_model(tiny_model_dir)
    assert lm.kind == "rnn"
    assert lm.describe()["tokenizer"] == "char"


def _set_model_field(name: str, value: object):
    def change(d):
        config = json.loads((d / CONFIG).read_text())
        config["model"][name] = value
        (d / CONFIG).write_text(json.dumps(config))

    return change


def _replace_weights(make):
    def change(d):
        (d / WEIGHTS).unlink()
        make(d / WEIGHTS)

    return change


BROKEN_FILES = {
    "metrics-not-an-object": (lambda d: (d / METRICS).write_text("[1]"), METRICS, "JSON object"),
    "tokenizer-not-an-object": (lambda d: (d / TOKENIZER).write_text("[1,2,3]"), TOKENIZER, "JSON object"),
    "config-not-an-object": (lambda d: (d / CONFIG).write_text('"x"'), CONFIG, "JSON object"),
    "negative-hidden-dim": (_set_model_field("hidden_dim", -1), CONFIG, "invalid model config"),
    "hidden-dim-not-a-number": (_set_model_field("hidden_dim", "x"), CONFIG, "invalid model config"),
    "weights-link-to-dev-zero": (
        _replace_weights(lambda p: os.symlink("/dev/zero", p)),
        WEIGHTS,
        "not a regular file",
    ),
    "weights-fifo": (_replace_weights(os.mkfifo), WEIGHTS, "not a regular file"),
    "weights-directory": (_replace_weights(os.mkdir), WEIGHTS, "not a regular file"),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_each_broken_file_is_refused_at_once_naming_it(tiny_model_dir, tmp_path, case):
    """A FIFO or /dev/zero would block or never end: refused before it is opened (item 10)."""
    import shutil
    import time

    breaks, name, problem = BROKEN_FILES[case]
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    breaks(d)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=problem) as e:
        load_model(d)
    assert time.monotonic() - start < 5
    assert str(d / name) in str(e.value)


def test_oversized_json_files_are_refused_unread(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    import model.models.checkpoint as checkpoint

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    cap = max((d / name).stat().st_size for name in (CONFIG, TOKENIZER, METRICS))
    monkeypatch.setattr(checkpoint, "MAX_JSON_BYTES", cap)
    (d / METRICS).write_text(json.dumps({"note": "x" * cap}))
    with pytest.raises(CheckpointError, match=f"{d / METRICS}: .* more than the limit of {cap}"):
        load_model(d)


def test_sha256_file_refuses_what_is_not_a_regular_file(tmp_path):
    from model.text.data import NotARegularFile, sha256_file

    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", tmp_path, "/dev/zero"):
        with pytest.raises(NotARegularFile, match="not a regular file"):
            sha256_file(path)
