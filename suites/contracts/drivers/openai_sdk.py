"""The official openai Python SDK, driven the way its users drive it.

The client is `openai.OpenAI(base_url=target.v1, api_key=target.api_key, max_retries=0,
timeout=target.timeout_s)`, or `openai.AsyncOpenAI(...)` when the case says `async = true`
(the same actions then await every call; the case runs under asyncio.run). No retries, so a
failure shows the server's first answer rather than a retried one.

Common args: `prompt`, `max_tokens`, `expect` (a substring, case-insensitive, the answer must
contain: a content signal, used only where the tiny default model is reliably greedy).

Actions (each judges one contract; "text" means non-empty assistant text):

  chat              chat.completions.create, not streamed: role assistant, text, a finish_reason
                    of stop or length, and `expect` if given.
  chat_stream       the same, stream=True with stream_options.include_usage (arg include_usage,
                    default true): one id across chunks, text assembled from deltas, exactly one
                    finish_reason, and (with include_usage) a last chunk with no choices carrying
                    usage whose completion_tokens is at most max_tokens.
  system            a system message (arg `system`) changes the answer: with it the answer
                    contains `expect`; without it the same prompt's answer does not (so the
                    signal came from the system message, not the prompt).
  multi_turn        `history` (alternating user/assistant strings, ending with a user turn): the
                    answer is text and contains `expect` (something only an earlier turn said).
  responses         responses.create, not streamed: status completed, output_text, `expect`.
  responses_stream  responses.stream(...) helper: events arrive, exactly one response.completed
                    and it is the last event, the final output_text equals the joined
                    response.output_text.delta events, `expect`.
  tools             (tool model) chat with a get_weather(city) tool and tool_choice "required":
                    finish_reason tool_calls, a get_weather call whose arguments are a JSON object
                    with a string `city` (arg `city`: the value expected); then the assistant
                    tool_calls message and a tool message (arg `tool_result`) go back with
                    tool_choice `followup_tool_choice` (default "none"; the 0.5B model calls the
                    tool again under "auto") and the answer is text with finish_reason stop,
                    no tool calls, containing `expect` (a fact only the tool result gave).
  responses_tools   (tool model) the Responses API version: a function_call output item with
                    JSON arguments; then [user, function_call, function_call_output] as input
                    gives a completed response with output_text and no function_call.
  structured        chat.completions.parse(response_format=City) (a pydantic model; the SDK sends
                    a strict json_schema): the content is JSON that validates as City, parsed is
                    a City, and City.name contains `expect`.
  auth              a client with a wrong key gets openai.AuthenticationError (401) whose body is
                    an OpenAI error object (message, type); the right key then lists models.
  model_id          models.list() contains target.model, models.retrieve(target.model) returns
                    it, models.retrieve of an unknown id raises NotFoundError, and a chat naming
                    an unknown model raises NotFoundError (404) instead of being answered.
  usage             prompt_tokens > 0, completion_tokens > 0, total = prompt + completion,
                    completion_tokens <= max_tokens.
  stop              `stop` (a list) is given: finish_reason "stop", the text contains none of
                    the stop strings, and contains `expect` (what comes before the stop).
  image             an image_url part sent to the text model: a clean 400 (BadRequestError)
                    is `conditional` (needs a vision model); anything else is a fail.
"""

from __future__ import annotations

import asyncio

from .. import modalities
from ..media import tiny_png_data_url
from ..driver import Blocked, Case, Outcome, Target, answered, check, failed, image_outcome, lacks, passed
from ._openai_calls import chat_call, client_for, entered, items, max_tokens, resolved, user
from ._openai_tools import responses_tools, structured, tools

UNKNOWN_MODEL = "no-such-model-contract-check"


# --- actions

async def chat(client, case: Case, target: Target) -> Outcome:
    done = await chat_call(client, case, target, user(case.args["prompt"]))
    choice = done.choices[0]
    if choice.message.role != "assistant" or choice.finish_reason not in ("stop", "length"):
        return failed(f"role {choice.message.role!r}, finish_reason {choice.finish_reason!r}")
    return answered(choice.message.content or "", case.args.get("expect"), "chat", finish_reason=choice.finish_reason)


async def chat_stream(client, case: Case, target: Target) -> Outcome:
    include_usage = bool(case.args.get("include_usage", True))
    stream = await chat_call(client, case, target, user(case.args["prompt"]), stream=True,
                             stream_options={"include_usage": include_usage})
    chunks = [c async for c in items(stream)]
    if not chunks:
        return failed("the stream carried no chunks")
    ids = {c.id for c in chunks}
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    facts = {"chunks": len(chunks), "finish_reasons": finishes, "answer": text}
    if len(ids) != 1:
        return failed(f"chunks carry {len(ids)} different ids", **facts)
    if len(finishes) != 1:
        return failed(f"expected exactly one finish_reason, saw {finishes}", **facts)
    if include_usage:
        last = chunks[-1]
        if last.choices or last.usage is None:
            return failed("include_usage: the last chunk is not a usage chunk with empty choices", **facts)
        if not 0 < last.usage.completion_tokens <= max_tokens(case):
            return failed(f"usage chunk says {last.usage.completion_tokens} completion tokens", **facts)
        if any(c.usage for c in chunks[:-1]):
            return failed("usage arrived before the last chunk", **facts)
    return answered(text, case.args.get("expect"), f"{len(chunks)} chunks", finish_reasons=finishes, chunks=len(chunks))


async def system(client, case: Case, target: Target) -> Outcome:
    prompt = case.args["prompt"]
    with_system = await chat_call(client, case, target, [{"role": "system", "content": case.args["system"]},
                                                         *user(prompt)])
    without = await chat_call(client, case, target, user(prompt))
    text, control = with_system.choices[0].message.content or "", without.choices[0].message.content or ""
    if lacks(control, case.args.get("expect")) is None:
        return failed(f"no signal: the answer has {case.args['expect']!r} even without the system message",
                      answer=text, control=control)
    return answered(text, case.args.get("expect"), "with the system message", control=control)


def _history(turns: list[str]) -> list[dict]:
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


async def multi_turn(client, case: Case, target: Target) -> Outcome:
    turns = case.args["history"]
    done = await chat_call(client, case, target, _history(turns))
    return answered(done.choices[0].message.content or "", case.args.get("expect"), f"after {len(turns)} turns")


async def responses(client, case: Case, target: Target) -> Outcome:
    done = await resolved(client.responses.create(model=target.model, input=case.args["prompt"],
                                                  max_output_tokens=max_tokens(case)))
    if done.status != "completed":
        return failed(f"status {done.status!r} (incomplete_details {done.incomplete_details})")
    return answered(done.output_text, case.args.get("expect"), "responses", items=[o.type for o in done.output])


async def responses_stream(client, case: Case, target: Target) -> Outcome:
    manager = client.responses.stream(model=target.model, input=case.args["prompt"],
                                      max_output_tokens=max_tokens(case))
    async with entered(manager) as stream:
        events = [e async for e in items(stream)]
        final = await resolved(stream.get_final_response())
    kinds = [e.type for e in events]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    facts = {"events": len(events), "kinds": sorted(set(kinds))}
    if kinds.count("response.completed") != 1 or kinds[-1] != "response.completed":
        return failed(f"expected one response.completed, last; saw {kinds[-3:]}", **facts)
    if final.output_text != deltas:
        return failed(f"final text {final.output_text[:60]!r} != joined deltas {deltas[:60]!r}", **facts)
    return answered(deltas, case.args.get("expect"), f"{len(events)} events", **facts)


async def auth(client, case: Case, target: Target) -> Outcome:
    import openai
    wrong = client_for(case, target, api_key="sk-wrong-" + target.api_key[-6:][::-1])
    try:
        await chat_call(wrong, case, target, user("hello"))
        return failed("a wrong API key was answered")
    except openai.AuthenticationError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        if exc.status_code != 401 or not isinstance(body.get("message"), str) or "type" not in body:
            return failed(f"401 body is not an OpenAI error object: {exc.body!r}")
        refused = f"{exc.status_code} {body.get('type')}: {body['message']}"
    finally:
        await resolved(wrong.close())
    listed = await resolved(client.models.list())
    return passed(f"wrong key refused ({refused}); right key lists {len(listed.data)} model(s)")


async def _status_of(call) -> str:
    """What the server did with a call: 'ok' or the SDK error class and status."""
    import openai
    try:
        await resolved(call())
        return "ok"
    except openai.APIStatusError as exc:
        return f"{type(exc).__name__} {exc.status_code}"


async def model_id(client, case: Case, target: Target) -> Outcome:
    listed = [m.id async for m in items(await resolved(client.models.list()))]
    if target.model not in listed:
        return failed(f"models.list() has {listed}, not {target.model!r}")
    got = await resolved(client.models.retrieve(target.model))
    if got.id != target.model:
        return failed(f"models.retrieve({target.model!r}) returned id {got.id!r}")
    retrieve_unknown = await _status_of(lambda: client.models.retrieve(UNKNOWN_MODEL))
    chat_unknown = await _status_of(lambda: client.chat.completions.create(
        model=UNKNOWN_MODEL, messages=user("hello"), max_tokens=4))
    seen = f"retrieve(unknown): {retrieve_unknown}; chat(model=unknown): {chat_unknown}"
    ok = retrieve_unknown == chat_unknown == "NotFoundError 404"
    return check(ok, f"lists and retrieves {target.model!r}; {seen}",
                 f"an unknown model id is not refused with 404: {seen}")


async def usage(client, case: Case, target: Target) -> Outcome:
    done = await chat_call(client, case, target, user(case.args["prompt"]))
    u = done.usage
    if u is None:
        return failed("no usage in the response")
    facts = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}
    ok = (u.prompt_tokens > 0 and 0 < u.completion_tokens <= max_tokens(case)
          and u.total_tokens == u.prompt_tokens + u.completion_tokens)
    return check(ok, f"usage {facts}", f"usage does not add up (max_tokens {max_tokens(case)}): {facts}", **facts)


async def stop(client, case: Case, target: Target) -> Outcome:
    stops = list(case.args["stop"])
    done = await chat_call(client, case, target, user(case.args["prompt"]), stop=stops)
    choice = done.choices[0]
    text = choice.message.content or ""
    leaked = [s for s in stops if s in text]
    if choice.finish_reason != "stop" or leaked:
        return failed(f"finish_reason {choice.finish_reason!r}, stop strings in text {leaked}: {text!r}")
    return answered(text, case.args.get("expect"), f"stopped before {stops}")


async def image(client, case: Case, target: Target) -> Outcome:
    import openai
    content = [{"type": "text", "text": case.args.get("prompt", "What is in this image?")},
               {"type": "image_url", "image_url": {"url": case.args.get("image_url") or tiny_png_data_url()}}]
    try:
        done = await chat_call(client, case, target, [{"role": "user", "content": content}])
    except openai.BadRequestError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else exc.body
        return image_outcome(case, refused=str(message))
    choice = done.choices[0]
    return image_outcome(case, refused=None, text=choice.message.content or "", finish=choice.finish_reason,
                         prompt_tokens=done.usage.prompt_tokens if done.usage else None)


async def embeddings(client, case: Case, target: Target) -> Outcome:
    """One request embeds every text of the case's triples, as floats and again as base64 (the
    SDK's default wire format, which it decodes): both must agree."""
    texts = modalities.embedding_texts(case)
    model = case.args["model_id"]
    floats = await resolved(client.embeddings.create(model=model, input=texts, encoding_format="float"))
    packed = await resolved(client.embeddings.create(model=model, input=texts))  # base64 on the wire
    vectors = [d.embedding for d in sorted(floats.data, key=lambda d: d.index)]
    decoded = [d.embedding for d in sorted(packed.data, key=lambda d: d.index)]
    agree = len(vectors) == len(decoded) and all(
        abs(x - y) <= 1e-6 for a, b in zip(vectors, decoded) for x, y in zip(a, b))
    outcome = modalities.embedding_outcome(case, vectors, via="embeddings.create")
    if not agree:
        return failed(f"base64 vectors differ from float ones; {outcome.reason}")
    if not floats.usage or floats.usage.prompt_tokens <= 0:
        return failed(f"no usage.prompt_tokens; {outcome.reason}")
    return outcome


async def transcription(client, case: Case, target: Target) -> Outcome:
    heard = []
    for sentence, wav in modalities.spoken_sentences(target):
        with wav.open("rb") as audio:
            done = await resolved(client.audio.transcriptions.create(model=case.args["model_id"], file=audio,
                                                                     language="en", temperature=0))
        heard.append((sentence, done.text))
    return modalities.transcription_outcome(case, heard, via="audio.transcriptions.create")


ACTIONS = {f.__name__: f for f in (chat, chat_stream, system, multi_turn, responses, responses_stream, tools,
                                   responses_tools, structured, auth, model_id, usage, stop, image, embeddings,
                                   transcription)}


async def _main(case: Case, target: Target) -> Outcome:
    client = client_for(case, target, api_key=target.api_key)
    try:
        return await ACTIONS[case.action](client, case, target)
    finally:
        await resolved(client.close())


def run(case: Case, target: Target) -> Outcome:
    try:
        import openai  # noqa: F401 - only to tell "not installed" from a failure
    except ImportError:
        raise Blocked("the openai package is not installed") from None
    if case.action not in ACTIONS:
        raise ValueError(f"unknown openai_sdk action {case.action!r} (known: {', '.join(ACTIONS)})")
    return asyncio.run(_main(case, target))
