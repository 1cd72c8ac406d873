"""Turn request messages or prompts into token ids with the model's tokenizer."""

from __future__ import annotations

from .errors import InvalidRequest
from .schemas import ChatCompletionRequest, CompletionRequest

# Templates written before OpenAI's "developer" role know it as "system".
ROLE_ALIASES = {"developer": "system"}


def chat_prompt_tokens(body: ChatCompletionRequest, tokenizer) -> list[int]:
    try:
        messages = [
            {"role": ROLE_ALIASES.get(m.role, m.role), "content": m.text()}
            for m in body.messages
        ]
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="messages") from None
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja's raise_exception() in templates, e.g. role order
        raise InvalidRequest(f"the model's chat template rejected these messages: {exc}",
                             param="messages") from None
    return list(tokenizer.encode(text, add_special_tokens=False))


def completion_prompt(body: CompletionRequest, tokenizer, *, vocab_size: int) -> tuple[list[int], str]:
    """Token ids, and the prompt text (for echo)."""
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        if any(not 0 <= t < vocab_size for t in prompt):
            raise InvalidRequest("prompt contains token ids outside the vocabulary", param="prompt")
        return list(prompt), tokenizer.decode(prompt)
    text = prompt[0] if isinstance(prompt, list) else prompt
    return list(tokenizer.encode(text)), text
