"""A fake tokenizer whose chat template thinks (tests/data/reasoning/thinking_template.jinja),
rendered with Jinja as transformers renders chat templates, for the reasoning tests."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

from .fakes import FakeEngine, FakeTokenizer

DATA = Path(__file__).resolve().parents[1] / "data" / "reasoning"
TEMPLATE = (DATA / "thinking_template.jinja").read_text()


def recorded() -> dict[str, dict]:
    """Outputs in the formats Qwen3 and DeepSeek-R1 write, with the split each must give."""
    return json.loads((DATA / "outputs.json").read_text())


class ThinkingTokenizer(FakeTokenizer):
    chat_template = TEMPLATE

    def __init__(self) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(TEMPLATE)
        self.rendered: list[dict] = []  # the variables each render was given

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False, **kwargs):
        self.rendered.append(kwargs)
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)


def thinking_engine(pieces) -> FakeEngine:
    engine = FakeEngine(tuple(pieces))
    engine.tokenizer = ThinkingTokenizer()
    return engine


def chunks(text: str, size: int = 3) -> list[str]:
    """Token-like pieces of `size` characters: `<think>` arrives as `<th`, `ink`, `>`."""
    return [text[i:i + size] for i in range(0, len(text), size)]
