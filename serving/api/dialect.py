"""The contract every API dialect implements, and the context it is given.

A dialect is three parts: a request adapter (JSON body -> neutral request plus
an encoder for this one response), a stream encoder (neutral events -> the
dialect's stream frames or its whole response) and an error renderer. The
engine never learns that dialects exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..config import ServerConfig
from ..engine.request import Finished, GenerationRequest, StepOutput
from .errors import APIError, ErrorRenderer
from .tools import NO_TOOLS, ToolRequest


@dataclass(frozen=True)
class ServedModel:
    """What the API needs to know about the one loaded model."""

    model_id: str
    aliases: tuple[str, ...]
    context_length: int
    vocab_size: int
    weights_sha256: str
    source: str

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.model_id, *self.aliases)


@dataclass(frozen=True)
class Frame:
    """One server-sent event: OpenAI sends bare `data:`, Anthropic and Responses name the event."""

    data: dict | str
    event: str | None = None


@dataclass(frozen=True)
class Comment(Frame):
    """An SSE comment line (`: keep-alive`): every SSE parser skips it, yet it shows a client
    with an idle-stream timeout (Codex: 5 min) that the server is still at work on a long prefill."""

    data: dict | str = "keep-alive"


KEEPALIVE = Comment()


class Encoder(Protocol):
    def head(self) -> list[Frame]: ...  # sent at once, before prefill ends
    def step(self, out: StepOutput) -> list[Frame]: ...
    def tool_call(self, call) -> list[Frame]: ...  # a parsed call (api.tool_calls.ToolCallOut)
    def reasoning(self, piece) -> list[Frame]: ...  # reasoning text (api.reasoning_filter.ReasoningText)
    def finish(self, fin: Finished) -> list[Frame]: ...
    def error(self, err: APIError) -> list[Frame]: ...  # an error after the stream began
    def idle(self) -> list[Frame]: ...  # keep-alive while nothing is generated
    def whole(self, outputs: list, fin: Finished) -> dict: ...  # StepOutputs, ReasoningTexts, ToolCallOuts


@dataclass(frozen=True)
class Prepared:
    request: GenerationRequest
    encoder: Encoder
    stream: bool
    tools: ToolRequest = NO_TOOLS
    warning: str | None = None  # sent as the X-MLX-Proof-Warning header
    reasoning: Any = None  # api.reasoning_filter.ReasoningSetup; None: the text is all answer


@dataclass
class ServeContext:
    """What adapters need: the tokenizer, the served model, the configuration, and the
    tool-call parser, tool prompt mode and constraint builder chosen once for this model."""

    tokenizer: Any
    served: ServedModel
    config: ServerConfig
    tool_parser: Any = None
    tool_prompt: str = "auto"
    template_tools: bool = False
    constraints: Any = None
    # A vision model's image prompter (serving.vision.prompt.VisionPrompter); None: text only.
    vision: Any = None
    reasoning_parser: Any = None  # parsers.reasoning.ReasoningParser, or None
    _texts: dict[int, str] = field(default_factory=dict, repr=False)

    def token_text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.tokenizer.decode([token])
        return text


Adapter = Callable[[dict, ServeContext], Prepared]


@dataclass(frozen=True)
class Dialect:
    name: str
    adapt: Adapter
    render_error: ErrorRenderer
