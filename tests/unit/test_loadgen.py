"""The load generator against an in-process fake server (httpx.MockTransport): conversations
resend the answer that was really streamed, records keep their schema, failures stop a
conversation without hiding its unsent turns."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from harness import evidence
from harness.loadgen import Arrival, Conversation, next_turn, run_conversations, run_load


def _sse(pieces: list[str], *, usage: dict) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
               {"choices": [], "usage": usage}]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


class FakeChatServer:
    """Answers each request with pieces naming how many messages it got; remembers every body."""

    def __init__(self, *, fail_on_call: int | None = None, report_cached: bool = True):
        self.bodies: list[dict] = []
        self.fail_on_call = fail_on_call
        self.report_cached = report_cached

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.fail_on_call == len(self.bodies):
            return httpx.Response(500, json={"error": {"message": "boom"}})
        n = len(body["messages"])
        pieces = [f"Answer to {n} ", "messages ", f"from {body['messages'][-1]['content'][:12]!r}."]
        usage = {"prompt_tokens": 10 * n, "completion_tokens": len(pieces), "total_tokens": 10 * n + len(pieces)}
        if self.report_cached:
            usage["prompt_tokens_details"] = {"cached_tokens": 10 * (n - 1)}
        return httpx.Response(200, content=_sse(pieces, usage=usage),
                              headers={"content-type": "text/event-stream"})


def _conversations(n: int, followups=("second?", "third?")) -> list[Conversation]:
    return [Conversation({"messages": [{"role": "system", "content": "sys"},
                                       {"role": "user", "content": f"opener {i}"}], "max_tokens": 8},
                         tuple(followups)) for i in range(n)]


def _validate(records: list[dict]) -> None:
    schema = json.loads((evidence.SCHEMA_DIR / "raw_record.schema.json").read_text())
    for rec in records:
        tagged = {**rec, "server": "ours", "case": "c", "repeat": 0, "concurrency": 1, "rate_rps": None}
        jsonschema.validate(tagged, schema, cls=jsonschema.Draft202012Validator)


def test_next_turn_appends_answer_then_user_and_keeps_the_rest():
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "model": "m"}
    nxt = next_turn(body, "hello", "more")
    assert nxt["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "more"}]
    assert nxt["max_tokens"] == 4 and nxt["model"] == "m" and len(body["messages"]) == 1  # no mutation


@pytest.mark.parametrize("concurrency", [1, 2])
def test_each_turn_resends_the_streamed_answer(concurrency):
    server = FakeChatServer()
    records, wall = run_conversations("http://fake", _conversations(2), Arrival(concurrency=concurrency),
                                      transport=httpx.MockTransport(server))
    assert wall > 0 and len(records) == 6 and len(server.bodies) == 6
    assert all(r["status"] == "ok" for r in records)
    assert [(r["conversation"], r["turn"], r["index"]) for r in records] == [
        (0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]
    for conv in (0, 1):
        turns = [b for b in server.bodies if b["messages"][1]["content"] == f"opener {conv}"]
        assert [len(b["messages"]) for b in turns] == [2, 4, 6]
        first, second, third = turns
        # What the fake streamed for turn 1, piece by piece, comes back whole in turn 2.
        answer = f"Answer to 2 messages from 'opener {conv}'."
        assert second["messages"][2] == {"role": "assistant", "content": answer}
        assert second["messages"][3] == {"role": "user", "content": "second?"}
        assert third["messages"][:4] == second["messages"]
        assert third["messages"][4]["content"] == "Answer to 4 messages from 'second?'."
        assert third["messages"][5] == {"role": "user", "content": "third?"}
        assert all(b["stream"] is True and b["stream_options"] == {"include_usage": True} for b in turns)
    assert [r["cached_tokens"] for r in records[:3]] == [10, 30, 50]
    assert records[1]["prompt_tokens"] == 40 and records[1]["completion_tokens"] == 3
    assert len(records[0]["itl_s"]) == 2 and records[0]["ttft_s"] is not None
    _validate(records)


def test_a_failed_turn_stops_its_conversation_and_the_rest_count_as_errors():
    server = FakeChatServer(fail_on_call=2)  # conversation 0's second turn
    records, _ = run_conversations("http://fake", _conversations(1), Arrival(),
                                   transport=httpx.MockTransport(server))
    assert len(server.bodies) == 2
    assert [r["status"] for r in records] == ["ok", "error", "error"]
    assert records[1]["error"].startswith("HTTP 500")
    assert records[2]["error"].startswith("not sent") and records[2]["turn"] == 2 and records[2]["e2e_s"] is None
    _validate(records)


def test_single_requests_are_not_conversations_and_unreported_cache_is_null():
    server = FakeChatServer(report_cached=False)
    bodies = [{"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 3} for i in range(3)]
    records, _ = run_load("http://fake/", bodies, Arrival(concurrency=3), transport=httpx.MockTransport(server))
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all(r["conversation"] is None and r["turn"] is None and r["cached_tokens"] is None for r in records)
    assert sorted(len(b["messages"]) for b in server.bodies) == [1, 1, 1]
    _validate(records)


def test_a_ramp_spreads_the_first_clients_and_the_rest_follow_as_slots_free():
    server = FakeChatServer(report_cached=False)
    bodies = [{"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 3} for i in range(6)]
    records, _ = run_load("http://fake/", bodies, Arrival(concurrency=3, ramp_s=0.3),
                          transport=httpx.MockTransport(server))
    start = {r["index"]: r["start_s"] for r in records}
    assert start[0] < 0.1 <= start[1] < 0.2 <= start[2]  # the first three, 0.1 s apart
    assert start[3] < 0.1  # the fake answers at once, so client 0's slot frees at once
    assert all(r["status"] == "ok" for r in records) and len(records) == 6
    burst, _ = run_load("http://fake/", bodies, Arrival(concurrency=3), transport=httpx.MockTransport(server))
    assert sorted(r["start_s"] for r in burst)[2] < 0.1  # no ramp: all three at once


def test_only_closed_loop_cases_ramp():
    from suites.throughput.cases import PromptSet, _case

    with pytest.raises(ValueError, match="ramp_s"):
        _case({"name": "x", "prompts": "p", "requests": 2, "max_tokens": 4, "arrival": "poisson", "rate_rps": 1.0,
               "ramp_s": 0.5}, {"p": PromptSet(("hello",))})
