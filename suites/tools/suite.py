"""The tools suite in the registry. It runs through its own command (`python -m harness tools`,
harness/tools_suite.py): one server of ours, BFCL data fetched once, cases under several modes."""

from harness.suite import Suite

SUITE = Suite(
    name="tools",
    description="tool calling on BFCL data, accuracy with Wilson intervals (suites/tools/cases.toml)",
    record_types=("tool_case", "tool_scenario"),
    command="tools",
)
