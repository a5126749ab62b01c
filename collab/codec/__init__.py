"""Feature codecs and the wire frame (quantization + entropy coding, self-describing).

No torch here: this is on the edge/cloud inference path.
"""

from __future__ import annotations

from collab.codec.frame import DEFAULT_MAX_BYTES, FrameHeader, decode, encode, peek
from collab.codec.spec import DEFAULT_CODEC, Codec

__all__ = [
    "DEFAULT_CODEC",
    "DEFAULT_MAX_BYTES",
    "Codec",
    "FrameHeader",
    "decode",
    "encode",
    "peek",
]
