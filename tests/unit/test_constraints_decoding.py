"""Grammar-constrained decoding (serving/constraints), greedily through the engine's real
BatchGenerator on SmolLM2: the output is read back with jsonschema and the `json` tool-call parser."""

from __future__ import annotations

import json

import jsonschema
import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("llguidance")

from serving.parsers.tools import get_parser  # noqa: E402

from .constraint_fixtures import PERSON, STORY, TOOLS, builder, smollm2, tokenizer  # noqa: E402,F401


def decode(smollm2, jobs, *, max_tokens: int):
    """Greedy-decode (prompt, factory or None) pairs as one batch; returns (text, finish) each."""
    from serving.engine.generator import make_batch_generator
    from serving.engine.loop import EngineSettings
    from serving.engine.request import SamplingParams
    from serving.engine.sampling import build_sampler

    model, tokenizer = smollm2
    n = len(jobs)
    generator = make_batch_generator(model, tokenizer, EngineSettings(max_concurrency=n))
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
               for p, _ in jobs]
    uids = generator.insert(prompts, max_tokens=[max_tokens] * n,
                            samplers=[build_sampler(SamplingParams()) for _ in jobs],
                            logits_processors=[[f(max_tokens)] if f else [] for _, f in jobs])
    tokens = {uid: [] for uid in uids}
    finished: dict[int, str] = {}
    try:
        while len(finished) < n:
            for r in generator.next()[1]:
                if r.finish_reason != "stop":  # mlx-lm's "stop": an end-of-sequence token, not text
                    tokens[r.uid].append(r.token)
                if r.finish_reason:
                    finished[r.uid] = r.finish_reason
    finally:
        generator.close()
    return [(tokenizer.decode(tokens[uid]), finished[uid]) for uid in uids]


def test_decoded_json_validates_against_the_schema(smollm2, builder):
    [(text, finish)] = decode(smollm2, [("Describe a person named Alice who lives in Paris as JSON.",
                                         builder.json_schema_constraint(PERSON))], max_tokens=80)
    assert finish == "stop", text
    jsonschema.validate(json.loads(text), PERSON)


@pytest.mark.parametrize("schema, prompt, max_tokens", [
    (STORY, "Write a long story about a dragon, as JSON with the key story.", 12),
    ({"type": "object", "properties": {"company": {"type": "string"}}, "required": ["company"]},
     "List every patent lawsuit of Apple since 2000 as detailed JSON, with many nested fields.", 40),
])
def test_a_budget_too_small_for_the_output_still_ends_in_valid_json(smollm2, builder, schema, prompt, max_tokens):
    [(text, finish)] = decode(smollm2, [(prompt, builder.json_schema_constraint(schema))], max_tokens=max_tokens)
    assert finish == "stop", text  # an end-of-sequence token within the budget, not "length"
    jsonschema.validate(json.loads(text), schema)


def test_decoded_json_object_is_an_object(smollm2, builder):
    [(text, finish)] = decode(smollm2, [('Return a JSON object with one key, "answer", whose value is "yes".',
                                         builder.json_schema_constraint(None))], max_tokens=40)
    assert finish == "stop", text
    assert isinstance(json.loads(text), dict)


def test_decoded_tool_call_is_read_back_by_the_json_parser(smollm2, builder):
    [(text, finish)] = decode(smollm2, [("Use a tool: what is the weather in Paris?",
                                         builder.tool_call_constraint(TOOLS, allow_parallel=False))], max_tokens=80)
    assert finish == "stop", text
    call = json.loads(text)
    tool = {t["name"]: t for t in TOOLS}[call["name"]]
    jsonschema.validate(call["arguments"], tool["parameters"])
    parsed = get_parser("json").parse(text)
    assert [c.name for c in parsed.calls] == [call["name"]] and parsed.content == ""
    assert json.loads(parsed.calls[0].arguments) == call["arguments"]


def test_decoded_parallel_tool_calls_are_read_back_by_the_json_parser(smollm2, builder):
    [(text, finish)] = decode(smollm2, [("Use tools: what is the weather in Paris and in London?",
                                         builder.tool_call_constraint(TOOLS, allow_parallel=True))], max_tokens=80)
    assert finish == "stop", text
    value = json.loads(text)
    calls = value if isinstance(value, list) else [value]
    parsed = get_parser("json").parse(text)
    assert parsed.content == ""
    assert [c.name for c in parsed.calls] == [c["name"] for c in calls]
    assert [json.loads(c.arguments) for c in parsed.calls] == [c["arguments"] for c in calls]


@pytest.mark.integration
def test_batch_sequences_keep_their_own_constraints(smollm2, builder):
    """Two constrained sequences and a free one, decoded together: each gets its own valid
    output, and the free one is what it is alone."""
    free = ("Say hello.", None)
    jobs = [("Use tools: what is the weather in Paris and in London?",
             builder.tool_call_constraint(TOOLS, allow_parallel=True)),
            free,
            ("Describe a person named Alice who lives in Paris as JSON.", builder.json_schema_constraint(PERSON))]
    (calls_text, f1), (free_text, _), (person_text, f3) = decode(smollm2, jobs, max_tokens=64)
    assert f1 == "stop" and f3 == "stop", (calls_text, person_text)
    parsed = get_parser("json").parse(calls_text)
    assert parsed.calls and parsed.content == ""
    for call in parsed.calls:
        tool = {t["name"]: t for t in TOOLS}[call.name]
        jsonschema.validate(json.loads(call.arguments), tool["parameters"])
    jsonschema.validate(json.loads(person_text), PERSON)
    [(alone, _)] = decode(smollm2, [free], max_tokens=64)
    assert free_text == alone
    with pytest.raises(ValueError):
        json.loads(free_text)  # the free sequence was not pushed into JSON
