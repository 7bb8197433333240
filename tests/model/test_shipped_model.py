"""The checkpoint committed under weights/ loads, verifies, and scores real text sensibly."""

import json
import math

from model.models.evaluate import evaluate_lines
from model.models.loading import load_model

from ..conftest import SHIPPED

# News sentences in the style of the training data (written for this test, not from the corpus).
NEWS = [
    "国务院总理在北京会见了来访的外国代表团。",
    "今年全国粮食生产获得丰收，农民收入继续增加。",
    "新华社北京一月五日电",
]


def test_shipped_checkpoint_loads_and_scores_news_text():
    lm = load_model(SHIPPED)
    assert lm.kind == "rnn"
    result = evaluate_lines(lm, NEWS)
    assert result["tokens"] == sum(len(s) + 1 for s in NEWS)
    assert result["oov"] == 0
    # An untrained model over ~4.6k characters sits near 4,600; a trained news model far below.
    assert result["perplexity"] < 150


def test_shipped_model_prefers_fluent_text_over_shuffled_text():
    lm = load_model(SHIPPED)
    fluent = evaluate_lines(lm, NEWS)["perplexity"]
    shuffled = evaluate_lines(lm, ["".join(sorted(s)) for s in NEWS])["perplexity"]
    assert shuffled > 3 * fluent


def test_shipped_metrics_record_data_and_the_per_sentence_test_figures():
    metrics = json.loads((SHIPPED / "metrics.json").read_text(encoding="utf-8"))
    assert len(metrics["data"]["sha256"]["train"]) == 64
    test = metrics["test"]
    assert test["mode"] == "per-sentence" and test["lines"] == 975 and test["tokens"] == 83258
    assert math.isfinite(test["perplexity"])
    # It beats this project's Katz 5-gram (89.63) but NOT the modified-Kneser-Ney 5-gram (68.39):
    # see docs/RESULTS.md. Tighten this bound when a better model is shipped.
    assert test["perplexity"] < 89.63
