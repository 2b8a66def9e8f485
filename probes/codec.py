"""Batch <-> the protobuf FragmentBatch on the wire (proto/fragments.proto)."""

from __future__ import annotations

from typing import cast

from google.protobuf.message import DecodeError

from probes.fragment import Batch, ConnEvent, Fragment, Io, Source
from proto import fragments_pb2 as pb
from protocols.base import ConnInfo, Endpoint, Role

SCHEMA_VERSION = 1


class BadBatch(ValueError):
    """A message on the fragments topic that is not a batch this version understands."""


def encode_role(role: Role) -> pb.Role:
    return cast("pb.Role", int(role))  # the same values (tests/proto); the stubs type enums as classes


def encode_conn(conn: ConnInfo) -> pb.Connection:
    return pb.Connection(
        conn_id=conn.conn_id,
        local=pb.Endpoint(ip=conn.local.ip, port=conn.local.port),
        remote=pb.Endpoint(ip=conn.remote.ip, port=conn.remote.port),
        role=encode_role(conn.role),
        role_inferred=conn.role_inferred,
        pid=conn.pid,
        process=conn.process,
        node=conn.node,
        container_id=conn.container_id,
        executable=conn.executable,
        service=conn.service,
        k8s_pod=conn.k8s_pod,
        k8s_namespace=conn.k8s_namespace,
        k8s_container=conn.k8s_container,
    )


def decode_conn(m: pb.Connection) -> ConnInfo:
    return ConnInfo(
        conn_id=m.conn_id,
        local=Endpoint(m.local.ip, m.local.port),
        remote=Endpoint(m.remote.ip, m.remote.port),
        role=Role(m.role) if m.role in (0, 1, 2) else Role.UNKNOWN,
        role_inferred=m.role_inferred,
        pid=m.pid,
        process=m.process,
        node=m.node,
        container_id=m.container_id,
        executable=m.executable,
        service=m.service,
        k8s_pod=m.k8s_pod,
        k8s_namespace=m.k8s_namespace,
        k8s_container=m.k8s_container,
    )


def encode_batch(batch: Batch) -> bytes:
    # Fragments as dicts into the constructor: measured ~40% cheaper per fragment than fragments.add().
    fragments = [{"io": f.io, "position": f.position, "length": f.length, "data": f.data, "ts_ns": f.ts_ns,
                  "tid": f.tid, "source": f.source} for f in batch.fragments]  # fmt: skip
    msg = pb.FragmentBatch(schema_version=SCHEMA_VERSION, connection=encode_conn(batch.conn),
                           fragments=fragments)  # fmt: skip
    if batch.closed is not None:
        c = batch.closed
        msg.closed.CopyFrom(pb.Closed(ts_ns=c.ts_ns, send_bytes=c.send_bytes, recv_bytes=c.recv_bytes))
    return msg.SerializeToString()


def decode_batch(value: bytes) -> Batch:
    msg = pb.FragmentBatch()
    try:
        msg.ParseFromString(value)
    except DecodeError as e:
        raise BadBatch(f"not a FragmentBatch: {e}") from None
    if msg.schema_version != SCHEMA_VERSION:
        raise BadBatch(f"schema_version {msg.schema_version}, expected {SCHEMA_VERSION}")
    conn = _cached_conn(msg.connection)
    cid = conn.conn_id
    try:
        fragments = [
            Fragment(cid, _IO[f.io], f.position, f.length, f.data, f.ts_ns, f.tid, _SOURCE[f.source])
            for f in msg.fragments
        ]
    except KeyError as e:
        raise BadBatch(f"bad fragment: unknown io or source {e}") from None
    closed = None
    if msg.HasField("closed"):
        c = msg.closed
        closed = ConnEvent(conn, c.ts_ns, closed=True, send_bytes=c.send_bytes, recv_bytes=c.recv_bytes)
    return Batch(conn, fragments, closed)


# Dict lookups: Io(x) / Source(x) cost ~1 us each per fragment; an unknown value is still a KeyError.
_IO = {int(v): v for v in Io}
_SOURCE = {int(v): v for v in Source}
_CONN_CACHE: dict[bytes, ConnInfo] = {}
_CONN_CACHE_MAX = 16384


def _cached_conn(m: pb.Connection) -> ConnInfo:
    """Every batch repeats its connection: decode each distinct one once (ConnInfo is immutable)."""
    key = m.SerializeToString()
    conn = _CONN_CACHE.get(key)
    if conn is None:
        if not m.conn_id:
            raise BadBatch("batch without a connection id")
        if len(_CONN_CACHE) >= _CONN_CACHE_MAX:  # bounded: start over rather than track recency
            _CONN_CACHE.clear()
        conn = _CONN_CACHE[key] = decode_conn(m)
    return conn
