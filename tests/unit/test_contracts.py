"""The contracts suite's own parts: case files, verdict rules, the matrix, SDK-type
conformance and the recording proxy (against a small local HTTP server, not ours)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from suites.contracts import conformance
from suites.contracts.cases import CaseFileError, load_client, load_clients, select
from suites.contracts.driver import CONDITIONAL, Blocked, Case, Outcome, Target, load, passed
from suites.contracts.proxy import RecordingProxy, body_shape, redact_headers
from suites.contracts.runner import record, run_case
from suites.contracts.summary import summarize_contracts

# ---- case files ---------------------------------------------------------------------------

GOOD = '''client = "x"
title = "X"
driver = "openai_sdk"
tier = "sdk"
configured = "X(base_url=...)"
[[case]]
capability = "text"
action = "chat"
prompt = "hi"
[[case]]
capability = "tools"
action = "tools"
model = "tools"
'''


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_client_file_becomes_cases_with_their_args(tmp_path):
    client = load_client(write(tmp_path, GOOD))
    assert [c.key for c in client.cases] == ["x/text/chat", "x/tools/tools"]
    assert client.cases[0].args == {"prompt": "hi"} and client.cases[0].model == "default"
    assert client.cases[1].model == "tools"


@pytest.mark.parametrize("edit, message", [
    (('capability = "text"', 'capability = "telepathy"'), "unknown capability 'telepathy'"),
    (('capability = "tools"\naction = "tools"', 'capability = "text"\naction = "chat"'), "share a capability"),
    (('tier = "sdk"', 'tier = "cloud"'), "tier must be one of"),
    (('model = "tools"', 'model = "huge"'), "model must be one of"),
    (('title = "X"\n', ''), "'title' must be a non-empty string"),
    (('action = "tools"', 'action = "tools"\naction = "chat"'), "x.toml: "),  # a TOML error: a duplicate key
])
def test_bad_client_files_are_errors_naming_the_problem(tmp_path, edit, message):
    with pytest.raises(CaseFileError, match=message):
        load_client(write(tmp_path, GOOD.replace(*edit)))


def test_the_shipped_client_files_load_and_name_known_drivers():
    clients = load_clients()
    assert len(clients) >= 1
    for client in clients:
        assert callable(load(client.driver))


def test_selection_by_name_tier_capability_and_model(tmp_path):
    clients = [load_client(write(tmp_path, GOOD))]
    assert select(clients, capabilities=["tools"])[0].cases[0].capability == "tools"
    assert select(clients, models=["default"])[0].cases[0].model == "default"
    assert select(clients, tiers=["cli"]) == []
    with pytest.raises(CaseFileError, match="unknown client nope .known: x."):
        select(clients, names=["nope"])


def test_an_unknown_driver_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown contract driver 'nope' .known: .*openai_sdk"):
        load("nope")


# ---- verdicts -----------------------------------------------------------------------------

CASE = Case("x", "text", "chat", "default", {})


def target(tmp_path, timeout_s: float = 5.0) -> Target:
    return Target("http://127.0.0.1:1", "k", "m", tmp_path, tmp_path, timeout_s)


def test_blocked_exceptions_and_timeouts_become_verdicts(tmp_path):
    def blocked(case, t):
        raise Blocked("not installed: npm i x")

    def broken(case, t):
        raise KeyError("choices")

    def hung(case, t):
        time.sleep(3)

    assert run_case(CASE, target(tmp_path), blocked)[0]["status"] == "blocked"
    verdict, _ = run_case(CASE, target(tmp_path), broken)
    assert verdict["status"] == "fail" and verdict["reason"] == "KeyError: 'choices'"
    verdict, seconds = run_case(CASE, target(tmp_path, timeout_s=0.2), hung)
    assert verdict["status"] == "fail" and "no result within" in verdict["reason"] and seconds < 2


def test_a_pass_with_a_response_that_broke_the_sdk_types_is_a_fail(tmp_path):
    verdict, seconds = run_case(CASE, target(tmp_path), lambda c, t: passed("answered"))
    bad = record(CASE, verdict, seconds, server="s", requests=[],
                 conformance={"checked": 1, "failures": ["ChatCompletion: unknown field foo"]})
    good = record(CASE, verdict, seconds, server="s", requests=[], conformance={"checked": 1, "failures": []})
    assert bad["status"] == "fail" and "unknown field foo" in bad["reason"]
    assert good["status"] == "pass"


def test_a_conditional_outcome_must_name_its_condition():
    with pytest.raises(ValueError, match="names its condition"):
        Outcome(CONDITIONAL, "refused the image")
    with pytest.raises(ValueError):
        Outcome("blocked", "use the Blocked exception")


# ---- the matrix ---------------------------------------------------------------------------

def rec(client, capability, status, reason="r", action="a", condition=None):
    return {"type": "contract_case", "client": client, "capability": capability, "action": action,
            "status": status, "reason": reason, "condition": condition}


def test_a_cell_is_its_worst_case_with_its_reason():
    block = summarize_contracts([
        rec("a", "text", "pass"), rec("a", "text", "fail", "empty answer", action="chat_stream"),
        rec("a", "images", "conditional", "400", condition="needs a vision model"),
        rec("b", "text", "blocked", "not installed"), rec("b", "text", "pass"),
        rec("b", "stop", "pass"),
    ])
    cells = {(c["client"], c["capability"]): c for c in block["cells"]}
    assert block["capabilities"] == ["text", "stop", "images"] and block["clients"] == ["a", "b"]
    assert cells[("a", "text")]["status"] == "fail" and cells[("a", "text")]["reason"] == "chat_stream: empty answer"
    assert cells[("a", "images")]["condition"] == "needs a vision model"
    assert cells[("b", "text")]["status"] == "blocked" and cells[("b", "text")]["cases"] == 2
    assert block["totals"] == {"fail": 1, "blocked": 1, "conditional": 1, "pass": 1}


# ---- conformance against the SDK types ----------------------------------------------------

CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "Paris"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def check(obj, path="/v1/chat/completions", status=200, ctype="application/json"):
    return conformance.check("POST", path, status, ctype, json.dumps(obj).encode())


def test_a_conforming_chat_completion_passes():
    assert check(CHAT) == {"checked": 1, "failures": []}


def test_unknown_fields_and_loose_types_are_found_strictly():
    extra = json.loads(json.dumps(CHAT))
    extra["choices"][0]["message"]["mood"] = "happy"
    assert check(extra)["failures"] == ["ChatCompletion: unknown field choices[0].message.mood"]
    loose = {**CHAT, "created": "1"}  # a string where the SDK declares an int: no coercion
    assert any("created" in f for f in check(loose)["failures"])
    wrong = {**CHAT, "object": "chat.completion.chunk"}
    assert any("object" in f for f in check(wrong)["failures"])


def test_stream_events_are_checked_one_by_one():
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "P"}, "finish_reason": None}]}
    bad = {**chunk, "choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}]}
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in (chunk, bad)) + "data: [DONE]\n\n"
    found = conformance.check("POST", "/v1/chat/completions", 200, "text/event-stream", body.encode())
    assert found["checked"] == 2 and found["failures"] and found["failures"][0].startswith("event 2:")


def test_errors_are_checked_in_their_dialects_shape():
    openai_error = {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}
    assert check(openai_error, status=400)["failures"] == []
    assert check({"detail": "bad"}, status=400)["failures"] == ["400 body has no error object"]
    anthropic_error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    assert check(anthropic_error, path="/v1/messages", status=400)["failures"] == []


def test_paths_outside_the_apis_are_not_checked():
    assert conformance.check("GET", "/health", 200, "application/json", b"{}") == {"checked": 0, "failures": []}


# ---- the recording proxy ------------------------------------------------------------------

class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        if json.loads(body).get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(3):
                piece = f"data: {json.dumps({'i': i})}\n\n".encode()
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps(CHAT).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def post(url, body, key="sk-secret"):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {key}"})
    return urllib.request.urlopen(req, timeout=10)


def test_the_proxy_forwards_records_shapes_and_redacts_secrets(upstream):
    with RecordingProxy(upstream) as proxy:
        with post(proxy.base_url + "/v1/chat/completions?beta=true",
                  {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": []}) as resp:
            assert json.loads(resp.read()) == CHAT
        [shape], verdict = proxy.take()
        assert proxy.take() == ([], {"checked": 0, "failures": []})  # taken once
    assert shape["path"] == "/v1/chat/completions" and shape["query_keys"] == ["beta"]
    assert shape["headers"]["authorization"] == "<redacted>" and "sk-secret" not in json.dumps(shape)
    assert set(shape["body"]["fields"]) == {"model", "messages", "tools"} and shape["body"]["messages_count"] == 1
    assert verdict == {"checked": 1, "failures": []}


def test_the_proxy_streams_events_as_they_come(upstream):
    with RecordingProxy(upstream) as proxy:
        with post(proxy.base_url + "/v1/other", {"stream": True}) as resp:
            started = time.monotonic()
            first = resp.readline()
            assert first.startswith(b"data:") and time.monotonic() - started < 0.25  # not held to the end
            rest = resp.read()
        [shape], _ = proxy.take()
    assert rest.count(b"data:") == 2 and shape["response_type"] == "text/event-stream"


def test_body_shapes_and_header_redaction():
    assert body_shape(b"not json", "text/plain") == {"bytes": 8}
    shape = body_shape(json.dumps({"model": "m", "stream": True, "max_tokens": 5, "system": [1, 2]}).encode(),
                       "application/json")
    assert shape["model"] == "m" and shape["stream"] is True and shape["system_count"] == 2
    assert redact_headers({"X-Api-Key": "s", "Anthropic-Version": "2023-06-01"}) == {
        "anthropic-version": "2023-06-01", "x-api-key": "<redacted>"}


def test_a_client_hanging_up_is_recorded_but_is_no_conformance_failure(upstream):
    import socket

    with RecordingProxy(upstream) as proxy:
        port = int(proxy.base_url.rsplit(":", 1)[1])
        body = json.dumps({"stream": True}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert b"200" in sock.recv(100)  # the status line, then leave mid-stream
        [shape], verdict = proxy.take(settle_s=10)
    assert shape["client_hung_up"] is True and verdict == {"checked": 0, "failures": []}


def test_a_contracts_run_publishes_valid_evidence_with_its_artifacts(tmp_path):
    from harness.bench import Outcome, Plan
    from harness.contracts_suite import _server_entry, publish_contracts
    from harness.publish import Described
    from harness.evidence import environment, read_run
    from harness.servers import ModelFolder
    from suites.contracts.session import Served

    verdict, seconds = run_case(CASE, target(tmp_path), lambda c, t: passed(f"read {tmp_path}/work/notes.txt"))
    records = [record(CASE, verdict, seconds, server="ours-default", conformance={"checked": 1, "failures": []},
                      requests=[{"method": "POST", "path": "/v1/chat/completions", "query_keys": [], "headers": {},
                                 "body": {"bytes": 2}, "status": 200, "response_type": "application/json",
                                 "response_bytes": 10, "ms": 1.0}])]
    folder = ModelFolder("smollm2-135m", "/models/x", "ab" * 32, "catalog", "float32")
    health = {"config": {"prefix_cache_bytes": 0}}
    served = Served("default", "smollm2-135m", None, "k", ("mlx-proof", "serve"), folder, health)
    outcome = Outcome(records, [_server_entry(served)], health, folder, "2026-11-25T00:00:00+00:00",
                      "2026-11-25T00:01:00+00:00", environment())
    plan = Plan(suite="contracts", model="smollm2-135m", profile="text-default",
                cases=[Described({"client": "x"})], servers=[], repeats=1, warmup_requests=0)
    artifacts = tmp_path / "artifacts" / "x"
    artifacts.mkdir(parents=True)
    (artifacts / "shot.png").write_bytes(b"png")
    (artifacts / "run.txt").write_text(f"PATH={Path.home()}/bin")
    directory, summary = publish_contracts(plan, outcome, evidence_root=tmp_path / "evidence",
                                           artifacts=tmp_path / "artifacts", workdir=tmp_path)
    run = read_run(directory)
    assert run.summary == summary
    assert run.summary["contracts"]["cells"][0]["status"] == "pass"
    assert "read <workdir>/work/notes.txt" in str(run.summary["contracts"]) and str(tmp_path) not in str(run.records)
    assert run.manifest["servers"][0]["prefix_cache"] == "off"
    assert (directory / "artifacts" / "x" / "shot.png").read_bytes() == b"png"
    assert (directory / "artifacts" / "x" / "run.txt").read_text() == "PATH=~/bin"  # no machine's home kept


def test_serve_overrides_name_a_known_kind_and_a_model():
    from harness.cli import parser
    from harness.contracts_suite import served_overrides

    args = parser().parse_args(["contracts", "--serve", "agent=qwen2.5-coder-0.5b", "--serve", "tools=/m"])
    assert served_overrides(args.serve) == {"agent": "qwen2.5-coder-0.5b", "tools": "/m"}
    assert served_overrides([]) == {}
    for bad, said in (("agent", "KIND=MODEL"), ("agent=", "KIND=MODEL"), ("robot=x", "unknown model kind")):
        with pytest.raises(CaseFileError, match=said):
            served_overrides([bad])

