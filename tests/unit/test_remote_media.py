"""The remote-image fetch policy, with a fake resolver and fake connections (no network)."""

from __future__ import annotations

import pytest

from serving.api.errors import InvalidRequest, PayloadTooLarge
from serving.api.remote_media import RemoteFetcher, refusal

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.8.8", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "100.64.0.1", "192.0.2.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
    "not-an-ip",
])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address):
    assert refusal(address) is not None


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert refusal(address) is None


class FakeResponse:
    def __init__(self, status=200, body=b"", headers=None, chunk=None):
        self.status = status
        self._body = body
        self._headers = headers or {}
        self._chunk = chunk

    def getheader(self, name, default=None):
        return self._headers.get(name, default)

    def read(self, n=-1):
        if self._chunk:
            n = min(n, self._chunk)
        out, self._body = self._body[:n], self._body[n:]
        return out


class FakeConnection:
    def __init__(self, response):
        self.response = response
        self.requests = []
        self.closed = False

    def request(self, method, path, headers=None):
        self.requests.append((method, path, headers))

    def getresponse(self):
        return self.response

    def close(self):
        self.closed = True


class Net:
    """A fake DNS and web: host -> addresses, (host, path) -> response."""

    def __init__(self, dns, pages):
        self.dns = dns
        self.pages = pages
        self.connections = []

    def resolve(self, host, port):
        if host not in self.dns:
            raise OSError("no such host")
        return self.dns[host]

    def connect(self, scheme, host, port, address, timeout):
        assert refusal(address) is None, "a refused address was connected to"
        conn = FakeConnection(self.pages[(host, scheme)])
        self.connections.append((scheme, host, port, address, conn))
        return conn


def fetcher(net, max_bytes=1000):
    return RemoteFetcher(timeout_s=5, max_bytes=max_bytes, resolve=net.resolve, connect=net.connect)


def test_a_public_host_is_fetched_through_the_checked_address_with_its_own_host_name():
    net = Net({"img.example": [PUBLIC]}, {("img.example", "https"): FakeResponse(body=b"PNGDATA")})
    assert fetcher(net).fetch("https://img.example/a.png?x=1", param="p") == b"PNGDATA"
    scheme, host, port, address, conn = net.connections[0]
    assert (scheme, host, port, address) == ("https", "img.example", 443, PUBLIC)
    assert conn.requests[0][:2] == ("GET", "/a.png?x=1") and conn.closed


@pytest.mark.parametrize("addresses", [["10.0.0.5"], [PUBLIC, "127.0.0.1"], ["169.254.169.254"], ["::1"]])
def test_a_host_resolving_to_any_private_address_is_refused_before_connecting(addresses):
    net = Net({"inside.example": addresses}, {})
    with pytest.raises(InvalidRequest) as err:
        fetcher(net).fetch("http://inside.example/x.png", param="messages.0.content.0.image_url")
    assert err.value.status == 400 and err.value.code == "remote_media_refused"
    assert "refused address" in err.value.message and err.value.param == "messages.0.content.0.image_url"
    assert net.connections == []


def test_a_literal_loopback_address_is_refused():
    net = Net({"127.0.0.1": ["127.0.0.1"]}, {})
    with pytest.raises(InvalidRequest, match="loopback"):
        fetcher(net).fetch("http://127.0.0.1:8000/admin", param="p")


def test_a_redirect_to_a_private_address_is_refused():
    net = Net({"public.example": [PUBLIC], "metadata.internal": ["169.254.169.254"]},
              {("public.example", "http"): FakeResponse(302, headers={"Location": "http://metadata.internal/latest"})})
    with pytest.raises(InvalidRequest, match="link-local"):
        fetcher(net).fetch("http://public.example/img", param="p")
    assert [c[1] for c in net.connections] == ["public.example"]


def test_redirects_are_followed_a_few_times_only():
    net = Net({"loop.example": [PUBLIC]},
              {("loop.example", "http"): FakeResponse(301, headers={"Location": "/again"})})
    with pytest.raises(InvalidRequest, match="redirected more than 3 times"):
        fetcher(net).fetch("http://loop.example/", param="p")
    assert len(net.connections) == 4


def test_a_relative_redirect_to_a_public_host_is_followed():
    pages = {("a.example", "http"): FakeResponse(302, headers={"Location": "https://b.example/img.png"}),
             ("b.example", "https"): FakeResponse(body=b"IMG")}
    net = Net({"a.example": [PUBLIC], "b.example": ["8.8.8.8"]}, pages)
    assert fetcher(net).fetch("http://a.example/", param="p") == b"IMG"
    assert net.connections[1][3] == "8.8.8.8"


def test_a_declared_length_over_the_cap_is_413_before_reading():
    net = Net({"big.example": [PUBLIC]},
              {("big.example", "http"): FakeResponse(body=b"x" * 10, headers={"Content-Length": "5000"})})
    with pytest.raises(PayloadTooLarge) as err:
        fetcher(net).fetch("http://big.example/", param="p")
    assert err.value.status == 413 and err.value.code == "image_too_large"


def test_a_body_over_the_cap_is_413_while_reading():
    net = Net({"big.example": [PUBLIC]}, {("big.example", "http"): FakeResponse(body=b"x" * 5000, chunk=100)})
    with pytest.raises(PayloadTooLarge):
        fetcher(net, max_bytes=1000).fetch("http://big.example/", param="p")


@pytest.mark.parametrize("url, needle", [
    ("ftp://x.example/a.png", "http(s)"),
    ("http://user:pw@x.example/a.png", "credentials"),
    ("http://x.example:99999/a.png", "port"),
    ("http:///a.png", "no host"),
    ("http://nowhere.example/a.png", "does not resolve"),
])
def test_bad_urls_are_400(url, needle):
    net = Net({"x.example": [PUBLIC]}, {("x.example", "http"): FakeResponse(body=b"ok")})
    with pytest.raises(InvalidRequest, match=needle.replace("(", r"\(").replace(")", r"\)")):
        fetcher(net).fetch(url, param="p")


def test_an_http_error_status_is_400():
    net = Net({"x.example": [PUBLIC]}, {("x.example", "http"): FakeResponse(404)})
    with pytest.raises(InvalidRequest, match="HTTP 404"):
        fetcher(net).fetch("http://x.example/missing.png", param="p")


def test_connection_failures_are_400():
    def refuse(*args):
        raise ConnectionRefusedError("refused")

    f = RemoteFetcher(timeout_s=5, max_bytes=10, resolve=lambda h, p: [PUBLIC], connect=refuse)
    with pytest.raises(InvalidRequest):
        f.fetch("http://x.example/a.png", param="p")
