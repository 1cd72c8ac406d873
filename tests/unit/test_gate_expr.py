"""Gate expressions parse with a small scanner, never eval, and compare like the profile reads."""

import pytest
from harness.gate_expr import GateSyntaxError, parse_gate
from harness.gate_paths import GatePathError, check_shape
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize("text, path, op, value", [
    ("divergence.exact_match.ci_low >= 0.99", ("divergence", "exact_match", "ci_low"), ">=", 0.99),
    ('tools.parse_fidelity >= 0.99', ("tools", "parse_fidelity"), ">=", 0.99),
    ('contracts.claude-code.tools == "pass"', ("contracts", "claude-code", "tools"), "==", "pass"),
    ('throughput.ratio_vs["mlx-lm"].ci_low >= 0.95', ("throughput", "ratio_vs", "mlx-lm", "ci_low"), ">=", 0.95),
    ("divergence.batch[8].exact_match.rate == 1", ("divergence", "batch", 8, "exact_match", "rate"), "==", 1),
    ("contracts.codex.tools in ['pass', \"conditional\"]", ("contracts", "codex", "tools"), "in",
     ["pass", "conditional"]),
    ("throughput.errors<=0", ("throughput", "errors"), "<=", 0),
    ("divergence.verdict != null", ("divergence", "verdict"), "!=", None),
])
def test_gates_parse(text, path, op, value):
    gate = parse_gate(text)
    assert (gate.path, gate.op, gate.value, gate.suite) == (path, op, value, path[0])


@pytest.mark.parametrize("text, message", [
    ("x >= ", "expected a number"),
    ('x.y >= "a"', "needs a number"),
    ("x = 1", "expected one of"),
    (".x == 1", "expected a suite name"),
    ("x == 1 2", "unexpected text"),
    ('x["a] == 1', "bad string"),
    ("x in 3", "needs a [list]"),
    ('__import__("os").system("true") == 0', "expected one of"),
    ("x.y >= 1e400", "needs a number"),
])
def test_bad_gates_say_where(text, message):
    with pytest.raises(GateSyntaxError, match=message.replace("[", r"\[")):
        parse_gate(text)


@pytest.mark.parametrize("text, actual, holds", [
    ("t.x >= 0.95", 0.95, True), ("t.x >= 0.95", 0.9499, False), ("t.x > 1", 1, False),
    ("t.x <= 0", 0, True), ("t.x == 1", 1.0, True), ("t.x == 0", 1.7e-5, False),
    ('t.x == "pass"', "pass", True), ('t.x == "pass"', "conditional", False), ('t.x != "fail"', "pass", True),
    ('t.x in ["pass", "conditional"]', "conditional", True), ('t.x in ["pass"]', "fail", False),
    ("t.x >= 0.5", None, None), ('t.x >= 0.5', "pass", None), ("t.x == 1", True, False),
])
def test_comparison(text, actual, holds):
    assert parse_gate(text).holds(actual) is holds


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_cleanly(text):
    try:
        gate = parse_gate(text)
    except GateSyntaxError:
        return
    assert gate.text == text and gate.op in (">=", "<=", "==", "!=", ">", "<", "in")


@pytest.mark.parametrize("path", [
    ("throughput", "ratio_vs", "mlx-lm", "ci_low"), ("throughput", "case", "seed-c1", "ratio_vs", "mlx-lm", "ratio"),
    ("throughput", "case", "seed-c1", "output_tok_per_s", "median"), ("throughput", "errors"),
    ("divergence", "exact_match", "ci_low"), ("divergence", "control", "exact_match", "rate"),
    ("divergence", "batch", 4, "agreement", "mean"), ("divergence", "max_abs_logprob_delta"), ("divergence", "errors"),
    ("tools", "parse_fidelity"), ("tools", "parse_fidelity", "auto", "ci_low"), ("tools", "schema_validity", "json_schema"),
    ("tools", "accuracy", "required", "ci_low"), ("tools", "scenarios", "rate"), ("tools", "errors"),
    ("contracts", "claude-code", "tools"), ("contracts", "open-webui"), ("contracts", "totals", "fail"),
])
def test_known_path_shapes(path):
    check_shape(path)


@pytest.mark.parametrize("path, message", [
    (("bench", "x"), "unknown suite"), (("throughput", "ratio_vs", "mlx-lm"), "name a field"),
    (("throughput", "ratio_vs", "mlx-lm", "median"), "not one of"), (("divergence", "exact"), "divergence knows"),
    (("tools", "parse_fidelity", "auto", "rate"), "not one of"), (("contracts", "a", "b", "c"), "contracts knows"),
])
def test_unknown_path_shapes_are_profile_errors(path, message):
    with pytest.raises(GatePathError, match=message):
        check_shape(path)
