"""A loaded model's numerics: the precision of its matrix products, and batch-invariant scoring.

Both are set once, after loading (:func:`model.models.loading.load_model`, or the service at startup
from ``RNNLM_PRECISION`` / ``RNNLM_MODEL_PRECISION`` / ``RNNLM_BATCH_INVARIANT``), through
:meth:`LanguageModel.set_numerics <model.models.lm.LanguageModel.set_numerics>`:

* ``precision``: ``fp32`` (the default) or ``bf16``: the products of the explicit cells run on
  bfloat16 copies of the weights (:meth:`model.models.network.RNNLM.product`), states and log-probs
  stay float32. bf16 needs a CPU with native bfloat16 products (AVX512-BF16 or AMX, as oneDNN
  reports it) or a GPU that has them.
* ``batch_invariant``: every product runs on fixed tiles of rows, so a sequence's log-probs are
  bit-identical whatever else shares its batch.

The RNN and the hybrid (the same cells) take both; a model kind without these options (n-gram,
window, mixture) accepts only the defaults.
"""

from __future__ import annotations

import torch

from model.models.network import PRECISIONS

DEFAULT_PRECISION = "fp32"


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 natively (else bf16 would be slower than fp32)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise ValueError, naming the setting, for a precision that is unknown or that ``device``
    cannot run natively."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not bf16_supported(device):
        raise ValueError(
            f"precision bf16: the device {torch.device(device)} has no native bfloat16 matrix products "
            "(a CPU needs AVX512-BF16 or AMX); use fp32"
        )


def refuse_numerics(kind: str, precision: str, batch_invariant: bool) -> None:
    """What a model kind without numerics options says to anything but the defaults."""
    if precision != DEFAULT_PRECISION:
        raise ValueError(f"precision {precision!r}: {kind} models run only in {DEFAULT_PRECISION}")
    if batch_invariant:
        raise ValueError(f"batch_invariant: {kind} models have no batch-invariant scoring")
