"""Tool-call parsers on recorded and hand-written model outputs, whole and streamed."""

import json
import pathlib

import pytest
from hypothesis import given, settings, strategies as st

from serving.parsers.tools import (
    PARSERS, TextDelta, ToolCallArgs, ToolCallEnd, ToolCallStart, UnknownParserError,
    choose_parser, collect, get_parser,
)

DATA = pathlib.Path(__file__).parents[1] / "data" / "tool_outputs"
RECORDS = sorted(DATA.glob("*/*.json"))
CASES = [
    pytest.param(parser, path, id=f"{parser}:{path.parent.name}/{path.stem}")
    for path in RECORDS
    for parser in json.loads(path.read_text())["parsers"]
]
# Markup that must never reach a client as text, per parser.
MARKUP = {
    "hermes": ("<tool_call>", "</tool_call>"),
    "json": (),
    "llama3": ("<|python_tag|>",),
    "mistral": ("[TOOL_CALLS]", "[ARGS]"),
    "pythonic": (),
    "lfm": ("<|tool_call_start|>", "<|tool_call_end|>"),
}


def load(path):
    record = json.loads(path.read_text())
    return record["raw"], record["expected"]


def as_plain(result):
    return {
        "content": result.content,
        "calls": [{"name": c.name, "arguments": json.loads(c.arguments)} for c in result.calls],
    }


def streamed(parser, text, cuts):
    stream = parser.stream()
    bounds = [0, *sorted(set(cuts)), len(text)]
    events = []
    for a, b in zip(bounds, bounds[1:]):
        events += stream.feed(text[a:b])
    return events + stream.finish()


def test_there_are_recordings_for_every_format():
    formats = {p for path in RECORDS for p in json.loads(path.read_text())["parsers"]}
    assert formats == set(PARSERS)
    assert len(list((DATA / "qwen2.5-coder-0.5b").glob("*.json"))) >= 8


@pytest.mark.parametrize("parser,path", CASES)
def test_whole_text_parse_matches_expected(parser, path):
    raw, expected = load(path)
    result = get_parser(parser).parse(raw)
    assert as_plain(result) == expected
    for call in result.calls:  # normalised: what json.dumps of the object gives
        assert call.arguments == json.dumps(json.loads(call.arguments), ensure_ascii=False)


@pytest.mark.parametrize("parser,path", CASES)
def test_one_character_at_a_time_matches_expected(parser, path):
    raw, expected = load(path)
    events = streamed(get_parser(parser), raw, range(1, len(raw)))
    assert as_plain(collect(events)) == expected


@pytest.mark.parametrize("parser,path", CASES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_chunking_matches_the_whole_parse(parser, path, data):
    raw, _ = load(path)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=20))
    p = get_parser(parser)
    events = streamed(p, raw, cuts)
    assert collect(events) == p.parse(raw)
    text = [e.text for e in events if isinstance(e, TextDelta)]
    assert all(text), "no empty text deltas"
    for marker in MARKUP[parser]:
        assert all(marker not in t for t in text)


@pytest.mark.parametrize("parser,path", CASES)
def test_no_markup_in_content(parser, path):
    raw, expected = load(path)
    content = get_parser(parser).parse(raw).content
    for marker in MARKUP[parser]:
        assert marker not in content
    if expected["calls"]:  # a fence or bare JSON that held calls is gone from the text
        assert '"name"' not in content and "```json" not in content


def test_events_of_a_call_come_in_order_with_consecutive_indexes():
    text = 'Hi.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call><tool_call>{"name": "b", "arguments": {"x": [1]}}</tool_call>'
    events = streamed(get_parser("hermes"), text, [3, 10, 30])
    assert events == [
        TextDelta("Hi."),
        ToolCallStart(0, "a"), ToolCallArgs(0, "{}"), ToolCallEnd(0),
        ToolCallStart(1, "b"), ToolCallArgs(1, '{"x": [1]}'), ToolCallEnd(1),
    ]


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("text", [
    "Use {x} here",
    "[1, 2, 3] are numbers",
    "{\"a\": 1}",
    "[{\"name\": \"not a call: no arguments\"}]",
    "{\"name\": \"f\", \"arguments\": [1]}",
    "```json\n{\"key\": \"value\"}\n```\n",
    "```python\ndef f(x):\n    return {x: [x]}\n```\n\nDone.",
    "a < b and [c] > d; e {",
    "  indented {brace\n[unclosed",
    "trailing space and newline \n",
])
def test_text_that_is_not_a_call_comes_back_unchanged(parser, text):
    p = get_parser(parser)
    assert p.parse(text).content == text and p.parse(text).calls == []
    assert collect(streamed(p, text, range(1, len(text)))).content == text


def test_text_around_a_call_keeps_its_paragraph_break():
    result = get_parser("hermes").parse(
        'Sure.\n\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\n\nDone.'
    )
    assert result.content == "Sure.\n\nDone."


def test_arguments_given_as_json_text_are_parsed_then_dumped():
    result = get_parser("json").parse('{"name": "f", "arguments": "{\\"a\\":1,  \\"b\\":\\"é\\"}"}')
    assert result.calls[0].arguments == '{"a": 1, "b": "é"}'


def test_cut_off_call_is_still_read_at_the_end():
    text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n'
    assert [c.name for c in get_parser("hermes").parse(text).calls] == ["f"]


def test_malformed_payload_keeps_its_words_but_not_its_markers():
    result = get_parser("hermes").parse("<tool_call>not json</tool_call>")
    assert result == get_parser("hermes").parse("not json") and not result.calls


def test_pythonic_refuses_non_literal_arguments():
    p = get_parser("pythonic")
    for text in ("[f(x=y)]", "[f(1)]", "[f(x={1, 2})]", "[f(**k)]", "[]"):
        assert p.parse(text).calls == [] and p.parse(text).content == text


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownParserError) as err:
        get_parser("nope")
    for name in [*PARSERS, "auto"]:
        assert name in str(err.value)
    with pytest.raises(UnknownParserError):
        choose_parser("nope", chat_template="<tool_call>")


@pytest.mark.parametrize("template,start,expected", [
    ("... within <tool_call></tool_call> XML tags ...", None, "hermes"),
    ("{{- '<|python_tag|>' + tool_call }}", None, "llama3"),
    ("{{ '[TOOL_CALLS]' + tool_calls|tojson }}", None, "mistral"),
    ("<|tool_list_start|>...<|tool_call_start|>", None, "lfm"),
    ("{{ messages }}", "<tool_call>", "hermes"),
    ("mentions <tool_call> too", "<|tool_call_start|>", "lfm"),
    ("{% for m in messages %}{{ m.content }}{% endfor %}", None, "json"),
    (None, None, "json"),
])
def test_auto_reads_markers_from_the_tokenizer_then_the_template(template, start, expected):
    assert choose_parser("auto", chat_template=template, tool_call_start=start).name == expected


def test_an_explicit_name_beats_the_template():
    assert choose_parser("pythonic", chat_template="<tool_call>").name == "pythonic"


def test_auto_on_the_recorded_model_template_reads_its_bare_json():
    template = (DATA / "qwen2.5-coder-0.5b" / "chat_template.jinja").read_text()
    parser = choose_parser("auto", chat_template=template)
    assert parser.name == "hermes"
    raw, expected = load(DATA / "qwen2.5-coder-0.5b" / "weather_paris.json")
    assert as_plain(parser.parse(raw)) == expected


# Pieces that meet each other in awkward ways: partial markers, fences, separators, blanks.
PIECES = [
    "<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "f",
    "<|tool_call_start|>", "<|tool_call_end|>", '{"name": "f", "arguments": {"a": 1}}',
    '{"name": "g", "parameters": {}}', "[g(x='}')]", '{"a": "]"}', "```json\n", "```", "\n",
    " ", ";", "[", "{", "}", "]", "text", "<", '"', "\\",
]


@pytest.mark.parametrize("parser", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=12), data=st.data())
def test_streaming_equals_whole_on_arbitrary_mixtures(parser, pieces, data):
    text = "".join(pieces)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=12))
    p = get_parser(parser)
    assert collect(streamed(p, text, cuts)) == p.parse(text)


@pytest.mark.parametrize("parser", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=12))
def test_markers_never_reach_the_content(parser, pieces):
    content = get_parser(parser).parse("".join(pieces)).content
    assert not [m for m in MARKUP[parser] if m in content]
