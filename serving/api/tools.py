"""Tools as every dialect declares them, reduced to one neutral request.

Each adapter turns its own spelling (OpenAI's nested `function`, Responses'
flat function tools, Anthropic's `input_schema`; `tool_choice` as a string or
an object) into a ToolRequest; the prompt, the constraint and the call parser
read only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from .errors import InvalidRequest

Choice = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict

    def as_openai(self) -> dict:
        """The form chat templates (and the generic tool prompt) expect."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...] = ()
    choice: Choice = "auto"
    named: str | None = None  # a forced function's name
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the answer is parsed for calls (and the tools shown to the model)."""
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        return self.active and (self.choice == "required" or self.named is not None)

    def by_name(self) -> dict[str, Tool]:
        return {t.name: t for t in self.tools}

    def callable_tools(self) -> tuple[Tool, ...]:
        return tuple(t for t in self.tools if self.named is None or t.name == self.named)


NO_TOOLS = ToolRequest()


def check_parameters(schema: Any, *, param: str) -> dict:
    if schema is None:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON schema object", param=param)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"{param} is not a valid JSON schema: {exc.message}", param=param) from None
    return schema


def make_tool(name: Any, description: Any, parameters: Any, *, param: str) -> Tool:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{param}.name must be a non-empty string", param=f"{param}.name")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"{param}.description must be a string", param=f"{param}.description")
    return Tool(name, description or "", check_parameters(parameters, param=f"{param}.parameters"))


def tool_request(tools: list[Tool], *, choice: Choice = "auto", named: str | None = None,
                 parallel: bool = True, choice_param: str = "tool_choice") -> ToolRequest:
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tool names must be unique", param="tools")
    if named is not None and named not in names:
        raise InvalidRequest(f"{choice_param} names {named!r}, which is not among the tools "
                             f"({', '.join(names) or 'none given'})", param=choice_param)
    if choice == "required" and not tools:
        raise InvalidRequest(f"{choice_param} 'required' needs at least one tool", param=choice_param)
    return ToolRequest(tuple(tools), choice, named, parallel)
