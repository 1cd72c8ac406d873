"""The real SmolLM2 tokenizer, model and constraint builder, and the schemas the constraint tests
share."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serving.constraints import ConstraintBuilder

MODEL = "smollm2-135m"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "color", "tags", "address"],
    "additionalProperties": False,
}

TOOLS = [
    {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}},
    {"name": "send_email", "parameters": {
        "type": "object",
        "properties": {"to": {"type": "string", "maxLength": 30}, "subject": {"type": "string", "maxLength": 40}},
        "required": ["to", "subject"], "additionalProperties": False}},
]

STORY = {"type": "object", "properties": {"story": {"type": "string"}, "n": {"type": "integer"}},
         "required": ["story"], "additionalProperties": False}


@pytest.fixture(scope="module")
def smollm2():
    done = subprocess.run([sys.executable, "-m", "serving", "models", "--resolve", MODEL],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"{MODEL} could not be resolved: {done.stderr.strip()[-300:]}")
    from mlx_lm import load
    return load(json.loads(done.stdout)["path"])


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def builder(tokenizer):
    return ConstraintBuilder(tokenizer)
