"""How each npm agent CLI is started (argv, a clean environment, its config files) and how its
own output is read back (answer, tool calls, retries, refusals). agent_cli.py decides what a
capability's run must show; this module only knows the three programs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..driver import Case, Target

KEY_VAR = "MLX_PROOF_KEY"      # codex and opencode read the key from this variable
PROVIDER = "mlxproof"          # the provider id codex and opencode know our server by
CODEX_TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search")  # its "error"
                               # items are warnings (e.g. no metadata for the model), not tools


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


def base_env(target: Target, exe: str) -> dict[str, str]:
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


def launch_claude(case: Case, target: Target, exe: str, prompt: str, key: str, cwd: Path) -> Launch:
    """stream-json output (with --verbose, which it requires) shows every message the client
    got, tool calls included; partial messages add the raw stream events for `streaming`."""
    env = base_env(target, exe) | {
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


def read_claude(ran: Ran) -> Reading:
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


def launch_codex(case: Case, target: Target, exe: str, prompt: str, key: str, cwd: Path) -> Launch:
    """A model provider in CODEX_HOME/config.toml; it speaks only the Responses API. The
    [analytics] and [features] settings stop its startup look-ups of chatgpt.com and github.com."""
    home = target.workdir / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'''model = "{target.model}"
model_provider = "{PROVIDER}"
check_for_update_on_startup = false
{_codex_scope(case)}
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
{_codex_features_off(case)}''')
    answer = target.workdir / "codex-last-message.txt"
    answer.unlink(missing_ok=True)
    env = base_env(target, exe) | {"CODEX_HOME": str(home), KEY_VAR: key}
    argv = [exe, "exec", "--skip-git-repo-check", "--ephemeral", "--json", "--color", "never",
            "--sandbox", case.args.get("sandbox", "read-only"), "-o", str(answer), prompt]
    return Launch(argv, env, cwd, secret_env=(KEY_VAR,), answer_file=answer)


def _codex_scope(case: Case) -> str:
    """`web_search = "disabled"` and features turned off drop tools from every request (each
    tool's schema is prompt), as a user scoping Codex to a small local model would."""
    return f'web_search = "{case.args["web_search"]}"\n' if case.args.get("web_search") else ""


def _codex_features_off(case: Case) -> str:
    return "".join(f"{name} = false\n" for name in case.args.get("features_off", ()))


def _codex_idle(case: Case) -> str:
    """Its stream idle timeout (5 min by default) would cut off a long cold prefill the same way."""
    ms = case.args.get("stream_idle_timeout_ms")
    return f"stream_idle_timeout_ms = {int(ms)}\n" if ms else ""


def read_codex(ran: Ran) -> Reading:
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


def launch_opencode(case: Case, target: Target, exe: str, prompt: str, key: str, cwd: Path) -> Launch:
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
    env = base_env(target, exe) | {
        "OPENCODE_CONFIG": str(path), KEY_VAR: key, "OPENCODE_DISABLE_MODELS_FETCH": "true",
        "OPENCODE_DISABLE_AUTOUPDATE": "true", "OPENCODE_DISABLE_LSP_DOWNLOAD": "true",
        "OPENCODE_DISABLE_SHARE": "true"}
    # --pure: no external plugins, so no first-run npm install attempt
    argv = [exe, "run", "--pure", "--format", "json", "-m", f"{PROVIDER}/{target.model}", prompt]
    return Launch(argv, env, cwd, secret_env=(KEY_VAR,))


def read_opencode(ran: Ran) -> Reading:
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


PROGRAMS = {"claude": (launch_claude, read_claude), "codex": (launch_codex, read_codex),
            "opencode": (launch_opencode, read_opencode)}


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
