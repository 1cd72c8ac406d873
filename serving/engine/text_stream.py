"""Turn one sequence's token ids into safe text deltas.

Two things are held back until they are certain: a trailing replacement
character (half of a multi-byte UTF-8 character split across tokens), and any
tail that could still grow into a stop string.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, detokenizer, stop: tuple[str, ...] = ()) -> None:
        self._detok = detokenizer
        self._stop = tuple(s for s in stop if s)
        self._emitted = 0
        self.stopped = False
        self.stop_string: str | None = None  # the stop string that ended the text

    def add(self, token: int) -> str:
        """Feed a token; return text that is now safe to send."""
        self._detok.add_token(token)
        return self._release(final=False)

    def finish(self) -> str:
        """Flush whatever remains once the sequence has ended."""
        self._detok.finalize()
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self.stopped:
            return ""
        text = self._detok.text
        if not final:
            # A trailing U+FFFD may be half a character: it is not text yet, so no stop can match it.
            text = text.rstrip(REPLACEMENT)
        hit = self._stop_hit(text)
        if hit is not None and not final:
            # A longer stop string that starts earlier may still complete: wait for it.
            pending = self._incomplete_stop_start(text, before=hit[0])
            if pending is not None:
                return self._take(text, pending)
        if hit is not None:
            self.stopped = True
            cut, self.stop_string = hit
            return self._take(text, cut)
        safe = len(text)
        if not final:
            safe = min(safe, self._holdback_start(text))
        return self._take(text, safe)

    def _take(self, text: str, end: int) -> str:
        if end <= self._emitted:
            return ""
        delta = text[self._emitted:end]
        self._emitted = end
        return delta

    def _stop_hit(self, text: str) -> tuple[int, str] | None:
        """(position, stop string) of the earliest stop string in the text."""
        # Search a little before the emitted mark: a stop string may straddle it.
        longest = max((len(s) for s in self._stop), default=0)
        start = max(0, self._emitted - longest)
        hits = [(i, s) for s in self._stop if (i := text.find(s, start)) != -1]
        return min(hits) if hits else None

    def _incomplete_stop_start(self, text: str, *, before: int) -> int | None:
        """The first position before `before` where the text so far is a proper prefix of a stop string."""
        longest = max((len(s) for s in self._stop), default=0)
        for q in range(max(0, self._emitted - longest), before):
            tail = text[q:]
            if any(len(tail) < len(s) and s.startswith(tail) for s in self._stop):
                return q
        return None

    def _holdback_start(self, text: str) -> int:
        end = len(text)
        while end > self._emitted and text[end - 1] == REPLACEMENT:
            end -= 1
        head = text[:end]
        partial = max(
            (
                k
                for stop in self._stop
                for k in range(1, min(len(stop) - 1, end - self._emitted) + 1)
                if head.endswith(stop[:k])
            ),
            default=0,
        )
        return end - partial
