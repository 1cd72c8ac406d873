"""Re-record the raw Qwen2.5-Coder-0.5B tool-call outputs used by tests/unit/test_tool_parsers.py.

Run: python tests/data/tool_outputs/record_qwen.py [case ...]  (needs the converted catalog model, ~6 GB RAM once).
It writes the prompt, tools and raw output; the "expected" parse in each file is reviewed by hand,
so a re-record keeps an existing "expected" only when the raw output did not change.
"""

import json
import pathlib
import subprocess
import sys

import mlx_lm

HERE = pathlib.Path(__file__).parent / "qwen2.5-coder-0.5b"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_web",
        "description": "Search the web and return the top results",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    },
}

CASES = {
    "weather_paris": ([WEATHER], "What's the weather like in Paris right now?"),
    "weather_unit": ([WEATHER], "Tell me the temperature in Tokyo in fahrenheit."),
    "add_numbers": ([ADD], "What is 17 plus 25? Use the tool."),
    "two_cities": ([WEATHER], "What's the weather in Berlin and in Madrid?"),
    "two_tools": ([WEATHER, ADD], "Add 3 and 4, and also get the weather in Oslo."),
    "choose_tool": ([WEATHER, ADD, SEARCH], "Search the web for the latest MLX release notes."),
    "no_tool_greeting": ([WEATHER, ADD], "Hi! Who are you?"),
    "no_tool_code": ([WEATHER], "Write a Python function that reverses a string."),
    "unicode_city": ([WEATHER], "How is the weather in São Paulo? Answer in celsius."),
    "add_large_numbers": ([ADD, WEATHER], "Please compute 1234 + 4321."),
    "explain_then_call": (
        [WEATHER],
        "First say in one short sentence what you will do, then call the tool for Rome.",
    ),
    "three_cities_system": (
        [WEATHER],
        [
            {"role": "system", "content": "You may call several functions in one reply."},
            {"role": "user", "content": "Get the weather for Paris, London and Rome."},
        ],
    ),
}


def main():
    folder = json.loads(
        subprocess.run(
            [sys.executable, "-m", "serving", "models", "--resolve", "qwen2.5-coder-0.5b"],
            check=True, capture_output=True, text=True,
        ).stdout
    )["path"]
    model, tokenizer = mlx_lm.load(folder)
    HERE.mkdir(parents=True, exist_ok=True)
    # The tests check that `auto` picks a parser that reads this model's output from its template.
    (HERE / "chat_template.jinja").write_text(tokenizer.chat_template)
    only = set(sys.argv[1:])  # re-record just these cases
    for name, (tools, question) in CASES.items():
        if only and name not in only:
            continue
        messages = question if isinstance(question, list) else [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
        raw = mlx_lm.generate(model, tokenizer, prompt, max_tokens=120, verbose=False)
        path = HERE / f"{name}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        record = {
            "source": "recorded: mlx_lm.generate, greedy, max_tokens=120, qwen2.5-coder-0.5b (catalog GGUF, float32 MLX)",
            # auto picks hermes from this template (it mentions <tool_call>); both must read it.
            "parsers": ["json", "hermes"],
            "messages": messages,
            "tools": tools,
            "raw": raw,
            "expected": old.get("expected") if old.get("raw") == raw else None,
        }
        if old.get("raw") == raw and "note" in old:
            record["note"] = old["note"]
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        print(name, repr(raw))


if __name__ == "__main__":
    main()
