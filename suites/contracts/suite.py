"""The contracts suite in the registry. It runs through its own command (`python -m harness
contracts`, harness/contracts_suite.py): real client programs, not HTTP requests of ours."""

from harness.suite import Suite

SUITE = Suite(
    name="contracts",
    description="real client programs against our server, a client x capability matrix "
                "(suites/contracts/clients/)",
    record_types=("contract_case",),
    command="contracts",
)
