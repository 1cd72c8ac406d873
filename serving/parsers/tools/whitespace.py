"""Whitespace next to removed markup: trimmed the same way whether streamed or whole."""

from __future__ import annotations

from .events import Event, TextDelta


class Whitespace:
    """Trims whitespace that only surrounded removed markup, and nothing else.

    Whitespace after markup is dropped; whitespace before it is held, and kept as the separator
    only if more text follows, so "Sure.\\n\\n<call>\\n\\nDone" reads "Sure.\\n\\nDone". Text
    with no markup passes through unchanged. It works per character, so chunking cannot matter.
    """

    def __init__(self):
        self._pending = ""  # trailing whitespace not yet sent
        self._touches_markup = False  # markup came after the pending whitespace
        self._after_markup = False  # only whitespace since the last markup
        self._sent_any = False

    def text(self, piece: str) -> list[Event]:
        if self._after_markup:
            piece = piece.lstrip()
            if not piece:
                return []
            self._after_markup = False
        body = piece.rstrip()
        if not body:
            self._pending += piece
            return []
        keep = self._sent_any or not self._touches_markup
        out = (self._pending if keep else "") + body
        self._pending, self._touches_markup, self._sent_any = piece[len(body) :], False, True
        return [TextDelta(out)]

    def markup(self) -> None:
        self._touches_markup = self._after_markup = True

    def finish(self) -> list[Event]:
        if self._pending and not self._touches_markup:
            return [TextDelta(self._pending)]
        return []
