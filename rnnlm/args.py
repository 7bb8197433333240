"""Pieces every command module shares: the usage error a handler raises, and the help texts of
options that several commands take. Command modules import this, never ``rnnlm.cli`` (which
imports them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def usage_error(message: str) -> argparse.ArgumentError:
    """Raise this from a handler for a value the command cannot take (exit status 2)."""
    return argparse.ArgumentError(None, message)


DEVICE_HELP = "where to run: auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N"
CORPUS_HELP = "corpus directory (train.txt, valid.txt, test.txt) from `rnnlm prepare-data`"


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {minimum}, got {text}")
        return value

    return parse
