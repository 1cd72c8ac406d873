"""Tool scenarios against a fake server (httpx.MockTransport) speaking all three dialects: each
check kind passes on a server that keeps the contract and fails on one that breaks it, records
validate against the raw schema, and the summary's scenarios block recomputes from them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import httpx
import jsonschema
import pytest

from harness import evidence
from harness.report_tools import markdown
from suites.tools.scenarios import CHECK_KINDS, Settings, load, run_scenarios
from suites.tools.summary import summarize_tools

GOOD_ARGS = '{"city": "Paris", "days": 3, "unit": "celsius"}'


@dataclass
class Fake:
    """Knobs a broken server can turn; the defaults keep the contract."""

    arguments: str = GOOD_ARGS
    stream_arguments: str | None = None  # None: the same as whole
    obey_none: bool = True
    name: str | None = None  # None: the named tool, else the first tool sent
    calls: bool = True  # False: never calls (a forced choice ignored)
    follow_up_status: int = 200
    status: int = 200

    def _name(self, body: dict) -> str:
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and (choice.get("name") or (choice.get("function") or {}).get("name")):
            return self.name or choice.get("name") or choice["function"]["name"]
        first = body["tools"][0]
        return self.name or first.get("name") or first["function"]["name"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body, path = json.loads(request.content), request.url.path
        text = json.dumps(body)
        if "tool_result" in text or '"role": "tool"' in text or "function_call_output" in text:
            if self.follow_up_status != 200:
                return httpx.Response(self.follow_up_status, text="boom")
            return self._answer(path, body, None, None)
        if self.status != 200:
            return httpx.Response(self.status, text="boom")
        choice = body.get("tool_choice")
        none = choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none")
        call = self.calls and not (none and self.obey_none)
        args = self.stream_arguments if body.get("stream") and self.stream_arguments is not None else self.arguments
        return self._answer(path, body, self._name(body) if call else None, args)

    def _answer(self, path: str, body: dict, name: str | None, args: str | None) -> httpx.Response:
        stream = body.get("stream")
        if path == "/v1/chat/completions":
            calls = [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": name, "arguments": args}}] if name else []
            finish = "tool_calls" if name else "stop"
            if not stream:
                return httpx.Response(200, json={"choices": [{"message": {"content": None if name else "ok",
                                                                          "tool_calls": calls or None},
                                                              "finish_reason": finish}]})
            chunks = [{"choices": [{"delta": {"tool_calls": calls} if name else {"content": "ok"}}]},
                      {"choices": [{"delta": {}, "finish_reason": finish}]}]
            return _sse([json.dumps(c) for c in chunks] + ["[DONE]"])
        if path == "/v1/responses":
            item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name, "arguments": args}
            output = [item] if name else [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]
            response = {"id": "resp_1", "status": "completed", "output": output}
            if not stream:
                return httpx.Response(200, json=response)
            events = [{"type": "response.function_call_arguments.done", "item_id": "fc_1", "arguments": args},
                      {"type": "response.output_item.done", "item": item}] if name else []
            return _sse([json.dumps(e) for e in [*events, {"type": "response.completed", "response": response}]])
        content = [{"type": "tool_use", "id": "toolu_1", "name": name, "input": _object(args)}] if name else \
            [{"type": "text", "text": "ok"}]
        stop = "tool_use" if name else "end_turn"
        if not stream:
            return httpx.Response(200, json={"content": content, "stop_reason": stop})
        events = ([{"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}},
                   {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta",
                                                                        "partial_json": args}}] if name else [])
        return _sse([json.dumps(e) for e in [*events, {"type": "message_delta", "delta": {"stop_reason": stop}}]])


def _object(args: str) -> object:
    """Anthropic's `input` is an object; a broken server's bad JSON arrives as a string instead."""
    try:
        return json.loads(args)
    except json.JSONDecodeError:
        return args


def _sse(datas: list[str]) -> httpx.Response:
    return httpx.Response(200, text="".join(f"data: {d}\n\n" for d in datas),
                          headers={"content-type": "text/event-stream"})


def _schema(name: str) -> dict:
    return json.loads((evidence.SCHEMA_DIR / f"{name}.schema.json").read_text())


def _run(fake: Fake, settings: Settings | None = None) -> dict[str, dict]:
    records = run_scenarios("http://fake", model="m", settings=settings, transport=httpx.MockTransport(fake))
    return {r["id"]: r for r in records}


def _only(check: str) -> Settings:
    s = load()
    return replace(s, scenarios=tuple(x for x in s.scenarios if x.check == check))


def test_the_data_covers_every_check_kind_and_dialect():
    s = load()
    assert {x.check for x in s.scenarios} == set(CHECK_KINDS)
    assert {x.dialect for x in s.scenarios} == {"chat", "responses", "anthropic"}


def test_a_server_that_keeps_the_contract_passes_every_scenario_and_records_validate():
    records = _run(Fake())
    schema = _schema("raw_record")
    for r in records.values():
        jsonschema.validate(r, schema)
    assert {i: r["reason"] for i, r in records.items() if r["passed"] is not True} == {}
    assert len(records) == len(load().scenarios)


@pytest.mark.parametrize(("check", "fake", "words"), [
    ("no_call", Fake(obey_none=False), "under tool_choice none"),
    ("any_call", Fake(calls=False), "no tool call"),
    ("any_call", Fake(name="not_sent"), "not sent"),
    ("named_call", Fake(name="get_forecast"), "calls other than get_time"),
    ("answered", Fake(name="not_sent"), "not sent"),
    ("schema_valid", Fake(arguments='{"city": "Paris", "days": "3", "unit": "kelvin"}'), "arguments invalid"),
    ("schema_valid", Fake(arguments='{"city": '), "not JSON|is not of type 'object'"),
    ("stream_parity", Fake(stream_arguments='{"city": "Paris", "days": 4, "unit": "celsius"}'), "differ"),
    ("multi_turn", Fake(calls=False), "no call"),
])
def test_each_check_kind_fails_on_a_server_that_breaks_it(check, fake, words):
    records = _run(fake, _only(check))
    assert records and all(r["status"] == "ok" and r["passed"] is False for r in records.values())
    assert all(any(w in r["reason"] for w in words.split("|")) for r in records.values()), \
        [r["reason"] for r in records.values()]


def test_parity_compares_text_for_chat_but_parsed_json_for_anthropic():
    spaced = Fake(stream_arguments='{"city":"Paris","days":3,"unit":"celsius"}')
    records = _run(spaced, _only("stream_parity"))
    assert records["chat-stream-parity"]["passed"] is False
    assert records["anthropic-stream-parity"]["passed"] is True


def test_a_failed_request_is_an_error_not_a_failed_check():
    records = _run(Fake(status=500))
    assert all(r["status"] == "error" and r["passed"] is None and "HTTP 500" in r["reason"]
               for r in records.values())
    follow = _run(Fake(follow_up_status=400), _only("multi_turn"))
    assert all(r["status"] == "error" and "HTTP 400" in r["reason"] for r in follow.values())


def test_multi_turn_sends_the_tool_result_back_in_each_dialect():
    seen: list[dict] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return Fake()(request)

    run_scenarios("http://fake", model=None, settings=_only("multi_turn"), transport=httpx.MockTransport(spy))
    chat, responses, anthropic = seen[1], seen[3], seen[5]
    assert chat["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": load().tool_result}
    assert chat["messages"][-2]["tool_calls"][0]["function"]["arguments"] == GOOD_ARGS
    assert responses["previous_response_id"] == "resp_1"
    assert responses["input"] == [{"type": "function_call_output", "call_id": "call_1", "output": load().tool_result}]
    assert anthropic["messages"][-1]["content"][0]["tool_use_id"] == "toolu_1"
    assert anthropic["messages"][-2]["content"][0]["input"] == json.loads(GOOD_ARGS)
    assert all(b["tool_choice"] in ("auto", {"type": "auto"}) and b["stream"] is False for b in seen[1::2])


def test_summary_has_a_scenarios_block_only_with_scenario_records():
    records = list(_run(Fake(name="get_forecast")).values())  # named get_time scenarios fail
    block = summarize_tools(records)
    jsonschema.validate({"schema_version": 1, "run_id": "20260101T000000Z-tools-abcdef", "groups": [],
                         "comparisons": [], "validation": None, "tools": block}, _schema("summary"))
    sc = block["scenarios"]
    assert sc["overall"]["n"] == len(records) and sc["overall"]["passed"] == len(records) - 3
    assert {f["id"] for f in sc["failed"]} == {"chat-named", "anthropic-tool", "responses-named"}
    assert [d["dialect"] for d in sc["dialects"]] == ["chat", "responses", "anthropic"]
    assert 0 <= sc["overall"]["ci_low"] < sc["overall"]["rate"] < sc["overall"]["ci_high"] <= 1
    assert "scenarios" not in summarize_tools([r for r in records if r["type"] != "tool_scenario"])
    assert any("Scenario chat-named not passed" in line for line in markdown(block))
