"""Reasoning on every dialect against a fake engine whose chat template thinks: the split
reaches chat `reasoning_content`, Responses reasoning items and Anthropic thinking blocks,
whole and streamed, each checked strictly against the official SDK types; the request's
controls reach the template and the budget reaches the engine; bad values are 400s."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from serving.app import create_app
from serving.config import ServerConfig
from serving.constraints.reasoning_budget import ReasoningBudget
from suites.contracts.conformance import check

from .fakes import FakeConstraints, FakeEngine, served
from .thinking_fakes import chunks, recorded, thinking_engine

CASES = recorded()
R1 = CASES["deepseek_r1"]  # the template opened <think>: the model writes only </think>
QWEN3 = CASES["qwen3_thinking"]  # the model opens <think> itself
TOOL = CASES["qwen3_tool_call"]
HI = [{"role": "user", "content": "What is 17 times 23?"}]
CHAT, RESPONSES, MESSAGES = "/v1/chat/completions", "/v1/responses", "/v1/messages"


def client(text=R1["text"], *, engine=None, constraints=None, **cfg):
    engine = engine or thinking_engine(chunks(text))
    app = create_app(ServerConfig(**cfg), engine, served(context_length=4096), {}, constraints=constraints)
    return testing.TestClient(app), engine


def conforms(result, path, *, anthropic=False) -> None:
    verdict = check("POST", path, result.status_code, result.headers["content-type"], result.content,
                    anthropic=anthropic)
    assert verdict["checked"] >= 1 and verdict["failures"] == [], verdict


def sse(result) -> list[dict]:
    out = []
    for block in result.text.split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data and data[0] != "[DONE]":
            out.append(json.loads(data[0]))
    return out


def prompt(engine) -> str:
    return engine.tokenizer.decode(engine.requests[-1].prompt_tokens)


def no_tags(*texts) -> bool:
    return not any("<think>" in t or "</think>" in t for t in texts)


# ---- chat completions ----------------------------------------------------------------

def test_chat_whole_has_reasoning_content_and_reasoning_tokens():
    c, engine = client()
    result = c.simulate_post(CHAT, json={"messages": HI})
    conforms(result, CHAT)
    message = result.json["choices"][0]["message"]
    assert prompt(engine).endswith("<|assistant|>\n<think>\n")
    assert message == {"role": "assistant", "content": R1["content"], "reasoning_content": R1["reasoning"]}
    usage = result.json["usage"]
    assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] < usage["completion_tokens"]


def test_chat_stream_sends_reasoning_deltas_before_content_deltas():
    c, _ = client()
    result = c.simulate_post(CHAT, json={"messages": HI, "stream": True, "stream_options": {"include_usage": True}})
    conforms(result, CHAT)
    deltas = [chunk["choices"][0]["delta"] for chunk in sse(result) if chunk["choices"]]
    reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    content = [d["content"] for d in deltas if d.get("content")]
    assert "".join(reasoning) == R1["reasoning"] and "".join(content) == R1["content"]
    assert no_tags(*reasoning, *content)
    kinds = ["r" if "reasoning_content" in d else "c" for d in deltas if d.get("content") or "reasoning_content" in d]
    assert kinds == sorted(kinds, reverse=True)  # every reasoning delta comes first
    assert sse(result)[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


def test_chat_text_without_think_tags_has_no_reasoning_content():
    c, engine = client(CASES["qwen3_thinking_off"]["text"])
    result = c.simulate_post(CHAT, json={"messages": HI, "enable_thinking": False})
    conforms(result, CHAT)
    assert prompt(engine).endswith("<think>\n\n</think>\n\n")  # the switch reached the template
    assert result.json["choices"][0]["message"] == {"role": "assistant",
                                                    "content": CASES["qwen3_thinking_off"]["content"]}
    assert result.json["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    stream = c.simulate_post(CHAT, json={"messages": HI, "enable_thinking": False, "stream": True})
    assert not any("reasoning_content" in ch["choices"][0]["delta"] for ch in sse(stream) if ch["choices"])


def test_a_model_that_opens_think_itself_is_split_too():
    engine = FakeEngine(tuple(chunks(QWEN3["text"], 2)))  # its template never mentions <think>
    c, _ = client(engine=engine, reasoning_parser="think")
    message = c.simulate_post(CHAT, json={"messages": HI}).json["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (QWEN3["reasoning"], QWEN3["content"])


def test_auto_parses_only_for_a_template_that_thinks_and_none_turns_it_off():
    plain = FakeEngine(tuple(chunks(QWEN3["text"])))
    c, _ = client(engine=plain)  # auto, and the fake template has no <think>: the text is untouched
    body = c.simulate_post(CHAT, json={"messages": HI}).json
    assert body["choices"][0]["message"] == {"role": "assistant", "content": QWEN3["text"]}
    assert "completion_tokens_details" not in body["usage"]
    c, _ = client(reasoning_parser="none")
    assert c.simulate_post(CHAT, json={"messages": HI}).json["choices"][0]["message"]["content"] == R1["text"]


def test_reasoning_comes_first_and_the_tool_parser_reads_the_answer():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    c, _ = client(TOOL["text"], tool_call_parser="hermes", tool_prompt="generic", reasoning_parser="think")
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools, "enable_thinking": False}
    result = c.simulate_post(CHAT, json=body)
    conforms(result, CHAT)
    choice = result.json["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == TOOL["reasoning"]
    assert [json.loads(t["function"]["arguments"]) for t in choice["message"]["tool_calls"]] == [{"city": "Paris"}]
    streamed = c.simulate_post(CHAT, json={**body, "stream": True})
    conforms(streamed, CHAT)
    deltas = [ch["choices"][0]["delta"] for ch in sse(streamed) if ch["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == TOOL["reasoning"]
    assert "".join(d.get("content") or "" for d in deltas) == ""
    assert [tc["function"]["name"] for d in deltas for tc in d.get("tool_calls") or []] == ["get_weather"]


def test_earlier_reasoning_content_reaches_the_template():
    c, engine = client()
    history = [*HI, {"role": "assistant", "content": "391", "reasoning_content": "17*23"},
               {"role": "user", "content": "sure?"}]
    assert c.simulate_post(CHAT, json={"messages": history}).status_code == 200
    assert "<|assistant|>\n<think>\n17*23\n</think>\n391<|end|>" in prompt(engine)


# ---- Responses -----------------------------------------------------------------------

def test_responses_whole_puts_a_reasoning_item_before_the_message():
    c, _ = client()
    result = c.simulate_post(RESPONSES, json={"input": "What is 17 times 23?"})
    conforms(result, RESPONSES)
    reasoning, message = result.json["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_") and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": R1["reasoning"]}]
    assert message["type"] == "message" and message["content"][0]["text"] == R1["content"]
    assert result.json["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


def test_responses_stream_events_for_the_reasoning_item():
    c, _ = client()
    result = c.simulate_post(RESPONSES, json={"input": "What is 17 times 23?", "stream": True})
    conforms(result, RESPONSES)
    events = sse(result)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events if not e["type"].endswith(".delta")]
    assert types == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added",
                     "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
                     "response.output_item.added", "response.content_part.added",
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"]
    assert "".join(deltas) == R1["reasoning"] and no_tags(*deltas)
    done = events[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == R1["reasoning"]
    whole = c.simulate_post(RESPONSES, json={"input": "What is 17 times 23?"}).json
    assert [o["type"] for o in done["output"]] == [o["type"] for o in whole["output"]]


def test_responses_cut_off_in_reasoning_is_incomplete_with_an_empty_message():
    text = CASES["cut_off_while_thinking"]["text"]
    engine = thinking_engine(chunks(text))
    c, _ = client(engine=engine)
    result = c.simulate_post(RESPONSES, json={"input": "hi", "max_output_tokens": len(chunks(text))})
    conforms(result, RESPONSES)
    assert result.json["status"] == "incomplete"
    reasoning, message = result.json["output"]
    assert reasoning["status"] == message["status"] == "incomplete"
    assert reasoning["content"][0]["text"] == text and message["content"][0]["text"] == ""


def test_responses_effort_none_turns_thinking_off_and_reasoning_items_replay():
    c, engine = client(CASES["qwen3_thinking_off"]["text"])
    first = c.simulate_post(RESPONSES, json={"input": "hi", "reasoning": {"effort": "none"}})
    conforms(first, RESPONSES)
    assert engine.tokenizer.rendered[-1] == {"enable_thinking": False}
    assert first.json["reasoning"] == {"effort": "none", "summary": None}
    assert [o["type"] for o in first.json["output"]] == ["message"]
    c2, engine2 = client()
    stored = c2.simulate_post(RESPONSES, json={"input": "hi"}).json
    again = c2.simulate_post(RESPONSES, json={"input": "more", "previous_response_id": stored["id"]})
    assert again.status_code == 200 and "<|assistant|>\n" + R1["content"] in prompt(engine2)


# ---- Anthropic Messages ----------------------------------------------------------------

def test_anthropic_whole_has_a_signed_thinking_block_before_the_text():
    c, engine = client()
    result = c.simulate_post(MESSAGES, json={"model": "m", "max_tokens": 200, "messages": HI,
                                             "thinking": {"type": "enabled", "budget_tokens": 100}})
    conforms(result, MESSAGES, anthropic=True)
    thinking, text = result.json["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == R1["reasoning"] and thinking["signature"]
    assert text == {"type": "text", "text": R1["content"]}
    assert 0 < result.json["usage"]["output_tokens_details"]["thinking_tokens"] < result.json["usage"]["output_tokens"]
    assert engine.tokenizer.rendered[-1] == {"enable_thinking": True}


def test_anthropic_stream_thinking_delta_then_signature_then_text():
    c, _ = client()
    body = {"model": "m", "max_tokens": 200, "messages": HI, "stream": True}
    result = c.simulate_post(MESSAGES, json=body)
    conforms(result, MESSAGES, anthropic=True)
    events = [e for e in sse(result) if e["type"] != "ping"]
    kinds = [e["type"] if e["type"] != "content_block_delta" else e["delta"]["type"] for e in events]
    runs = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert runs == ["message_start", "content_block_start", "thinking_delta", "signature_delta", "content_block_stop",
                    "content_block_start", "text_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    thinking = "".join(e["delta"]["thinking"] for e in events if kinds[events.index(e)] == "thinking_delta")
    assert thinking == R1["reasoning"]
    whole = c.simulate_post(MESSAGES, json={**body, "stream": False}).json
    signature = next(e["delta"]["signature"] for e in events if e.get("delta", {}).get("type") == "signature_delta")
    assert whole["content"][0]["signature"] == signature


def test_anthropic_thinking_disabled_display_omitted_and_count_tokens():
    c, engine = client(CASES["qwen3_thinking_off"]["text"])
    body = {"model": "m", "max_tokens": 50, "messages": HI, "thinking": {"type": "disabled"}}
    result = c.simulate_post(MESSAGES, json=body)
    conforms(result, MESSAGES, anthropic=True)
    assert [b["type"] for b in result.json["content"]] == ["text"]
    assert prompt(engine).endswith("</think>\n\n")
    counted = c.simulate_post(MESSAGES + "/count_tokens", json={k: v for k, v in body.items() if k != "max_tokens"})
    assert counted.json["input_tokens"] == result.json["usage"]["input_tokens"]
    c, _ = client()
    omitted = c.simulate_post(MESSAGES, json={**body, "thinking": {"type": "adaptive", "display": "omitted"}})
    conforms(omitted, MESSAGES, anthropic=True)
    assert omitted.json["content"][0] == {"type": "thinking", "thinking": "",
                                          "signature": omitted.json["content"][0]["signature"]}


def test_anthropic_thinking_then_tool_use():
    c, _ = client(TOOL["text"], tool_call_parser="hermes", tool_prompt="generic", reasoning_parser="think")
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    body = {"model": "m", "max_tokens": 200, "messages": HI, "tools": tools, "thinking": {"type": "disabled"}}
    result = c.simulate_post(MESSAGES, json=body)
    conforms(result, MESSAGES, anthropic=True)
    assert [b["type"] for b in result.json["content"]] == ["thinking", "tool_use"]
    assert result.json["stop_reason"] == "tool_use"
    conforms(c.simulate_post(MESSAGES, json={**body, "stream": True}), MESSAGES, anthropic=True)


# ---- controls reaching the template and the engine ------------------------------------

@pytest.mark.parametrize("extra, rendered", [
    ({}, {}),
    ({"enable_thinking": True}, {"enable_thinking": True}),
    ({"chat_template_kwargs": {"enable_thinking": False, "style": "terse"}},
     {"enable_thinking": False, "style": "terse"}),
    ({"chat_template_kwargs": {"enable_thinking": False}, "enable_thinking": False}, {"enable_thinking": False}),
    ({"reasoning_effort": "low"}, {"enable_thinking": True}),
    ({"reasoning_effort": "none"}, {"enable_thinking": False}),
])
def test_chat_controls_reach_the_template(extra, rendered):
    c, engine = client()
    assert c.simulate_post(CHAT, json={"messages": HI, **extra}).status_code == 200
    assert engine.tokenizer.rendered[-1] == rendered


@pytest.mark.parametrize("url, body, budget", [
    (CHAT, {"messages": HI, "reasoning_budget": 5}, 5),
    (CHAT, {"messages": HI, "reasoning_budget": 0}, 0),
    (CHAT, {"messages": HI, "reasoning_effort": "medium", "max_tokens": 100}, 50),
    (RESPONSES, {"input": "hi", "reasoning": {"effort": "minimal"}, "max_output_tokens": 80}, 10),
    (RESPONSES, {"input": "hi", "reasoning_budget": 7}, 7),
    (MESSAGES, {"model": "m", "max_tokens": 100, "messages": HI,
                "thinking": {"type": "enabled", "budget_tokens": 9}}, 9),
    (MESSAGES, {"model": "m", "max_tokens": 100, "messages": HI, "output_config": {"effort": "low"}}, 25),
    (MESSAGES, {"model": "m", "max_tokens": 100, "messages": HI, "thinking": {"type": "adaptive"},
                "output_config": {"effort": "medium"}}, 50),
])
def test_a_budget_reaches_the_engine_as_a_logits_processor(url, body, budget):
    c, engine = client()
    assert c.simulate_post(url, json=body).status_code == 200
    processor = engine.requests[-1].logits_processor
    assert isinstance(processor, ReasoningBudget)
    assert (processor.budget, processor.inside, processor.then) == (budget, True, None)
    assert processor.end_ids == engine.tokenizer.encode("</think>", add_special_tokens=False)


def test_no_budget_no_processor_and_a_constraint_waits_for_the_answer():
    c, engine = client()
    c.simulate_post(CHAT, json={"messages": HI, "reasoning_effort": "high", "max_tokens": 4})
    assert isinstance(engine.requests[-1].logits_processor, ReasoningBudget)  # 3 of 4
    c.simulate_post(CHAT, json={"messages": HI})
    assert engine.requests[-1].logits_processor is None
    c.simulate_post(CHAT, json={"messages": HI, "reasoning_budget": 10_000, "max_tokens": 20})
    assert engine.requests[-1].logits_processor is None  # the output limit ends reasoning first
    grammar = FakeConstraints()
    c, engine = client(constraints=grammar)
    c.simulate_post(CHAT, json={"messages": HI, "response_format": {"type": "json_object"}})
    processor = engine.requests[-1].logits_processor
    assert isinstance(processor, ReasoningBudget) and processor.budget is None and processor.then is not None
    c.simulate_post(CHAT, json={"messages": HI, "response_format": {"type": "json_object"}, "enable_thinking": False})
    assert not isinstance(engine.requests[-1].logits_processor, ReasoningBudget)  # not inside: the grammar alone


def test_without_a_reasoning_parser_a_budget_changes_nothing():
    c, engine = client(reasoning_parser="none")
    assert c.simulate_post(CHAT, json={"messages": HI, "reasoning_budget": 3}).status_code == 200
    assert engine.requests[-1].logits_processor is None


# ---- bad values -----------------------------------------------------------------------

@pytest.mark.parametrize("extra, param", [
    ({"enable_thinking": "yes"}, "enable_thinking"),
    ({"enable_thinking": 1}, "enable_thinking"),
    ({"reasoning_budget": -1}, "reasoning_budget"),
    ({"reasoning_budget": "5"}, "reasoning_budget"),
    ({"reasoning_budget": 2.5}, "reasoning_budget"),
    ({"chat_template_kwargs": "enable_thinking"}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
    ({"chat_template_kwargs": {"add_generation_prompt": False}}, "chat_template_kwargs.add_generation_prompt"),
    ({"chat_template_kwargs": {"tools": []}}, "chat_template_kwargs.tools"),
    ({"chat_template_kwargs": {"enable_thinking": True}, "enable_thinking": False},
     "chat_template_kwargs.enable_thinking"),
    ({"reasoning_effort": "none", "enable_thinking": True}, "enable_thinking"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_chat_bad_reasoning_values_are_400s(extra, param):
    c, engine = client()
    result = c.simulate_post(CHAT, json={"messages": HI, **extra})
    assert result.status_code == 400 and result.json["error"]["param"] == param, result.json
    conforms(result, CHAT)
    assert not engine.requests


@pytest.mark.parametrize("extra, param", [
    ({"reasoning": {"effort": "lots"}}, "reasoning.effort"),
    ({"reasoning": "high"}, "reasoning"),
    ({"reasoning_budget": -3}, "reasoning_budget"),
    ({"enable_thinking": False, "reasoning": {"effort": "high"}}, "enable_thinking"),
])
def test_responses_bad_reasoning_values_are_400s(extra, param):
    c, _ = client()
    result = c.simulate_post(RESPONSES, json={"input": "hi", **extra})
    assert result.status_code == 400 and result.json["error"]["param"] == param, result.json
    conforms(result, RESPONSES)


@pytest.mark.parametrize("thinking, words", [
    ({"type": "enabled", "budget_tokens": 100}, "max_tokens must be greater than thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 150}, "max_tokens must be greater"),
    ({"type": "enabled", "budget_tokens": -1}, "thinking.budget_tokens"),
    ({"type": "enabled"}, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": "10"}, "thinking.budget_tokens"),
    ({"type": "sometimes"}, "thinking"),
    ({"type": "adaptive", "display": "loud"}, "thinking.display"),
])
def test_anthropic_bad_thinking_is_a_400(thinking, words):
    c, _ = client()
    result = c.simulate_post(MESSAGES, json={"model": "m", "max_tokens": 100, "messages": HI, "thinking": thinking})
    assert result.status_code == 400 and words in result.json["error"]["message"], result.json
    conforms(result, MESSAGES, anthropic=True)


def test_anthropic_effort_leaves_an_explicit_budget_and_disabled_thinking_alone_and_refuses_unknowns():
    c, engine = client()
    base = {"model": "m", "max_tokens": 100, "messages": HI}
    c.simulate_post(MESSAGES, json={**base, "thinking": {"type": "enabled", "budget_tokens": 9},
                                    "output_config": {"effort": "high"}})
    assert engine.requests[-1].logits_processor.budget == 9
    c.simulate_post(MESSAGES, json={**base, "output_config": {"effort": "max"}})
    assert engine.requests[-1].logits_processor is None  # max: no budget beyond max_tokens
    refused = c.simulate_post(MESSAGES, json={**base, "output_config": {"effort": "extreme"}})
    assert refused.status_code == 400 and refused.json["type"] == "error"
