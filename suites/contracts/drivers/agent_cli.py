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
             for mode = "write", {content}; mode = read | write; file; content]. read: the
             file holds a random secret word and the answer must contain it; write: the file
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
from dataclasses import dataclass, field
from pathlib import Path

from ..driver import CONDITIONAL, Blocked, Case, Outcome, Target, check, failed, passed, with_artifacts

NPM_PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "opencode": "opencode-ai"}
KEY_VAR = "MLX_PROOF_KEY"      # codex and opencode read the key from this variable
PROVIDER = "mlxproof"          # the provider id codex and opencode know our server by
KILL_MARGIN_S = 10.0           # kill the client before the runner gives up on the case, so
                               # the process group dies and its transcript is still written
AUTH_WORDS = ("401", "unauthorized", "unauthorised", "invalid api key", "invalid_api_key", "authentication",
              "api key", "forbidden", "403")
CODEX_TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search")  # its "error"
                               # items are warnings (e.g. no metadata for the model), not tools
SECRET_WORDS = ("walrus", "quince", "marimba", "zeppelin", "obsidian", "tamarind")


@dataclass(frozen=True)
class Launch:
    """One client process to start: what the transcript records."""
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    secret_env: tuple[str, ...] = ()   # names whose values the transcript must not show
    answer_file: Path | None = None    # where the client writes its final answer, if it does


@dataclass
class Ran:
    launch: Launch
    returncode: int | None             # None: killed on timeout
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Reading:
    """What the client itself reports about its run, parsed from its own output."""
    answer: str = ""
    error: str = ""                     # the client's own error report, if any
    tools: list[str] = field(default_factory=list)   # tool calls the client says it made
    deltas: int | None = None           # streamed text deltas it showed (None: it can't show them)
    retries: int = 0                    # API retries it reported (claude and codex retry even a 401)
    refused: list[str] = field(default_factory=list)  # model calls the client itself refused to run


# ---------------------------------------------------------------- running one process

def _find(program: str, target: Target) -> str:
    """The suite's PATH (target.env) first, so the pinned install in .nox/clients wins."""
    path = os.pathsep.join(p for p in (target.env.get("PATH"), os.environ.get("PATH")) if p)
    exe = shutil.which(program, path=path)
    if exe is None:
        raise Blocked(f"{program} is not installed: npm i --prefix .nox/clients {NPM_PACKAGES[program]} "
                      f"(nox -s contracts installs it)")
    return exe


def _base_env(target: Target, exe: str) -> dict[str, str]:
    """A fresh environment rather than os.environ: the user's ANTHROPIC_*/OPENAI_* keys, proxies
    and configs must not reach the client; only PATH (node must be found) comes through."""
    home = target.workdir
    dirs = {"XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_CACHE_HOME": home / ".cache", "XDG_STATE_HOME": home / ".local" / "state", "TMPDIR": home / "tmp"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (os.path.dirname(exe), target.env.get("PATH"), os.environ.get("PATH")) if p)
    return {"PATH": path, "HOME": str(home), **{k: str(v) for k, v in dirs.items()}, "LANG": "C.UTF-8",
            "TERM": "dumb", "NO_COLOR": "1", "NO_PROXY": "127.0.0.1,localhost", "CI": "1"}


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


# ---------------------------------------------------------------- the three programs

def _claude(case: Case, target: Target, exe: str, prompt: str, key: str, cwd: Path) -> Launch:
    """stream-json output (with --verbose, which it requires) shows every message the client
    got, tool calls included; partial messages add the raw stream events for `streaming`."""
    env = _base_env(target, exe) | {
        "ANTHROPIC_BASE_URL": target.base_url, "ANTHROPIC_AUTH_TOKEN": key,  # AUTH_TOKEN sends Bearer
        "ANTHROPIC_MODEL": target.model, "ANTHROPIC_SMALL_FAST_MODEL": target.model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": target.model,  # its helper calls must not ask for a Claude model
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(case.args.get("max_output_tokens", 256)),  # else it asks 32000
        "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1"}
    if case.args.get("stream_idle_timeout_ms"):
        # it aborts and retries a stream that shows no event for 5 min (pings don't count), and
        # a retried prefill starts over: a cold agent prompt on the tool model here takes longer
        env["CLAUDE_STREAM_IDLE_TIMEOUT_MS"] = str(case.args["stream_idle_timeout_ms"])
    if case.args.get("api_timeout_ms"):
        env["API_TIMEOUT_MS"] = str(case.args["api_timeout_ms"])  # its per-request limit: 10 min by default
    argv = [exe, "-p", prompt, "--model", target.model, "--output-format", "stream-json", "--verbose",
            "--no-session-persistence"]
    if case.action == "streaming":
        argv.append("--include-partial-messages")
    if case.args.get("permission_mode"):
        argv += ["--permission-mode", case.args["permission_mode"]]
    if case.args.get("allowed_tools"):
        argv += ["--allowedTools", case.args["allowed_tools"]]
    if case.args.get("tools"):  # the built-in tools offered at all (each one's schema is prompt)
        argv += ["--tools", case.args["tools"]]
    return Launch(argv, env, cwd, secret_env=("ANTHROPIC_AUTH_TOKEN",))


def _read_claude(ran: Ran) -> Reading:
    reading = Reading(deltas=0)
    for event in _json_lines(ran.stdout):
        kind = event.get("type")
        if kind == "assistant":
            for block in event.get("message", {}).get("content", []) or []:
                if block.get("type") == "tool_use":
                    reading.tools.append(f"{block.get('name')}({json.dumps(block.get('input'))[:120]})")
        elif kind == "system" and event.get("subtype") == "api_retry":
            reading.retries += 1
        elif kind == "stream_event":
            delta = event.get("event", {}).get("delta", {})
            if delta.get("type") == "text_delta" and delta.get("text"):
                reading.deltas += 1
        elif kind == "result":
            text = event.get("result") or ""
            if event.get("is_error") or event.get("subtype") != "success":
                reading.error = text or event.get("subtype", "error")
            else:
                reading.answer = text
    if not reading.answer and not reading.error and ran.stderr.strip():
        reading.error = ran.stderr.strip()[-300:]
    return reading


def _codex(case: Case, target: Target, exe: str, prompt: str, key: str, cwd: Path) -> Launch:
    """A model provider in CODEX_HOME/config.toml; it speaks only the Responses API. The
    [analytics] and [features] settings stop its startup look-ups of chatgpt.com and github.com."""
    home = target.workdir / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'''model = "{target.model}"
model_provider = "{PROVIDER}"
check_for_update_on_startup = false

[model_providers.{PROVIDER}]
name = "mlx-proof"
base_url = "{target.v1}"
env_key = "{KEY_VAR}"
wire_api = "responses"
{_codex_idle(case)}
[analytics]
enabled = false

[features]
plugins = false
''')
    answer = target.workdir / "codex-last-message.txt"
    answer.unlink(missing_ok=True)
    env = _base_env(target, exe) | {"CODEX_HOME": str(home), KEY_VAR: key}
    argv = [exe, "exec", "--skip-git-repo-check", "--ephemeral", "--json", "--color", "never",
            "--sandbox", case.args.get("sandbox", "read-only"), "-o", str(answer), prompt]
    return Launch(argv, env, cwd, secret_env=(KEY_VAR,), answer_file=answer)


def _codex_idle(case: Case) -> str:
    """Its stream idle timeout (5 min by default) would cut off a long cold prefill the same way."""
    ms = case.args.get("stream_idle_timeout_ms")
    return f"stream_idle_timeout_ms = {int(ms)}\n" if ms else ""


def _read_codex(ran: Ran) -> Reading:
    reading = Reading()
    for event in _json_lines(ran.stdout):
        item = event.get("item") or {}
        if event.get("type") == "item.completed" and item.get("type") in CODEX_TOOL_ITEMS:
            what = item.get("command") or item.get("changes") or item.get("tool") or item.get("query")
            reading.tools.append(f"{item['type']}({json.dumps(what)[:120]}: exit {item.get('exit_code')})")
        elif event.get("type") == "error" and str(event.get("message", "")).startswith("Reconnecting"):
            reading.retries += 1  # it retries any failed request, a 401 included, 5 times
        elif event.get("type") in ("error", "turn.failed"):
            reading.error = json.dumps(event.get("error") or event.get("message") or event)[:300]
    # A call whose arguments break Codex's own rules is never run and never shows in --json; its
    # tool router logs it, and the refusal goes back to the model as the call's output.
    reading.refused = [line.split("error=", 1)[1].strip() for line in ran.stderr.splitlines()
                       if "tools::router" in line and "error=" in line]
    answer_file = ran.launch.answer_file
    if answer_file is not None and answer_file.exists():
        reading.answer = answer_file.read_text()
    return reading


def _opencode(case: Case, target: Target, exe: str, prompt: str, key: str, cwd: Path) -> Launch:
    """An @ai-sdk/openai-compatible provider in an OPENCODE_CONFIG file; the key stays in the
    environment ({env:...}). limit.output is needed, or it asks for the whole context."""
    model = {"name": target.model, "limit": {"context": int(case.args.get("context_tokens", 8192)),
                                              "output": int(case.args.get("max_output_tokens", 256))}}
    config = {"$schema": "https://opencode.ai/config.json", "autoupdate": False, "share": "disabled",
              "model": f"{PROVIDER}/{target.model}", "small_model": f"{PROVIDER}/{target.model}",
              "provider": {PROVIDER: {"npm": "@ai-sdk/openai-compatible", "name": "mlx-proof",
                                      "options": {"baseURL": target.v1, "apiKey": "{env:" + KEY_VAR + "}",
                                                  # its per-request timeout (5 min by default) also
                                                  # bounds a cold prefill on the tool model
                                                  "timeout": int(case.args.get("request_timeout_ms", 300000))},
                                      "models": {target.model: model}}}}
    path = target.workdir / "opencode.json"
    path.write_text(json.dumps(config, indent=1))
    env = _base_env(target, exe) | {
        "OPENCODE_CONFIG": str(path), KEY_VAR: key, "OPENCODE_DISABLE_MODELS_FETCH": "true",
        "OPENCODE_DISABLE_AUTOUPDATE": "true", "OPENCODE_DISABLE_LSP_DOWNLOAD": "true",
        "OPENCODE_DISABLE_SHARE": "true"}
    # --pure: no external plugins, so no first-run npm install attempt
    argv = [exe, "run", "--pure", "--format", "json", "-m", f"{PROVIDER}/{target.model}", prompt]
    return Launch(argv, env, cwd, secret_env=(KEY_VAR,))


def _read_opencode(ran: Ran) -> Reading:
    reading = Reading()
    texts = []
    for event in _json_lines(ran.stdout):
        part = event.get("part") or {}
        if event.get("type") == "text" and part.get("text"):
            texts.append(part["text"])
        elif event.get("type") == "tool_use":
            state = part.get("state") or {}
            reading.tools.append(f"{part.get('tool')}({json.dumps(state.get('input'))[:120]}: {state.get('status')})")
        elif event.get("type") == "error":
            reading.error = json.dumps(event.get("error") or event)[:300]
    reading.answer = "\n".join(texts)
    if not reading.answer and not reading.error and ran.returncode != 0:
        reading.error = ran.stderr.strip()[-300:]
    return reading


PROGRAMS = {"claude": (_claude, _read_claude), "codex": (_codex, _read_codex), "opencode": (_opencode, _read_opencode)}


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


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
        path.write_text(f"The secret word is {content}\n")
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
    tools = ", ".join(reading.tools[:4]) or "no tool call"
    used = [t for t in reading.tools if str(path) in t or filename in t]
    if mode == "read" and not ok and ran.returncode == 0 and used:
        # The contract held (the client ran the model's call on the right file and sent the
        # result back); the model did not use the result. That is the model's part.
        outcome = Outcome(CONDITIONAL, f"the client ran {len(used)} call(s) on {filename} ({used[0][:100]}) "
                          f"and the turn ended cleanly, but the model's {seen} lacks {content!r}",
                          condition="needs a model that answers from a tool result (the 0.5B tool model "
                                    "keeps calling the tool instead)", detail=facts)
        return with_artifacts(outcome, name)
    if not ok and ran.returncode == 0 and not used and reading.refused:
        # Our calls reached the client well-formed and its refusals came back to the model as
        # call outputs: the round trip held; the arguments the model chose did not.
        outcome = Outcome(CONDITIONAL, f"the model called a tool {len(reading.refused)} time(s), but the client "
                          f"refused every call's arguments ({reading.refused[0][:160]}); the turn ended "
                          f"cleanly with {seen}",
                          condition="needs a model whose tool arguments the client accepts (the 0.5B tool "
                                    "model copies a parameter's description into it)", detail=facts)
        return with_artifacts(outcome, name)
    outcome = check(ok, f"{mode} via {tools}; {seen} in {ran.seconds:.0f} s",
                    f"{_ended(ran)}; {tools}; {seen}; expected {content!r}"
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
