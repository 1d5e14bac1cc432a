"""A keyed, structure-aware fuzzer: well-formed frames of every message type, signed with the peer
key (client types with an account credential), with boundary and random field values, sent to a
real cluster on loopback; then the honest nodes must be alive, converge and take orders
(``gossipbook fuzz``)."""

from .gen import FrameGen, Target
from .run import fuzz

__all__ = ["FrameGen", "Target", "fuzz"]
