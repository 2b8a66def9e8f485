"""The fragments topic's message key: both ends of a connection on one node meet in one partition."""

from __future__ import annotations

from kafka.partitioner.default import murmur2

from pipeline.conn_table import ConnTable
from pipeline.run import default_protocols
from probes.batcher import Batcher
from probes.fragment import ConnEvent, Fragment, Io
from probes.health import Health
from probes.publisher import fragments_key
from protocols.base import ConnInfo, Endpoint, Role
from tests.support.http_traffic import Exchange, both_ends, server_end

CLIENT = ConnInfo(
    "node-a/100/7/1", Endpoint("127.0.0.1", 41234), Endpoint("127.0.0.1", 8080), Role.CLIENT, pid=100,
    process="curl", node="node-a",
)  # fmt: skip
SERVER = ConnInfo(
    "node-a/200/12/1", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 41234), Role.SERVER, pid=200,
    process="nginx", node="node-a",
)  # fmt: skip


def partition(key: bytes, partitions: int) -> int:
    """The partition kafka-python's producer picks for `key` (murmur2, as the Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_both_ends_of_one_connection_on_a_node_get_one_key_and_partition() -> None:
    # Regression: keyed by conn_id (node/pid/fd/generation) the two ends differed, so two pipeline
    # replicas each saw one end and both counted the exchange.
    assert fragments_key(CLIENT) == fragments_key(SERVER) == b"node-a|127.0.0.1:41234|127.0.0.1:8080"
    for partitions in (2, 3, 6, 12, 64):
        assert partition(fragments_key(CLIENT), partitions) == partition(fragments_key(SERVER), partitions)


def test_ipv6_ends_share_the_key_too() -> None:
    client = ConnInfo("n/1/3/1", Endpoint("fd00::1", 50000), Endpoint("fd00::2", 443), Role.CLIENT, node="n")
    server = ConnInfo("n/2/9/1", Endpoint("fd00::2", 443), Endpoint("fd00::1", 50000), Role.SERVER, node="n")
    assert fragments_key(client) == fragments_key(server) == b"n|[fd00::1]:50000|[fd00::2]:443"


def test_other_connections_and_other_nodes_get_other_keys() -> None:
    next_conn = ConnInfo(
        "node-a/100/7/2", Endpoint("127.0.0.1", 41235), CLIENT.remote, Role.CLIENT, node="node-a"
    )
    elsewhere = ConnInfo("node-b/100/7/1", CLIENT.local, CLIENT.remote, Role.CLIENT, node="node-b")
    keys = {fragments_key(CLIENT), fragments_key(next_conn), fragments_key(elsewhere)}
    assert len(keys) == 3  # 127.0.0.1 on node-b is another host: its connection is another one


def test_a_connection_without_both_endpoints_is_keyed_by_its_id() -> None:
    unbound = ConnInfo("node-a/5/4/9", Endpoint("0.0.0.0", 0), Endpoint("10.0.0.2", 80), Role.CLIENT)
    no_port = ConnInfo("node-a/5/4/10", Endpoint("10.0.0.1", 0), Endpoint("10.0.0.2", 80), Role.CLIENT)
    no_peer = ConnInfo("node-a/5/4/11", Endpoint("10.0.0.1", 5), Endpoint("::", 80), Role.CLIENT)
    for conn in (unbound, no_port, no_peer):
        assert fragments_key(conn) == conn.conn_id.encode()


def test_every_batch_of_a_connection_carries_one_key_open_to_close() -> None:
    """Capture fixes a connection's ConnInfo at its first sighting; the batcher hands that same one
    to every batch, the close included, so one connection's bytes never go to two partitions."""
    batcher = Batcher()
    keys: list[bytes] = []
    events: list[list[Fragment | ConnEvent]] = [
        [ConnEvent(CLIENT, 1), Fragment(CLIENT.conn_id, Io.SEND, 0, 3, b"GET", 2)],
        [Fragment(CLIENT.conn_id, Io.RECV, 0, 4, b"HTTP", 3)],
        [ConnEvent(CLIENT, 4, closed=True, send_bytes=3, recv_bytes=4)],
    ]
    for drain in events:
        keys += [fragments_key(b.conn) for b in batcher.group(drain)]
    assert len(keys) == 3 and set(keys) == {fragments_key(CLIENT)}


def test_low_water_holds_for_either_end_sharing_a_partition() -> None:
    """Both ends now arrive on one partition: the offset committed there stays at the earliest message
    an unfinished end still needs, whichever end finished first (at-least-once holds)."""
    x = Exchange(CLIENT, "/a", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, 10, 20, False)  # fmt: skip
    (client_req, server_req), (server_resp, client_resp) = both_ends(x)
    assert server_req.conn == server_end(CLIENT)
    table = ConnTable(default_protocols(), Health())
    table.apply(client_req, partition=3, offset=100)
    table.apply(server_req, partition=3, offset=101)
    assert table.low_water(3) == 100
    assert len(table.apply(server_resp, partition=3, offset=102)) == 1  # the server's end finished
    assert table.low_water(3) == 100  # the client's end still needs offset 100
    assert len(table.apply(client_resp, partition=3, offset=103)) == 1
    assert table.low_water(3) is None
