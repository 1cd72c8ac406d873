"""Open WebUI, driven in headless Chromium the way a person uses it.

Each case starts its own Open WebUI (a fresh DATA_DIR in the case's workdir) pointed at the
target through OPENAI_API_BASE_URL and OPENAI_API_KEY, opens its page with Playwright in
Debian's chromium, and reads the result off the page. Actions:

    chat       pick target.model, send `prompt`, read the assistant's answer (pass: non-empty)
    stream     as chat, sampling the answer while it arrives (pass: it grew in more than one step)
    wrong-key  Open WebUI configured with a wrong key (pass: target.model is not offered)

Case args: prompt, install (install Open WebUI if missing; default false), venv (default
<repo>/.nox/open-webui), helper_tasks (default false), answer_timeout_s (default 180).

Open WebUI's helper tasks (title, follow-up and tag generation, on for its users) are off by
default here: after each answer they send three more chat requests, the follow-up and tag ones
without max_tokens, so on our CPU they run for minutes to the server's default cap. The driver
does not wait for them, and they would finish after the case ended, where the recording proxy
books them (as broken pipes to the stopped Open WebUI) to whichever case runs next.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .. import install_open_webui as install
from ..driver import Blocked, Case, Outcome, Target, check, with_artifacts

STARTUP_TIMEOUT_S = 240.0   # about 55 s when the machine is idle; our server shares its 2 cores
STOP_GRACE_S = 20.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STABLE_FOR_S = 2.0
PAGE_STEP_S = 60.0          # one click or page load; the answer has its own limit
MODEL_PICKER = "#model-selector-model-button"  # the picker in the message bar          # an answer unchanged this long after it is marked done is final

# The last assistant answer: Open WebUI renders each one in a #response-content-container.
_LAST_ANSWER_JS = """() => {
  const all = document.querySelectorAll('#response-content-container');
  return all.length ? all[all.length - 1].innerText.trim() : '';
}"""

# Sampled inside the page, so the few hundred ms a small model streams for are not missed
# between Playwright round trips: every distinct length of the growing answer, in order.
_SAMPLE_LENGTHS_JS = """() => {
  window.__answerLengths = [];
  const read = () => {
    const all = document.querySelectorAll('#response-content-container');
    return all.length ? all[all.length - 1].innerText.trim().length : 0;
  };
  window.__answerSampler = setInterval(() => {
    const n = read(), seen = window.__answerLengths;
    if (n > 0 && seen[seen.length - 1] !== n) seen.push(n);
  }, 20);
}"""


def run(case: Case, target: Target) -> Outcome:
    deadline = time.monotonic() + target.timeout_s - 15  # leave time to stop everything
    action = _ACTIONS.get(case.action)
    if action is None:
        raise ValueError(f"unknown open_webui action {case.action!r} (known: {', '.join(_ACTIONS)})")
    exe = _open_webui(case)
    chromium = _browser()
    api_key = target.api_key if case.action != "wrong-key" else "sk-wrong-" + secrets.token_hex(8)
    shot = f"open-webui-{case.action}.png"
    with _served(exe, target, api_key, helper_tasks=bool(case.args.get("helper_tasks", False)),
                 deadline=deadline) as url, _page(chromium) as page:
        try:
            outcome = action(page, url, case, target, deadline)
        finally:
            # Evidence on failure too: the page shows what the person would have seen.
            with contextlib.suppress(Exception):
                page.screenshot(path=str(target.artifacts / shot), full_page=True)
    return with_artifacts(outcome, shot)


# --- the programs -------------------------------------------------------------------------------

def _open_webui(case: Case) -> Path:
    venv = Path(case.args.get("venv", install.DEFAULT_VENV))
    if install.installed_version(venv) != install.OPEN_WEBUI_VERSION:
        if not case.args.get("install", False):
            raise Blocked("Open WebUI is not installed: nox -s contracts installs it (~7 GB)")
        try:
            return install.ensure_open_webui(venv)
        except install.InstallError as exc:
            raise Blocked(f"Open WebUI could not be installed: {exc}") from None
    return install.executable(venv)


def _browser() -> Path:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise Blocked("Python playwright is not installed in the suite's venv "
                      "(PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install playwright)") from None
    try:
        return install.ensure_browser()
    except install.InstallError as exc:
        raise Blocked(str(exc)) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(target: Target, api_key: str, data_dir: Path, helper_tasks: bool) -> dict[str, str]:
    """Offline settings measured to start Open WebUI without the network (FACTS.md), and the one
    OpenAI connection it gets: ours. Auth is off in Open WebUI itself (a single local user)."""
    flag = "True" if helper_tasks else "False"
    return {**os.environ, **target.env,
            "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1", "ENABLE_OLLAMA_API": "false",
            "OPENAI_API_BASE_URL": target.v1, "OPENAI_API_KEY": api_key,
            "WEBUI_AUTH": "False", "WEBUI_SECRET_KEY": secrets.token_hex(16), "DATA_DIR": str(data_dir),
            "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False", "RAG_RERANKING_MODEL_AUTO_UPDATE": "False",
            "WHISPER_MODEL_AUTO_UPDATE": "False", "ENABLE_VERSION_UPDATE_CHECK": "false",
            # Telemetry libraries it bundles would otherwise try the network.
            "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true", "ANONYMIZED_TELEMETRY": "false",
            "ENABLE_TITLE_GENERATION": flag, "ENABLE_FOLLOW_UP_GENERATION": flag, "ENABLE_TAGS_GENERATION": flag}


@contextlib.contextmanager
def _served(exe: Path, target: Target, api_key: str, *, helper_tasks: bool, deadline: float) -> Iterator[str]:
    """Open WebUI on a free port until the block ends; always stopped, its whole process group."""
    port = _free_port()
    data_dir = target.workdir / "open-webui-data"
    data_dir.mkdir(exist_ok=True)
    log_path = target.workdir / "open-webui.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=_environment(target, api_key, data_dir, helper_tasks), cwd=target.workdir,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(proc, url, log_path, min(deadline, time.monotonic() + STARTUP_TIMEOUT_S))
            yield url
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path, until: float) -> None:
    started = time.monotonic()
    next_note = started + 15
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise Blocked(f"Open WebUI exited with {proc.returncode} while starting: {_tail(log_path)}")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(url + "/health", timeout=5) as resp:
            if resp.status == 200:
                print(f"open-webui: ready after {time.monotonic() - started:.0f} s on {url}", flush=True)
                return
        if time.monotonic() >= next_note:
            print(f"open-webui: starting ({time.monotonic() - started:.0f} s)", flush=True)
            next_note += 15
        time.sleep(1)
    raise TimeoutError(f"Open WebUI not ready after {time.monotonic() - started:.0f} s: {_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the group, SIGKILL if uvicorn is still waiting on its in-flight helper requests
    (title, follow-ups, tags) after the grace period: those are not ours to wait for."""
    if proc.poll() is not None:
        return
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
        print(f"open-webui: stopped in {time.monotonic() - started:.1f} s", flush=True)
    except subprocess.TimeoutExpired:
        print("open-webui: still running after SIGTERM; killing its process group", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(path: Path, n: int = 400) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " ".join(text[-n:].split()) or "(no output)"


@contextlib.contextmanager
def _page(chromium: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            browser.close()


# --- the page -----------------------------------------------------------------------------------

def _open(page, url: str, deadline: float) -> None:
    """The chat page, ready for input. `networkidle` never comes (its socket stays busy)."""
    page.goto(url, wait_until="load", timeout=_ms(deadline, PAGE_STEP_S))
    page.wait_for_selector("#chat-input", timeout=_ms(deadline, PAGE_STEP_S))
    _dismiss_whats_new(page)


def _dismiss_whats_new(page) -> None:
    # Shown to the admin on a first visit; it covers the page and swallows clicks.
    button = page.get_by_role("button", name="Okay, Let's Go!")
    with contextlib.suppress(Exception):
        button.wait_for(state="visible", timeout=5000)
        button.click()
        button.wait_for(state="hidden", timeout=5000)


def _offered_models(page, deadline: float, search: str = "") -> list[str]:
    """The model ids the picker in the message bar offers for `search` (all, when empty)."""
    page.click(MODEL_PICKER, timeout=_ms(deadline, PAGE_STEP_S))
    if search:
        page.fill("#model-search-input", search, timeout=_ms(deadline, PAGE_STEP_S))
    options = page.locator("#model-selector-list [role=option]")
    # An empty picker says "No models available" (no connection answered) or "No results found".
    empty = page.get_by_text("No models available").or_(page.get_by_text("No results found"))
    options.or_(empty).first.wait_for(timeout=_ms(deadline, PAGE_STEP_S))
    labels = options.evaluate_all("els => els.map(e => e.getAttribute('aria-label') || e.innerText)")
    return [_model_from_label(label) for label in labels]


def _model_from_label(label: str) -> str:
    # The options' aria-label reads "Select <name> model"; for an OpenAI connection the name is the id.
    label = label.strip()
    if label.startswith("Select ") and label.endswith(" model"):
        return label[len("Select "):-len(" model")]
    return label


def _pick_model(page, model: str, deadline: float) -> None:
    """Chosen in the picker even when Open WebUI preselected it: that is what a user checks."""
    offered = _offered_models(page, deadline, search=model)
    if model not in offered:
        raise AssertionError(f"the model picker does not offer {model!r} (it offers {offered})")
    page.get_by_role("option", name=f"Select {model} model", exact=True).click(timeout=_ms(deadline, PAGE_STEP_S))
    with contextlib.suppress(Exception):
        page.locator("#model-selector-list").wait_for(state="hidden", timeout=3000)
        return
    page.keyboard.press("Escape")


def _send(page, prompt: str, deadline: float) -> None:
    page.click("#chat-input", timeout=_ms(deadline, PAGE_STEP_S))
    page.keyboard.type(prompt)
    page.click("#send-message-button", timeout=_ms(deadline, PAGE_STEP_S))


def _await_answer(page, deadline: float) -> tuple[str, bool]:
    """(the answer's text, whether Open WebUI marked it done). Done shows as the copy button
    under the answer; the helper requests that follow it are not waited for."""
    done = page.locator(".copy-response-button").last
    with contextlib.suppress(Exception):
        done.wait_for(state="visible", timeout=_ms(deadline))
    text, since = page.evaluate(_LAST_ANSWER_JS), time.monotonic()
    while time.monotonic() - since < STABLE_FOR_S and time.monotonic() < deadline:
        time.sleep(0.25)
        now = page.evaluate(_LAST_ANSWER_JS)
        if now != text:
            text, since = now, time.monotonic()
    return text, done.is_visible()


def _answer_deadline(case: Case, deadline: float) -> float:
    return min(deadline, time.monotonic() + float(case.args.get("answer_timeout_s", 180)))


def _ms(deadline: float, step_s: float | None = None) -> float:
    """Playwright's timeout for one step: what is left before `deadline`, capped at `step_s`."""
    left = deadline - time.monotonic()
    return max(1000.0, min(left, step_s or left) * 1000)


# --- actions ------------------------------------------------------------------------------------

def _chat(page, url: str, case: Case, target: Target, deadline: float) -> Outcome:
    _open(page, url, deadline)
    _pick_model(page, target.model, deadline)
    _send(page, case.args["prompt"], deadline)
    answer, done = _await_answer(page, _answer_deadline(case, deadline))
    return check(bool(answer), f"answered {answer[:60]!r} on the page", "no assistant answer on the page",
                 answer=answer, done=done)


def _stream(page, url: str, case: Case, target: Target, deadline: float) -> Outcome:
    _open(page, url, deadline)
    _pick_model(page, target.model, deadline)
    page.evaluate(_SAMPLE_LENGTHS_JS)
    _send(page, case.args["prompt"], deadline)
    answer, done = _await_answer(page, _answer_deadline(case, deadline))
    lengths = page.evaluate("() => { clearInterval(window.__answerSampler); return window.__answerLengths; }")
    return check(bool(answer) and len(lengths) > 1,
                 f"the answer grew in {len(lengths)} steps on the page ({lengths[:8]}) to {answer[:60]!r}",
                 f"the answer appeared in {len(lengths)} step(s), not streamed: {answer[:60]!r}",
                 answer=answer, done=done, lengths=lengths[:50])


def _wrong_key(page, url: str, case: Case, target: Target, deadline: float) -> Outcome:
    _open(page, url, deadline)
    offered = _offered_models(page, deadline)
    shown = "'No models available'" if page.get_by_text("No models available").is_visible() else f"{offered}"
    return check(target.model not in offered,
                 f"with a wrong key the picker offers no {target.model!r}: it shows {shown}",
                 f"with a wrong key the picker still offers {target.model!r}: the key was not checked",
                 offered=offered)


_ACTIONS = {"chat": _chat, "stream": _stream, "wrong-key": _wrong_key}
