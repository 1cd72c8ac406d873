"""The agent CLI driver's own parts, without the npm programs: how Codex is configured, how each
client's output is read back, and how a tool turn is judged from what the client reported."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from suites.contracts.driver import Case, Outcome, Target
from suites.contracts.drivers import _agent_programs as programs
from suites.contracts.drivers import agent_cli


def target(tmp_path: Path) -> Target:
    return Target("http://127.0.0.1:1", "k", "m", tmp_path, tmp_path, 60)


def test_codex_reading_keeps_the_calls_its_router_refused(tmp_path):
    stderr = ("Reading additional input from stdin...\n"
              "2026-11-25T23:10:17Z ERROR codex_core::tools::router: error=`justification` requires an "
              "explicit `sandbox_permissions`\n"
              "2026-11-25T23:10:59Z ERROR codex_core::tools::router: error=`justification` requires an "
              "explicit `sandbox_permissions`\n")
    stdout = '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"done"}}\n'
    answer = tmp_path / "last.txt"
    answer.write_text("done")
    ran = programs.Ran(programs.Launch(["codex"], {}, tmp_path, answer_file=answer), 0, stdout, stderr, 1.0)
    reading = programs.read_codex(ran)
    assert reading.answer == "done" and reading.tools == []
    assert reading.refused == ["`justification` requires an explicit `sandbox_permissions`"] * 2


@pytest.mark.parametrize("args, web_search, off", [
    ({}, None, set()),
    ({"web_search": "disabled", "features_off": ["goals", "multi_agent"]}, "disabled", {"goals", "multi_agent"}),
])
def test_codex_config_scopes_its_tools_as_the_case_asks(tmp_path, args, web_search, off):
    case = Case("codex", "tools", "tool_turn", "agent", args)
    launch = programs.launch_codex(case, target(tmp_path), "codex", "hi", "k", tmp_path)
    config = tomllib.loads((Path(launch.env["CODEX_HOME"]) / "config.toml").read_text())
    assert config.get("web_search") == web_search  # a top-level key, not one inside a table
    assert config["model_providers"]["mlxproof"]["wire_api"] == "responses"
    assert config["features"] == {"plugins": False, **{name: False for name in off}}


@pytest.fixture
def tool_turn(tmp_path, monkeypatch):
    """Runs a tool_turn case whose client 'reported' `reading(word)`, given the word the driver
    wrote into the file; returns the outcome and what the client was started with."""
    seen = {}

    def run(args: dict, reading) -> Outcome:
        def fake_go(case, tgt, prompt, key, cwd):
            line = (cwd / "notes.txt").read_text() if (cwd / "notes.txt").exists() else ""
            seen.update(line=line, prompt=prompt, word=line.split()[-1] if line else None)
            ran = programs.Ran(programs.Launch(["x"], {}, cwd), 1, "", "", 0.1)  # no call seen: never conditional
            return ran, reading(seen["word"]), "x.txt"

        monkeypatch.setattr(agent_cli, "_go", fake_go)
        return agent_cli.run(Case("c", "tools", "tool_turn", "agent", args), target(tmp_path))

    return run, seen


@pytest.mark.parametrize("file_text, answered, status", [
    (None, "The secret word is {word}.", "pass"),
    ("The project codename is {word}", "It is {word}", "pass"),
    ("The project codename is {word}", "I can't assist with that.", "fail"),
])
def test_a_read_turn_writes_its_file_text_around_a_fresh_word(tmp_path, tool_turn, file_text, answered, status):
    run, seen = tool_turn
    args = {"program": "claude", "prompt": "Read {path}", **({"file_text": file_text} if file_text else {})}
    outcome = run(args, lambda word: programs.Reading(answer=answered.format(word=word)))
    assert seen["line"] == (file_text or "The secret word is {word}").format(word=seen["word"]) + "\n"
    assert seen["prompt"] == f"Read {tmp_path / 'project' / 'notes.txt'}"
    assert outcome.status == status and outcome.detail["expected"] == seen["word"]


def test_a_failed_turn_names_the_calls_the_client_refused(tool_turn):
    run, _ = tool_turn
    outcome = run({"program": "codex", "prompt": "x"},
                  lambda word: programs.Reading(error="Incomplete response", refused=["approval policy is Never"] * 2))
    assert outcome.status == "fail"
    assert "no tool call ran; the client refused 2 call(s): approval policy is Never" in outcome.reason
