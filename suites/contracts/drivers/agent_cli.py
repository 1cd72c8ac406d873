"""The npm agent CLIs, run as their users run them: Claude Code (`claude -p`), Codex CLI
(`codex exec`) and OpenCode (`opencode run`). The case arg `program` picks one.

Every run is a subprocess in its own process group with a clean environment: HOME, the XDG
folders and TMPDIR point into target.workdir (so no user config, session or credential leaks
in or out), telemetry, update checks and other network extras are off, and the API key goes
by environment or config file, never argv (argv shows in `ps`). The full transcript of each
run is kept as an artifact, `<program>-<action>.txt`.

Actions (case args in brackets, besides `program`):
  one_turn   a one-turn prompt [prompt]; pass = exit 0 and a non-empty answer.
  streaming  the same turn, judged as a stream [prompt]. These clients always stream, so the
             request carries `stream: true`; where the client can show what arrived (Claude
             Code's partial messages) at least one text delta must have come; otherwise pass =
             the streamed turn completed with an answer.
  tool_turn  a task that needs a tool, in a scratch project folder [prompt with {file} and,
             for mode = "write", {content}; mode = read | write; file; content; file_text, the
             read file's line around {word}]. read: the file holds a random word and the answer
             must contain it; write: the file
             must exist afterwards and contain `content`. Judged by effect, never by words.
             read, where the client ran the model's call on the file and exited cleanly but
             the answer lacks the word: conditional (the model, not the contract, fell short);
             likewise where the client refused every call's arguments by its own rules (Codex
             logs these) and sent the refusals back to the model.
  auth       the same prompt with a wrong key [prompt, expect]; pass = a non-zero exit or a
             clear auth error, and no answer (`expect`, the right answer's key word, absent).
Limits: max_output_tokens (claude, opencode), context_tokens (opencode), sandbox (codex),
permission_mode and allowed_tools (claude), stream_idle_timeout_ms (claude, codex: both abort a
stream after 5 min without an event and retry from scratch), api_timeout_ms (claude: a request
over 10 min is retried), request_timeout_ms (opencode).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..driver import CONDITIONAL, Blocked, Case, Outcome, Target, check, failed, passed, with_artifacts
from ._agent_programs import PROGRAMS, Launch, Ran, Reading

NPM_PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "opencode": "opencode-ai"}
KILL_MARGIN_S = 10.0           # kill the client before the runner gives up on the case, so
                               # the process group dies and its transcript is still written
AUTH_WORDS = ("401", "unauthorized", "unauthorised", "invalid api key", "invalid_api_key", "authentication",
              "api key", "forbidden", "403")
SECRET_WORDS = ("walrus", "quince", "marimba", "zeppelin", "obsidian", "tamarind")


# ---------------------------------------------------------------- running one process

def _find(program: str, target: Target) -> str:
    """The suite's PATH (target.env) first, so the pinned install in .nox/clients wins."""
    path = os.pathsep.join(p for p in (target.env.get("PATH"), os.environ.get("PATH")) if p)
    exe = shutil.which(program, path=path)
    if exe is None:
        raise Blocked(f"{program} is not installed: npm i --prefix .nox/clients {NPM_PACKAGES[program]} "
                      f"(nox -s contracts installs it)")
    return exe


def _execute(launch: Launch, timeout_s: float) -> Ran:
    started = time.monotonic()
    proc = subprocess.Popen(launch.argv, env=launch.env, cwd=launch.cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)  # its own group: helpers it spawns die with it
    try:
        out, err = proc.communicate(timeout=timeout_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Ran(launch, code, out or "", err or "", time.monotonic() - started)


def _transcript(ran: Ran, reading: Reading, target: Target, name: str) -> str:
    env_shown = {k: ("<redacted>" if k in ran.launch.secret_env else v) for k, v in sorted(ran.launch.env.items())}
    parts = [f"$ {' '.join(ran.launch.argv)}", f"cwd: {ran.launch.cwd}",
             "env: " + json.dumps(env_shown, indent=1),
             f"exit: {'killed on timeout' if ran.returncode is None else ran.returncode} after {ran.seconds:.1f} s",
             f"parsed: {json.dumps(reading.__dict__, ensure_ascii=False)}",
             "---- stdout", ran.stdout, "---- stderr", ran.stderr]
    (target.artifacts / name).write_text("\n".join(parts))
    return name



# ---------------------------------------------------------------- actions

def _go(case: Case, target: Target, prompt: str, key: str, cwd: Path) -> tuple[Ran, Reading, str]:
    program = case.args.get("program")
    if program not in PROGRAMS:
        raise ValueError(f"case arg program must be one of {', '.join(PROGRAMS)}, not {program!r}")
    build, read = PROGRAMS[program]
    launch = build(case, target, _find(program, target), prompt, key, cwd)
    ran = _execute(launch, max(target.timeout_s - KILL_MARGIN_S, 1.0))
    reading = read(ran)
    return ran, reading, _transcript(ran, reading, target, f"{program}-{case.action}.txt")


def _ended(ran: Ran) -> str:
    return "was killed on timeout" if ran.returncode is None else f"exited {ran.returncode}"


def _facts(ran: Ran, reading: Reading) -> dict:
    return {"exit": ran.returncode, "seconds": round(ran.seconds, 1), "answer": reading.answer[:500],
            "error": reading.error[:300], "tools": reading.tools[:10], "deltas": reading.deltas,
            "retries": reading.retries, "refused": reading.refused[:10]}


def _one_turn(case: Case, target: Target) -> Outcome:
    ran, reading, name = _go(case, target, case.args["prompt"], target.api_key, target.workdir)
    answer = reading.answer.strip()
    outcome = check(ran.returncode == 0 and bool(answer), f"answered {answer[:80]!r} in {ran.seconds:.0f} s",
                    f"{_ended(ran)} with answer {answer[:80]!r}; error: {reading.error[:200] or '-'}",
                    **_facts(ran, reading))
    return with_artifacts(outcome, name)


def _streaming(case: Case, target: Target) -> Outcome:
    outcome = _one_turn(case, target)
    deltas = outcome.detail.get("deltas")
    if outcome.status != "pass" or deltas is None:
        return outcome  # a client that can't show its stream: the completed streamed turn is the test
    if deltas < 1:
        return with_artifacts(failed(f"answered, but the client showed no streamed text delta ({outcome.reason})",
                                     **outcome.detail), *outcome.artifacts)
    return with_artifacts(passed(f"{deltas} text deltas streamed; {outcome.reason}", **outcome.detail),
                          *outcome.artifacts)


def _project(target: Target) -> Path:
    """A scratch project inside the workdir, so the agent's file tools stay in our folder."""
    project = target.workdir / "project"
    project.mkdir(exist_ok=True)
    return project


def _tool_turn(case: Case, target: Target) -> Outcome:
    mode, filename = case.args.get("mode", "read"), case.args.get("file", "notes.txt")
    project = _project(target)
    path = project / filename
    if mode == "read":
        # random each run: the answer can only contain it if the agent really read the file
        content = f"{secrets.choice(SECRET_WORDS)}{secrets.randbelow(9000) + 1000}"
        path.write_text(case.args.get("file_text", "The secret word is {word}").format(word=content) + "\n")
    elif mode == "write":
        content = case.args["content"]
        path.unlink(missing_ok=True)
    else:
        raise ValueError(f"tool_turn mode must be read or write, not {mode!r}")
    prompt = case.args["prompt"].format(file=filename, content=content, path=path)
    ran, reading, name = _go(case, target, prompt, target.api_key, project)
    facts = _facts(ran, reading) | {"mode": mode, "file": filename, "expected": content}
    if mode == "read":
        ok = content.lower() in reading.answer.lower()
        seen = f"answer {reading.answer.strip()[:120]!r}"
    else:
        written = path.read_text(errors="replace") if path.exists() else None
        ok = written is not None and content.lower() in written.lower()
        seen = f"{filename} {'holds ' + repr(written[:80]) if written is not None else 'was not created'}"
        facts["written"] = written
    tools = ", ".join(reading.tools[:4]) or "no tool call ran"
    used = [t for t in reading.tools if str(path) in t or filename in t]
    if mode == "read" and not ok and ran.returncode == 0 and used:
        # The contract held (the client ran the model's call on the right file and sent the
        # result back); the model did not use the result. That is the model's part.
        outcome = Outcome(CONDITIONAL, f"the client ran {len(used)} call(s) on {filename} ({used[0][:100]}) "
                          f"and the turn ended cleanly, but the model's {seen} lacks {content!r}",
                          condition=f"needs a model that answers from a tool result ({target.model} "
                                    "keeps calling the tool instead)", detail=facts)
        return with_artifacts(outcome, name)
    if not ok and ran.returncode == 0 and not used and reading.refused:
        # Our calls reached the client well-formed and its refusals came back to the model as
        # call outputs: the round trip held; the arguments the model chose did not.
        outcome = Outcome(CONDITIONAL, f"the model called a tool {len(reading.refused)} time(s), but the client "
                          f"refused every call's arguments ({reading.refused[0][:160]}); the turn ended "
                          f"cleanly with {seen}",
                          condition=f"needs a model whose tool arguments the client accepts ({target.model} "
                                    "chose arguments the client's own rules refuse)", detail=facts)
        return with_artifacts(outcome, name)
    refused = f"; the client refused {len(reading.refused)} call(s): {reading.refused[0][:120]}" if reading.refused else ""
    outcome = check(ok, f"{mode} via {tools}; {seen} in {ran.seconds:.0f} s",
                    f"{_ended(ran)}; {tools}{refused}; {seen}; expected {content!r}"
                    + (f"; error: {reading.error[:150]}" if reading.error else ""), **facts)
    return with_artifacts(outcome, name)


def _auth(case: Case, target: Target) -> Outcome:
    wrong = "sk-wrong-" + secrets.token_hex(8)
    ran, reading, name = _go(case, target, case.args["prompt"], wrong, target.workdir)
    said = f"{reading.error} {ran.stdout[-2000:]} {ran.stderr[-2000:]}".lower()
    auth_error = next((w for w in AUTH_WORDS if w in said), None)
    expect = str(case.args.get("expect", "")).lower()
    answered = bool(reading.answer.strip()) and (not expect or expect in reading.answer.lower())
    refused = ran.returncode not in (0, None) or auth_error is not None
    retried = f" after {reading.retries} retries" if reading.retries else ""
    outcome = check(refused and not answered,
                    f"refused: {_ended(ran)} in {ran.seconds:.0f} s{retried}, said {auth_error!r}: "
                    f"{reading.error[:120] or said.strip()[-120:]!r}",
                    f"{_ended(ran)}; auth error {'seen: ' + repr(auth_error) if auth_error else 'not seen'}; "
                    f"answer {reading.answer.strip()[:80]!r}", **_facts(ran, reading))
    return with_artifacts(outcome, name)


ACTIONS = {"one_turn": _one_turn, "streaming": _streaming, "tool_turn": _tool_turn, "auth": _auth}


def run(case: Case, target: Target) -> Outcome:
    action = ACTIONS.get(case.action)
    if action is None:
        raise ValueError(f"agent_cli has no action {case.action!r} (known: {', '.join(ACTIONS)})")
    return action(case, target)
