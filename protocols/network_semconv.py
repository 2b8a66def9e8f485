"""The semconv network attributes every protocol's record carries: the two ends of the connection."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo


def add_peers(attrs: dict[str, AttrValue], conn: ConnInfo) -> None:
    """server.address/port and client.address/port, from the connection (not from any header)."""
    attrs["server.address"] = conn.server.ip
    attrs["server.port"] = conn.server.port
    attrs["client.address"] = conn.client.ip
    attrs["client.port"] = conn.client.port
