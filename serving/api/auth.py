"""Optional API key, accepted as OpenAI's Bearer token or Anthropic's x-api-key."""

from __future__ import annotations

import hmac

from .errors import AuthenticationFailed

# Probes and health checks need no key: they reveal nothing but that a server is up.
OPEN_PATHS = frozenset({"/", "/health"})


class ApiKeyMiddleware:
    """`also_open`: more paths readable without a key (GET/HEAD only), e.g. /metrics for a
    scraper when --metrics-public is set."""

    def __init__(self, api_key: str, *, also_open: tuple[str, ...] = ()) -> None:
        self._key = api_key.encode()
        self._open = OPEN_PATHS | frozenset(also_open)

    def process_request(self, req, resp) -> None:
        if req.path in self._open and req.method in ("GET", "HEAD"):
            return
        offered = req.get_header("x-api-key") or ""
        auth = req.get_header("Authorization") or ""
        if auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        if not offered:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'")
        if not hmac.compare_digest(offered.encode(), self._key):
            raise AuthenticationFailed("invalid API key")
