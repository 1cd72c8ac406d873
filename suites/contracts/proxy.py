"""A recording proxy on loopback: what each client actually sends, and whether what we send
back conforms to the SDKs' types.

Each request is forwarded to our server unchanged and its response streamed back as it comes
(event streams stay incremental). The proxy keeps, per request: method, path, query keys,
headers with secrets redacted, every top-level body field with its size, the status and the
response's conformance (conformance.check). `take()` hands over what was recorded since the
last call: the runner calls it after each case, and cases run one at a time.
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .conformance import check

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailers", "transfer-encoding", "upgrade", "content-length", "host"})
SECRET_WORDS = ("auth", "key", "token", "secret", "cookie", "session")
SCALARS = ("model", "stream", "max_tokens", "max_completion_tokens", "max_output_tokens", "temperature",
           "tool_choice", "parallel_tool_calls", "store", "n")
MAX_KEPT_BODY = 8 << 20  # bytes of a response kept for the conformance check


def redact_headers(headers) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        low = name.lower()
        out[low] = "<redacted>" if any(w in low for w in SECRET_WORDS) else value[:160]
    return dict(sorted(out.items()))


def body_shape(body: bytes, content_type: str) -> dict:
    """Field names and sizes (bytes of each field's JSON), plus a few small scalars verbatim."""
    shape: dict = {"bytes": len(body)}
    if not body or "json" not in content_type:
        return shape
    try:
        obj = json.loads(body)
    except ValueError:
        shape["json"] = False
        return shape
    if not isinstance(obj, dict):
        shape["top_level"] = type(obj).__name__
        return shape
    shape["fields"] = {k: len(json.dumps(v, ensure_ascii=False).encode()) for k, v in sorted(obj.items())}
    for key in SCALARS:
        if key in obj and (obj[key] is None or isinstance(obj[key], (bool, int, float, str))):
            shape[key] = obj[key] if not isinstance(obj[key], str) else obj[key][:80]
    for key in ("messages", "tools", "input", "system"):
        if isinstance(obj.get(key), list):
            shape[f"{key}_count"] = len(obj[key])
    return shape


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:  # the record is the log
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _forward(self) -> None:
        self.server.begin()
        try:
            self._relay()
        finally:
            self.server.end()

    def _relay(self) -> None:
        started = time.monotonic()
        body = self._read_body()
        up = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=900)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{self.server.upstream_host}:{self.server.upstream_port}"
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        kept = bytearray()
        hung_up = False
        status, ctype = 0, ""
        try:
            up.request(self.command, self.path, body=body, headers=headers)
            resp = up.getresponse()
            status, ctype = resp.status, resp.getheader("content-type", "")
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            length = resp.getheader("content-length")
            chunked = length is None and self.command != "HEAD"
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            while self.command != "HEAD":
                piece = resp.read1(65536) if chunked else resp.read(65536)
                if not piece:
                    break
                if len(kept) < MAX_KEPT_BODY:
                    kept += piece
                if not self._send(piece, chunked):
                    hung_up = True  # the client went away: closing upstream cancels the generation
                    break
            if chunked and not hung_up:
                self._send(b"", chunked)
        except (OSError, http.client.HTTPException) as exc:  # our server failed, not the client
            status, ctype = 0, ""
            kept = bytearray(f"proxy: {type(exc).__name__}: {exc}".encode())
        finally:
            up.close()
            if hung_up or not status:
                self.close_connection = True
        url = urlsplit(self.path)
        entry = {"method": self.command, "path": url.path,
                 "query_keys": sorted({k for k, _ in parse_qsl(url.query, keep_blank_values=True)}),
                 "headers": redact_headers(self.headers), "body": body_shape(body, self.headers.get("content-type", "")),
                 "status": status, "response_type": ctype.split(";")[0], "response_bytes": len(kept),
                 "ms": round(1000 * (time.monotonic() - started), 1)}
        if hung_up:  # a partial body says nothing about conformance
            entry["client_hung_up"] = True
            verdict = {"checked": 0, "failures": []}
        elif status:
            verdict = check(self.command, url.path, status, ctype, bytes(kept),
                            anthropic="anthropic-version" in self.headers)
        else:
            verdict = {"checked": 0, "failures": [kept.decode()]}
        self.server.keep(entry, verdict)
        self.server.dump(body, bytes(kept), entry)

    def _send(self, piece: bytes, chunked: bool) -> bool:
        """Write one piece (an empty one ends a chunked body); False when the client hung up."""
        try:
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client closing an idle keep-alive connection is normal; anything else is shown."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def __init__(self, upstream: str, dump_dir: Path | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.dump_dir = dump_dir
        self._dumped = 0
        up = urlsplit(upstream)
        self.upstream_host, self.upstream_port = up.hostname or "127.0.0.1", up.port or 80
        self._lock = threading.Condition()
        self._entries: list[tuple[dict, dict]] = []
        self._in_flight = 0

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def keep(self, entry: dict, verdict: dict) -> None:
        with self._lock:
            self._entries.append((entry, verdict))

    def dump(self, body: bytes, response: bytes, entry: dict) -> None:
        """Whole bodies, for debugging a driver by hand (never evidence: they hold prompts and keys)."""
        if self.dump_dir is None:
            return
        with self._lock:
            self._dumped += 1
            n = self._dumped
        stem = self.dump_dir / f"{n:04d}-{entry['method']}-{entry['path'].strip('/').replace('/', '_')}"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".request").write_bytes(body)
        stem.with_suffix(".response").write_bytes(response)

    def take(self, settle_s: float) -> list[tuple[dict, dict]]:
        """What was recorded, after waiting up to settle_s for requests still being relayed (a
        client has read its answer a moment before the proxy files the record)."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=settle_s)
            taken, self._entries = self._entries, []
        return taken


class RecordingProxy:
    """`with RecordingProxy(upstream_url) as proxy: ... proxy.base_url ... proxy.take()`"""

    def __init__(self, upstream: str, dump_dir: Path | None = None) -> None:
        self._server = _Server(upstream, dump_dir)
        self._thread = threading.Thread(target=self._server.serve_forever, name="contract-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "RecordingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self, settle_s: float = 5.0) -> tuple[list[dict], dict]:
        """(request shapes, {"checked", "failures"} summed over them) since the last take. A
        request a client left running (Open WebUI's helper requests) is filed with a later take."""
        taken = self._server.take(settle_s)
        failures = [f"{e['method']} {e['path']}: {f}" for e, v in taken for f in v["failures"]]
        return [e for e, _ in taken], {"checked": sum(v["checked"] for _, v in taken), "failures": failures[:50]}
