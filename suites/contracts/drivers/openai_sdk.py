"""The openai Python SDK (placeholder: text only; to be completed)."""

from __future__ import annotations

from ..driver import Case, Target, check


def run(case: Case, target: Target):
    import openai

    client = openai.OpenAI(base_url=target.v1, api_key=target.api_key, timeout=target.timeout_s, max_retries=0)
    done = client.chat.completions.create(model=target.model, max_tokens=int(case.args.get("max_tokens", 16)),
                                          temperature=0, messages=[{"role": "user", "content": case.args["prompt"]}])
    text = done.choices[0].message.content or ""
    return check(bool(text.strip()), f"answered {text.strip()[:60]!r}", "empty answer", answer=text)
