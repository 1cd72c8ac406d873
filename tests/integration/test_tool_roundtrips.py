"""Tool calls and structured output through the official SDKs, on the real server and model.

The default model has no tool syntax of its own, so these force the call
(`required` / `any` / a named function): the grammar guarantees a valid call,
and the test checks the whole round trip: call -> tool result -> answer.
"""

from __future__ import annotations

import json

import anthropic
import jsonschema
import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ASK = "What is the weather in Paris? Use the tool."


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)


def test_chat_completions_round_trip(oai):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                               "parameters": WEATHER}}]
    messages = [{"role": "user", "content": ASK}]
    first = oai.chat.completions.create(model=MODEL, messages=messages, tools=tools, tool_choice="required",
                                        max_tokens=60, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    answer = oai.chat.completions.create(model=MODEL, messages=messages, tools=tools, max_tokens=30, temperature=0)
    assert answer.choices[0].finish_reason in {"stop", "length", "tool_calls"}


def test_chat_stream_matches_whole_for_a_forced_call(oai):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": ASK}], tools=tools, max_tokens=60,
                  temperature=0, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = oai.chat.completions.create(**kwargs).choices[0].message.tool_calls[0].function
    parts = [tc for c in oai.chat.completions.create(stream=True, **kwargs) if c.choices
             for tc in c.choices[0].delta.tool_calls or []]
    assert parts[0].function.name == whole.name
    assert "".join(p.function.arguments or "" for p in parts) == whole.arguments


def test_responses_round_trip(oai):
    tools = [{"type": "function", "name": "get_weather", "description": "Current weather", "parameters": WEATHER}]
    first = oai.responses.create(model=MODEL, input=ASK, tools=tools, tool_choice="required",
                                 max_output_tokens=60, temperature=0)
    call = next(o for o in first.output if o.type == "function_call")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    answer = oai.responses.create(model=MODEL, previous_response_id=first.id, tools=tools, max_output_tokens=30,
                                  temperature=0, input=[{"type": "function_call_output", "call_id": call.call_id,
                                                         "output": "18 degrees and sunny"}])
    assert answer.status in {"completed", "incomplete"}


def test_anthropic_round_trip(claude):
    tools = [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER}]
    messages = [{"role": "user", "content": ASK}]
    first = claude.messages.create(model=MODEL, max_tokens=60, messages=messages, tools=tools,
                                   tool_choice={"type": "any"}, extra_body={"temperature": 0})
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    jsonschema.validate(use.input, WEATHER)
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": "18 degrees and sunny"}]}]
    answer = claude.messages.create(model=MODEL, max_tokens=30, messages=messages, tools=tools,
                                    extra_body={"temperature": 0})
    assert answer.stop_reason in {"end_turn", "max_tokens", "tool_use"}


def test_json_schema_output_always_validates(oai):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    for who in ("a pirate", "a teacher", "a robot"):
        r = oai.chat.completions.create(
            model=MODEL, max_tokens=60, temperature=0, messages=[{"role": "user", "content": f"Describe {who}."}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema,
                                                                    "strict": True}})
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
