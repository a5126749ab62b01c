"""Feature codecs and the wire frame (quantization + entropy coding, self-describing).

No torch here: this is on the edge/cloud inference path.
"""

from __future__ import annotations

from collab.codec.frame import DEFAULT_MAX_BYTES, FrameHeader, decode, encode, peek
from collab.codec.spec import LOSSLESS_DEFAULT, Codec

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LOSSLESS_DEFAULT",
    "Codec",
    "FrameHeader",
    "decode",
    "encode",
    "peek",
]
