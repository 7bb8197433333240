"""A tagger checkpoint of `rnnlm train-tagger` carries its MODEL_CARD.md: data, labels, and the
valid and test figures as training measured them (model/training/tagger.py: tagger_card)."""

from __future__ import annotations

from model.models.checkpoint import CARD
from model.training.tagger import TaggerTrainConfig, train_tagger

from .tagger_support import write_tagged_corpus


def test_training_writes_a_model_card_with_its_figures(tmp_path):
    data = write_tagged_corpus(tmp_path / "tiny-tagged")
    cfg = TaggerTrainConfig(
        data=str(data), out=str(tmp_path / "t"), max_steps=2, emb_dim=8, hidden_dim=8, device="cpu"
    )
    metrics = train_tagger(cfg, say=lambda _: None)
    card = (tmp_path / "t" / CARD).read_text(encoding="utf-8")
    assert card.startswith("# t: character tagger")
    assert "`tiny-tagged`" in card and str(tmp_path) not in card  # the corpus by name, no path
    assert f"{metrics['train_sentences']} sentences" in card and "Encoders initialized from: none" in card
    for split in ("valid", "test"):
        m = metrics[split]
        assert f"| {split} | {m['f1']:.4f} | {m['pos_accuracy']:.4f} | {m['pos_f1']:.4f} |" in card
    assert "B/M/E/S × 12 tags" in card and "POST /tag" in card
