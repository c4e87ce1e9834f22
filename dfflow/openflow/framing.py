"""OpenFlow at the byte level: frames of a packed buffer, bundle-add wrapping, HELLO, and xids."""
from __future__ import annotations

import struct
from typing import Iterator, Sequence

from dfflow import core
from dfflow.openflow.protocol import OFP_HEADER, OFP_HEADER_LEN, OFPHET_VERSIONBITMAP, OFPT_HELLO

XID_CHANNEL_MAX: int = core.XID_CHANNEL_MAX
XID_RAW_BASE = XID_CHANNEL_MAX + 1


def iter_frames(buf: bytes | bytearray | memoryview,
                version: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """``(offset, length, msg_type, xid)`` of each message of a packed buffer.

    Raises :class:`ValueError` when the buffer is not a whole number of well-formed
    messages (or a message's version differs from ``version``).
    """
    return iter(core.frames(buf, version))


# Every message of a packed buffer wrapped into a bundle add (ONF's on OpenFlow 1.3, the standard
# one on 1.4+), each carrying its inner message's xid: the compiled framing, which the packer's
# own bundles share.
wrap_bundle_adds = core.wrap_bundle_adds


def hello_frame(versions: Sequence[int], xid: int = 0) -> bytes:
    bitmap = 0
    for v in versions:
        bitmap |= 1 << v
    return (OFP_HEADER.pack(max(versions), OFPT_HELLO, 16, xid)
            + struct.pack("!HHI", OFPHET_VERSIONBITMAP, 8, bitmap))


def hello_versions(frame: bytes) -> set[int] | None:
    """Versions advertised by a HELLO's version bitmap element, or None if it has none."""
    off, end = OFP_HEADER_LEN, len(frame)
    while end - off >= 4:
        etype, elen = struct.unpack_from("!HH", frame, off)
        if elen < 4 or off + elen > end:
            return None
        if etype == OFPHET_VERSIONBITMAP:
            versions: set[int] = set()
            for i, (word,) in enumerate(struct.iter_unpack("!I", frame[off + 4:off + 4 + (elen - 4) // 4 * 4])):
                versions.update(32 * i + b for b in range(32) if word >> b & 1)
            return versions
        off += (elen + 7) // 8 * 8
    return None


# Hands out a channel's transaction ids (1..XID_CHANNEL_MAX, in blocks): compiled, so that the packer
# numbers a plan's messages from it without a Python call.
XidAllocator = core.XidAllocator
# Consecutive xids (a bundle's adds, numbered from one block), as PlanBundle.frame_bundle returns them.
XidBlock = core.XidBlock
