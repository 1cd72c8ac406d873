"""langchain-openai's ChatOpenAI, driven through LangChain's Runnable interface (invoke, stream,
bind_tools, with_structured_output) with LangChain message objects.

    ChatOpenAI(base_url="http://127.0.0.1:PORT/v1", api_key=KEY, model=MODEL, max_retries=0)

Actions (args in brackets): invoke [prompt, expect], stream [prompt], system [system, prompt, expect],
multi_turn [turns, prompt, expect], tool_round_trip [prompt, tool, tool_result], structured
[prompt, fields], usage [prompt], stream_usage [prompt], stop [prompt, stop], auth [prompt],
model_id [prompt, unknown_model], image [prompt], embeddings [model_id, triples]. Greedy and short (max_tokens, default 24).
"""

from __future__ import annotations

from typing import Any

from ..media import tiny_png_data_url
from .. import modalities
from ..driver import Blocked, CONDITIONAL, Case, Outcome, Target, answered, check, error_or_answer, failed, image_outcome

STRICT_MODEL_CONDITION = "needs the server's --strict-model-id: only then is an unknown model a 404"
FIELD_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _chat(case: Case, target: Target, **overrides):
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise Blocked(f"langchain-openai is not installed in this environment ({exc})") from None
    settings: dict[str, Any] = dict(base_url=target.v1, api_key=target.api_key, model=target.model, max_retries=0,
                                    temperature=0, max_tokens=int(case.args.get("max_tokens", 24)),
                                    timeout=target.timeout_s)
    return ChatOpenAI(**{**settings, **overrides})


def _text(message) -> str:
    """AIMessage.text: the content as a string whether it came as a str or as content blocks."""
    return message.text if isinstance(message.text, str) else message.text()



def invoke(case: Case, target: Target) -> Outcome:
    message = _chat(case, target).invoke(case.args["prompt"])
    return answered(_text(message), case.args.get("expect"), "invoke()",
                     finish_reason=message.response_metadata.get("finish_reason"))


def stream(case: Case, target: Target) -> Outcome:
    """stream() yields AIMessageChunks; they add up (chunk + chunk) to the whole message."""
    chunks = list(_chat(case, target).stream(case.args["prompt"]))
    content = [c for c in chunks if _text(c)]
    if len(content) < 2:
        return failed(f"the stream carried {len(content)} content chunk(s): not incremental")
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    finish = whole.response_metadata.get("finish_reason")
    if not finish:
        return failed("the joined stream has no finish_reason", answer=_text(whole))
    return answered(_text(whole), case.args.get("expect"), f"{len(content)} chunks, finish {finish}",
                     chunks=len(content))


def system(case: Case, target: Target) -> Outcome:
    from langchain_core.messages import HumanMessage, SystemMessage

    message = _chat(case, target).invoke([SystemMessage(case.args["system"]), HumanMessage(case.args["prompt"])])
    return answered(_text(message), case.args.get("expect"), "SystemMessage + HumanMessage")


def multi_turn(case: Case, target: Target) -> Outcome:
    """Alternating Human/AI history; the expected word is only in an earlier turn."""
    from langchain_core.messages import AIMessage, HumanMessage

    kinds = (HumanMessage, AIMessage)
    history = [kinds[i % 2](t) for i, t in enumerate(case.args["turns"])] + [HumanMessage(case.args["prompt"])]
    message = _chat(case, target).invoke(history)
    return answered(_text(message), case.args.get("expect"), f"after {len(history) - 1} earlier messages")


def tool_round_trip(case: Case, target: Target) -> Outcome:
    """bind_tools with tool_choice "required": AIMessage.tool_calls come back parsed (args a dict;
    unparsable ones land in invalid_tool_calls), a ToolMessage answers, and the model replies with
    the tools still bound but tool_choice "none" (on "auto" the 0.5B tool model calls again)."""
    import jsonschema
    from langchain_core.messages import HumanMessage, ToolMessage

    tool = case.args["tool"]
    spec = {"type": "function", "function": {"name": tool["name"], "description": tool.get("description", ""),
                                             "parameters": tool["parameters"]}}
    chat = _chat(case, target, max_tokens=int(case.args.get("max_tokens", 48)))
    history = [HumanMessage(case.args["prompt"])]
    first = chat.bind_tools([spec], tool_choice="required").invoke(history)
    if first.invalid_tool_calls:
        return failed(f"unparsable tool call: {first.invalid_tool_calls[0]}")
    if not first.tool_calls:
        return failed(f"tool_choice required gave no tool call (text {_text(first)[:60]!r})")
    call = first.tool_calls[0]
    if call["name"] != tool["name"]:
        return failed(f"called {call['name']!r}, not {tool['name']!r}")
    jsonschema.validate(call["args"], tool["parameters"])
    history += [first, ToolMessage(case.args["tool_result"], tool_call_id=call["id"])]
    answer = chat.bind_tools([spec], tool_choice="none").invoke(history)
    if answer.tool_calls:
        return failed(f"tool_choice none still returned tool calls: {answer.tool_calls}")
    return answered(_text(answer), case.args.get("expect"), f"called {call['name']}({call['args']}), then "
                     "after the ToolMessage", arguments=call["args"])


def structured(case: Case, target: Target) -> Outcome:
    """with_structured_output(<pydantic model>, method="json_schema"): the answer comes back as an
    instance of the model (the fields come from the case: name = "str" | "int" | "float" | "bool")."""
    from pydantic import create_model

    fields = {name: (FIELD_TYPES[kind], ...) for name, kind in case.args["fields"].items()}
    schema = create_model(case.args.get("name", "Answer"), **fields)
    chat = _chat(case, target, max_tokens=int(case.args.get("max_tokens", 48)))
    value = chat.with_structured_output(schema, method="json_schema", strict=True).invoke(case.args["prompt"])
    return check(isinstance(value, schema), f"{schema.__name__} instance {value.model_dump()}",
                 f"got {type(value).__name__}, not {schema.__name__}: {value!r:.100}")


def _usage(metadata: dict | None) -> Outcome:
    if not metadata:
        return failed("no usage_metadata on the message")
    i, o, t = metadata.get("input_tokens", 0), metadata.get("output_tokens", 0), metadata.get("total_tokens", 0)
    return check(i > 0 and o > 0 and t == i + o, f"usage_metadata {i} in + {o} out = {t}",
                 f"implausible usage_metadata {metadata}", usage=dict(metadata))


def usage(case: Case, target: Target) -> Outcome:
    return _usage(_chat(case, target).invoke(case.args["prompt"]).usage_metadata)


def stream_usage(case: Case, target: Target) -> Outcome:
    """stream_usage=True asks for stream_options.include_usage; the counts arrive on a final chunk."""
    chunks = list(_chat(case, target, stream_usage=True).stream(case.args["prompt"]))
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    return _usage(whole.usage_metadata)


def stop(case: Case, target: Target) -> Outcome:
    """invoke(..., stop=[...]) against a control call that does reach the stop string."""
    chat, prompt, stop_at = _chat(case, target), case.args["prompt"], case.args["stop"]
    control = _text(chat.invoke(prompt))
    if stop_at not in control:
        return failed(f"control answer {control[:60]!r} never reaches {stop_at!r}: pick another prompt")
    message = chat.invoke(prompt, stop=[stop_at])
    text, finish = _text(message), message.response_metadata.get("finish_reason")
    cut = control[:control.index(stop_at)]
    return check(stop_at not in text and finish == "stop" and text.strip() == cut.strip(),
                 f"stopped before {stop_at!r}: {text[:60]!r} (finish {finish})",
                 f"stop {stop_at!r} not honoured: {text[:60]!r} (finish {finish}; control cut {cut[:60]!r})",
                 answer=text, control=control)


def _error_or_answer(case: Case, target: Target, error: type, what: str, **overrides):
    """langchain-openai lets the openai SDK's exceptions through, so the class to expect is openai's."""
    return error_or_answer(lambda: _chat(case, target, **overrides).invoke(case.args["prompt"]), error,
                           f"openai.{error.__name__}", what)


def auth(case: Case, target: Target) -> Outcome:
    import openai

    message, outcome = _error_or_answer(case, target, openai.AuthenticationError, "a wrong API key",
                                        api_key="sk-wrong-" + "0" * 16)
    return outcome or failed(f"a wrong API key was answered: {_text(message)[:60]!r}")


def model_id(case: Case, target: Target) -> Outcome:
    """Unknown model -> 404 -> openai.NotFoundError. Our server refuses unknown ids only under
    --strict-model-id (otherwise it serves any name, as the README says): an answer is conditional."""
    import openai

    unknown = case.args.get("unknown_model", "no-such-model")
    message, outcome = _error_or_answer(case, target, openai.NotFoundError, f"unknown model {unknown!r}",
                                        model=unknown)
    if outcome:
        return outcome
    served_as = message.response_metadata.get("model_name")
    return Outcome(CONDITIONAL, f"unknown model {unknown!r} was answered (as {served_as!r}): the server serves "
                   "any name", condition=STRICT_MODEL_CONDITION, detail={"answer": _text(message)})



def image(case: Case, target: Target) -> Outcome:
    """A HumanMessage with an image_url content block (driver.image_outcome judges it)."""
    import openai
    from langchain_core.messages import HumanMessage

    content = [{"type": "text", "text": case.args["prompt"]}, {"type": "image_url", "image_url": {"url": tiny_png_data_url()}}]
    try:
        message = _chat(case, target).invoke([HumanMessage(content=content)])
    except openai.BadRequestError as exc:
        return image_outcome(case, refused=f"openai.BadRequestError: {' '.join(str(exc).split())}")
    meta = message.response_metadata or {}
    usage = message.usage_metadata or {}
    return image_outcome(case, refused=None, text=_text(message), finish=meta.get("finish_reason"),
                         prompt_tokens=usage.get("input_tokens"))


def embeddings(case: Case, target: Target) -> Outcome:
    """OpenAIEmbeddings.embed_documents. check_embedding_ctx_length=False, as for any server that
    is not OpenAI: by default it re-tokenises with OpenAI's tiktoken (fetched from the internet)
    and sends OpenAI's token ids, which mean nothing to another model's vocabulary."""
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(model=case.args["model_id"], base_url=target.v1, api_key=target.api_key,
                                max_retries=0, check_embedding_ctx_length=False)
    vectors = embedder.embed_documents(modalities.embedding_texts(case))
    return modalities.embedding_outcome(case, vectors, via="OpenAIEmbeddings.embed_documents")


ACTIONS = {f.__name__: f for f in (invoke, stream, system, multi_turn, tool_round_trip, structured, usage,
                                   stream_usage, stop, auth, model_id, image, embeddings)}


def run(case: Case, target: Target) -> Outcome:
    if case.action not in ACTIONS:
        raise ValueError(f"langchain_openai has no action {case.action!r} (known: {', '.join(ACTIONS)})")
    return ACTIONS[case.action](case, target)
