"""Grammar-constrained decoding (serving/constraints) on the real SmolLM2 tokenizer and model.

Here texts are walked through a processor exactly as mlx-lm's BatchGenerator calls it (the
whole context each step, the prompt's last token first); test_constraints_decoding.py decodes
greedily with the engine's real BatchGenerator.
"""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("llguidance")

from serving.constraints import (  # noqa: E402
    ConstraintViolation,
    json_schema_constraint,
    tool_call_constraint,
)

from .constraint_fixtures import PERSON, STORY, TOOLS, builder, smollm2, tokenizer  # noqa: E402,F401


# ---- walking texts through a processor, as the generator calls it ----------------------

PROMPT_END = "x"  # the grammar would reject this token; the first call must not feed it


class Speller:
    """Spells a text through a processor, called as the generator calls it, with the
    longest token its mask allows at each step. llguidance spells forced stretches (`"}}`
    after a closed enum, say) its own way, so a fixed tokenisation of the text could be
    refused where the text itself is fine."""

    def __init__(self, tokenizer, builder) -> None:
        self.tokenizer = tokenizer
        self.pieces: dict[bytes, list[int]] = {}
        llt = builder.tokenizer
        for i in range(llt.vocab_size):
            if not llt.is_special_token(i):
                self.pieces.setdefault(llt.decode_bytes([i]), []).append(i)
        self.longest = max(map(len, self.pieces))

    def walk(self, factory, text: str, *, width: int = 49152, max_tokens: int | None = None):
        """(the whole text was spelt, the mask after the last token spelt, as booleans)."""
        processor = factory(max_tokens)
        context = self.tokenizer.encode("Hello " + PROMPT_END, add_special_tokens=False)
        logits = mx.zeros((1, width))
        rest = text.encode()
        while True:
            allowed = np.isfinite(np.array(processor(mx.array(context), logits)[0]))
            if not rest:
                return True, allowed
            step = self._longest_allowed(rest, allowed)
            if step is None:
                return False, allowed
            token, size = step
            context.append(token)
            rest = rest[size:]

    def _longest_allowed(self, rest: bytes, allowed):
        for size in range(min(len(rest), self.longest), 0, -1):
            for token in self.pieces.get(rest[:size], ()):
                if allowed[token]:
                    return token, size
        return None

    def spells(self, factory, text: str) -> bool:
        return self.walk(factory, text)[0]

    def accepts(self, factory, text: str) -> bool:
        """The grammar admits exactly `text`: it can be spelt, then only end-of-sequence."""
        ok, after = self.walk(factory, text)
        eos = sorted(self.tokenizer.eos_token_ids)
        return ok and after[eos].all() and after.sum() == len(eos)


@pytest.fixture(scope="module")
def speller(tokenizer, builder):
    return Speller(tokenizer, builder)


def test_json_object_layout_is_one_line_with_single_spaces(speller, builder):
    anything = builder.json_schema_constraint(None)
    assert speller.accepts(anything, '{"a": 1, "b": [true, null, "x"], "c": {"d": 2.5}}')
    assert speller.accepts(anything, "{}")
    for text in ('{"a":1}', '{ "a": 1}', '{"a": 1,"b": 2}', '{\n  "a": 1\n}', '[1, 2]', '"text"', ' {"a": 1}'):
        assert not speller.spells(anything, text), text


def test_schema_is_enforced_and_ends_with_eos_only(speller, builder):
    person = builder.json_schema_constraint(PERSON)
    good = ('{"name": "Al", "age": 3, "color": "red", "tags": ["a"], '
            '"address": {"city": "Paris", "zip": "75001"}}')
    assert speller.accepts(person, good)
    assert not speller.spells(person, good.replace('"red"', '"pink"'))
    assert not speller.spells(person, good.replace('"age": 3', '"age": "3"'))
    assert not speller.spells(person, good.replace('"75001"', '"7500"'))
    assert not speller.spells(person, '{"age": 3')  # properties come in schema order
    ok, mask = speller.walk(person, good[:good.index(', "zip"')])
    assert ok and not mask[sorted(speller.tokenizer.eos_token_ids)].any()  # no EOS before the JSON is complete


def test_logits_wider_than_the_vocabulary_have_the_padding_forbidden(speller, builder):
    ok, mask = speller.walk(builder.json_schema_constraint(None), '{"a": 1}', width=49152 + 64)
    assert ok and mask.shape == (49152 + 64,)
    assert not mask[49152:].any()


def test_tool_calls_name_a_tool_and_fit_its_parameters(speller, builder):
    single = builder.tool_call_constraint(TOOLS, allow_parallel=False)
    parallel = builder.tool_call_constraint(TOOLS, allow_parallel=True)
    weather = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
    email = '{"name": "send_email", "arguments": {"to": "a@b.c", "subject": "hi"}}'
    assert speller.accepts(single, weather) and speller.accepts(single, email)
    assert speller.accepts(parallel, weather)
    assert speller.accepts(parallel, f"[{weather}, {email}]")
    assert not speller.spells(single, f"[{weather}]")
    assert not speller.spells(single, weather.replace("get_weather", "get_time"))
    # arguments valid for the other tool are not valid for this one
    assert not speller.spells(single, '{"name": "get_weather", "arguments": {"to": "a@b.c"')
    assert not speller.spells(parallel, "[]")


def test_refs_in_tool_parameters_resolve_against_their_own_tool(speller, builder):
    tools = [{"name": "a", "parameters": {"type": "object", "properties": {"v": {"$ref": "#/$defs/V"}},
                                          "required": ["v"], "$defs": {"V": {"type": "integer"}}}},
             {"name": "b", "parameters": {"type": "object", "properties": {"v": {"$ref": "#/$defs/V"}},
                                          "required": ["v"], "$defs": {"V": {"type": "string"}}}}]
    calls = builder.tool_call_constraint(tools, allow_parallel=False)
    assert speller.accepts(calls, '{"name": "a", "arguments": {"v": 1}}')
    assert speller.accepts(calls, '{"name": "b", "arguments": {"v": "1"}}')
    assert not speller.spells(calls, '{"name": "a", "arguments": {"v": "1"}}')


def test_a_tool_without_parameters_takes_an_empty_object(speller, builder):
    calls = builder.tool_call_constraint([{"name": "now", "parameters": None}], allow_parallel=False)
    assert speller.accepts(calls, '{"name": "now", "arguments": {}}')
    assert not speller.spells(calls, '{"name": "now", "arguments": {"x": 1}}')


def test_a_forbidden_token_raises(tokenizer, builder):
    processor = builder.json_schema_constraint(None)()
    prompt = tokenizer.encode("Hello", add_special_tokens=False)
    logits = mx.zeros((1, 49152))
    processor(mx.array(prompt), logits)
    bad = tokenizer.encode("x", add_special_tokens=False)
    with pytest.raises(ConstraintViolation, match="rejected token"):
        processor(mx.array(prompt + bad), logits)


@pytest.mark.parametrize("schema, reason", [
    ({"type": "object", "properties": {"t": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "object", "properties": {"u": {"type": "string", "format": "uri-reference"}}}, "format"),
    ({"type": "object", "not": {"required": ["a"]}}, "not"),
])
def test_unsupported_schema_features_are_value_errors(builder, schema, reason):
    with pytest.raises(ValueError, match=reason):
        builder.json_schema_constraint(schema)
    assert builder.json_schema_constraint(schema, lenient=True).warnings  # lenient: ignored, and said so


def test_errors_are_one_line_with_the_whole_reason(builder):
    with pytest.raises(ValueError, match=r"^schema: regex parse error: .*look-around.* not supported$"):
        builder.json_schema_constraint({"type": "string", "pattern": "(?=a)"})
    with pytest.raises(ValueError, match="minimum .5. is greater than maximum .1."):
        builder.json_schema_constraint({"type": "integer", "minimum": 5, "maximum": 1})


@pytest.mark.parametrize("tools, reason", [
    ([], "at least one tool"),
    ([{"name": "a", "parameters": {}}, {"name": "a", "parameters": {}}], "unique"),
    ([{"name": "", "parameters": {}}], "name"),
    ([{"name": "a", "parameters": {"type": "string"}}], "'a'.*object"),
    ([{"name": "ok", "parameters": {}},
      {"name": "bad", "parameters": {"type": "object", "propertyNames": {"pattern": "^a"}}}], "'bad'.*propertyNames"),
])
def test_bad_tools_are_value_errors_naming_the_tool(builder, tools, reason):
    with pytest.raises(ValueError, match=reason):
        builder.tool_call_constraint(tools, allow_parallel=True)


def test_lenient_tools_compile_and_say_what_they_ignore(builder):
    tools = [{"name": "a", "parameters": {"type": "object",
                                          "properties": {"l": {"type": "array", "uniqueItems": True}}}}]
    assert "uniqueItems" in " ".join(builder.tool_call_constraint(tools, allow_parallel=False, lenient=True).warnings)


def test_a_schema_must_be_an_object(builder):
    with pytest.raises(ValueError, match="must be an object"):
        builder.json_schema_constraint(["type", "object"])


def test_module_functions_take_a_builder_or_a_tokenizer(speller, tokenizer, builder):
    assert speller.accepts(json_schema_constraint(None, builder), '{"a": 1}')
    calls = tool_call_constraint(TOOLS[:1], tokenizer, allow_parallel=False)
    assert speller.accepts(calls, '{"name": "get_weather", "arguments": {"city": "X", "unit": "celsius"}}')



def one_token(tokenizer, text):
    [token] = tokenizer.encode(text, add_special_tokens=False)
    return token


def test_closers_are_brackets_or_tokens_that_end_a_string_first(tokenizer, builder):
    closers = builder.closers
    for text in ("}", "]"):
        assert closers.brackets[one_token(tokenizer, text)] and not closers.quoted[one_token(tokenizer, text)]
    for text in ('"', '"}'):
        assert closers.quoted[one_token(tokenizer, text)] and not closers.brackets[one_token(tokenizer, text)]
    for text in ("a", ",", " ", ": "):
        assert not any(closers.brackets[t] or closers.quoted[t]
                       for t in tokenizer.encode(text, add_special_tokens=False)), text
    assert all(closers.brackets[t] and closers.quoted[t] for t in tokenizer.eos_token_ids)


def test_the_lexer_follows_strings_and_escapes():
    from serving.constraints.closing import JsonLexer

    lexer = JsonLexer()
    # `x\\` ends in an escaped backslash, so the quote after it ends the string;
    # `q\\\"` ends in an escaped quote, so the string goes on through ` }`.
    for piece, inside in ((rb'{"a', True), (rb'": "x\\', True), (rb'"', False), (rb', "b": "q\\\"', True),
                          (rb' }', True), (rb'"}', False)):
        lexer.feed(piece)
        assert lexer.in_string is inside, piece


def test_near_the_budget_a_string_may_only_be_ended(speller, builder):
    story = builder.json_schema_constraint(STORY)
    text = '{"story": "' + "once upon a time " * 8
    assert speller.spells(story, text)  # no budget: the string goes on
    ok, allowed = speller.walk(story, text, max_tokens=16)
    assert not ok  # the budget's last quarter refused the string's next word
    assert allowed.any() and not (allowed & ~builder.closers.quoted).any()


def closing_at_the_end(speller, constraint, text: str):
    """The mask right after `text`, under the smallest budget that lets all of it be spelt: the
    budget's closing part then begins exactly there."""
    for budget in range(2, 400):
        ok, allowed = speller.walk(constraint, text, max_tokens=budget)
        if ok:
            return allowed
    raise AssertionError(f"{text!r} cannot be spelt")


def test_inside_an_open_value_brackets_are_not_taken_for_closers(speller, tokenizer, builder):
    # Extra properties may hold any JSON: a bare `]` inside a string there is only content, and a
    # loop of it was seen to run a json_schema answer out of budget. Only string ends are offered.
    open_schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    constraint = builder.json_schema_constraint(open_schema)
    allowed = closing_at_the_end(speller, constraint, '{"name": "Apple", "lawsuits": [{"state": "CA')
    assert allowed[one_token(tokenizer, '"')] and not allowed[one_token(tokenizer, "]")]
    # after `"state": ` a value must come: a string is opened, no bracket closes anything yet
    allowed = closing_at_the_end(speller, constraint, '{"name": "Apple", "lawsuits": [{"state": ')
    assert allowed.any() and not (allowed & ~builder.closers.quoted).any()


def test_where_the_grammar_allows_no_closing_token_its_mask_is_kept(speller, builder):
    # With `n` required, after `{"story": "", "n": ` only a number may follow: nothing closes there.
    story = builder.json_schema_constraint({**STORY, "required": ["story", "n"]})
    ok, allowed = speller.walk(story, '{"story": "", "n": ', max_tokens=2)
    closing = builder.closers.brackets | builder.closers.quoted
    assert ok and allowed.any() and not (allowed[:len(closing)] & closing).any()
