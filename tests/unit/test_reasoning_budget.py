"""The reasoning budget (serving/constraints/reasoning_budget.py), called as mlx-lm's
BatchGenerator calls a logits processor: first on a toy vocabulary, then on the real SmolLM2
tokenizer, then greedy decoding with the real model and the engine's BatchGenerator, where the
budget forces </think> and a JSON grammar then shapes the answer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from serving.constraints.reasoning_budget import ReasoningBudget  # noqa: E402
from serving.parsers.reasoning import PARSERS  # noqa: E402

THINK = PARSERS["think"]

# A toy vocabulary: the closing tag takes three tokens, as it does in SmolLM2's.
VOCAB = {0: "<eos>", 1: "a", 2: " b", 3: "</", 4: "think", 5: ">", 6: "<", 7: "{}", 8: "\n"}
END_IDS = [3, 4, 5]
PROMPT = [8, 8]


def run(factory, preferred, *, steps: int, max_tokens: int = 100) -> list[int]:
    """Greedy decoding of a 'model' that always prefers the next token of `preferred` (cycled),
    through the processor exactly as the generator calls it."""
    processor = factory(max_tokens)
    context = list(PROMPT)
    out: list[int] = []
    for i in range(steps):
        logits = mx.full((1, len(VOCAB)), -5.0)
        logits[0, preferred[i % len(preferred)]] = 5.0
        masked = processor(mx.array(context), logits)
        token = int(mx.argmax(masked, axis=-1).item())
        out.append(token)
        context.append(token)
    return out


def text(tokens) -> str:
    return "".join(VOCAB[t] for t in tokens)


def budget(n, *, inside=True, then=None):
    return ReasoningBudget(THINK, VOCAB.__getitem__, budget=n, end_ids=END_IDS, inside=inside, then=then)


def test_the_budget_forces_the_closing_tag_then_lets_the_model_go_on():
    assert text(run(budget(3), [1], steps=8)) == "aaa</think>aa"
    assert text(run(budget(0), [1], steps=5)) == "</think>aa"


def test_a_model_that_closes_by_itself_is_left_alone():
    assert text(run(budget(5), [1, 3, 4, 5, 2], steps=7)) == "a</think> ba</"


def test_reasoning_the_model_opens_itself_counts_from_its_opener():
    # outside at first: "a", then "<think>" opens, then two tokens of budget
    tokens = run(budget(2, inside=False), [1, 6, 4, 5, 2, 2, 2, 2, 2, 2], steps=10)
    assert text(tokens) == "a<think> b b</think> b"
    assert THINK.parse(text(tokens)).reasoning == "b b"


class Recorder:
    """A constraint factory whose processors record their calls and force token 7."""

    def __init__(self) -> None:
        self.made: list[int] = []
        self.calls: list[list[int]] = []

    def __call__(self, max_tokens):
        self.made.append(max_tokens)

        def processor(tokens, logits):
            self.calls.append(np.array(tokens).tolist())
            return mx.where(mx.arange(logits.shape[-1]) == 7, logits, -float("inf"))
        return processor


def test_a_constraint_applies_to_the_answer_only_and_starts_fresh_after_the_tag():
    grammar = Recorder()
    tokens = run(budget(2, then=grammar), [1], steps=8, max_tokens=20)
    assert text(tokens) == "aa</think>{}{}{}"
    assert grammar.made == [20 - 5]  # made once, with the tokens left after reasoning
    assert grammar.calls[0][-1] == 5  # its first call sees the tag's last token, and feeds nothing


def test_without_a_budget_the_constraint_waits_for_the_model_to_close():
    grammar = Recorder()
    tokens = run(budget(None, then=grammar), [1, 1, 3, 4, 5], steps=8)
    assert text(tokens) == "aa</think>{}{}{}"
    assert run(budget(None, inside=False, then=Recorder()), [1], steps=2) == [7, 7]  # no reasoning: at once


# ---- the real SmolLM2 tokenizer and model ----------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    done = subprocess.run([sys.executable, "-m", "serving", "models", "--resolve", "smollm2-135m"],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"smollm2-135m could not be resolved: {done.stderr.strip()[-300:]}")
    from mlx_lm import load
    return load(json.loads(done.stdout)["path"])


def real_budget(tokenizer, n, *, then=None):
    return ReasoningBudget(THINK, lambda t: tokenizer.decode([t]), budget=n, inside=True, then=then,
                           end_ids=tokenizer.encode("</think>", add_special_tokens=False))


def test_forced_tokens_spell_the_tag_in_the_real_tokenizer(smollm2):
    _, tokenizer = smollm2
    factory = real_budget(tokenizer, 2)
    processor = factory(50)
    context = tokenizer.encode("Hi <think>\n", add_special_tokens=False)
    width = 49152
    (comma,) = tokenizer.encode(",", add_special_tokens=False)
    out = []
    for _ in range(6):
        logits = mx.zeros((1, width))
        logits[0, comma] = 1.0  # the model would say "," forever
        token = int(mx.argmax(processor(mx.array(context), logits), axis=-1).item())
        out.append(token)
        context.append(token)
    assert tokenizer.decode(out) == ",,</think>,"
    assert not processor.inside


def decode(smollm2, prompt_tokens, factory, *, max_tokens: int):
    from serving.engine.generator import make_batch_generator
    from serving.engine.loop import EngineSettings
    from serving.engine.request import SamplingParams
    from serving.engine.sampling import build_sampler

    model, tokenizer = smollm2
    generator = make_batch_generator(model, tokenizer, EngineSettings(max_concurrency=1))
    (uid,) = generator.insert([prompt_tokens], max_tokens=[max_tokens], samplers=[build_sampler(SamplingParams())],
                              logits_processors=[[factory(max_tokens)]])
    tokens, finish = [], None
    try:
        while finish is None:
            for r in generator.next()[1]:
                if r.uid == uid:
                    if r.finish_reason != "stop":
                        tokens.append(r.token)
                    finish = r.finish_reason
    finally:
        generator.close()
    return tokens, finish


def test_real_model_reasoning_is_cut_at_the_budget_and_the_answer_is_valid_json(smollm2):
    from serving.constraints import ConstraintBuilder

    _, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Describe Paris as a JSON object."}],
                                           add_generation_prompt=True, tokenize=False) + "<think>\n"
    prompt_tokens = tokenizer.encode(prompt, add_special_tokens=False)
    grammar = ConstraintBuilder(tokenizer).json_schema_constraint(None)
    tokens, finish = decode(smollm2, prompt_tokens, real_budget(tokenizer, 12, then=grammar), max_tokens=80)
    text = tokenizer.decode(tokens)
    end = tokenizer.encode("</think>", add_special_tokens=False)
    at = next(i for i in range(len(tokens)) if tokens[i:i + len(end)] == end)
    assert at == 12, text  # SmolLM2 never closes by itself: the budget did
    parsed = THINK.parse(text, inside=True)
    assert parsed.reasoning is not None and "</think>" not in parsed.reasoning
    assert finish == "stop", text
    assert isinstance(json.loads(parsed.content), dict), text
