"""The tools suite's judging: BFCL docs become OpenAI tools, the AST checker follows BFCL's rules,
and the markup detector sees calls left in content (on recorded model outputs too)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from suites.tools.checker import check, decode_calls, normalise
from suites.tools.convert import bfcl_name, schema, to_tools
from suites.tools.markup import call_markup
from suites.tools.runner import fidelity

from .tool_fixtures import TRIANGLE, TRIANGLE_ANSWER, WEATHER

TOOL_OUTPUTS = Path(__file__).resolve().parents[1] / "data" / "tool_outputs"


def _check(checker, calls, functions=(TRIANGLE,), answers=(TRIANGLE_ANSWER,), **kw):
    return check(checker, calls=list(calls), functions=list(functions),
                 answers=None if answers is None else list(answers), **kw)


# --- conversion ---------------------------------------------------------------------------------

def test_bfcl_doc_becomes_an_openai_tool_with_json_schema_types():
    before = copy.deepcopy(TRIANGLE)
    tools, names = to_tools([TRIANGLE, WEATHER])
    assert TRIANGLE == before  # the data is not changed
    fn = tools[0]["function"]
    assert tools[0]["type"] == "function" and fn["name"] == "geometry_area_triangle"
    props = fn["parameters"]["properties"]
    assert fn["parameters"]["type"] == "object" and fn["parameters"]["required"] == ["base", "height"]
    assert props["base"]["type"] == "integer" and props["height"]["type"] == "number"
    assert props["corner"] == {"type": "array", "items": {"type": "number"}}
    assert props["meta"] == {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert "type" not in props["anything"]  # any: no constraint
    assert "optional" not in props["unit"]  # not JSON Schema
    assert tools[1]["function"]["parameters"]["properties"]["unit"]["enum"] == ["c", "f"]
    for tool in tools:
        jsonschema.Draft202012Validator.check_schema(tool["function"]["parameters"])
    # ... and back: the name we sent maps to BFCL's; a dotted echo or an unknown name passes through
    assert names == {"geometry_area_triangle": "geometry.area_triangle", "get_weather": "get_weather"}
    assert bfcl_name("geometry_area_triangle", names) == "geometry.area_triangle"
    assert bfcl_name("geometry.area_triangle", names) == "geometry.area_triangle"
    assert bfcl_name("made_up", names) == "made_up"


def test_conversion_refuses_unknown_types_and_name_collisions():
    with pytest.raises(ValueError, match="no JSON Schema mapping"):
        schema({"type": "dict", "properties": {"x": {"type": "complex"}}})
    with pytest.raises(ValueError, match="both become"):
        to_tools([{**WEATHER, "name": "a.b"}, {**WEATHER, "name": "a_b"}])


def test_decoded_calls_map_names_back_and_reject_bad_arguments():
    names = {"geometry_area_triangle": "geometry.area_triangle"}
    calls, problem = decode_calls([{"id": "1", "name": "geometry_area_triangle", "arguments": '{"base": 1}'}], names)
    assert calls == [("geometry.area_triangle", {"base": 1})] and problem is None
    assert "not JSON" in decode_calls([{"name": "f", "arguments": "{base: 1"}], names)[1]
    assert "not a JSON object" in decode_calls([{"name": "f", "arguments": "[1]"}], names)[1]


# --- checker --------------------------------------------------------------------------------------

RIGHT = ("geometry.area_triangle", {"base": 10, "height": 5.0})


@pytest.mark.parametrize("args, ok, why", [
    ({"base": 10, "height": 5.0}, True, "matches"),
    ({"base": 10, "height": 5}, True, "matches"),  # an int is a float
    ({"base": 10, "height": 5.0, "unit": "Units"}, True, "matches"),  # case-insensitive
    ({"base": 10, "height": 5.0, "tags": ["right angle", "SMALL"]}, True, "matches"),
    ({"base": 10, "height": 5.0, "meta": {"a": 1}}, True, "matches"),  # optional dict key left out
    ({"base": 10, "height": 5.0, "meta": {"a": 1, "b": 2}}, True, "matches"),
    ({"base": 10, "height": 5.0, "exact": True}, True, "matches"),
    ({"base": "10", "height": 5.0}, False, "expected type integer"),
    ({"base": 10.5, "height": 5.0}, False, "expected type integer"),
    ({"base": True, "height": 5.0}, False, "expected type integer"),  # a bool is not an int
    ({"base": 10, "height": 5.0, "exact": 1}, False, "expected type boolean"),
    ({"base": 11, "height": 5.0}, False, "not an allowed value"),
    ({"base": 10, "height": 5.0, "unit": "meters"}, False, "not an allowed value"),
    ({"base": 10, "height": 5.0, "tags": ["small", "right angle"]}, False, "not an allowed value"),  # order
    ({"base": 10, "height": 5.0, "tags": ["right angle", 3]}, False, "items must be string"),
    ({"base": 10, "height": 5.0, "meta": {"a": 2}}, False, "not an allowed value"),
    ({"base": 10, "height": 5.0, "meta": {"c": 1}}, False, "not an allowed value"),
    ({"height": 5.0}, False, "required parameter 'base' missing"),
    ({"base": 10, "height": 5.0, "color": "red"}, False, "unexpected parameter 'color'"),
    ({"base": 10, "height": 5.0, "anything": "x"}, False, "unexpected parameter 'anything'"),  # not in the answer
])
def test_simple_checker_rules(args, ok, why):
    verdict = _check("simple", [("geometry.area_triangle", args)])
    assert verdict.correct is ok and why in verdict.reason


def test_a_parameter_the_answer_needs_may_not_be_left_out():
    answer = {"get_weather": {"city": ["Paris"], "unit": ["c"]}}  # no "" in unit's list
    verdict = _check("simple", [("get_weather", {"city": "paris"})], functions=[WEATHER], answers=[answer])
    assert not verdict.correct and "left out" in verdict.reason
    assert _check("simple", [("get_weather", {"city": "Paris", "unit": "C"})], functions=[WEATHER],
                  answers=[answer]).correct


def test_strings_compare_after_bfcl_normalisation():
    assert normalise("San Francisco, CA") == normalise("san francisco ca") == "sanfranciscoca"
    assert normalise("2024-04-01") == normalise("2024/04/01")
    assert normalise("it's") == normalise('it"s')


def test_simple_wants_exactly_one_call_to_the_right_function():
    assert not _check("simple", []).correct
    assert "made 2 call(s), expected 1" in _check("simple", [RIGHT, RIGHT]).reason
    assert "expected 'geometry.area_triangle'" in _check("simple", [("area_triangle", RIGHT[1])]).reason


def test_multiple_checks_the_one_expected_function_among_several():
    functions = [WEATHER, TRIANGLE]
    assert _check("multiple", [RIGHT], functions=functions).correct
    wrong = _check("multiple", [("get_weather", {"city": "Paris"})], functions=functions)
    assert not wrong.correct and "called 'get_weather'" in wrong.reason


PARALLEL_ANSWERS = [{"get_weather": {"city": ["Paris"], "unit": ["c", ""]}},
                    {"get_weather": {"city": ["Berlin", "Paris"], "unit": ["f"]}}]


def test_parallel_matches_the_multiset_of_calls_in_any_order():
    paris, berlin = ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Berlin", "unit": "f"})
    for calls in ([paris, berlin], [berlin, paris]):
        assert _check("parallel", calls, functions=[WEATHER], answers=PARALLEL_ANSWERS).correct
    assert not _check("parallel", [paris], functions=[WEATHER], answers=PARALLEL_ANSWERS).correct
    assert not _check("parallel", [paris, paris], functions=[WEATHER], answers=PARALLEL_ANSWERS).correct
    assert not _check("parallel", [paris, berlin, paris], functions=[WEATHER], answers=PARALLEL_ANSWERS).correct


def test_parallel_finds_a_matching_a_greedy_first_fit_would_miss():
    # ("Paris", f) fits both expected calls; taken first by the first, it would leave nothing for the second.
    calls = [("get_weather", {"city": "Paris", "unit": "f"}), ("get_weather", {"city": "Paris"})]
    answers = [{"get_weather": {"city": ["Paris"], "unit": ["f", ""]}},
               {"get_weather": {"city": ["Paris"], "unit": ["f"]}}]
    assert _check("parallel", calls, functions=[WEATHER], answers=answers).correct


def test_parallel_multiple_mixes_functions():
    answers = [TRIANGLE_ANSWER, {"get_weather": {"city": ["Oslo"], "unit": ["", "c"]}}]
    calls = [("get_weather", {"city": "oslo"}), RIGHT]
    assert _check("parallel", calls, functions=[WEATHER, TRIANGLE], answers=answers).correct
    bad = _check("parallel", [("get_weather", {"city": "Rome"}), RIGHT], functions=[WEATHER, TRIANGLE],
                 answers=answers)
    assert not bad.correct and "'Rome' is not an allowed value" in bad.reason


def test_irrelevance_is_right_only_without_a_call_in_any_form():
    assert _check("irrelevance", [], answers=None).correct
    assert not _check("irrelevance", [RIGHT], answers=None).correct
    verdict = _check("irrelevance", [], answers=None, content_call=True)
    assert not verdict.correct and "content holds a call" in verdict.reason


# --- markup detector ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kinds", [
    ('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', ["hermes", "json"]),
    ('[TOOL_CALLS]f[ARGS]{"a": 1}', ["mistral"]),
    ('<|python_tag|>{"name": "f", "parameters": {"a": 1}}', ["json", "llama3"]),
    ("<|tool_call_start|>[f(a=1)]<|tool_call_end|>", ["lfm", "pythonic"]),
    ('<function=f>{"a": 1}</function>', ["function_tag"]),
    ('{"name": "add", "arguments": {"a": 1}}', ["json"]),
    ('Sure:\n```json\n{\n  "name": "add",\n  "parameters": {"a": 1}\n}\n```', ["json"]),
    ('[{"name": "add", "arguments": "{}"}]', ["json"]),
    ('{"name":"add","arguments":{"a":1,"b":[1,2,3,', ["json_partial"]),  # cut off by max_tokens
    ("[get_weather(city='Paris', unit=\"c\"), math.add(a=[1, 2])]", ["pythonic"]),
    ("Let me check.\n[f()]", ["pythonic"]),
    ("The capital of France is Paris.", []),
    ("Sure! Here are three numbers: [1, 2, 3].", []),
    ("[1, 2, 3] is a list, and print(x) is a call.\n[This line is prose in brackets.]", []),
    ('Use json.dumps({"name": "x"}) or {"arguments": 1}.', []),
    ("[print(x)] uses a positional argument, as code does", []),
    ("", []),
    (None, []),
])
def test_markup_detector(text, kinds):
    assert call_markup(text) == kinds


@pytest.mark.parametrize("calls, content, contains, clean, cut_off", [
    ([{"name": "f", "arguments": "{}"}], None, True, True, False),
    ([], '{"name": "f", "arguments": {"a": 1}}', True, False, False),  # a parse miss
    ([], '{"name": "f", "arguments": {"a": 1, "b": "xxxxxxx', False, False, True),  # cut off: the model's
    ([], '{"name": "f", "arguments": {"c": 3 * 10**8}}', False, False, True),  # not JSON: the model's
    ([{"name": "f", "arguments": "{}"}], '{"name": "g", "arguments": {"a": ', True, False, True),
    ([], "Paris.", False, False, False),
])
def test_fidelity_leaves_calls_no_parser_could_read_out(calls, content, contains, clean, cut_off):
    pf = fidelity(calls, content)
    assert (pf["contains_call"], pf["clean"], pf["cut_off"]) == (contains, clean, cut_off)


def _recorded_outputs():
    return sorted(TOOL_OUTPUTS.glob("*/*.json"))


@pytest.mark.parametrize("path", _recorded_outputs(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_markup_detector_on_recorded_model_outputs(path):
    """Raw model text holds markup when it holds calls; the content a parser leaves holds none."""
    sample = json.loads(path.read_text())
    assert call_markup(sample["expected"]["content"]) == []
    if path.stem != "code_interpreter":  # <|python_tag|> before code: markup, but no tool call
        assert bool(call_markup(sample["raw"])) == bool(sample["expected"]["calls"])
