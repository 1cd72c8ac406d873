"""litellm's completion(): one OpenAI-shaped call that litellm routes to a provider.

The client id picks the provider (its `provider` arg may name it instead):
  litellm-openai     model="openai/<id>",    api_base=<base>/v1  -> POST /v1/chat/completions
  litellm-anthropic  model="anthropic/<id>", api_base=<base>     -> POST /v1/messages (litellm adds the path)
so the same actions check both of our dialects through litellm's translation.

Actions (args in brackets): chat [prompt, expect], stream [prompt], system [system, prompt],
multi_turn [turns, prompt, expect], tool_round_trip [prompt, tool, tool_result], auth [prompt],
model_id [prompt, unknown_model], usage [prompt], stream_usage [prompt], stop [prompt, stop],
structured [prompt, schema], image [prompt]. Every call is greedy (temperature 0) and short (max_tokens, default 24).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..media import tiny_png_data_url
from .. import modalities
from ..driver import Blocked, CONDITIONAL, Case, Outcome, Target, answered, check, error_or_answer, failed, image_outcome, passed

BASES = {"openai": lambda t: t.v1, "anthropic": lambda t: t.base_url}
STRICT_MODEL_CONDITION = "needs the server's --strict-model-id: only then is an unknown model a 404"


def _litellm():
    # Without this litellm fetches its model cost map from GitHub at import; we are offline.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    try:
        import litellm
    except ImportError as exc:
        raise Blocked(f"litellm is not installed in this environment ({exc})") from None
    # No logging/observability callbacks: nothing may leave 127.0.0.1, and a callback's failure
    # must not colour a verdict.
    for name in ("callbacks", "success_callback", "failure_callback", "input_callback", "service_callback"):
        setattr(litellm, name, [])
    litellm.suppress_debug_info = True
    return litellm


def _provider(case: Case) -> str:
    provider = case.args.get("provider") or case.client.removeprefix("litellm-")
    if provider not in BASES:
        raise ValueError(f"{case.client}: unknown litellm provider {provider!r} (known: {', '.join(BASES)})")
    return provider


class _Call:
    """litellm.completion with this case's model, base, key and budget filled in."""

    def __init__(self, case: Case, target: Target) -> None:
        self.litellm = _litellm()
        self.provider = _provider(case)
        self.case, self.target = case, target

    def __call__(self, messages: list[dict], *, model: str | None = None, api_key: str | None = None,
                 **kwargs) -> Any:
        kwargs.setdefault("max_tokens", int(self.case.args.get("max_tokens", 24)))
        kwargs.setdefault("temperature", 0)
        return self.litellm.completion(
            model=f"{self.provider}/{model or self.target.model}", messages=messages,
            api_base=BASES[self.provider](self.target), api_key=api_key or self.target.api_key,
            timeout=self.target.timeout_s, num_retries=0, max_retries=0, **kwargs)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _text(response) -> str:
    return response.choices[0].message.content or ""



def chat(call: _Call, args: dict) -> Outcome:
    response = call(_user(args["prompt"]))
    return answered(_text(response), args.get("expect"), "completion()",
                     finish_reason=response.choices[0].finish_reason)


def stream(call: _Call, args: dict) -> Outcome:
    """stream=True yields ModelResponseStream chunks; users join the deltas' content."""
    pieces, finish = [], None
    for chunk in call(_user(args["prompt"]), stream=True):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    text = "".join(pieces)
    content_chunks = sum(1 for p in pieces if p)
    if content_chunks < 2:
        return failed(f"the stream carried {content_chunks} content chunk(s): not incremental", answer=text)
    if not finish:
        return failed("no chunk carried a finish_reason", answer=text, chunks=content_chunks)
    return answered(text, args.get("expect"), f"{content_chunks} chunks, finish {finish}", chunks=content_chunks)


def system(call: _Call, args: dict) -> Outcome:
    messages = [{"role": "system", "content": args["system"]}] + _user(args["prompt"])
    return answered(_text(call(messages)), args.get("expect"), "with a system message")


def multi_turn(call: _Call, args: dict) -> Outcome:
    """A history of alternating turns; the expected word is only in an earlier turn."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(args["turns"])]
    messages += _user(args["prompt"])
    return answered(_text(call(messages)), args.get("expect"), f"after {len(messages) - 1} earlier turns")


def _tool_spec(args: dict) -> dict:
    tool = args["tool"]
    return {"type": "function", "function": {"name": tool["name"], "description": tool.get("description", ""),
                                             "parameters": tool["parameters"]}}


def tool_round_trip(call: _Call, args: dict) -> Outcome:
    """Forced call (tool_choice "required"; litellm turns it into {"type": "any"} for Anthropic),
    arguments checked against the tool's schema, then the result goes back with the tools still
    declared and tool_choice "none" (Anthropic {"type": "none"}), so the model must answer in text:
    on "auto" the 0.5B tool model just calls the tool again."""
    import jsonschema

    tools, messages = [_tool_spec(args)], _user(args["prompt"])
    first = call(messages, tools=tools, tool_choice="required", max_tokens=int(args.get("max_tokens", 48)))
    message = first.choices[0].message
    if not message.tool_calls:
        return failed(f"tool_choice required gave no tool call (finish {first.choices[0].finish_reason}, "
                      f"text {(message.content or '')[:60]!r})")
    tool_call = message.tool_calls[0]
    if tool_call.function.name != args["tool"]["name"]:
        return failed(f"called {tool_call.function.name!r}, not {args['tool']['name']!r}")
    arguments = json.loads(tool_call.function.arguments)
    jsonschema.validate(arguments, args["tool"]["parameters"])
    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": tool_call.id, "content": args["tool_result"]}]
    second = call(messages, tools=tools, tool_choice="none", max_tokens=int(args.get("max_tokens", 48)))
    if second.choices[0].message.tool_calls:
        return failed(f"tool_choice none still returned tool calls: {second.choices[0].message.tool_calls}")
    answer = _text(second)
    return answered(answer, args.get("expect"), f"called {tool_call.function.name}({json.dumps(arguments)}), "
                     "then after the result", arguments=arguments)


def _error_or_answer(call: _Call, error_name: str, what: str, **kwargs):
    """The call must raise litellm.<error_name>."""
    return error_or_answer(lambda: call(_user(call.case.args["prompt"]), **kwargs), getattr(call.litellm, error_name),
                           f"litellm.{error_name}", what)


def auth(call: _Call, args: dict) -> Outcome:
    response, outcome = _error_or_answer(call, "AuthenticationError", "a wrong API key",
                                         api_key="sk-wrong-" + "0" * 16)
    return outcome or failed(f"a wrong API key was answered: {_text(response)[:60]!r}")


def model_id(call: _Call, args: dict) -> Outcome:
    """An unknown model must come back as a 404 that litellm maps to NotFoundError. Our server
    refuses unknown ids only under --strict-model-id (otherwise any name is served, as the README
    says), so an answer is conditional on that flag rather than a client failure."""
    unknown = args.get("unknown_model", "no-such-model")
    response, outcome = _error_or_answer(call, "NotFoundError", f"unknown model {unknown!r}", model=unknown)
    if outcome:
        return outcome
    return Outcome(CONDITIONAL, f"unknown model {unknown!r} was answered (as {response.model!r}): the server "
                   "serves any name", condition=STRICT_MODEL_CONDITION, detail={"answer": _text(response)})


def usage(call: _Call, args: dict, *, streamed: bool = False) -> Outcome:
    """Token counts as litellm reports them: on the response, or (streaming, with
    stream_options include_usage) on the last chunk."""
    if streamed:
        chunks = list(call(_user(args["prompt"]), stream=True, stream_options={"include_usage": True}))
        found = [c.usage for c in chunks if getattr(c, "usage", None)]
        counts = found[-1] if found else None
    else:
        counts = call(_user(args["prompt"])).usage
    if counts is None:
        return failed("no usage reported")
    prompt, completion, total = counts.prompt_tokens, counts.completion_tokens, counts.total_tokens
    detail = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return check(prompt > 0 and completion > 0 and total == prompt + completion,
                 f"usage {prompt} in + {completion} out = {total}",
                 f"implausible usage {detail}", **detail)


def stream_usage(call: _Call, args: dict) -> Outcome:
    return usage(call, args, streamed=True)


def stop(call: _Call, args: dict) -> Outcome:
    """A control call without stop must contain the stop string, so its absence proves the stop
    was honoured rather than never reached."""
    stop_at = args["stop"]
    messages = _user(args["prompt"])
    control = _text(call(messages))
    if stop_at not in control:
        return failed(f"control answer {control[:60]!r} never reaches {stop_at!r}: pick another prompt")
    response = call(messages, stop=[stop_at])
    text, finish = _text(response), response.choices[0].finish_reason
    cut = control[:control.index(stop_at)]
    return check(stop_at not in text and finish == "stop" and text.strip() == cut.strip(),
                 f"stopped before {stop_at!r}: {text[:60]!r} (finish {finish})",
                 f"stop {stop_at!r} not honoured: {text[:60]!r} (finish {finish}; control cut {cut[:60]!r})",
                 answer=text, control=control)


def structured(call: _Call, args: dict) -> Outcome:
    """response_format json_schema (OpenAI's shape; litellm translates it for other providers)."""
    import jsonschema

    schema = args["schema"]
    fmt = {"type": "json_schema", "json_schema": {"name": args.get("name", "answer"), "schema": schema,
                                                  "strict": True}}
    text = _text(call(_user(args["prompt"]), response_format=fmt, max_tokens=int(args.get("max_tokens", 48))))
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return passed(f"schema-valid JSON {text[:80]}", value=value)



def image(call: _Call, args: dict) -> Outcome:
    """An image part in OpenAI's shape (litellm converts it to an Anthropic image block);
    driver.image_outcome judges it."""
    content = [{"type": "text", "text": args["prompt"]}, {"type": "image_url", "image_url": {"url": tiny_png_data_url()}}]
    try:
        response = call([{"role": "user", "content": content}])
    except call.litellm.BadRequestError as exc:
        return image_outcome(call.case, refused=f"litellm.BadRequestError: {' '.join(str(exc).split())}")
    usage = getattr(response, "usage", None)
    return image_outcome(call.case, refused=None, text=_text(response),
                         finish=response.choices[0].finish_reason,
                         prompt_tokens=getattr(usage, "prompt_tokens", None))


def _endpoint_kwargs(call: _Call) -> dict:
    return {"model": f"openai/{call.case.args['model_id']}", "api_base": call.target.v1,
            "api_key": call.target.api_key, "timeout": call.target.timeout_s}


def embeddings(call: _Call, args: dict) -> Outcome:
    """litellm.embedding through its openai/ provider (its Anthropic provider has no embeddings)."""
    texts = modalities.embedding_texts(call.case)
    response = call.litellm.embedding(input=texts, encoding_format="float", **_endpoint_kwargs(call))
    vectors = [item["embedding"] for item in sorted(response.data, key=lambda item: item["index"])]
    return modalities.embedding_outcome(call.case, vectors, via="litellm.embedding")


def transcription(call: _Call, args: dict) -> Outcome:
    heard = []
    for sentence, wav in modalities.spoken_sentences(call.target):
        with wav.open("rb") as audio:
            done = call.litellm.transcription(file=audio, language="en", **_endpoint_kwargs(call))
        heard.append((sentence, done.text))
    return modalities.transcription_outcome(call.case, heard, via="litellm.transcription")


ACTIONS = {f.__name__: f for f in (chat, stream, system, multi_turn, tool_round_trip, auth, model_id, usage,
                                   stream_usage, stop, structured, image, embeddings, transcription)}


def run(case: Case, target: Target) -> Outcome:
    if case.action not in ACTIONS:
        raise ValueError(f"litellm_client has no action {case.action!r} (known: {', '.join(ACTIONS)})")
    return ACTIONS[case.action](_Call(case, target), case.args)
