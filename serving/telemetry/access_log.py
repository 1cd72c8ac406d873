"""One JSON line per request on the `mlx_proof.access` logger.

The line says who asked for what and how it went: never the prompt or output
text, and of the headers only the user agent and a client's request id.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

ACCESS_LOGGER = "mlx_proof.access"

# Bounded so that a hostile client cannot write megabytes per line.
MAX_FIELD_CHARS = 200
_REQUEST_ID = re.compile(r"[^A-Za-z0-9._:\-]")


def bounded(value: str | None, limit: int = MAX_FIELD_CHARS) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[:limit] + "…"


def clean_request_id(value: str | None) -> str | None:
    """A client's X-Request-Id, reduced to an identifier (no spaces, quotes or control bytes)."""
    if not value:
        return None
    return _REQUEST_ID.sub("", value)[:128] or None


def access_line(fields: dict) -> str:
    """The record as one line; fields that do not apply (None) are left out."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}, ensure_ascii=False,
                      separators=(",", ":"))


def write(fields: dict) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    if logger.isEnabledFor(logging.INFO):
        logger.info(access_line(fields), extra={"access": fields})


def configure_access_log(target: str) -> logging.Handler | None:
    """Point the access logger at `target`: off, stderr, or a file path (appended to).

    Its lines are bare JSON, without the server log's timestamp/level prefix, so
    `jq` reads them whole; they do not also go through the root logger.
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.propagate = False
    if target == "off":
        logger.setLevel(logging.CRITICAL + 1)
        return None
    if target == "stderr":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        path = Path(target).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    # Independent of --log-level: turning the server log down must not silence the access log.
    logger.setLevel(logging.INFO)
    return handler
