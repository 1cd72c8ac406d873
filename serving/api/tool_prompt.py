"""Show the tools to the model: through its chat template, or a generic prompt where it has none.

A template that renders `tools` gets them natively. For one that ignores them
(the default SmolLM2's), --tool-prompt decides:
- auto (default): a forced call (`required`, a named tool, Anthropic's `any`)
  gets the generic prompt; otherwise the tools are NOT shown, the answer is
  plain text, and the response says so in an X-MLX-Proof-Warning header. On
  BFCL the default model made no correct call with the generic prompt
  (evidence in README), and agent clients send dozens of tools (Claude Code
  ~24, 64 KB) that would crowd a small model's context out;
- generic: a system-message section listing the tools and asking for a bare
  JSON call, the form the `json` parser (and `hermes`, its superset) reads back;
- template: always the chat template; none: never show tools (calls are
  still forced by the grammar where asked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .prompting import chat_tokens
from .tools import NO_TOOLS, ToolRequest

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


@dataclass(frozen=True)
class Rendered:
    tokens: list[int]
    tools: ToolRequest  # what the answer is parsed against: NO_TOOLS when the model never saw any
    warning: str | None = None


def _not_shown(request: ToolRequest) -> str:
    return (f"{len(request.tools)} tool(s) were not shown to the model: its chat template has no tool support, "
            "so it answers in plain text. Start the server with --tool-prompt generic to show them in a generic "
            "prompt, or force a call with tool_choice.")


def render(messages: list[dict], request: ToolRequest, ctx, *, param: str = "messages",
           template_kwargs: dict | None = None) -> Rendered:
    """The conversation's token ids with the tools shown as this server is configured to;
    `template_kwargs` are the request's extra template variables (api.reasoning)."""
    mode = ctx.tool_prompt
    options = {"param": param, "template_kwargs": template_kwargs}
    if not request.active:
        return Rendered(chat_tokens(messages, ctx.tokenizer, **options), request)
    if mode == "template" or (mode == "auto" and ctx.template_tools):
        tokens = chat_tokens(messages, ctx.tokenizer, tools=[t.as_openai() for t in request.callable_tools()],
                             **options)
        return Rendered(tokens, request)
    if mode == "generic" or (mode == "auto" and request.forced):
        section = generic_section(request)
        return Rendered(chat_tokens(_with_system_section(messages, section), ctx.tokenizer, **options), request)
    tokens = chat_tokens(messages, ctx.tokenizer, **options)
    if request.forced:  # --tool-prompt none: the grammar still forces the call
        return Rendered(tokens, request)
    return Rendered(tokens, NO_TOOLS, _not_shown(request))
