"""Tool calling on BFCL's data (simple, multiple, parallel, parallel_multiple, irrelevance): cases.toml
selects the data, runner.py sends it over HTTP, checker.py judges, summary.py summarises."""
