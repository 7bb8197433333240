"""The command-line options of the server, shared by ``python -m service`` and ``rnnlm serve``.

Only argparse here: ``rnnlm --help`` builds its parser from this without loading the web stack.
"""

from __future__ import annotations

import argparse


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default: RNNLM_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: RNNLM_PORT or 8000)")
    p.add_argument(
        "--model-dir",
        action="append",
        default=None,
        help="checkpoint directory to serve (repeatable; default: RNNLM_MODEL_DIRS, "
        "else the list in weights/DEFAULT.json)",
    )
