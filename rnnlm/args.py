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


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def positive_number(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative(text: str) -> float:
    """An argparse type: a number of at least 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value
