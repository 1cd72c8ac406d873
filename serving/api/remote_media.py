"""Fetch a remote image for a request, without letting the request reach inside the network.

Used only with --allow-remote-media. A URL given by a client is a request the
server makes on the client's behalf, so the host is resolved here and every
address it resolves to is checked: private, loopback, link-local, reserved,
multicast and unspecified addresses (and IPv6 forms that wrap them) are
refused. The connection is then pinned to the address that was checked, so a
second DNS answer cannot swap in another one. Redirects are followed by hand,
a few at most, each hop checked the same way. Every socket operation has a
timeout, the whole fetch a deadline, and the body a byte cap.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from typing import Callable
from urllib.parse import urljoin, urlsplit

from .errors import InvalidRequest, PayloadTooLarge

Resolver = Callable[[str, int], list[str]]
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 3
CHUNK = 64 * 1024


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def refusal(address: str) -> str | None:
    """Why a fetch may not go to this address, or None if it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        wrapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if wrapped is not None:
            inner = refusal(str(wrapped))
            if inner:
                return inner
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):  # most specific first
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


class _PinnedHTTP(http.client.HTTPConnection):
    """Speaks to `host` (Host header) at an address checked beforehand."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to a checked address, with the certificate verified for `host` (SNI too)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def pinned_connection(scheme: str, host: str, port: int, address: str, timeout: float):
    cls = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    return cls(host, port, address, timeout)


class RemoteFetcher:
    """GET one image URL under the policy above. `resolve` and `connect` are injectable for tests."""

    def __init__(self, *, timeout_s: float, max_bytes: int, resolve: Resolver = system_resolver,
                 connect=pinned_connection, max_redirects: int = MAX_REDIRECTS) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.resolve = resolve
        self.connect = connect
        self.max_redirects = max_redirects

    def fetch(self, url: str, *, param: str) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        for _ in range(self.max_redirects + 1):
            status, location, body = self._get(url, param=param, deadline=deadline)
            if status in REDIRECTS and location:
                url = urljoin(url, location)
                continue
            if status != 200:
                raise InvalidRequest(f"{param}: fetching the image URL gave HTTP {status}", param=param)
            return body
        raise InvalidRequest(f"{param}: the image URL redirected more than {self.max_redirects} times", param=param)

    def _target(self, url: str, *, param: str) -> tuple[str, str, int, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise InvalidRequest(f"{param}: image URLs must be http(s) or data: URLs, not {parts.scheme or 'none'}",
                                 param=param)
        if parts.username or parts.password:
            raise InvalidRequest(f"{param}: image URLs with credentials are not accepted", param=param)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequest(f"{param}: the image URL has an invalid port", param=param) from None
        if not parts.hostname:
            raise InvalidRequest(f"{param}: the image URL has no host", param=param)
        path = parts.path or "/"
        return parts.scheme, parts.hostname, port, f"{path}?{parts.query}" if parts.query else path

    def _address(self, host: str, port: int, *, param: str) -> str:
        try:
            addresses = self.resolve(host, port)
        except (OSError, UnicodeError):
            raise InvalidRequest(f"{param}: the image URL's host {host!r} does not resolve", param=param) from None
        if not addresses:
            raise InvalidRequest(f"{param}: the image URL's host {host!r} does not resolve", param=param)
        for address in addresses:
            why = refusal(address)
            if why:
                raise InvalidRequest(f"{param}: the image URL's host {host!r} resolves to a refused address "
                                     f"({why}); remote media is fetched only from public addresses",
                                     param=param, code="remote_media_refused")
        return addresses[0]

    def _get(self, url: str, *, param: str, deadline: float) -> tuple[int, str | None, bytes]:
        scheme, host, port, path = self._target(url, param=param)
        address = self._address(host, port, param=param)
        left = deadline - time.monotonic()
        if left <= 0:
            raise InvalidRequest(f"{param}: fetching the image URL timed out", param=param)
        conn = None
        try:
            conn = self.connect(scheme, host, port, address, left)
            conn.request("GET", path, headers={"User-Agent": "mlx-proof", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, resp.getheader("Location"), b""
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise self._too_large(param)
            return 200, None, self._read(resp, param=param, deadline=deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise InvalidRequest(f"{param}: fetching the image URL failed: {type(exc).__name__}: {exc}",
                                 param=param) from None
        finally:
            if conn is not None:
                conn.close()

    def _read(self, resp, *, param: str, deadline: float) -> bytes:
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise InvalidRequest(f"{param}: fetching the image URL timed out", param=param)
            chunk = resp.read(CHUNK)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(param)

    def _too_large(self, param: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"{param}: the image is larger than this server's limit of {self.max_bytes} bytes "
                               "(--max-image-bytes)", param=param, code="image_too_large")
