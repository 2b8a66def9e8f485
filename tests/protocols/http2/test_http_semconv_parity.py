"""One HTTP semantic-conventions builder: the same request over HTTP/1.1 and HTTP/2 gives the same record
(attributes, metric attributes, span name, error.type), network.protocol.version aside."""

from __future__ import annotations

import pytest
from h2_traffic import Conversation, drive

from pipeline.red_metrics import metric_attributes
from protocols import http1, http2
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from tests.protocols.http1.conftest import REQ, RESP, Loop

SERVER, CLIENT = Endpoint("10.0.0.5", 8080), Endpoint("10.0.0.9", 51234)
CONNS = {
    Role.SERVER: ConnInfo("n/1/3/0", SERVER, CLIENT, Role.SERVER),
    Role.CLIENT: ConnInfo("n/2/4/0", CLIENT, SERVER, Role.CLIENT),
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# (method, target, authority, status, response body): known methods, WebDAV ones semconv does not know
# (the metric label must be _OTHER, never the method itself), a 4xx (an error only on the client), a 5xx.
CASES = [
    ("GET", "/users/42/orders?limit=5&token=abc", "shop.example.com:8443", 200, b"ok!"),
    ("GET", "/", "shop.example.com", 200, b""),
    ("PROPFIND", "/dav/files/9f86d081884c7d65", "[::1]:9000", 404, b"gone"),
    ("MKCOL", "/x/", "shop.example.com:8080", 201, b""),
    ("POST", "/boom", "10.0.0.5:8080", 503, b"busy"),
]


def _http1(method: str, target: str, authority: str, status: int, body: bytes, role: Role) -> L7Record:
    loop = Loop()
    loop.feed(REQ, (
        f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: curl/8.5\r\n"
        f"traceparent: {TRACEPARENT}\r\n\r\n"
    ).encode())  # fmt: skip
    loop.feed(RESP, b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
    [x] = loop.run()
    assert not loop.errors
    return http1.SPEC.to_record(x, CONNS[role])


def _http2(method: str, target: str, authority: str, status: int, body: bytes, role: Role) -> L7Record:
    c = Conversation()
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(sid, [
        (":method", method), (":scheme", "http"), (":path", target), (":authority", authority),
        ("user-agent", "curl/8.5"), ("traceparent", TRACEPARENT),
    ], end_stream=True)  # fmt: skip
    c.flush()
    c.server.send_headers(sid, [(":status", str(status))], end_stream=not body)
    if body:
        c.server.send_data(sid, body, end_stream=True)
    c.flush()
    out, _ = drive(c.chunks)
    [x] = out.exchanges
    return http2.SPEC.to_record(x, CONNS[role])


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=["server", "client"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] + " " + str(c[3]) for c in CASES])
def test_same_request_over_http1_and_http2_gives_the_same_record(case, role: Role) -> None:
    one, two = _http1(*case, role), _http2(*case, role)
    assert one.attributes.pop("network.protocol.version") == "1.1"
    assert two.attributes.pop("network.protocol.version") == "2"
    assert one.attributes == two.attributes
    assert one.metric_attributes == two.metric_attributes
    assert (one.protocol, one.name, one.metric, one.error_type) == (
        two.protocol, two.name, two.metric, two.error_type,
    )  # fmt: skip
    ids = (TRACEPARENT[3:35], TRACEPARENT[36:52])
    assert (one.trace_id, one.parent_span_id) == (two.trace_id, two.parent_span_id) == ids


def test_unknown_http2_method_is_other_in_attributes_and_metric_labels() -> None:
    """HTTP/2 used to put any :method into the metric label: one series per method a client invents."""
    rec = _http2("FOOBARBAZ", "/x", "shop.example.com:8080", 200, b"", Role.SERVER)
    assert rec.attributes["http.request.method"] == "_OTHER"
    assert rec.attributes["http.request.method_original"] == "FOOBARBAZ"
    assert metric_attributes(rec)["http.request.method"] == "_OTHER" and rec.name == "HTTP /x"


def test_http2_error_type_is_a_metric_attribute_and_4xx_errs_only_on_the_client() -> None:
    """HTTP/2's metric attributes used to leave error.type out (the spec: conditionally required)."""
    server = _http2("POST", "/boom", "api.test", 503, b"", Role.SERVER)
    assert server.error_type == "503" and metric_attributes(server)["error.type"] == "503"
    missing = [_http2("GET", "/nope", "api.test", 404, b"", role) for role in (Role.SERVER, Role.CLIENT)]
    assert missing[0].error_type is None and "error.type" not in missing[0].metric_attributes
    assert missing[1].error_type == "404" and metric_attributes(missing[1])["error.type"] == "404"


def test_server_address_and_port_come_from_the_authority_on_both_sides() -> None:
    """The spec: Host / :authority, its port or the scheme's default; the socket only when none was sent."""
    for role in (Role.SERVER, Role.CLIENT):
        for make in (_http1, _http2):
            a = make("GET", "/", "shop.example.com", 200, b"", role).attributes
            assert (a["server.address"], a["server.port"]) == ("shop.example.com", 80)
            a = make("GET", "/", "[::1]:9000", 200, b"", role).attributes
            assert (a["server.address"], a["server.port"]) == ("::1", 9000)
            assert (a["client.address"], a["client.port"]) == ("10.0.0.9", 51234)
    client = _http2("GET", "/a?b=1", "shop.example.com:8443", 200, b"", Role.CLIENT)
    assert client.attributes["url.full"] == "http://shop.example.com:8443/a?b=1"
    assert client.metric_attributes[-2:] == ("server.address", "server.port")
