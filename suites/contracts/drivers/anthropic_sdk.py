"""The official anthropic Python SDK, driven the way its users drive it.

The client is `anthropic.Anthropic(base_url=target.base_url, api_key=target.api_key,
max_retries=0, timeout=target.timeout_s)`: the SDK adds /v1 itself, so base_url has none. No
retries, so a failure shows the server's first answer. This SDK generation has no
`temperature` parameter; our server decodes greedily when a request names none.

Common args: `prompt`, `max_tokens`, `expect` (a substring, case-insensitive, the answer must
contain: a content signal, used only where the tiny default model is reliably greedy).

Actions (each judges one contract; "text" means non-empty text blocks):

  messages      messages.create: a message with role assistant, text, stop_reason end_turn or
                max_tokens, and `expect` if given.
  stream        the messages.stream(...) helper: text_stream yields pieces, and their join
                equals the text of get_final_message(), whose stop_reason is set and whose
                usage.output_tokens is within max_tokens.
  system        `system` changes the answer: with it the answer contains `expect`, without it
                the same prompt's answer does not (so the signal came from the system prompt).
  multi_turn    `history` (alternating user/assistant strings, ending with a user turn): text
                containing `expect` (something only an earlier turn said).
  tools         (tool model) a get_weather(city) tool with tool_choice {"type": "any"}:
                stop_reason tool_use and a tool_use block whose input has a string `city`
                (arg `city`: the value expected); then the assistant content and a user
                tool_result (arg `tool_result`) go back with tool_choice `followup_tool_choice`
                (default "none": the 0.5B model calls the tool again under "auto"): stop_reason
                end_turn, text, no tool_use, containing `expect` (a fact only the result gave).
  count_tokens  messages.count_tokens of a body equals usage.input_tokens of messages.create
                with the same body (our server documents that they agree).
  auth          a client with a wrong key gets anthropic.AuthenticationError (401) with an
                Anthropic error body ({"type": "error", "error": {"type", "message"}}); the right
                key then counts tokens.
  model_id      messages.create naming an unknown model raises anthropic.NotFoundError (404).
  models_list   models.list() contains target.model and every entry carries the fields the SDK's
                ModelInfo requires (type "model", display_name, created_at); models.retrieve of
                target.model returns it.
  usage         usage.input_tokens > 0, 0 < output_tokens <= max_tokens.
  stop          `stop_sequences`: stop_reason "stop_sequence", stop_sequence echoes the one hit,
                the text contains none of them, and contains `expect`.
  structured    messages.parse(output_format=City) (a pydantic model; the SDK sends a JSON
                schema): parsed_output is a City whose name contains `expect`.
  image         a base64 image block sent to the text model: a clean 400 (BadRequestError) is
                `conditional` (needs a vision model); anything else is a fail.
"""

from __future__ import annotations


from pydantic import BaseModel

from ..media import tiny_png_base64
from ..driver import Blocked, Case, Outcome, Target, answered, check, failed, image_outcome, lacks, passed

UNKNOWN_MODEL = "no-such-model-contract-check"
WEATHER_TOOL = {"name": "get_weather", "description": "Get the current weather for a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class City(BaseModel):
    name: str
    country: str


def _client(target: Target, api_key: str):
    import anthropic
    return anthropic.Anthropic(base_url=target.base_url, api_key=api_key, timeout=target.timeout_s, max_retries=0)


def _max_tokens(case: Case, default: int = 32) -> int:
    return int(case.args.get("max_tokens", default))


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _text(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")





def _create(client, case: Case, target: Target, messages: list[dict], **kw):
    return client.messages.create(model=target.model, max_tokens=_max_tokens(case), messages=messages, **kw)


# --- actions

def messages(client, case: Case, target: Target) -> Outcome:
    done = _create(client, case, target, _user(case.args["prompt"]))
    if done.type != "message" or done.role != "assistant" or done.stop_reason not in ("end_turn", "max_tokens"):
        return failed(f"type {done.type!r}, role {done.role!r}, stop_reason {done.stop_reason!r}")
    return answered(_text(done), case.args.get("expect"), "messages", stop_reason=done.stop_reason)


def stream(client, case: Case, target: Target) -> Outcome:
    with client.messages.stream(model=target.model, max_tokens=_max_tokens(case),
                                messages=_user(case.args["prompt"])) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    joined, text = "".join(pieces), _text(final)
    facts = {"pieces": len(pieces), "stop_reason": final.stop_reason, "output_tokens": final.usage.output_tokens}
    if joined != text:
        return failed(f"text_stream {joined[:60]!r} != final message {text[:60]!r}", **facts)
    if final.stop_reason is None or not 0 < final.usage.output_tokens <= _max_tokens(case):
        return failed(f"final message: stop_reason {final.stop_reason!r}, "
                      f"output_tokens {final.usage.output_tokens}", **facts)
    return answered(joined, case.args.get("expect"), f"{len(pieces)} text pieces", **facts)


def system(client, case: Case, target: Target) -> Outcome:
    prompt = _user(case.args["prompt"])
    text = _text(_create(client, case, target, prompt, system=case.args["system"]))
    control = _text(_create(client, case, target, prompt))
    if lacks(control, case.args.get("expect")) is None:
        return failed(f"no signal: the answer has {case.args['expect']!r} even without the system prompt",
                      answer=text, control=control)
    return answered(text, case.args.get("expect"), "with the system prompt", control=control)


def multi_turn(client, case: Case, target: Target) -> Outcome:
    turns = case.args["history"]
    history = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]
    return answered(_text(_create(client, case, target, history)), case.args.get("expect"), f"after {len(turns)} turns")


def _city_problem(block, case: Case) -> str | None:
    """Why a tool_use block is not get_weather with the expected string city, or None."""
    if block.name != "get_weather":
        return f"called {block.name!r}"
    city = block.input.get("city") if isinstance(block.input, dict) else None
    if not isinstance(city, str):
        return f"input lacks a string city: {block.input!r}"
    want = case.args.get("city")
    if want and want.lower() not in city.lower():
        return f"city {city!r}, expected {want!r}"
    return None


def tools(client, case: Case, target: Target) -> Outcome:
    history = _user(case.args["prompt"])
    first = _create(client, case, target, history, tools=[WEATHER_TOOL], tool_choice={"type": "any"})
    uses = [b for b in first.content if b.type == "tool_use"]
    if first.stop_reason != "tool_use" or not uses:
        return failed(f"tool_choice any: stop_reason {first.stop_reason!r}, {len(uses)} tool_use blocks, "
                      f"text {_text(first)[:80]!r}")
    problem = _city_problem(uses[0], case)
    if problem:
        return failed(f"tool_use: {problem}")
    history += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                              "content": case.args["tool_result"]}]}]
    second = _create(client, case, target, history, tools=[WEATHER_TOOL],
                     tool_choice={"type": case.args.get("followup_tool_choice", "none")})
    if second.stop_reason != "end_turn" or any(b.type == "tool_use" for b in second.content):
        return failed(f"after the tool_result: stop_reason {second.stop_reason!r}, "
                      f"blocks {[b.type for b in second.content]}", answer=_text(second))
    return answered(_text(second), case.args.get("expect"), f"tool_use get_weather({uses[0].input}), then", call=uses[0].input)


def count_tokens(client, case: Case, target: Target) -> Outcome:
    body = {"model": target.model, "messages": _user(case.args["prompt"])}
    if case.args.get("system"):
        body["system"] = case.args["system"]
    counted = client.messages.count_tokens(**body).input_tokens
    used = client.messages.create(max_tokens=_max_tokens(case), **body).usage.input_tokens
    return check(counted == used and counted > 0, f"count_tokens {counted} == usage.input_tokens {used}",
                 f"count_tokens {counted} != usage.input_tokens {used}", counted=counted, used=used)


def auth(client, case: Case, target: Target) -> Outcome:
    import anthropic
    with _client(target, api_key="sk-wrong-" + target.api_key[-6:][::-1]) as wrong:
        try:
            _create(wrong, case, target, _user("hello"))
            return failed("a wrong API key was answered")
        except anthropic.AuthenticationError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            if exc.status_code != 401 or body.get("type") != "error" or not isinstance(error.get("message"), str):
                return failed(f"401 body is not an Anthropic error: {exc.body!r}")
    counted = client.messages.count_tokens(model=target.model, messages=_user("hello")).input_tokens
    return passed(f"wrong key refused (401 {error.get('type')}: {error['message']}); right key counted {counted} tokens")


def model_id(client, case: Case, target: Target) -> Outcome:
    import anthropic
    try:
        done = client.messages.create(model=UNKNOWN_MODEL, max_tokens=4, messages=_user("hello"))
    except anthropic.NotFoundError as exc:
        return passed(f"unknown model refused: 404 {exc.message}")
    except anthropic.APIStatusError as exc:
        return failed(f"unknown model: {type(exc).__name__} {exc.status_code}, not NotFoundError 404")
    return failed(f"an unknown model id was answered (200, model {done.model!r}) instead of 404 not_found_error")


def _missing_required(model) -> list[str]:
    """Fields the SDK model declares required that came back absent or null (the SDK builds its
    models without validation, so it does not notice them itself)."""
    return [name for name, info in type(model).model_fields.items()
            if info.is_required() and getattr(model, name, None) is None]


def models_list(client, case: Case, target: Target) -> Outcome:
    listed = list(client.models.list())
    ids = [m.id for m in listed]
    if target.model not in ids:
        return failed(f"models.list() has {ids}, not {target.model!r}")
    gaps = {m.id: _missing_required(m) for m in listed if _missing_required(m) or m.type != "model"}
    if gaps:
        return failed(f"models.list() entries lack ModelInfo's required fields: {gaps} "
                      f"(entry keys: {sorted(listed[0].model_dump(exclude_none=True))})")
    got = client.models.retrieve(target.model)
    return check(got.id == target.model and not _missing_required(got), f"lists and retrieves {target.model!r}",
                 f"models.retrieve: id {got.id!r}, missing {_missing_required(got)}")


def usage(client, case: Case, target: Target) -> Outcome:
    u = _create(client, case, target, _user(case.args["prompt"])).usage
    facts = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
    ok = u.input_tokens > 0 and 0 < u.output_tokens <= _max_tokens(case)
    return check(ok, f"usage {facts}", f"usage out of range (max_tokens {_max_tokens(case)}): {facts}", **facts)


def stop(client, case: Case, target: Target) -> Outcome:
    stops = list(case.args["stop_sequences"])
    done = _create(client, case, target, _user(case.args["prompt"]), stop_sequences=stops)
    text = _text(done)
    leaked = [s for s in stops if s in text]
    if done.stop_reason != "stop_sequence" or done.stop_sequence not in stops or leaked:
        return failed(f"stop_reason {done.stop_reason!r}, stop_sequence {done.stop_sequence!r}, "
                      f"stop strings in text {leaked}: {text!r}")
    return answered(text, case.args.get("expect"), f"stop_sequence {done.stop_sequence!r}")


def structured(client, case: Case, target: Target) -> Outcome:
    done = client.messages.parse(model=target.model, max_tokens=_max_tokens(case),
                                 messages=_user(case.args["prompt"]), output_format=City)
    parsed = done.parsed_output
    if not isinstance(parsed, City):
        return failed(f"parsed_output is {type(parsed).__name__}, text {_text(done)[:80]!r}")
    want = case.args.get("expect")
    return check(not want or want.lower() in parsed.name.lower(), f"parsed {parsed!r}",
                 f"parsed {parsed!r}, name lacks {want!r}", content=_text(done))


def image(client, case: Case, target: Target) -> Outcome:
    import anthropic
    data = tiny_png_base64()
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
               {"type": "text", "text": case.args.get("prompt", "What is in this image?")}]
    try:
        done = _create(client, case, target, [{"role": "user", "content": content}])
    except anthropic.BadRequestError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        message = error.get("message") if isinstance(error, dict) else exc.message
        return image_outcome(case, refused=str(message))
    return image_outcome(case, refused=None, text=_text(done), finish=done.stop_reason,
                         prompt_tokens=done.usage.input_tokens)


ACTIONS = {f.__name__: f for f in (messages, stream, system, multi_turn, tools, count_tokens, auth, model_id,
                                   models_list, usage, stop, structured, image)}


def run(case: Case, target: Target) -> Outcome:
    try:
        import anthropic  # noqa: F401 - only to tell "not installed" from a failure
    except ImportError:
        raise Blocked("the anthropic package is not installed") from None
    if case.action not in ACTIONS:
        raise ValueError(f"unknown anthropic_sdk action {case.action!r} (known: {', '.join(ACTIONS)})")
    with _client(target, api_key=target.api_key) as client:
        return ACTIONS[case.action](client, case, target)
