"""Turn neutral chat messages into token ids with the model's chat template.

Every dialect converts its messages to the plain list-of-dicts form the
template expects (role, content, and tool fields where present) and calls
`chat_tokens`, so the same conversation gives the same tokens whatever API
carried it; Anthropic's count_tokens relies on that.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidRequest

# Templates written before OpenAI's "developer" role know it as "system".
ROLE_ALIASES = {"developer": "system"}


def chat_tokens(messages: list[dict[str, Any]], tokenizer, *, tools: list[dict] | None = None,
                param: str = "messages") -> list[int]:
    messages = [{**m, "role": ROLE_ALIASES.get(m["role"], m["role"])} for m in messages]
    kwargs = {"tools": tools} if tools else {}
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    except Exception as exc:  # jinja's raise_exception() in templates, e.g. role order
        raise InvalidRequest(f"the model's chat template rejected these messages: {exc}",
                             param=param) from None
    return list(tokenizer.encode(text, add_special_tokens=False))


def text_tokens(text: str, tokenizer) -> list[int]:
    return list(tokenizer.encode(text))
