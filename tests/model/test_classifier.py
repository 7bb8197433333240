"""The sentiment classifier (model/heads/classifier.py), its training (model/training/classifier.py)
and the labelled reviews (model/text/reviews.py): an encoder loaded from a language model (an RNN
or a hybrid's), concat pooling that padding cannot change, gradual unfreezing that freezes what it
says, discriminative learning rates, save/load, the split rules, and a smoke training run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model.heads.classifier import (
    Classifier,
    ClassifierConfig,
    class_probabilities,
    classifier_from_lm,
    classify_texts,
    concat_pool,
    load_classifier,
    load_encoder_source,
    save_classifier,
)
from model.heads.tagger import encode_batch
from model.models.checkpoint import CheckpointError, load_rnn, save_network
from model.models.hybrid import HybridNet
from model.text.corpora import review_split
from model.text.reviews import Review, label_reviews, read_labelled, write_jsonl
from model.training.classifier import (
    ClassifierTrainConfig,
    NaiveBayes,
    discriminative_optimizer,
    finetune_lm,
    label_subset,
    slanted_triangular,
    train_classifier,
)

from ..conftest import TINY_LINES

LABELS = ("neg", "pos")
TOL = 1e-5


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    classifier, tokenizer = classifier_from_lm(tiny_model_dir, LABELS, dropout=0.0, head_dropout=0.0)
    return classifier.eval(), tokenizer


def labelled_rows() -> list[Review]:
    """TINY_LINES' distinct sentences: 'pos' when they speak of the kitchen or the weather."""
    return [Review(t, "pos" if ("厨房" in t or "天气" in t) else "neg") for t in dict.fromkeys(TINY_LINES)]


def write_labelled(out: Path) -> Path:
    rows = labelled_rows()
    out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", rows * 3), ("valid", rows[:5]), ("test", rows[5:])):
        write_jsonl(out / f"{name}.jsonl", split)
    return out


def test_the_encoder_starts_from_the_language_model(tiny_model_dir, model):
    classifier, tokenizer = model
    lm, lm_tok, _ = load_rnn(tiny_model_dir)
    assert tokenizer.tokens == lm_tok.tokens and classifier.labels == LABELS
    for name, value in classifier.encoder.state_dict().items():
        assert torch.equal(value, lm.state_dict()[name]), name
    random, _ = classifier_from_lm(tiny_model_dir, LABELS, load_weights=False)
    assert random.config == replace(classifier.config, dropout=0.3, head_dropout=0.4)
    assert not torch.equal(random.encoder.embedding.weight, lm.embedding.weight)


def test_a_hybrids_recurrent_network_is_an_encoder(tiny_model_dir, tmp_path):
    lm, tokenizer, _ = load_rnn(tiny_model_dir)
    hybrid = HybridNet(lm.config)
    hybrid.rnn.load_state_dict(lm.state_dict())
    save_network(tmp_path / "hybrid", hybrid, lm.config, tokenizer, model_type="hybrid")
    net, _ = load_encoder_source(tmp_path / "hybrid")
    assert torch.equal(net.rnn.weight_hh_l1, lm.rnn.weight_hh_l1)


def test_concat_pooling_reads_only_each_rows_positions():
    h = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)  # (B=2, T+1=4, H=1)
    pooled = concat_pool(h, torch.tensor([3, 1]))  # row 0: positions 0..3; row 1: positions 0..1
    assert pooled.tolist() == [[3.0, 3.0, 1.5], [5.0, 5.0, 4.5]]  # [last, max, mean]


def test_padding_changes_no_rows_logits(model):
    classifier, tokenizer = model
    texts = ["厨房里的油用完了", "你先走吧", "", "人民日报发表新年讲话"]
    rows = [tokenizer.encode(t).ids for t in texts]
    ids, lengths = encode_batch(rows, "cpu")
    with torch.no_grad():
        together = classifier(ids, lengths)
        assert together.shape == (4, 2)
        for i, row in enumerate(rows):
            alone = classifier(*encode_batch([row], "cpu"))
            torch.testing.assert_close(together[i], alone[0], atol=TOL, rtol=0)


def test_classify_texts_keeps_the_order(model):
    classifier, tokenizer = model
    texts = ["你先走吧", "厨房里的油用完了", "今天天气很好"]
    probs = class_probabilities(classifier, tokenizer, texts)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    for (label, p), row in zip(classify_texts(classifier, tokenizer, texts), probs, strict=True):
        assert label == LABELS[int(row.argmax())] and p == pytest.approx(float(row.max()))
    alone = classify_texts(classifier, tokenizer, texts[1:2])[0]
    assert alone[0] == classify_texts(classifier, tokenizer, texts)[1][0]


def test_save_and_load_give_the_same_probabilities(model, tmp_path):
    classifier, tokenizer = model
    save_classifier(tmp_path / "clf", classifier, tokenizer, {"test": {"accuracy": 0.5}})
    config = json.loads((tmp_path / "clf" / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "classifier" and config["model"]["labels"] == ["neg", "pos"]
    assert not list((tmp_path / "clf").glob("*.pt")) and not list((tmp_path / "clf").glob("*.pkl"))
    loaded, loaded_tok, metrics = load_classifier(tmp_path / "clf")
    texts = ["厨房里的油用完了", "你先走吧"]
    torch.testing.assert_close(
        class_probabilities(loaded, loaded_tok, texts), class_probabilities(classifier, tokenizer, texts)
    )
    assert metrics["test"]["accuracy"] == 0.5


def test_a_language_model_is_not_a_classifier(tiny_model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="model_type is 'rnn', not 'classifier'"):
        load_classifier(tiny_model_dir)


def test_config_checks_itself():
    with pytest.raises(ValueError, match="at least two labels"):
        ClassifierConfig(vocab_size=10, labels=("pos",))
    with pytest.raises(ValueError, match="head_dropout"):
        ClassifierConfig(vocab_size=10, labels=LABELS, head_dropout=1.0)


def test_gradual_unfreezing_trains_the_top_groups_only(model):
    classifier, _ = model
    groups = classifier.layer_groups()
    assert len(groups) == 2 + classifier.config.num_layers  # embedding, each layer, the head
    assert sum(len(g) for g in groups) == len(list(classifier.parameters()))  # each parameter once
    try:
        for top in range(1, len(groups) + 1):
            classifier.unfreeze(top)
            trains = [all(p.requires_grad for p in g) for g in groups]
            frozen = [not any(p.requires_grad for p in g) for g in groups]
            assert trains == [i >= len(groups) - top for i in range(len(groups))]
            assert all(t or f for t, f in zip(trains, frozen, strict=True))
        classifier.unfreeze(2)
        assert [n for n, p in classifier.encoder.rnn.named_parameters() if p.requires_grad] == [
            "weight_ih_l1",
            "weight_hh_l1",
            "bias_ih_l1",
            "bias_hh_l1",
        ]
    finally:
        classifier.unfreeze(len(groups))


def test_frozen_groups_keep_their_weights_through_a_step(model):
    classifier, tokenizer = model
    classifier.unfreeze(2)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    optimizer = discriminative_optimizer(classifier, 0.1, 0.01, 2.6)
    ids, lengths = encode_batch([tokenizer.encode("你先走吧").ids], "cpu")
    torch.nn.functional.cross_entropy(classifier(ids, lengths), torch.tensor([1])).backward()
    optimizer.step()
    changed = {k for k, v in classifier.state_dict().items() if not torch.equal(v, before[k])}
    classifier.load_state_dict(before)
    classifier.unfreeze(99)
    assert changed and all(k.startswith("head.") or k.endswith("_l1") for k in changed)
    assert "encoder.embedding.weight" not in changed


def test_discriminative_learning_rates_fall_by_the_factor(model):
    classifier, _ = model
    optimizer = discriminative_optimizer(classifier, 1e-2, 0.01, 2.6)
    rates = sorted({g["base_lr"] for g in optimizer.param_groups}, reverse=True)
    assert rates == pytest.approx([1e-2 / 2.6**k for k in range(4)])
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups if g["params"][0].dim() < 2)


def test_slanted_triangular_rises_then_falls():
    assert slanted_triangular(0.0) == pytest.approx(1 / 32)
    assert slanted_triangular(0.1) == pytest.approx(1.0)
    assert slanted_triangular(1.0) == pytest.approx(1 / 32)
    assert slanted_triangular(0.05) < slanted_triangular(0.1) > slanted_triangular(0.5)


def test_label_subset_is_seeded_stratified_and_in_order():
    rows = [Review(f"t{i}", "pos" if i % 4 == 0 else "neg") for i in range(400)]
    chosen = label_subset(rows, 0.01, seed=3)
    assert chosen == label_subset(rows, 0.01, seed=3) != label_subset(rows, 0.01, seed=4)
    assert sorted(r.label for r in chosen) == ["neg", "neg", "neg", "pos"]
    assert chosen == sorted(chosen, key=rows.index)


def test_naive_bayes_learns_bigrams():
    rows = [
        Review("很好很好", "pos"),
        Review("不错很好", "pos"),
        Review("太差太差", "neg"),
        Review("很差", "neg"),
    ]
    model = NaiveBayes.fit(rows)
    assert model.predict("真的很好") == "pos" and model.predict("真的太差") == "neg"


def _text_in(split: str, stem: str, tail: str = "") -> str:
    return next(t for i in range(1000) if review_split(t := f"{stem}第{i}次购买的体验。{tail}") == split)


def test_labelled_reviews_follow_the_lm_split_and_avoid_its_train_text():
    test_text = _text_in("test", "这本书很好看")
    shared = _text_in("test", "物流很快", "质量非常好而且便宜。")
    train_text = _text_in("train", "酒店的服务很差")
    labelled = [("pos", test_text), ("pos", test_text), ("pos", shared), ("neg", train_text)]
    labelled += [("pos", "两边都有的评论。"), ("neg", "两边都有的评论。")]
    splits, dropped = label_reviews(labelled, lm_train={"质量非常好而且便宜。"})
    assert splits["test"] == [Review(test_text, "pos")]  # once, though written twice
    assert splits["train"] == [Review(train_text, "neg")]
    assert dropped == {"labelled_both_ways": 1, "held_out_sharing_an_lm_train_sentence": 1}


def test_a_bad_jsonl_line_is_named(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "好", "label": "pos"}\n{"text": "差"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"x.jsonl:2"):
        read_labelled(tmp_path / "x.jsonl")


def test_a_smoke_training_run_saves_a_classifier_that_loads(tiny_model_dir, tmp_path):
    data = write_labelled(tmp_path / "data")
    cfg = ClassifierTrainConfig(
        data=str(data),
        out=str(tmp_path / "clf"),
        init_from_lm=str(tiny_model_dir),
        label_fraction=0.5,
        epochs=5,
        batch_chars=32,
        lr=1e-2,
        device="cpu",
    )
    metrics = train_classifier(cfg, say=lambda _: None)
    assert [h["trainable_groups"] for h in metrics["history"]] == [1, 2, 3, 4, 4]
    assert metrics["train_texts"] == len(label_subset(read_labelled(data / "train.jsonl"), 0.5, 0))
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    classifier, tokenizer, saved = load_classifier(tmp_path / "clf")
    assert saved["best"] == metrics["best"] and classifier.labels == LABELS
    assert classify_texts(classifier, tokenizer, ["你先走吧"])[0][0] in LABELS


def test_training_without_a_language_model_builds_its_own_vocabulary(tmp_path):
    data = write_labelled(tmp_path / "data")
    cfg = ClassifierTrainConfig(
        data=str(data), out=str(tmp_path / "clf"), epochs=1, emb_dim=8, hidden_dim=8, device="cpu"
    )
    metrics = train_classifier(cfg, say=lambda _: None)
    assert metrics["history"][0]["trainable_groups"] == 1
    assert isinstance(load_classifier(tmp_path / "clf")[0], Classifier)


def test_the_language_model_fine_tunes_with_the_training_loop(tiny_model_dir, tiny_corpus, tmp_path):
    finetune_lm(
        tiny_model_dir,
        tiny_corpus,
        tmp_path / "lm",
        minutes=1.0,
        device="cpu",
        log=lambda _: None,
        max_tokens=400,
    )
    net, tokenizer = load_encoder_source(tmp_path / "lm")
    original, original_tok, _ = load_rnn(tiny_model_dir)
    assert tokenizer.tokens == original_tok.tokens and net.config.hidden_dim == original.config.hidden_dim
    assert not torch.equal(net.rnn.weight_hh_l0, original.rnn.weight_hh_l0)


def test_a_trained_classifier_has_a_model_card_from_its_figures() -> None:
    from model.training.classifier import ClassifierTrainConfig, classifier_card

    metrics = {
        "valid": {"accuracy": 0.75, "texts": 4},
        "test": {"accuracy": 0.5, "texts": 2},
        "best": {"epoch": 2, "step": 9},
        "stopped": "epochs",
        "elapsed_s": 1.5,
        "device": "cpu",
        "train_texts": 10,
        "train_chars": 120,
    }
    card = classifier_card(ClassifierTrainConfig(data="d/reviews", out="o/clf"), ["neg", "pos"], metrics)
    assert card.startswith("# clf: text classifier (neg, pos)")
    assert "| valid | 0.7500 | 4 |" in card and "| test | 0.5000 | 2 |" in card
