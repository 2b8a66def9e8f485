"""Apache Kafka wire protocol: the clients' requests and the broker's responses, paired by correlation id.

Responses come back in request order on a connection (Kafka guarantees it), so the spec is `ordered`:
after lost bytes the loop drops the frames they answered, and `stitch` still checks every pair's
correlation id, so a lost response costs its own exchange and never shifts the pairing. No state needs
dropping on a gap: a response to a request not seen is framed by its size, named by nothing, and counted
unmatched.
"""

from __future__ import annotations

from protocols.base import ProtocolSpec
from protocols.kafka.parse import detect, find_boundary, parse_frame
from protocols.kafka.semconv import to_record
from protocols.kafka.stitch import stitch, take_unmatched
from protocols.kafka.types import Exchange, Frame, State

SPEC: ProtocolSpec[Frame, State, Exchange] = ProtocolSpec(
    name="kafka",
    detect=detect,
    new_state=State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    exchange_position=lambda x: x.request.position,
    take_unmatched=take_unmatched,
)

__all__ = ["SPEC", "Exchange", "Frame", "State"]
