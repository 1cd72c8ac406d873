from hypothesis import given, strategies as st

from serving.engine.text_stream import TextStream


class ByteDetok:
    """Decodes a growing byte string like a BPE detokenizer: broken UTF-8 tails show as U+FFFD."""

    def __init__(self):
        self.buf = b""
        self.text = ""

    def add_token(self, token):
        self.buf += bytes([token])
        self.text = self.buf.decode("utf-8", errors="replace")

    def finalize(self):
        self.text = self.buf.decode("utf-8", errors="replace")


def run(text: str, stop=()):
    stream = TextStream(ByteDetok(), tuple(stop))
    deltas = []
    for b in text.encode("utf-8"):
        deltas.append(stream.add(b))
        if stream.stopped:
            break
    if not stream.stopped:
        deltas.append(stream.finish())
    return deltas, stream.stopped


def test_multibyte_characters_are_never_split():
    deltas, _ = run("héllo 🌍 wörld")
    assert "".join(deltas) == "héllo 🌍 wörld"
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_is_cut_and_not_sent():
    deltas, stopped = run("one two STOP three", stop=["STOP"])
    assert stopped
    assert "".join(deltas) == "one two "


def test_partial_stop_prefix_is_released_when_it_does_not_complete():
    deltas, stopped = run("a ST b", stop=["STOP"])
    assert not stopped
    assert "".join(deltas) == "a ST b"


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=4), max_size=3))
def test_output_is_the_text_cut_at_the_earliest_stop(text, stops):
    deltas, _ = run(text, stop=stops)
    hits = [i for s in stops if (i := text.find(s)) != -1]
    expected = text[: min(hits)] if hits else text
    assert "".join(deltas) == expected


def test_a_longer_stop_that_starts_earlier_wins_over_a_shorter_one_completed_first():
    deltas, stopped = run("0ª0 tail", stop=["ª", "0ª0"])
    assert stopped and "".join(deltas) == ""
