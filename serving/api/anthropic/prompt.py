"""Anthropic messages to the neutral chat messages every template reads, and to token ids.

Both /v1/messages and /v1/messages/count_tokens build their prompt here, so
the count always equals the prompt the engine is given.
"""

from __future__ import annotations


from ..dialect import ServeContext
from ..errors import InvalidRequest, UnsupportedField
from ..images import join_content
from ..prompting import template_call
from ..reasoning import anthropic_template_kwargs
from ..tool_prompt import Rendered, render
from ..tools import ToolRequest, make_tool, tool_request
from .schemas import Message, PromptFields, TextBlock

# Blocks become one string per message; vLLM joins content parts the same way.
JOIN = "\n"


def _refuse_media(block, at: str) -> None:
    raise InvalidRequest(f"{at}: {block.type} blocks are not supported; this model reads text only", param=at)


def _texts(blocks: list, at: str) -> str:
    """The text of blocks that may only hold text (system, tool results)."""
    out = []
    for j, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            if block.type in ("image", "document"):
                _refuse_media(block, f"{at}.{j}")
            raise InvalidRequest(f"{at}.{j}: a {block.type} block is not allowed here", param=f"{at}.{j}")
        out.append(block.text)
    return JOIN.join(out)


def _turn(m: Message, at: str, media=None) -> list[dict]:
    """One user or assistant message as neutral messages: tool results become `tool`
    messages, in place; tool uses become OpenAI-style `tool_calls` on the assistant message.
    With `media` (an api.images.ImageInputs), image blocks become image entries of the content."""
    out: list[dict] = []
    text: list = []
    calls: list[dict] = []

    def flush() -> None:
        if text or calls:
            out.append({"role": m.role, "content": join_content(text, JOIN),
                        **({"tool_calls": list(calls)} if calls else {})})
            text.clear()
            calls.clear()

    for j, block in enumerate(m.content):
        where = f"{at}.content.{j}"
        if block.type == "text":
            text.append(block.text)
        elif block.type == "image" and media is not None:
            text.append(media.anthropic_block(block, role=m.role, param=where))
        elif block.type in ("image", "document"):
            _refuse_media(block, where)
        elif block.type == "tool_use":
            if m.role != "assistant":
                raise InvalidRequest(f"{where}: tool_use blocks belong in assistant messages", param=where)
            calls.append(template_call(block.id, block.name, block.input))
        elif block.type == "tool_result":
            if m.role != "user":
                raise InvalidRequest(f"{where}: tool_result blocks belong in user messages", param=where)
            flush()
            out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                        "content": _texts(block.content, f"{where}.content")})
        # thinking and redacted_thinking: earlier reasoning, which this model cannot read back; dropped.
    flush()
    return out or [{"role": m.role, "content": ""}]  # keep the turn, so roles still alternate


def neutral_messages(body: PromptFields, media=None) -> list[dict]:
    system = [_texts(body.system, "system")] if body.system else []
    turns: list[dict] = []
    for i, m in enumerate(body.messages):
        if m.role == "system":
            system.append(_texts(m.content, f"messages.{i}.content"))
        else:
            turns += _turn(m, f"messages.{i}", media)
    if not turns:
        raise InvalidRequest("messages holds no user or assistant message", param="messages")
    last = len(body.messages) - 1
    if body.messages[last].role == "assistant":
        # Prefill would need the template to leave the assistant turn open; refused rather than answered wrongly.
        raise UnsupportedField("a final assistant message (prefill) is not supported; end with a user message",
                               param=f"messages.{last}")
    system_text = JOIN.join(s for s in system if s)
    return ([{"role": "system", "content": system_text}] if system_text else []) + turns


def tools_of(body: PromptFields) -> ToolRequest:
    tools = [make_tool(t.name, t.description, t.input_schema, param=f"tools.{i}")
             for i, t in enumerate(body.tools or []) if t.type in (None, "custom")]
    choice = body.tool_choice
    if choice is None:
        return tool_request(tools)
    if choice.type == "tool" and not choice.name:
        raise InvalidRequest("tool_choice of type 'tool' needs a name", param="tool_choice.name")
    return tool_request(tools, choice={"auto": "auto", "none": "none", "any": "required", "tool": "auto"}[choice.type],
                        named=choice.name if choice.type == "tool" else None,
                        parallel=not choice.disable_parallel_tool_use)


def prompt(body: PromptFields, ctx: ServeContext, tools: ToolRequest | None = None, media=None) -> Rendered:
    """`thinking` reaches the template here, so count_tokens counts the prompt /v1/messages renders."""
    return render(neutral_messages(body, media), tools if tools is not None else tools_of(body), ctx,
                  template_kwargs=anthropic_template_kwargs(body.thinking))
