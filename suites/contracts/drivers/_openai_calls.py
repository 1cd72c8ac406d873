"""One code path for openai.OpenAI and openai.AsyncOpenAI (sync calls return values, async ones
awaitables), and the request shapes every openai_sdk action shares."""

from __future__ import annotations

import contextlib
import inspect

from ..driver import Case, Target


async def resolved(result):
    return await result if inspect.isawaitable(result) else result


async def items(stream):
    if hasattr(stream, "__aiter__"):
        async for item in stream:
            yield item
    else:
        for item in stream:
            yield item


@contextlib.asynccontextmanager
async def entered(manager):
    if hasattr(manager, "__aenter__"):
        async with manager as inner:
            yield inner
    else:
        with manager as inner:
            yield inner


def client_for(case: Case, target: Target, api_key: str):
    import openai
    cls = openai.AsyncOpenAI if case.args.get("async") else openai.OpenAI
    return cls(base_url=target.v1, api_key=api_key, timeout=target.timeout_s, max_retries=0)


# --- the request shapes the actions share

def max_tokens(case: Case, default: int = 32) -> int:
    return int(case.args.get("max_tokens", default))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def chat_call(client, case: Case, target: Target, messages: list[dict], **kw):
    return await resolved(client.chat.completions.create(model=target.model, messages=messages, temperature=0,
                                                         max_tokens=max_tokens(case), **kw))
