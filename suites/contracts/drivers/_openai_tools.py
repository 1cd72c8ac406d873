"""The openai_sdk actions whose requests carry a schema: tools (chat) and responses_tools
(Responses) send a tool's parameters, structured a pydantic response_format. openai_sdk.py
documents each action."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from ..driver import Case, Outcome, Target, answered, check, failed
from ._openai_calls import chat_call, max_tokens, resolved, user

WEATHER_DESCRIPTION = "Get the current weather for a city."
WEATHER_PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                      "additionalProperties": False}


class City(BaseModel):
    name: str
    country: str


def _weather_tool() -> dict:
    return {"type": "function", "function": {"name": "get_weather", "description": WEATHER_DESCRIPTION,
                                             "parameters": WEATHER_PARAMETERS}}


def _city_problem(arguments: str, case: Case) -> str | None:
    """Why a call's arguments are not a JSON object with the expected string city, or None."""
    try:
        args = json.loads(arguments)
    except ValueError:
        return f"arguments are not JSON: {arguments[:80]!r}"
    if not isinstance(args, dict) or not isinstance(args.get("city"), str):
        return f"arguments lack a string city: {arguments[:80]!r}"
    want = case.args.get("city")
    if want and want.lower() not in args["city"].lower():
        return f"city {args['city']!r}, expected {want!r}"
    return None


async def tools(client, case: Case, target: Target) -> Outcome:
    messages = user(case.args["prompt"])
    first = await chat_call(client, case, target, messages, tools=[_weather_tool()], tool_choice="required")
    choice = first.choices[0]
    calls = choice.message.tool_calls or []
    if choice.finish_reason != "tool_calls" or not calls:
        return failed(f"tool_choice required: finish_reason {choice.finish_reason!r}, {len(calls)} tool calls, "
                      f"content {(choice.message.content or '')[:80]!r}")
    call = calls[0]
    problem = _city_problem(call.function.arguments, case) if call.function.name == "get_weather" \
        else f"called {call.function.name!r}"
    if problem:
        return failed(f"tool call: {problem}")
    messages += [{"role": "assistant", "content": None,
                  "tool_calls": [{"id": call.id, "type": "function",
                                  "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                 {"role": "tool", "tool_call_id": call.id, "content": case.args["tool_result"]}]
    second = await chat_call(client, case, target, messages, tools=[_weather_tool()],
                             tool_choice=case.args.get("followup_tool_choice", "none"))
    answer = second.choices[0]
    if answer.finish_reason != "stop" or answer.message.tool_calls:
        return failed(f"after the tool result: finish_reason {answer.finish_reason!r}, "
                      f"{len(answer.message.tool_calls or [])} tool calls", answer=answer.message.content)
    return answered(answer.message.content or "", case.args.get("expect"),
                    f"called get_weather({call.function.arguments}), then", call=call.function.arguments)


async def responses_tools(client, case: Case, target: Target) -> Outcome:
    tool = {"type": "function", "name": "get_weather", "description": WEATHER_DESCRIPTION,
            "parameters": WEATHER_PARAMETERS, "strict": True}
    question = {"role": "user", "content": case.args["prompt"]}
    first = await resolved(client.responses.create(model=target.model, input=[question], tools=[tool],
                                                   tool_choice="required", max_output_tokens=max_tokens(case)))
    calls = [o for o in first.output if o.type == "function_call"]
    if not calls:
        return failed(f"tool_choice required: no function_call item, output {[o.type for o in first.output]}")
    call = calls[0]
    problem = _city_problem(call.arguments, case) if call.name == "get_weather" else f"called {call.name!r}"
    if problem:
        return failed(f"function_call: {problem}")
    result = {"type": "function_call_output", "call_id": call.call_id, "output": case.args["tool_result"]}
    second = await resolved(client.responses.create(
        model=target.model, input=[question, call.model_dump(exclude_none=True), result], tools=[tool],
        tool_choice=case.args.get("followup_tool_choice", "none"), max_output_tokens=max_tokens(case)))
    kinds = [o.type for o in second.output]
    if second.status != "completed" or "function_call" in kinds:
        return failed(f"after function_call_output: status {second.status!r}, output {kinds}")
    return answered(second.output_text, case.args.get("expect"), f"function_call get_weather({call.arguments}), then",
                    call=call.arguments)


async def structured(client, case: Case, target: Target) -> Outcome:
    done = await resolved(client.chat.completions.parse(model=target.model, messages=user(case.args["prompt"]),
                                                        response_format=City, temperature=0,
                                                        max_tokens=max_tokens(case)))
    message = done.choices[0].message
    try:
        City.model_validate_json(message.content or "")
    except ValidationError as exc:
        return failed(f"content does not validate as City: {exc.errors()[0]['msg']}: {message.content!r}")
    if not isinstance(message.parsed, City):
        return failed(f"parsed is {type(message.parsed).__name__}, not City")
    want = case.args.get("expect")
    return check(not want or want.lower() in message.parsed.name.lower(), f"parsed {message.parsed!r}",
                 f"parsed {message.parsed!r}, name lacks {want!r}", content=message.content)
