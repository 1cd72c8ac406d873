"""The tools suite: cases are data, the BFCL data is fetched and pinned, the runner makes
schema-valid records against a fake server (httpx.MockTransport), and the summary's Wilson
intervals, report and evidence hold together. (Conversion, checker and markup detector:
test_tools_checker.py.)"""

from __future__ import annotations

import copy
import hashlib
import json
import zipfile
from pathlib import Path

import httpx
import jsonschema
import pytest

from harness import evidence
from harness.report import render
from harness.stats import wilson
from suites.tools import cases as tool_cases
from suites.tools.cases import Category, ToolCase, build_workload, check_modes, load_settings, sample_ids, select
from suites.tools.checker import check, decode_calls
from suites.tools.convert import to_tools
from suites.tools.data import DataError, Source, fetch
from suites.tools.runner import applicable, assemble_stream, judge, request_body, run_cases
from suites.tools.summary import summarize_tools

from .tool_fixtures import TRIANGLE, TRIANGLE_ANSWER, WEATHER

# --- cases ----------------------------------------------------------------------------------------

def test_the_default_run_is_at_least_200_cases_over_the_five_categories():
    settings = load_settings()
    chosen = select(settings, None)
    assert [c.name for c in chosen] == ["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"]
    assert sum(c.limit for c in chosen) >= 200
    assert settings.source.requirement == "bfcl-eval==2026.3.23" and len(settings.source.sha256) == 64
    assert settings.modes == ("auto", "required", "json_schema")
    assert [c.name for c in select(settings, ["simple", "irrelevance"])] == ["simple", "irrelevance"]
    with pytest.raises(ValueError, match="known: .*simple"):
        select(settings, ["live_simple"])
    with pytest.raises(ValueError):
        check_modes(["auto", "none"])
    with pytest.raises(ValueError):
        check_modes(["auto", "auto"])


def test_a_category_is_data(tmp_path):
    text = tool_cases.CASES_FILE.read_text() + ('\n[[category]]\nname = "live_simple"\nquestions = "q.json"\n'
                                                 'answers = "a.json"\nchecker = "simple"\nlimit = 3\n')
    (tmp_path / "cases.toml").write_text(text)
    assert "live_simple" in [c.name for c in load_settings(tmp_path / "cases.toml").categories]
    (tmp_path / "bad.toml").write_text(text.replace('checker = "simple"\nlimit = 3', 'checker = "fuzzy"\nlimit = 3'))
    with pytest.raises(ValueError, match="checker 'fuzzy' unknown"):
        load_settings(tmp_path / "bad.toml")


def test_sampling_is_deterministic_and_a_smaller_limit_is_a_subset():
    ids = [f"simple_{i}" for i in range(100)]
    ten = sample_ids(ids, limit=10, seed=7, category="simple")
    assert ten == sample_ids(ids, limit=10, seed=7, category="simple") and len(ten) == 10
    assert ten == sorted(ten, key=ids.index)  # file order
    assert set(sample_ids(ids, limit=3, seed=7, category="simple")) <= set(ten)
    assert ten != sample_ids(ids, limit=10, seed=8, category="simple")
    assert sample_ids(ids, limit=500, seed=7, category="simple") == ids


# --- data (a fake wheel; the real one is fetched in the integration test below) --------------------

def _fake_wheel(folder: Path, rows: dict[str, list[dict]]) -> tuple[Source, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "bfcl_eval-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, lines in rows.items():
            z.writestr(f"bfcl_eval/data/{name}", "\n".join(json.dumps(r) for r in lines) + "\n")
    return Source("bfcl-eval", "0.0.1", hashlib.sha256(wheel.read_bytes()).hexdigest()), wheel


QUESTIONS = [{"id": f"simple_python_{i}", "question": [[{"role": "user", "content": f"weather {i}?"}]],
              "function": [WEATHER]} for i in range(6)]
ANSWERS = [{"id": f"simple_python_{i}", "ground_truth": [{"get_weather": {"city": [f"city{i}"], "unit": ["", "c"]}}]}
           for i in range(6)]
IRRELEVANT = [{"id": f"irrelevance_{i}", "question": [[{"role": "user", "content": f"poem {i}"}]],
               "function": [TRIANGLE]} for i in range(3)]
FILES = {"q.json": QUESTIONS, "possible_answer/q.json": ANSWERS, "irr.json": IRRELEVANT}


def test_fetch_unpacks_only_the_named_members_and_checks_the_pin(tmp_path):
    source, _ = _fake_wheel(tmp_path, FILES)
    data = fetch(source, ["q.json", "possible_answer/q.json"], root=tmp_path)
    assert data.files["possible_answer/q.json"].read_text().startswith('{"id": "simple_python_0"')
    assert "irr.json" not in data.files and not (data.files["q.json"].parent / "irr.json").exists()
    assert data.wheel_sha256 == source.sha256
    with pytest.raises(DataError, match="pins"):
        fetch(Source("bfcl-eval", "0.0.1", "0" * 64), ["q.json"], root=tmp_path)
    with pytest.raises(DataError, match="its data files: irr.json"):
        fetch(source, ["missing.json"], root=tmp_path)


def _workload(tmp_path, *, limit=None, modes=("auto", "required")):
    source, _ = _fake_wheel(tmp_path, FILES)
    settings = load_settings()
    categories = [Category("simple", "q.json", "possible_answer/q.json", "simple", 4),
                  Category("irrelevance", "irr.json", None, "irrelevance", 2)]
    settings = type(settings)(source, tuple(categories), 1, 64, settings.modes, 2, False, 30.0)
    data = fetch(source, [m for c in categories for m in c.members()], root=tmp_path)
    return build_workload(settings, data, categories=categories, limit=limit, modes=modes)


def test_workload_describes_its_data_for_the_manifest(tmp_path):
    work = _workload(tmp_path)
    assert [c.category for c in work.cases].count("simple") == 4 and len(work.units()) == 12
    simple = work.describe()[0]
    assert simple["available"] == 6 and simple["selected"] == 4 and simple["questions_sha256"]
    assert simple["source"] == "bfcl-eval==0.0.1" and simple["modes"] == ["auto", "required"]


# --- runner against a fake server -------------------------------------------------------------

class FakeToolServer:
    """Answers auto with bare JSON in content for even cases; structured calls otherwise."""

    def __init__(self, *, refuse_required=False):
        self.bodies: list[dict] = []
        self.refuse_required = refuse_required

    def message(self, body: dict) -> tuple[dict, str]:
        i = int(body["messages"][0]["content"].split()[1].rstrip("?"))
        if "poem" in body["messages"][0]["content"]:
            return {"role": "assistant", "content": "Roses are red."}, "stop"
        args = json.dumps({"city": f"City{i}"} if i % 3 else {"city": "nowhere"})
        if body["tool_choice"] == "auto" and i % 2 == 0:
            return {"role": "assistant", "content": f'{{"name": "get_weather", "arguments": {args}}}'}, "stop"
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": args}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.refuse_required and body["tool_choice"] == "required":
            return httpx.Response(400, json={"error": {"message": "tool_choice 'required' is not supported"}})
        message, finish = self.message(body)
        usage = {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}
        if body["stream"]:
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
            if message.get("content"):
                text = message["content"]
                chunks += [{"choices": [{"index": 0, "delta": {"content": text[:5]}}]},
                           {"choices": [{"index": 0, "delta": {"content": text[5:]}}]}]
            for j, call in enumerate(message.get("tool_calls") or []):
                args = call["function"]["arguments"]
                chunks += [{"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": j, "id": call["id"], "type": "function",
                     "function": {"name": "get_weather", "arguments": args[:4]}}]}}]},
                    {"choices": [{"index": 0, "delta": {"tool_calls": [
                        {"index": j, "function": {"arguments": args[4:]}}]}}]}]
            chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
                       {"choices": [], "usage": usage}]
            data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
            return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                         "usage": usage})


def _validate_records(records):
    schema = json.loads((evidence.SCHEMA_DIR / "raw_record.schema.json").read_text())
    for rec in records:
        jsonschema.validate(rec, schema, cls=jsonschema.Draft202012Validator)


def test_request_body_sends_tools_choice_and_greedy_settings():
    case = ToolCase("simple_python_1", "simple", "simple", [{"role": "user", "content": "x"}], [TRIANGLE],
                    [TRIANGLE_ANSWER])
    body, names = request_body(case, "required", model="m", max_tokens=64, stream=False)
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is True
    assert body["temperature"] == 0.0 and body["max_tokens"] == 64 and body["model"] == "m"
    assert body["tools"][0]["function"]["name"] == "geometry_area_triangle" and names["geometry_area_triangle"]
    assert "model" not in request_body(case, "auto", model=None, max_tokens=8, stream=True)[0]


@pytest.mark.parametrize("stream", [False, True])
def test_runner_records_verdicts_fidelity_and_not_applicable_pairs(tmp_path, stream):
    work = _workload(tmp_path)
    server = FakeToolServer()
    seen = []
    records = run_cases("http://fake", work.units(), model="m", max_tokens=64, stream=stream, concurrency=3,
                        transport=httpx.MockTransport(server), on_done=seen.append)
    _validate_records(records)
    assert len(records) == len(seen) == 12 and len(server.bodies) == 10  # irrelevance x required: never sent
    by = {(r["id"], r["mode"]): r for r in records}
    na = by[("irrelevance_0", "required")]
    assert na["status"] == "not_applicable" and na["correct"] is None and na["parse_fidelity"] is None
    assert by[("irrelevance_0", "auto")]["correct"] is True
    for (cid, mode), r in by.items():
        if not cid.startswith("simple"):
            continue
        i = int(cid.rsplit("_", 1)[1])
        assert r["status"] == "ok" and r["usage"] == {"prompt_tokens": 50, "completion_tokens": 9}
        if mode == "auto" and i % 2 == 0:  # a call left in content: not returned, not correct, not clean
            assert r["tool_calls"] == [] and r["correct"] is False
            assert r["parse_fidelity"] == {"structured_calls": 0, "content_markup": ["json"],
                                           "contains_call": True, "clean": False, "cut_off": False}
        else:
            assert r["tool_calls"][0]["name"] == "get_weather" and r["finish_reason"] == "tool_calls"
            assert r["correct"] is (i % 3 != 0) and r["parse_fidelity"]["clean"] is True


def test_runner_records_http_errors_unjudged(tmp_path):
    work = _workload(tmp_path, modes=("required",))
    records = run_cases("http://fake", work.units(), model=None, max_tokens=8,
                        transport=httpx.MockTransport(FakeToolServer(refuse_required=True)))
    _validate_records(records)
    errors = [r for r in records if r["status"] == "error"]
    assert len(errors) == 4 and all(r["http_status"] == 400 and "not supported" in r["error"] for r in errors)
    assert all(r["correct"] is None for r in errors)
    block = summarize_tools(records)
    simple = next(c for c in block["cells"] if c["category"] == "simple")
    assert simple == {"category": "simple", "mode": "required", "applicable": True, "n": 4, "correct": 0,
                      "errors": 4, "accuracy": 0.0, "ci_low": 0.0, "ci_high": pytest.approx(wilson(0, 4)[1])}
    assert next(c for c in block["cells"] if c["category"] == "irrelevance")["applicable"] is False


def test_stream_assembly_merges_tool_call_deltas_by_index():
    def delta(call: dict) -> str:
        return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})

    lines = [delta({"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}),
             delta({"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}),
             delta({"index": 0, "function": {"arguments": ": 1}"}}),
             'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}', "", "data: [DONE]"]
    message, choice, usage = assemble_stream(lines)
    assert [c["function"] for c in message["tool_calls"]] == [{"name": "f", "arguments": '{"x": 1}'},
                                                              {"name": "g", "arguments": "{}"}]
    assert message["content"] is None and choice == {"finish_reason": "tool_calls"} and usage is None


# --- summary, evidence, report -------------------------------------------------------------------

def _records(tmp_path):
    work = _workload(tmp_path)
    return run_cases("http://fake", work.units(), model="m", max_tokens=64,
                     transport=httpx.MockTransport(FakeToolServer())), work


def test_summary_wilson_cells_fidelity_and_paired_difference(tmp_path):
    records, _ = _records(tmp_path)
    block = summarize_tools(records)
    cells = {(c["category"], c["mode"]): c for c in block["cells"]}
    # simple_python_{i} for the 4 sampled i: auto right iff odd and i % 3 != 0; required right iff i % 3 != 0
    ids = [int(r["id"].rsplit("_", 1)[1]) for r in records if r["category"] == "simple" and r["mode"] == "auto"]
    auto_right = sum(1 for i in ids if i % 2 and i % 3)
    required_right = sum(1 for i in ids if i % 3)
    assert cells[("simple", "auto")]["correct"] == auto_right and cells[("simple", "auto")]["n"] == 4
    low, high = wilson(required_right, 4)
    assert cells[("simple", "required")]["ci_low"] == pytest.approx(low)
    assert cells[("simple", "required")]["ci_high"] == pytest.approx(high)
    assert cells[("irrelevance", "auto")]["accuracy"] == 1.0
    assert cells[("irrelevance", "required")]["applicable"] is False and cells[("irrelevance", "required")]["n"] == 0
    overall = {c["mode"]: c for c in block["overall"]}
    assert overall["auto"]["n"] == 6 and overall["required"]["n"] == 4
    fid = {f["mode"]: f for f in block["parse_fidelity"]}
    left_in_content = sum(1 for i in ids if i % 2 == 0)
    assert fid["auto"]["n"] == 4 and fid["auto"]["clean"] == 4 - left_in_content
    assert fid["required"] == {**fid["required"], "n": 4, "clean": 4, "fidelity": 1.0}
    assert fid["*"]["n"] == 8
    diff = next(d for d in block["differences"] if d["category"] == "simple")
    assert diff["a"] == "required" and diff["n_pairs"] == 4
    assert diff["difference"] == pytest.approx((required_right - auto_right) / 4)
    assert diff["b_only"] == 0 and diff["a_only"] == required_right - auto_right
    assert [d["category"] for d in block["differences"]] == ["simple", "*"]  # irrelevance has no pair


def _manifest(run_id: str, work) -> dict:
    env = evidence.environment()
    return {"schema_version": 1, "run_id": run_id, "suite": "tools", "started_at": "2026-11-25T10:00:00+00:00",
            "finished_at": "2026-11-25T10:05:00+00:00", "harness_version": evidence.HARNESS_VERSION,
            "git": env["git"], "profile": {"name": "text-default", "flags": {}},
            "model": {"id": "qwen2.5-coder-0.5b", "weights_sha256": "0" * 64, "source": "catalog"},
            "backend": {"backend": "mlx", "device": "cpu", "blas": "openblas", "dtype": "float32",
                        "mlx_version": "0.32.4"},
            "versions": env["versions"], "host": env["host"], "engine_mode": "batched",
            "servers": [{"label": "ours", "kind": "mlx-proof", "revision": None,
                         "argv": ["python", "-m", "serving", "serve", "--tool-prompt=generic"], "status": "ran",
                         "reason": None, "health": {"ok": True}, "prefix_cache": "on"}],
            "workload": {"cases": work.describe(), "repeats": 1, "warmup_requests": 0, "interleaving": "none"},
            "argv": ["python", "-m", "harness", "tools", "--server-arg=--tool-prompt=generic"]}


def test_tools_evidence_validates_round_trips_and_renders(tmp_path):
    records, work = _records(tmp_path / "data")
    run_id = evidence.new_run_id("tools")
    summary = {"schema_version": 1, "run_id": run_id, "groups": [], "comparisons": [], "validation": None,
               "tools": summarize_tools(records)}
    directory = evidence.run_dir(tmp_path / "evidence", model_id="qwen2.5-coder-0.5b", profile="text-default",
                                 run_id=run_id)
    evidence.write_run(directory, manifest=_manifest(run_id, work), records=records, summary=summary)
    run = evidence.read_run(directory)
    assert summarize_tools(run.records) == run.summary["tools"]  # recomputes from raw
    bad = copy.deepcopy(summary)
    bad["tools"]["cells"][0]["accuracy"] = 1.5
    with pytest.raises(evidence.EvidenceError, match="accuracy"):
        evidence.write_run(tmp_path / "x" / run_id, manifest=_manifest(run_id, work), records=records, summary=bad)
    _, md = render([run], tmp_path / "reports")
    text = md.read_text()
    assert "| category | tool_choice auto | tool_choice required |" in text
    assert "| irrelevance | 100.0% [" in text and "n/a (not applicable)" in text
    assert "Parse fidelity, tool_choice auto:" in text and "McNemar" in text
    assert "groupby(['category','mode'])" in text and "completion_tokens.sum" not in text
    assert "Tool calling (BFCL)" in (tmp_path / "reports" / "index.html").read_text()


def test_pandas_one_liner_recomputes_accuracy(tmp_path):
    pd = pytest.importorskip("pandas")
    records, _ = _records(tmp_path)
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = pd.read_json(raw, lines=True, dtype=False)
    s = r[(r.type == "tool_case") & (r.status != "not_applicable")]
    table = s.assign(right=s.correct.eq(True)).groupby(["category", "mode"]).right.agg(["mean", "sum", "count"])
    for cell in summarize_tools(records)["cells"]:
        if cell["applicable"]:
            row = table.loc[(cell["category"], cell["mode"])]
            assert row["mean"] == pytest.approx(cell["accuracy"]) and row["count"] == cell["n"]


def test_cli_parses_the_tools_command():
    from harness.cli import parser
    args = parser().parse_args(["tools", "--model", "smollm2-135m", "--categories", "simple,irrelevance",
                                "--limit", "2", "--modes", "auto", "--server-arg=--tool-prompt=generic",
                                "--server-arg=--max-concurrency=4"])
    assert args.limit == 2 and args.server_arg == ["--tool-prompt=generic", "--max-concurrency=4"]
    assert parser().parse_args(["tools"]).model == "qwen2.5-coder-0.5b"


# --- the real wheel (downloads ~2 MB from PyPI) -----------------------------------------------------

def _first(allowed: list):
    return next((a for a in allowed if a != ""), None)


def _answer_value(v):
    if isinstance(v, dict):
        return {k: _answer_value(_first(a)) for k, a in v.items() if "" not in a}
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return [_answer_value(x) for x in v]
    return v


@pytest.mark.integration
def test_real_wheel_fetches_and_every_possible_answer_passes_the_checker(tmp_path):
    """The pinned wheel downloads and unpacks; every tool converts to a valid JSON Schema; each
    case's own possible answer (first allowed values, optional parameters left out, parallel calls
    reversed) is judged correct: the checker and the conversion agree with the data."""
    settings = load_settings()
    categories = select(settings, None)
    data = fetch(settings.source, [m for c in categories for m in c.members()], root=tmp_path)
    work = build_workload(settings, data, categories=categories, limit=10**6)
    assert work.available == {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
                              "irrelevance": 240}
    for case in work.cases:
        tools, names = to_tools(case.functions)
        for tool in tools:
            jsonschema.Draft202012Validator.check_schema(tool["function"]["parameters"])
        if case.answers is None:
            continue
        sent = {bfcl: openai for openai, bfcl in names.items()}
        tool_calls = []
        for expected in case.answers:
            (name, params), = expected.items()
            required = next(d for d in case.functions if d["name"] == name)["parameters"].get("required", [])
            args = {p: _answer_value(_first(a)) for p, a in params.items()
                    if "" not in a or (p in required and _first(a) is not None)}
            tool_calls.append({"id": None, "name": sent[name], "arguments": json.dumps(args)})
        calls, problem = decode_calls(tool_calls[::-1], names)
        verdict = check(case.checker, calls=calls, functions=case.functions, answers=case.answers)
        assert problem is None and verdict.correct, (case.id, verdict.reason)


def test_json_schema_mode_asks_for_the_arguments_as_structured_output_and_judges_them():
    case = ToolCase("simple_python_1", "simple", "simple", [{"role": "user", "content": "x"}], [TRIANGLE],
                    [TRIANGLE_ANSWER])
    body, names = request_body(case, "json_schema", model="m", max_tokens=64, stream=False)
    assert "tools" not in body and "tool_choice" not in body
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["base"] == {"type": "integer", "description": "base"}
    right = json.dumps({"base": 10, "height": 5.0, "tags": ["Right Angle", "small"], "meta": {"a": 1},
                        "exact": True})
    base = {"type": "tool_case", "mode": "json_schema", "status": "ok", "tool_calls": [], "content": right}
    judged = judge(dict(base), case, names)
    assert judged["schema_valid"] is True and judged["correct"] is True, judged["reason"]
    wrong = judge({**base, "content": json.dumps({"base": "ten"})}, case, names)
    assert wrong["schema_valid"] is False and wrong["correct"] is False
    assert judge({**base, "content": "not json"}, case, names)["schema_valid"] is False


def test_json_schema_mode_asks_simple_cases_only():
    simple = ToolCase("s", "simple", "simple", [], [TRIANGLE], [TRIANGLE_ANSWER])
    multiple = ToolCase("m", "multiple", "multiple", [], [TRIANGLE, TRIANGLE], [TRIANGLE_ANSWER])
    irrelevance = ToolCase("i", "irrelevance", "irrelevance", [], [TRIANGLE], None)
    assert applicable(simple, "json_schema") and not applicable(multiple, "json_schema")
    assert not applicable(irrelevance, "json_schema") and not applicable(irrelevance, "required")
