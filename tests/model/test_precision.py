"""Per-model precision: bf16 products applied at load, float32 states and log-probs, refused
where the model kind or the device cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import model.models.precision as precision
from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.loading import load_model
from model.models.ngram.model import build_ngram
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer
from tests.conftest import TINY_LINES

needs_bf16 = pytest.mark.skipif(
    not precision.bf16_supported("cpu"), reason="this CPU has no native bfloat16 products"
)


def seqs(lm: LanguageModel) -> list[list[int]]:
    return [[BOS_ID, *lm.tokenizer.encode(t).ids, EOS_ID] for t in TINY_LINES[:6]]


@needs_bf16
def test_bf16_at_load_scores_close_to_fp32_with_float32_results(tiny_model_dir: Path) -> None:
    fp32 = load_model(tiny_model_dir)
    bf16 = load_model(tiny_model_dir, precision="bf16")
    assert isinstance(bf16, RNNLanguageModel)
    assert bf16.describe()["precision"] == "bf16" and fp32.describe()["precision"] == "fp32"
    want, got = fp32.score_tree(seqs(fp32)), bf16.score_tree(seqs(bf16), [[BOS_ID]], with_state=True)
    diffs = [float((a - b).abs().max()) for a, b in zip(got.logprobs, want.logprobs, strict=True)]
    assert 0 < max(diffs) < 0.1  # bf16 really ran, and stays near
    assert got.next_logprobs is not None and got.next_logprobs.dtype == torch.float32
    assert got.states.dtype == torch.float32
    logprobs, state = bf16.step(bf16.start_state(2), torch.tensor([BOS_ID, BOS_ID]))
    assert logprobs.dtype == torch.float32 and state.dtype == torch.float32
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(2), atol=1e-4)


@needs_bf16
def test_bf16_keeps_the_float32_weights_for_training_and_back_to_fp32(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir, precision="bf16")
    assert isinstance(lm, RNNLanguageModel)
    net = lm.net
    assert all(p.dtype == torch.float32 for p in net.parameters())
    batch = torch.tensor([seqs(lm)[0]])
    with torch.enable_grad():
        out = net.output(net.top_features(torch.randn(2, net.config.hidden_dim)))
        out[torch.isfinite(out)].sum().backward()
    assert net.decoder.weight.grad is not None  # autograd: the float32 weights
    lm.set_numerics("fp32")
    plain = load_model(tiny_model_dir)
    assert torch.equal(
        lm.score_tree([batch[0].tolist()]).logprobs[0], plain.score_tree([batch[0].tolist()]).logprobs[0]
    )


def test_an_unknown_precision_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, not 'fp16'"):
        load_model(tiny_model_dir, precision="fp16")


def test_a_device_without_bf16_is_refused(monkeypatch, tiny_model_dir: Path) -> None:
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    with pytest.raises(ValueError, match="no native bfloat16 matrix products"):
        load_model(tiny_model_dir, precision="bf16")


def test_a_model_kind_without_the_options_accepts_only_the_defaults() -> None:
    lm = build_ngram(Tokenizer.build(TINY_LINES, kind="char"), TINY_LINES, 3, "kn")
    lm.set_numerics()  # the defaults: fine
    assert lm.describe()["precision"] == "fp32"
    with pytest.raises(ValueError, match="ngram models run only in fp32"):
        lm.set_numerics("bf16")
    with pytest.raises(ValueError, match="no batch-invariant scoring"):
        lm.set_numerics(batch_invariant=True)
