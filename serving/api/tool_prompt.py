"""Show the tools to the model: through its chat template, or a generic prompt where it has none.

A template that renders `tools` gets them natively. One that ignores them (the
default SmolLM2's) gets a system-message section listing the tools and asking
for a bare JSON call, the form the `json` parser (and `hermes`, its superset)
reads back. --tool-prompt picks: auto (template if it can, else generic),
template, generic or none.
"""

from __future__ import annotations

import json

from .prompting import chat_tokens
from .tools import ToolRequest

GENERIC = """You can call these functions:
{tools}

To call a function, reply with only a JSON object, nothing else:
{{"name": "<function name>", "arguments": {{<argument name>: <value>, ...}}}}
To call several, reply with a JSON list of such objects. If no function fits, answer in plain text."""


def template_renders_tools(chat_template: str | None) -> bool:
    return bool(chat_template) and "tools" in chat_template


def generic_section(request: ToolRequest) -> str:
    lines = [json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                        ensure_ascii=False) for t in request.callable_tools()]
    return GENERIC.format(tools="\n".join(lines))


def _with_system_section(messages: list[dict], section: str) -> list[dict]:
    if messages and messages[0]["role"] in ("system", "developer"):
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{section}".strip()}, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


def tool_prompt_tokens(messages: list[dict], request: ToolRequest, ctx, *, param: str = "messages") -> list[int]:
    """Token ids of the conversation with the tools shown as this server is configured to."""
    mode = ctx.tool_prompt
    if not request.active or mode == "none":
        return chat_tokens(messages, ctx.tokenizer, param=param)
    if mode == "template" or (mode == "auto" and ctx.template_tools):
        return chat_tokens(messages, ctx.tokenizer, tools=[t.as_openai() for t in request.callable_tools()],
                           param=param)
    return chat_tokens(_with_system_section(messages, generic_section(request)), ctx.tokenizer, param=param)
