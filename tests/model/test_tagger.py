"""The bidirectional tagger (model/heads/tagger.py) and its training (model/training/tagger.py):
encoders loaded from a forward and a backward LM, each direction seeing only its side, padding
that changes no row, valid B/M/E/S output from both heads, save/load, and a smoke training run."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from model.heads.tagger import (
    Tagger,
    TaggerConfig,
    encode_batch,
    evaluate_tagger,
    load_tagger,
    save_tagger,
    tag_texts,
    tagger_from_lms,
    with_bos,
)
from model.models.checkpoint import CheckpointError
from model.text.tagged import allowed_first, allowed_last, allowed_transition, parse_tagged_line
from model.training.tagger import TaggerTrainConfig, label_set, labelled_subset, train_tagger

from .tagger_support import TAGGED_LINES, save_tiny_lms, write_tagged_corpus

SENTENCES = [parse_tagged_line(line) for line in TAGGED_LINES]
LABELS = label_set(SENTENCES)
TOL = 1e-5


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    return save_tiny_lms(tmp_path_factory.mktemp("lms"))


@pytest.fixture(scope="module", params=["softmax", "crf"])
def tagger(lms, request):
    torch.manual_seed(0)
    tagger, tokenizer = tagger_from_lms(*lms, LABELS, head=request.param, dropout=0.0)
    return tagger.eval(), tokenizer


def test_encoders_start_from_the_language_models(lms):
    from model.models.checkpoint import load_rnn

    tagger, tokenizer = tagger_from_lms(*lms, LABELS)
    forward, fwd_tok, _ = load_rnn(lms[0])
    backward, _, _ = load_rnn(lms[1])
    assert tokenizer.tokens == fwd_tok.tokens and not tokenizer.backward
    c = tagger.config
    assert (c.hidden_dim, c.backward_hidden_dim, c.labels) == (16, 12, tuple(LABELS))
    for encoder, lm in ((tagger.forward_encoder, forward), (tagger.backward_encoder, backward)):
        for name, value in encoder.state_dict().items():
            assert torch.equal(value, lm.state_dict()[name]), name
    random, _ = tagger_from_lms(*lms, LABELS, load_weights=False)
    assert not torch.equal(random.forward_encoder.embedding.weight, forward.embedding.weight)


def test_two_models_of_one_direction_are_refused(lms):
    with pytest.raises(CheckpointError, match="must read forward"):
        tagger_from_lms(lms[0], lms[0], LABELS)


def test_each_direction_sees_its_own_side(tagger):
    net, tokenizer = tagger
    ids, lengths = encode_batch([tokenizer.encode("厨房里食油用完了").ids], "cpu")
    changed = ids.clone()
    changed[0, 5] = tokenizer.token_id("走")
    with torch.no_grad():
        a, b = net.forward_encoder(with_bos(ids))[:, 1:], net.forward_encoder(with_bos(changed))[:, 1:]
        assert torch.allclose(a[:, :5], b[:, :5], atol=TOL) and not torch.allclose(a[:, 5:], b[:, 5:])
        # the whole tagger: the backward side carries a change at 5 to every position before it
        e1, e2 = net.emissions(ids, lengths), net.emissions(changed, lengths)
        assert not torch.allclose(e1[:, 4], e2[:, 4])


def test_the_backward_encoder_reads_each_row_right_to_left(tagger):
    net, tokenizer = tagger
    text = "今天天气很好"
    ids, lengths = encode_batch([tokenizer.encode(text).ids], "cpu")
    backward_ids = torch.tensor([[2, *tokenizer.encode(text[::-1]).ids]])
    with torch.no_grad():
        expected = net.backward_encoder(backward_ids)[0, 1:].flip(0)  # (T, H2) in reading order
        feats = torch.cat(
            [net.forward_encoder(torch.nn.functional.pad(ids, (1, 0), value=2))[0, 1:], expected], 1
        )
        assert torch.allclose(net.emissions(ids, lengths)[0], net.output(feats), atol=TOL)


def test_padding_changes_no_row(tagger):
    net, tokenizer = tagger
    texts = ["你先走吧", "中国人民银行发布消息", "好"]
    rows = [tokenizer.encode(t).ids for t in texts]
    ids, lengths = encode_batch(rows, "cpu")
    with torch.no_grad():
        together = net.emissions(ids, lengths)
        for i, row in enumerate(rows):
            alone = net.emissions(*encode_batch([row], "cpu"))
            assert torch.allclose(together[i, : len(row)], alone[0], atol=TOL)
    assert net.decode(ids, lengths) == [net.decode(*encode_batch([r], "cpu"))[0] for r in rows]


def test_every_decoded_sequence_is_a_valid_segmentation(tagger):
    net, tokenizer = tagger
    with torch.no_grad():  # large random scores: the constraints, not the weights, must hold it
        net.output.weight.mul_(50)
    try:
        texts = [line.replace(" ", "") for line in ["厨房里食油用完了", "新华社记者报道", "我"]]
        ids, lengths = encode_batch([tokenizer.encode(t).ids for t in texts], "cpu")
        for path in net.decode(ids, lengths):
            labels = [net.labels[k] for k in path]
            assert allowed_first(labels[0]) and allowed_last(labels[-1])
            assert all(allowed_transition(a, b) for a, b in itertools.pairwise(labels))
    finally:
        with torch.no_grad():
            net.output.weight.div_(50)


def test_tag_texts_keeps_the_order_and_spans(tagger):
    net, tokenizer = tagger
    texts = ["中国人民银行发布消息", "", "你先走吧", "厨房里的油用完了"]
    out = tag_texts(net, tokenizer, texts, max_batch_chars=12)
    assert out[1] == []
    for text, words in zip(texts, out, strict=True):
        assert "".join(w.text for w in words) == text
        assert all(text[w.start : w.end] == w.text for w in words)
        assert all(w.tag for w in words)


def test_save_and_load_give_the_same_tags(tagger, tmp_path):
    net, tokenizer = tagger
    save_tagger(tmp_path / "t", net, tokenizer, {"note": "test"})
    config = json.loads((tmp_path / "t" / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "tagger" and config["model"]["labels"] == LABELS
    loaded, tok, metrics = load_tagger(tmp_path / "t")
    assert metrics == {"note": "test"} and tok.tokens == tokenizer.tokens
    assert loaded.config == net.config
    texts = ["今天天气很好", "他们在厨房里做饭"]
    assert tag_texts(loaded, tok, texts) == tag_texts(net, tokenizer, texts)
    assert not any(
        name.endswith((".pkl", ".pt", ".bin")) for name in (p.name for p in (tmp_path / "t").iterdir())
    )


def test_a_language_model_is_not_a_tagger(lms):
    with pytest.raises(CheckpointError, match="model_type is 'rnn', not 'tagger'"):
        load_tagger(lms[0])


def test_config_checks_itself():
    with pytest.raises(ValueError, match="head must be one of"):
        TaggerConfig(vocab_size=10, labels=("S-n",), head="hmm")
    c = TaggerConfig(vocab_size=10, labels=["S-n", "B-n", "E-n"], hidden_dim=8, emb_dim=4)
    assert TaggerConfig.from_dict(c.to_dict()) == c and Tagger(c).output.out_features == 3


def test_labelled_subset_is_seeded_and_in_order():
    items = [[(str(i), "n")] for i in range(100)]
    a, b = labelled_subset(items, 0.1, 3), labelled_subset(items, 0.1, 3)
    assert a == b and len(a) == 10 and a == sorted(a, key=lambda s: int(s[0][0]))
    assert labelled_subset(items, 0.1, 4) != a and len(labelled_subset(items, 0.001, 0)) == 1


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_a_smoke_training_run_saves_a_tagger_that_loads(lms, tmp_path, head):
    data = write_tagged_corpus(tmp_path / "data")
    lines = []
    cfg = TaggerTrainConfig(
        data=str(data),
        out=str(tmp_path / "tagger"),
        init_from_lm=str(lms[0]),
        backward_lm=str(lms[1]),
        head=head,
        epochs=3,
        freeze_lm_epochs=1,
        batch_chars=64,
        lr=1e-2,
        device="cpu",
    )
    metrics = train_tagger(cfg, say=lines.append)
    assert (
        len(metrics["history"]) == 3
        and metrics["history"][0]["frozen"]
        and not metrics["history"][1]["frozen"]
    )
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    tagger, tokenizer, saved = load_tagger(tmp_path / "tagger")
    assert saved["test"] == metrics["test"] and saved["train_config"]["head"] == head
    from model.text.tagged import read_tagged

    again = evaluate_tagger(tagger, tokenizer, read_tagged(data / "test.txt"))
    assert again.to_dict() == metrics["test"]
    assert "saved" in lines[-1]


def test_training_without_language_models_builds_its_own_vocabulary(tmp_path):
    data = write_tagged_corpus(tmp_path / "data")
    cfg = TaggerTrainConfig(
        data=str(data), out=str(tmp_path / "t"), max_steps=2, emb_dim=8, hidden_dim=8, device="cpu"
    )
    metrics = train_tagger(cfg, say=lambda _: None)
    assert metrics["stopped"] == "max_steps" and metrics["history"][-1]["step"] == 2
    tagger, tokenizer, _ = load_tagger(tmp_path / "t")
    assert tagger.config.hidden_dim == 8 and "厨" in tokenizer.tokens
