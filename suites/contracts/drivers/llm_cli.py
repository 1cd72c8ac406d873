"""Simon Willison's `llm` CLI, run as a subprocess the way its users run it.

It is pointed at us the documented way: an `extra-openai-models.yaml` in LLM_USER_PATH (here a
folder in the case's workdir) registers model id `mlx-proof` with our model_name and api_base,
and `api_key_name` names a key saved with `llm keys set` (fed on stdin, so the key is never on a
command line). The logs database lives in the same folder, which is what `-c` continues from.

Actions (args in brackets): prompt [prompt, expect] (--no-stream), stream [prompt] (the default:
stdout must arrive in pieces), system [system, prompt, expect] (-s), multi_turn [first, prompt]
(-c), tools [prompt, functions, tool] (--functions; the tool model), structured [prompt,
schema, fields] (--schema: DSL or JSON schema), usage [prompt] (-u, and `llm logs --json`), stop [prompt, stop]
(-o stop), auth [prompt] (a wrong saved key), model_id [prompt, unknown_model] (yaml names an
unknown model). Greedy and short: -o temperature 0 -o max_tokens N (default 24).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..driver import CONDITIONAL, Blocked, Case, Outcome, Target, answered, check, failed, with_artifacts

MODEL_ID = "mlx-proof"
KEY_NAME = "mlx-proof"
STRICT_MODEL_CONDITION = "needs the server's --strict-model-id: only then is an unknown model a 404"


@dataclass
class Ran:
    argv: list[str]
    rc: int
    out: str
    err: str
    out_reads: int            # separate non-empty reads of stdout: >1 means it arrived incrementally


@dataclass
class Session:
    """One case's llm user folder, environment, deadline and transcript."""
    case: Case
    target: Target
    exe: str
    user_dir: Path
    deadline: float
    transcript: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        # Nothing inherited may pick the key or config for llm: only the files in user_dir.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OPENAI_"))}
        return {**env, **self.target.env, "LLM_USER_PATH": str(self.user_dir), "NO_COLOR": "1"}

    def llm(self, *args: str, stdin: str | None = None) -> Ran:
        ran = _run([self.exe, *args], self.env, self.target.workdir, stdin, self.deadline - time.monotonic())
        self.transcript += [f"$ llm {' '.join(_quote(a) for a in args)}", f"[exit {ran.rc}]",
                            "[stdout]", ran.out, "[stderr]", ran.err, ""]
        return ran

    def prompt(self, *args: str, max_tokens: int = 24) -> Ran:
        """`llm [-m mlx-proof] ...` with greedy, short options, as a user would type it."""
        tokens = str(int(self.case.args.get("max_tokens", max_tokens)))
        return self.llm(*args, "-o", "temperature", "0", "-o", "max_tokens", tokens)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./=:,-]+", arg) else json.dumps(arg)


def _run(argv: list[str], env: dict, cwd: Path, stdin: str | None, timeout: float) -> Ran:
    """Run argv in its own process group; on timeout kill the group (llm may have children) and
    raise. stdout is read as it comes, so a streamed answer shows up as several reads."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    out_parts: list[bytes] = []
    err_parts: list[bytes] = []

    def drain(stream, parts):
        while chunk := os.read(stream.fileno(), 65536):
            parts.append(chunk)

    readers = [threading.Thread(target=drain, args=(proc.stdout, out_parts), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, err_parts), daemon=True)]
    for r in readers:
        r.start()
    if stdin is not None:
        proc.stdin.write(stdin.encode())
    proc.stdin.close()
    try:
        rc = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise TimeoutError(f"llm {' '.join(argv[1:3])}... ran past {timeout:.0f} s and was killed") from None
    for r in readers:
        r.join(timeout=5)
    return Ran(argv, rc, b"".join(out_parts).decode("utf-8", "replace"),
               b"".join(err_parts).decode("utf-8", "replace"), len(out_parts))


def _yaml_entry(target: Target, model_name: str, tools: bool) -> str:
    """One extra-openai-models.yaml entry; JSON strings are valid YAML scalars, so quoting is safe."""
    lines = [f"- model_id: {MODEL_ID}", f"  model_name: {json.dumps(model_name)}",
             f"  api_base: {json.dumps(target.v1)}", f"  api_key_name: {KEY_NAME}", "  supports_schema: true"]
    if tools:
        lines.append("  supports_tools: true")
    return "\n".join(lines) + "\n"


def _session(case: Case, target: Target, *, model_name: str | None = None, key: str | None = None) -> Session:
    exe = Path(sys.executable).with_name("llm")
    if not exe.exists():
        raise Blocked(f"the llm CLI is not installed next to {sys.executable} (pip install llm)")
    user_dir = target.workdir / "llm-user"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "extra-openai-models.yaml").write_text(
        _yaml_entry(target, model_name or target.model, tools=case.action == "tools"))
    s = Session(case, target, str(exe), user_dir, time.monotonic() + target.timeout_s - 5)
    saved = s.llm("keys", "set", KEY_NAME, stdin=key or target.api_key)
    if saved.rc != 0:
        raise RuntimeError(f"llm keys set failed ({saved.rc}): {saved.err.strip()[:200]}")
    return s


def _last_logs(s: Session, count: int) -> list[dict]:
    """The newest `count` logged responses, oldest first (llm logs lists newest last)."""
    ran = s.llm("logs", "--json", "-n", str(count))
    if ran.rc != 0:
        raise RuntimeError(f"llm logs failed ({ran.rc}): {ran.err.strip()[:200]}")
    return json.loads(ran.out)


def _error_line(ran: Ran) -> str:
    return " ".join(ran.err.split())[:200] or f"exit {ran.rc} with no message"


def _answered(ran: Ran, expect: str | None, what: str, **detail) -> Outcome:
    if ran.rc != 0:
        return failed(f"{what}: exit {ran.rc}: {_error_line(ran)}")
    if not ran.out.strip():
        return failed(f"{what}: empty answer (stderr {_error_line(ran)!r})")
    return answered(ran.out, expect, what, **detail)


def prompt(s: Session, args: dict) -> Outcome:
    return _answered(s.prompt("-m", MODEL_ID, "--no-stream", args["prompt"]), args.get("expect"),
                     "llm --no-stream")


def stream(s: Session, args: dict) -> Outcome:
    """llm streams by default and flushes each chunk: the answer must reach stdout in pieces."""
    ran = s.prompt("-m", MODEL_ID, args["prompt"])
    if ran.rc == 0 and ran.out_reads < 2:
        return failed(f"stdout arrived in {ran.out_reads} piece(s): the answer was not streamed",
                      answer=ran.out.strip())
    return _answered(ran, args.get("expect"), f"streamed in {ran.out_reads} pieces", pieces=ran.out_reads)


def system(s: Session, args: dict) -> Outcome:
    return _answered(s.prompt("-m", MODEL_ID, "-s", args["system"], args["prompt"]), args.get("expect"),
                     "llm -s")


def multi_turn(s: Session, args: dict) -> Outcome:
    """A first prompt, then `llm -c` (continue the latest conversation, from the logs database).
    The tiny model cannot be relied on to recall, so the proof is llm's own log: both responses
    share a conversation id, and the second prompt's input tokens cover the whole first exchange
    (the history was sent, not just the new question)."""
    first = s.prompt("-m", MODEL_ID, args["first"])
    if first.rc != 0:
        return failed(f"first turn: exit {first.rc}: {_error_line(first)}")
    outcome = _answered(s.prompt("-c", args["prompt"]), args.get("expect"), "llm -c")
    if outcome.status != "pass":
        return outcome
    before, after = _last_logs(s, 2)
    if before["conversation_id"] != after["conversation_id"]:
        return failed(f"-c logged a new conversation ({before['conversation_id']} -> {after['conversation_id']})")
    history = before["input_tokens"] + before["output_tokens"]
    return check(after["input_tokens"] >= history,
                 f"{outcome.reason}; the continued prompt had {after['input_tokens']} input tokens, covering "
                 f"the first exchange's {history}",
                 f"the continued prompt had {after['input_tokens']} input tokens, fewer than the first exchange's "
                 f"{history}: the history was not sent", answer=outcome.detail.get("answer"))


TD_CALL = re.compile(r"^Tool call: (\w+)\((.*)\)\n  (.*)$", re.M)


def tools(s: Session, args: dict) -> Outcome:
    """--functions registers a Python function as a tool; llm runs each call it gets back, sends the
    result and lets the model go on, up to --cl (chain limit) rounds. llm offers no tool_choice, so
    the model decides (auto). --td prints each call and its result ('Tool call: name({...})' then
    the output indented): there must be a call with schema-valid arguments and its result; then
    either a text answer (pass) or, when the model only calls again until the chain limit, a
    conditional (llm logs nothing for a chain that fails, so --td is the record)."""
    import ast

    import jsonschema

    ran = s.prompt("-m", MODEL_ID, "--functions", args["functions"], "--td", "--cl", str(args.get("chain_limit", 2)),
                   args["prompt"])
    calls = TD_CALL.findall(ran.err + ran.out)
    if not calls:
        return failed(f"no tool call (auto choice; exit {ran.rc}): {ran.out.strip()[:60]!r} {_error_line(ran)[:80]}")
    name, shown_args, result = calls[0]
    if name != args["tool"]:
        return failed(f"called {name!r}, not {args['tool']!r}")
    arguments = ast.literal_eval(shown_args)  # --td shows the arguments as a Python dict
    jsonschema.validate(arguments, args["parameters"])
    seen = f"called {name}({json.dumps(arguments)}) and sent back {result.strip()[:40]!r}"
    if ran.rc != 0 and "chain limit" in ran.err.lower():
        return Outcome(CONDITIONAL, f"{seen}, but the model kept calling the tool instead of answering "
                       f"({len(calls)} call(s) shown) until llm stopped: {_error_line(ran)[-40:]}",
                       condition="needs a tool model that answers after a tool result (llm has no tool_choice)",
                       detail={"arguments": arguments, "calls": len(calls)})
    if ran.rc != 0:
        return failed(f"{seen}, then exit {ran.rc}: {_error_line(ran)}")
    answer = ran.out.strip()
    return check(bool(answer), f"{seen}, answered {answer[:60]!r}", f"{seen}, then no answer",
                 arguments=arguments, answer=answer)


def structured(s: Session, args: dict) -> Outcome:
    """--schema takes llm's concise DSL ('name, age int') or a JSON schema; stdout is one JSON object
    whose listed fields have the listed types (the DSL allows extra properties, so they are allowed)."""
    ran = s.prompt("-m", MODEL_ID, "--schema", args["schema"], args["prompt"], max_tokens=48)
    if ran.rc != 0:
        return failed(f"exit {ran.rc}: {_error_line(ran)}")
    try:
        value = json.loads(ran.out)
    except ValueError as exc:
        return failed(f"stdout is not one JSON object ({exc}): {ran.out.strip()[:80]!r}")
    types = {"str": str, "int": int, "float": (int, float), "bool": bool}
    wrong = [f"{k} is not {t}" for k, t in args["fields"].items() if not isinstance(value.get(k), types[t])]
    return check(isinstance(value, dict) and not wrong, f"schema-valid JSON {ran.out.strip()[:80]}",
                 f"JSON {ran.out.strip()[:80]} breaks the schema: {wrong}", value=value)


def usage(s: Session, args: dict) -> Outcome:
    """-u prints 'Token usage: N input, M output' to stderr; the log row must agree."""
    ran = s.prompt("-m", MODEL_ID, "-u", args["prompt"])
    if ran.rc != 0:
        return failed(f"exit {ran.rc}: {_error_line(ran)}")
    shown = re.search(r"Token usage: ([\d,]+) input, ([\d,]+) output", ran.err)
    if not shown:
        return failed(f"-u printed no token usage (stderr {_error_line(ran)!r})")
    shown_in, shown_out = (int(g.replace(",", "")) for g in shown.groups())
    row = _last_logs(s, 1)[0]
    logged = (row["input_tokens"], row["output_tokens"])
    return check(shown_in > 0 and shown_out > 0 and logged == (shown_in, shown_out),
                 f"usage {shown_in} input, {shown_out} output (shown and logged)",
                 f"usage shown {shown_in}/{shown_out}, logged {row['input_tokens']}/{row['output_tokens']}",
                 input_tokens=shown_in, output_tokens=shown_out)


def stop(s: Session, args: dict) -> Outcome:
    """-o stop against a control run that does reach the stop string."""
    stop_at = args["stop"]
    control = s.prompt("-m", MODEL_ID, "--no-stream", args["prompt"])
    if control.rc != 0 or stop_at not in control.out:
        return failed(f"control answer {control.out.strip()[:60]!r} never reaches {stop_at!r}: pick another prompt")
    ran = s.prompt("-m", MODEL_ID, "--no-stream", "-o", "stop", stop_at, args["prompt"])
    cut = control.out[:control.out.index(stop_at)].strip()
    text = ran.out.strip()
    return check(ran.rc == 0 and stop_at not in text and text == cut, f"stopped before {stop_at!r}: {text[:60]!r}",
                 f"stop {stop_at!r} not honoured: {text[:60]!r} (exit {ran.rc}; control cut {cut[:60]!r})",
                 answer=text)


def auth(s: Session, args: dict) -> Outcome:
    """A wrong saved key: llm must exit non-zero with the server's 401 in its message."""
    ran = s.prompt("-m", MODEL_ID, args["prompt"])
    if ran.rc == 0:
        return failed(f"a wrong API key was answered: {ran.out.strip()[:60]!r}")
    message = _error_line(ran)
    return check("401" in message or "api key" in message.lower(), f"exit {ran.rc}: {message[:120]}",
                 f"exit {ran.rc} without an auth error: {message}")


def model_id(s: Session, args: dict) -> Outcome:
    """The yaml names a model we do not serve. A 404 must surface as an error; our server refuses
    unknown ids only under --strict-model-id, so an answer is conditional on that flag."""
    ran = s.prompt("-m", MODEL_ID, args["prompt"])
    if ran.rc != 0:
        message = _error_line(ran)
        return check("404" in message or "not served" in message or "not found" in message.lower(),
                     f"exit {ran.rc}: {message[:120]}", f"exit {ran.rc} without a not-found error: {message}")
    return Outcome(CONDITIONAL, f"unknown model {args['unknown_model']!r} was answered: the server serves any name",
                   condition=STRICT_MODEL_CONDITION, detail={"answer": ran.out.strip()})


ACTIONS = {f.__name__: f for f in (prompt, stream, system, multi_turn, tools, structured, usage, stop, auth,
                                   model_id)}


def run(case: Case, target: Target) -> Outcome:
    if case.action not in ACTIONS:
        raise ValueError(f"llm_cli has no action {case.action!r} (known: {', '.join(ACTIONS)})")
    s = _session(case, target, model_name=case.args.get("unknown_model"),
                 key=("sk-wrong-" + "0" * 16) if case.action == "auth" else None)
    try:
        outcome = ACTIONS[case.action](s, case.args)
    finally:
        name = f"llm-{case.capability}-{case.action}.txt"
        (target.artifacts / name).write_text("\n".join(s.transcript))
    return with_artifacts(outcome, name)
