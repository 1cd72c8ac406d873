"""The OpenAI Responses dialect: `POST /v1/responses`.

Input items (messages, function calls and their outputs) become the neutral
chat messages every dialect renders through the chat template; output is one
assistant message item, streamed as typed, numbered events. Tool calls will
arrive as function_call output items once the tool-call parser lands.

`previous_response_id` continues a stored response: each app keeps the last
256 responses (input and output items) in memory, least recently used first
out; `store: false` responses are not kept, and an unknown id is a 400.
"""

from dataclasses import replace

from ..dialect import Dialect
from ..openai.common import error_body
from .adapter import Responses
from .store import ResponseStore

RESPONSES = Dialect("openai-responses", Responses().adapt, error_body)


def with_store(store: ResponseStore) -> Dialect:
    """The dialect keeping its responses in `store`, for one app."""
    return replace(RESPONSES, adapt=Responses(store).adapt)


__all__ = ["RESPONSES", "ResponseStore", "with_store"]
