"""One module per kind of client; each exposes `run(case, target) -> Outcome` (see ..driver)."""
