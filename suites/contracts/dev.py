"""Try client files against a fresh server, without writing evidence (for writing drivers):

    python -m suites.contracts.dev suites/contracts/clients/openai-python.toml [--capability text] [--dump]

Starts our server on the default model (and the tool model if a case needs it) with an API
key, then runs the file's cases through the same runner the suite uses and prints each verdict.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .cases import load_client, select
from .session import served_models, run_clients


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suites.contracts.dev")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--capability", action="append", default=[])
    ap.add_argument("--dump", action="store_true",
                    help="also keep every request and response body whole, under the scratch folder's dump/")
    args = ap.parse_args(argv)
    clients = select([load_client(f) for f in args.files], capabilities=args.capability or None)
    root = Path(tempfile.mkdtemp(prefix="contracts-dev-"))
    with served_models(clients, root=root, dump_dir=root / "dump" if args.dump else None) as servers:
        for rec in run_clients(clients, servers, root=root, on_done=None):
            short = {k: rec[k] for k in ("client", "capability", "action", "status", "reason", "condition")}
            print(json.dumps(short))
            if rec["conformance"]["failures"]:
                print("  conformance:", json.dumps(rec["conformance"]["failures"][:3]))
            for r in rec["requests"][:4]:
                print("  request:", json.dumps(r)[:300])
            if rec["status"] == "fail" and "traceback" in rec["detail"]:
                print(rec["detail"]["traceback"])
    print(f"scratch and artifacts: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
