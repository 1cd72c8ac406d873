"""The think parser (serving/parsers/reasoning): recorded outputs split as they must be, the
same split for any chunking, nothing of a tag ever leaked as text, plain text untouched."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.parsers.reasoning import (ContentDelta, ReasoningDelta, ReasoningResult, UnknownReasoningParserError,
                                       choose_reasoning_parser, collect)
from serving.parsers.reasoning import PARSERS

from .thinking_fakes import TEMPLATE, chunks, recorded

THINK = PARSERS["think"]
CASES = {name: case for name, case in recorded().items() if not name.startswith("_")}


def streamed(text_chunks, *, inside: bool) -> tuple[ReasoningResult, list]:
    s = THINK.stream(inside=inside)
    events = []
    for piece in text_chunks:
        events += s.feed(piece)
    events += s.finish()
    return collect(events), events


@pytest.mark.parametrize("name", sorted(CASES))
def test_recorded_outputs_split_into_reasoning_and_content(name):
    case = CASES[name]
    assert THINK.parse(case["text"], inside=case["inside"]) == ReasoningResult(case["reasoning"], case["content"])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_recorded_outputs_streamed_in_token_sized_pieces_give_the_same_split(name, size):
    case = CASES[name]
    result, events = streamed(chunks(case["text"], size), inside=case["inside"])
    assert result == THINK.parse(case["text"], inside=case["inside"])
    assert not any(e.text == "" for e in events)


def test_a_tag_split_across_pieces_is_held_back_never_leaked():
    s = THINK.stream()
    assert s.feed("<th") == []
    assert s.feed("ink") == []
    assert s.feed(">\nHmm") == [ReasoningDelta("Hmm")]
    assert s.feed(".</") == [ReasoningDelta(".")]
    assert s.feed("think>") == [] and not s.inside
    assert s.feed("\n\nYes") == [ContentDelta("Yes")]
    assert s.finish() == []


def test_a_partial_tag_that_never_completes_is_text_after_all():
    s = THINK.stream()
    assert s.feed("a <thin") == [ContentDelta("a")]
    assert s.feed("g>") == [ContentDelta(" <thing>")]
    assert s.feed(" <th") == []
    assert s.finish() == [ContentDelta(" <th")]


def test_output_that_starts_inside_reasoning_needs_only_the_closer():
    assert THINK.parse("\nstep one\n</think>\n\nanswer", inside=True) == ReasoningResult("step one", "answer")
    # a model that repeats the opener the prompt already wrote: the second opener is markup
    assert THINK.parse("<think>\nstep\n</think>answer", inside=True) == ReasoningResult("step", "answer")


def test_stray_closer_outside_reasoning_is_dropped_and_blocks_may_repeat():
    assert THINK.parse("a</think> b") == ReasoningResult(None, "a" + "b")
    text = "<think>one</think>\nfirst\n<think>\ntwo\n</think>\nsecond"
    assert THINK.parse(text) == ReasoningResult("onetwo", "firstsecond")
    _, events = streamed(chunks(text, 2), inside=False)
    kinds = [type(e).__name__ for e in events]
    runs = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert runs == ["ReasoningDelta", "ContentDelta", "ReasoningDelta", "ContentDelta"]


def test_prompt_tail_says_whether_reasoning_is_open():
    assert THINK.opens_reasoning("<|assistant|>\n<think>\n")
    assert not THINK.opens_reasoning("<|assistant|>\n<think>\n\n</think>\n\n")
    assert not THINK.opens_reasoning("<|assistant|>\n")


def test_parser_choice():
    assert choose_reasoning_parser("auto", chat_template=TEMPLATE) is THINK
    assert choose_reasoning_parser("auto", chat_template="{{ messages }}") is None
    assert choose_reasoning_parser("auto", chat_template=None) is None
    assert choose_reasoning_parser("none", chat_template=TEMPLATE) is None
    assert choose_reasoning_parser("think") is THINK
    with pytest.raises(UnknownReasoningParserError, match="known: auto, none, think"):
        choose_reasoning_parser("r1")


# ---- properties -------------------------------------------------------------------------

# Text made of the pieces that matter: tags, their fragments, whitespace and words.
PIECES = st.sampled_from(["<think>", "</think>", "<th", "ink>", "</", "think", ">", "<", "/", "\n", " ", "\n\n",
                          "a", "ok", "x y", "é", "<b>", "</b>", "thinking"])


@st.composite
def split_text(draw, pieces=PIECES):
    text = draw(st.lists(pieces, max_size=30).map("".join))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    return text, [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@settings(max_examples=400, deadline=None)
@given(split_text(), st.booleans())
def test_any_split_gives_the_same_reasoning_and_answer(case, inside):
    text, pieces = case
    assert "".join(pieces) == text
    assert streamed(pieces, inside=inside)[0] == THINK.parse(text, inside=inside)


# Whole tags and text that cannot join into one once a tag between them is dropped; the cuts
# still split the tags anywhere.
CLEAN = st.sampled_from(["<think>", "</think>", "<", ">", "/", "<b>", "thinking", "\n", " ", "a", "é"])


@settings(max_examples=400, deadline=None)
@given(split_text(CLEAN), st.booleans())
def test_no_piece_of_a_tag_is_ever_shown(case, inside):
    text, pieces = case
    result, _ = streamed(pieces, inside=inside)
    for shown in (result.reasoning or "", result.content):
        assert "<think>" not in shown and "</think>" not in shown


FRAGMENTS = st.sampled_from(["<th", "ink>", "</", "think", ">", "<", "/", "\n", " ", "\n\n", "a", "ok", "é", "<b>"])


@settings(max_examples=300, deadline=None)
@given(split_text(FRAGMENTS))
def test_text_with_no_tags_comes_back_unchanged(case):
    text, pieces = case
    if "<think>" in text or "</think>" in text:  # fragments that made a tag
        return
    assert THINK.parse(text) == ReasoningResult(None, text)
    assert streamed(pieces, inside=False)[0] == ReasoningResult(None, text)


@settings(max_examples=300, deadline=None)
@given(split_text(), st.booleans())
def test_streaming_never_shows_a_prefix_of_a_tag_it_later_completes(case, inside):
    """Whatever was shown stays true: the streamed pieces, joined at every point, are a prefix
    of the final reasoning and content."""
    text, pieces = case
    final = THINK.parse(text, inside=inside)
    s = THINK.stream(inside=inside)
    shown_r, shown_c = "", ""
    for piece in pieces:
        for e in s.feed(piece):
            if isinstance(e, ReasoningDelta):
                shown_r += e.text
            else:
                shown_c += e.text
        assert (final.reasoning or "").startswith(shown_r) and final.content.startswith(shown_c)
