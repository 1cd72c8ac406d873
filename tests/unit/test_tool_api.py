"""Tools on every dialect against a fake engine: calls parsed out of the text, ids, schema
coercion, finish reasons, no markup in text, forced calls and formats reaching the grammar slot."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig

from .fakes import FakeConstraints, FakeEngine, served

CALL = ('{"name": "get_weather", ', '"arguments": {"city": "Paris", "days": "3"}}')
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city"]}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Forecast",
                                                  "parameters": WEATHER}}]
HI = [{"role": "user", "content": "Weather in Paris?"}]


def client(pieces=CALL, constraints=None, tool_prompt="generic"):
    engine = FakeEngine(pieces)
    app = create_app(ServerConfig(tool_prompt=tool_prompt), engine, served(context_length=4096), {},
                     constraints=constraints)
    return testing.TestClient(app), engine


def sse(text: str) -> list[tuple[str | None, dict]]:
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("data", "[DONE]") != "[DONE]":
            out.append((lines.get("event"), json.loads(lines["data"])))
    return out


def test_chat_call_is_structured_with_id_and_coerced_arguments():
    c, engine = client()
    body = c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": OPENAI_TOOLS}).json
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 3}  # "3" -> 3: the schema says integer
    assert "get_weather" in engine.tokenizer.decode(engine.requests[-1].prompt_tokens)  # the tools reached the prompt


def test_chat_stream_carries_the_same_call_and_no_markup():
    c, _ = client()
    events = sse(c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": OPENAI_TOOLS,
                                                               "stream": True}).text)
    deltas = [d["choices"][0] for _, d in events if d["choices"]]
    text = "".join(d["delta"].get("content") or "" for d in deltas)
    calls = [tc for d in deltas for tc in d["delta"].get("tool_calls") or []]
    assert text == "" and len(calls) == 1
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "days": 3}
    assert deltas[-1]["finish_reason"] == "tool_calls"


def test_plain_answer_with_tools_stays_text_and_tool_choice_none_parses_nothing():
    c, _ = client(("It is ", "sunny."))
    body = c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": OPENAI_TOOLS}).json
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "It is sunny."}
    c, engine = client()
    body = c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": OPENAI_TOOLS,
                                                         "tool_choice": "none"}).json
    assert body["choices"][0]["message"]["content"] == "".join(CALL)
    assert "get_weather" not in engine.tokenizer.decode(engine.requests[-1].prompt_tokens)


def test_without_template_support_auto_shows_no_tools_and_says_so():
    c, engine = client(tool_prompt="auto")  # the fake template renders no tools
    result = c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": OPENAI_TOOLS})
    assert "not shown to the model" in result.headers["x-mlx-proof-warning"]
    assert result.json["choices"][0]["message"]["content"] == "".join(CALL)  # plain text, not parsed
    assert "get_weather" not in engine.tokenizer.decode(engine.requests[-1].prompt_tokens)


def test_without_template_support_a_forced_call_still_gets_the_generic_prompt():
    c, engine = client(tool_prompt="auto", constraints=FakeConstraints())
    body = c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": OPENAI_TOOLS,
                                                         "tool_choice": "required"}).json
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "get_weather" in engine.tokenizer.decode(engine.requests[-1].prompt_tokens)


@pytest.mark.parametrize("choice, names", [("required", ["get_weather", "f2"]),
                                           ({"type": "function", "function": {"name": "f2"}}, ["f2"])])
def test_forced_calls_fill_the_constraint_slot(choice, names):
    grammar = FakeConstraints()
    c, engine = client(constraints=grammar)
    tools = [*OPENAI_TOOLS, {"type": "function", "function": {"name": "f2", "parameters": {"type": "object"}}}]
    c.simulate_post("/v1/chat/completions", json={"messages": HI, "tools": tools, "tool_choice": choice,
                                                  "parallel_tool_calls": False})
    assert grammar.asked == [("tools", names, False)]
    assert engine.requests[-1].logits_processor is not None


@pytest.mark.parametrize("url, extra, schema", [
    ("/v1/chat/completions", {"messages": HI, "response_format": {"type": "json_object"}}, None),
    ("/v1/chat/completions", {"messages": HI, "response_format": {"type": "json_schema",
                                                                  "json_schema": {"name": "w", "schema": WEATHER}}},
     WEATHER),
    ("/v1/responses", {"input": "hi", "text": {"format": {"type": "json_schema", "name": "w", "schema": WEATHER}}},
     WEATHER),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": HI,
                      "output_config": {"format": {"type": "json_schema", "schema": WEATHER}}}, WEATHER),
])
def test_structured_output_fills_the_constraint_slot(url, extra, schema):
    grammar = FakeConstraints()
    c, engine = client(("{}",), constraints=grammar)
    assert c.simulate_post(url, json=extra).status_code == 200
    assert grammar.asked == [("json", schema)] and engine.requests[-1].logits_processor is not None


def test_anthropic_tool_use_block_whole_and_streamed():
    c, _ = client()
    tools = [{"name": "get_weather", "description": "Forecast", "input_schema": WEATHER}]
    body = {"model": "m", "max_tokens": 50, "messages": HI, "tools": tools}
    whole = c.simulate_post("/v1/messages", json=body).json
    assert whole["stop_reason"] == "tool_use"
    (block,) = whole["content"]
    assert block["type"] == "tool_use" and block["input"] == {"city": "Paris", "days": 3}
    events = sse(c.simulate_post("/v1/messages", json={**body, "stream": True}).text)
    start = [d for e, d in events if e == "content_block_start"][0]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "get_weather"
    partial = "".join(d["delta"]["partial_json"] for e, d in events
                      if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta")
    assert json.loads(partial) == block["input"]
    assert [d for e, d in events if e == "message_delta"][0]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_any_forces_a_call():
    grammar = FakeConstraints()
    c, _ = client(constraints=grammar)
    c.simulate_post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": HI,
                                          "tools": [{"name": "get_weather", "input_schema": WEATHER}],
                                          "tool_choice": {"type": "any"}})
    assert grammar.asked == [("tools", ["get_weather"], True)]


def test_responses_function_call_item_whole_and_streamed():
    c, _ = client()
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER},
             {"type": "web_search"}]  # hosted tools cannot run here; accepted, not shown to the model
    whole = c.simulate_post("/v1/responses", json={"input": "Weather?", "tools": tools}).json
    calls = [o for o in whole["output"] if o["type"] == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0]["arguments"]) == {"city": "Paris", "days": 3}
    events = sse(c.simulate_post("/v1/responses", json={"input": "Weather?", "tools": tools, "stream": True}).text)
    types = [e for e, _ in events]
    assert "response.function_call_arguments.done" in types and "response.output_text.delta" not in types
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))


def test_responses_named_tool_choice_is_forced_and_echoed():
    grammar = FakeConstraints()
    c, _ = client(constraints=grammar)
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    choice = {"type": "function", "name": "get_weather"}
    for stream in (False, True):
        result = c.simulate_post("/v1/responses", json={"input": "Weather?", "tools": tools, "tool_choice": choice,
                                                        "stream": stream})
        assert result.status_code == 200
    assert c.simulate_post("/v1/responses", json={"input": "Weather?", "tools": tools,
                                                  "tool_choice": choice}).json["tool_choice"] == choice
    assert grammar.asked[0] == ("tools", ["get_weather"], True)


def test_a_cut_after_complete_calls_still_says_length_on_every_dialect():
    # One whole call, then the opening of another that max_tokens cut off: the client must learn
    # that its answer is partial (Codex looped on a "completed" response holding such a tail).
    pieces = (*CALL, ' {"name": "get_')
    c, _ = client(pieces)
    chat = c.simulate_post("/v1/chat/completions",
                           json={"messages": HI, "tools": OPENAI_TOOLS, "max_tokens": 3}).json["choices"][0]
    assert chat["finish_reason"] == "length" and len(chat["message"]["tool_calls"]) == 1
    anthropic_tools = [{"name": "get_weather", "description": "Forecast", "input_schema": WEATHER}]
    msg = c.simulate_post("/v1/messages", json={"model": "m", "max_tokens": 3, "messages": HI,
                                                "tools": anthropic_tools}).json
    assert msg["stop_reason"] == "max_tokens" and [b["type"] for b in msg["content"]][0] == "tool_use"
    responses_tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    resp = c.simulate_post("/v1/responses", json={"input": "Weather in Paris?", "tools": responses_tools,
                                                  "max_output_tokens": 3}).json
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["type"] == "function_call"
