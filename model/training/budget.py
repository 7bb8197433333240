"""A training run's time budget, its final evaluation included (used by both trainers)."""

from __future__ import annotations

import time

from model.text.tokenizer import Tokenizer


class TimeBudget:
    """``max_minutes`` as a limit on the whole run, its final evaluation included::

        |<──────────────────────────── max_minutes ────────────────────────────>|
        | training and its validations                 | final evaluation       |
                                                       ▲ training stops here: what is left
                                                         is what the final evaluation takes

    The final evaluation (the last validation and one pass over test) is timed, not guessed:
    each evaluation the run makes on this machine gives seconds per token (:meth:`measured`), the
    final passes' tokens are known, and the reserve is their product with a margin. Evaluations
    of another kind (``fit``'s batched validation) add their own seconds (``other_s``).
    """

    MARGIN = 1.25  # the final passes may run a little slower than the measured ones
    SLACK_S = 0.5  # writing the checkpoint, its metrics and the model card

    def __init__(self, minutes: float, final_tokens: int, elapsed_s: float = 0.0) -> None:
        self.limit_s = max(minutes, 0.0) * 60
        self.final_tokens = final_tokens
        self.t0 = time.time() - elapsed_s
        self.s_per_token = 0.0
        self.other_s = 0.0

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    def measured(self, seconds: float, tokens: int) -> None:
        """An evaluation of ``tokens`` took ``seconds``; the latest figure sets the reserve."""
        if tokens > 0:
            self.s_per_token = seconds / tokens

    def reserve_s(self) -> float:
        """Seconds kept for the final evaluation."""
        if self.limit_s <= 0 or (self.final_tokens <= 0 and self.other_s <= 0):
            return 0.0
        return (self.s_per_token * self.final_tokens + self.other_s) * self.MARGIN + self.SLACK_S

    def training_s(self) -> float:
        """Seconds the budget leaves for training and its validations."""
        return max(self.limit_s - self.reserve_s(), 0.0)

    def out_of_time(self) -> bool:
        return self.limit_s > 0 and self.elapsed >= self.training_s()

    def fraction(self) -> float:
        """The share of the training time used (0 without a limit): what the schedule follows."""
        if self.limit_s <= 0:
            return 0.0
        return self.elapsed / max(self.training_s(), 1e-9)

    def describe(self) -> str:
        return (
            f"time budget {self.limit_s / 60:g} min, final evaluation included "
            f"(about {self.reserve_s():.0f} s kept for it)"
        )

    def too_small(self) -> str | None:
        """A warning when the final evaluation alone takes the whole budget."""
        if self.limit_s > 0 and self.training_s() <= 0:
            return (
                f"warning: the final evaluation takes about {self.reserve_s():.0f} s here, the whole "
                f"budget of {self.limit_s / 60:g} min: no time is left to train; give more --max-minutes"
            )
        return None


def timing_sample(lines: list[str], n: int = 64) -> list[str]:
    """``n`` lines of about the median length: one full batch of similar lengths, as the length-sorted
    batches of a whole evaluation are, so its seconds per token are theirs (the first ``n`` lines,
    padded to the longest of them, would cost several times more per token)."""
    by_length = sorted(lines, key=len)
    start = max(0, (len(by_length) - n) // 2)
    return by_length[start : start + n]


def count_tokens(tokenizer: Tokenizer, lines: list[str]) -> int:
    """Tokens an evaluation of ``lines`` scores: each line's pieces and its <eos>."""
    return sum(len(tokenizer.encode(line).ids) + 1 for line in lines)
