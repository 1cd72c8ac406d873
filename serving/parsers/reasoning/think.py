"""`think`: reasoning between <think> and </think> (Qwen3, QwQ, DeepSeek-R1 and their kin).

Rules, the same for a whole text and for any chunking of it:
- outside reasoning, `<think>` opens it; inside, `</think>` closes it. A stray tag (a closer
  outside, a second opener inside) is dropped: markup never reaches a client as text;
- a stream may start inside reasoning: templates such as DeepSeek-R1's and QwQ's end the
  generation prompt with `<think>`, so the model only ever writes the closer;
- whitespace next to a tag belongs to the markup (the "\\n\\n" after `</think>`, the newline
  after `<think>`), so neither side starts or ends with it. Text with no tags at all comes
  back unchanged;
- a tag split across chunks (`<th` + `ink>`) is held back until it is whole or cannot be.
  Trailing whitespace is held too, since a tag may follow it; `finish` releases what is held.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ReasoningResult:
    reasoning: str | None  # None when the text held no reasoning
    content: str


def _partial_tag(buf: str, tags: tuple[str, ...]) -> int:
    """Length of the longest tail of buf that is a proper prefix of a tag."""
    for size in range(min(max(map(len, tags)) - 1, len(buf)), 0, -1):
        tail = buf[-size:]
        if any(tag.startswith(tail) for tag in tags):
            return size
    return 0


class ThinkStream:
    """One response's incremental split into reasoning and content."""

    def __init__(self, start: str, end: str, *, inside: bool) -> None:
        self.start = start
        self.end = end
        self.inside = inside
        self._buf = ""
        self._skip_space = inside  # the prompt's opener came just before the first character

    def _emit(self, text: str, out: list) -> None:
        if not text:
            return
        kind = ReasoningDelta if self.inside else ContentDelta
        if out and isinstance(out[-1], kind):
            out[-1] = kind(out[-1].text + text)
        else:
            out.append(kind(text))

    def _scan(self, *, final: bool) -> list:
        out: list = []
        while True:
            if self._skip_space:
                self._buf = self._buf.lstrip()
                if not self._buf:
                    return out
                self._skip_space = False
            found = [(i, tag) for tag in (self.start, self.end) if (i := self._buf.find(tag)) != -1]
            if found:
                at, tag = min(found)
                self._emit(self._buf[:at].rstrip(), out)
                self._buf = self._buf[at + len(tag):]
                self.inside = tag == self.start
                self._skip_space = True
                continue
            if final:
                self._emit(self._buf, out)
                self._buf = ""
                return out
            held = _partial_tag(self._buf, (self.start, self.end))
            safe = self._buf[: len(self._buf) - held]
            shown = safe.rstrip()
            self._emit(shown, out)
            self._buf = self._buf[len(shown):]
            return out

    def feed(self, text: str) -> list:
        self._buf += text
        return self._scan(final=False)

    def finish(self) -> list:
        return self._scan(final=True)


@dataclass(frozen=True)
class ReasoningParser:
    name: str
    start: str
    end: str

    def stream(self, *, inside: bool = False) -> ThinkStream:
        return ThinkStream(self.start, self.end, inside=inside)

    def parse(self, text: str, *, inside: bool = False) -> ReasoningResult:
        s = self.stream(inside=inside)
        return collect(s.feed(text) + s.finish())

    def opens_reasoning(self, prompt_tail: str) -> bool:
        """Whether a prompt ending in `prompt_tail` leaves the model inside reasoning."""
        return prompt_tail.rfind(self.start) > prompt_tail.rfind(self.end)


def collect(events: list) -> ReasoningResult:
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    return ReasoningResult(reasoning or None, content)


PARSER = ReasoningParser("think", "<think>", "</think>")
