"""The semconv network attributes every protocol's record carries: the two ends of the connection."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, Role


def add_peers(attrs: dict[str, AttrValue], conn: ConnInfo) -> None:
    """server.address/port and client.address/port, from the connection (not from any header)."""
    # ConnInfo.server/.client each test the role: once here instead of four times.
    server, client = (conn.local, conn.remote) if conn.role == Role.SERVER else (conn.remote, conn.local)
    attrs["server.address"] = server.ip
    attrs["server.port"] = server.port
    attrs["client.address"] = client.ip
    attrs["client.port"] = client.port
