"""Turn neutral chat messages into token ids with the model's chat template.

Every dialect converts its messages to the plain list-of-dicts form the
template expects (role, content, and tool fields where present) and calls
`chat_tokens`, so the same conversation gives the same tokens whatever API
carried it; Anthropic's count_tokens relies on that.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidRequest

# Templates written before OpenAI's "developer" role know it as "system".
ROLE_ALIASES = {"developer": "system"}


def template_call(call_id: str | None, name: str, arguments: Any) -> dict:
    """An earlier tool call as chat templates read it (the HF convention): arguments as an
    object. OpenAI and Responses carry them as JSON text, Anthropic as an object; text that is
    not a JSON object (a custom tool's free-form input) stays text. A template given text would
    show the model `"arguments": "{\\"city\\": ...}"`, and the model copies that form."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else arguments
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {"id": call_id, **call} if call_id is not None else call


def chat_tokens(messages: list[dict[str, Any]], tokenizer, *, tools: list[dict] | None = None,
                param: str = "messages", template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """`template_kwargs`: a request's extra template variables (enable_thinking...), checked by
    api.reasoning.template_kwargs so that none overrides what is set here."""
    messages = [{**m, "role": ROLE_ALIASES.get(m["role"], m["role"])} for m in messages]
    kwargs = {**(template_kwargs or {}), **({"tools": tools} if tools else {})}
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    except Exception as exc:  # jinja's raise_exception() in templates, e.g. role order
        raise InvalidRequest(f"the model's chat template rejected these messages: {exc}",
                             param=param) from None
    return list(tokenizer.encode(text, add_special_tokens=False))


def text_tokens(text: str, tokenizer) -> list[int]:
    return list(tokenizer.encode(text))
