"""What a streamed sample may show so far, when stop strings can still match.

A token is streamed the moment it is generated, but its text may be the start of a stop string
(stop ``"。\\n"``: a ``。`` might be followed by ``\\n``). Such text is held back until it is ruled
out, so a client that appends each event's ``text`` ends with exactly the final, trimmed text::

    stop = ["END"]     token  text so far   shown   held back
                       "E"    "abE"         ""      "E"       (could start "END")
                       "x"    "abEx"        "Ex"    ""        (ruled out)
                       "E"    "abExE"       ""      "E"
                       "N"    "abExEN"      ""      "EN"
                       "D"    "abExEND"     ""      -         stop: final text "abEx"
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.sampling import StoppingCriteria
from model.tokenizer import append_piece


@dataclass
class StreamedText:
    stop: list[str]
    joiner: str = ""  # between pieces: "" for characters, " " for words (the tokenizer's joiner)
    text: str = ""  # everything generated so far
    shown: int = 0  # characters of ``text`` already sent
    final: str | None = field(default=None)  # the trimmed text, once finished

    def push(self, piece: str, finish_reason: str | None) -> str:
        """Add one token's text; return the text that is now safe to send."""
        self.text = append_piece(self.text, piece, self.joiner)
        if finish_reason is not None:
            self.final = StoppingCriteria(0, self.stop).trim(self.text)
            safe = len(self.final)
        else:
            safe = self.safe_length()
        delta = self.text[self.shown : max(safe, self.shown)]
        self.shown = max(safe, self.shown)
        return delta

    def safe_length(self) -> int:
        """Length of the prefix of ``text`` that no stop string can still claim."""
        safe = len(self.text)
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):  # longest tail that starts s
                if self.text.endswith(s[:k]):
                    safe = min(safe, len(self.text) - k)
                    break
        return safe
