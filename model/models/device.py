"""The one place a device name (``auto | cpu | cuda | cuda:N``) becomes a torch device."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto", name: str = "device") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit CUDA request must be
    satisfiable. ``name`` is how the caller's user set it (``--device``, ``RNNLM_DEVICE``)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{name}={requested} but CUDA is not available on this machine (use auto or cpu)"
            )
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"{name}={requested} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return requested


def pick_device(requested: str = "auto") -> torch.device:
    return torch.device(resolve_device(requested))
