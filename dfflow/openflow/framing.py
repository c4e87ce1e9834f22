"""OpenFlow at the byte level: frames of a packed buffer, bundle-add wrapping, HELLO, and xids."""
from __future__ import annotations

import struct
from typing import Iterator, Sequence

from os_ken.ofproto import ofproto_common, ofproto_v1_3, ofproto_v1_4

from dfflow.openflow.protocol import (OF14_BUNDLE_ADD, OFP13, OFP_HEADER, OFP_HEADER_LEN, OFP_MAX_MSG_LEN,
                                      OFPHET_VERSIONBITMAP, OFPT_EXPERIMENTER, OFPT_HELLO, ONF_BUNDLE_ADD)

XID_CHANNEL_MAX = 0x7FFFFFFF
XID_RAW_BASE = 0x80000000


def iter_frames(buf: bytes | bytearray | memoryview,
                version: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(offset, length, msg_type, xid)`` of each message of a packed buffer.

    Raises :class:`ValueError` when the buffer is not a whole number of well-formed
    messages (or a message's version differs from ``version``).
    """
    off, end = 0, len(buf)
    unpack = OFP_HEADER.unpack_from
    while off < end:
        if end - off < OFP_HEADER_LEN:
            raise ValueError(f"truncated OpenFlow header at offset {off}")
        ver, mtype, length, xid = unpack(buf, off)
        if length < OFP_HEADER_LEN or off + length > end:
            raise ValueError(f"bad OpenFlow length {length} at offset {off}")
        if version is not None and ver != version:
            raise ValueError(f"OpenFlow version 0x{ver:02x} at offset {off}, expected 0x{version:02x}")
        yield off, length, mtype, xid
        off += length


def wrap_bundle_adds(buf: bytes | bytearray | memoryview, version: int, bundle_id: int,
                     flags: int, out: bytearray | None = None) -> tuple[bytearray, list[int]]:
    """Wrap every message of a packed buffer into a bundle-add message.

    OpenFlow 1.3 gets the ONF extension (EXT-230) framing, 1.4+ the standard one; each
    add carries its inner message's xid, as the spec requires.  Returns the new buffer
    (``out``, appended to, if given) and the list of xids.
    """
    view = memoryview(buf)
    if out is None:
        out = bytearray()
    xids: list[int] = []
    onf = version == OFP13
    hdr = ONF_BUNDLE_ADD if onf else OF14_BUNDLE_ADD
    for off, length, _mtype, xid in iter_frames(view, version):
        total = hdr.size + length
        if total > OFP_MAX_MSG_LEN:
            raise ValueError(f"message xid={xid} ({length} bytes) too long to bundle")
        if onf:
            out += hdr.pack(version, OFPT_EXPERIMENTER, total, xid, ofproto_common.ONF_EXPERIMENTER_ID,
                            ofproto_v1_3.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, flags)
        else:
            out += hdr.pack(version, ofproto_v1_4.OFPT_BUNDLE_ADD_MESSAGE, total, xid, bundle_id, flags)
        out += view[off:off + length]
        xids.append(xid)
    return out, xids


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


class XidAllocator:
    """Hands out transaction ids from 1..XID_CHANNEL_MAX, in contiguous blocks if asked.

    xids at or above :data:`XID_RAW_BASE` are never allocated: a raw-buffer packer may use
    them freely.  After 2**31 - 1 ids the allocator wraps back to 1.
    """

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def alloc(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive xids and return the first."""
        if not 1 <= n <= XID_CHANNEL_MAX:
            raise ValueError(f"cannot allocate {n} xids")
        first = self._next
        if first + n - 1 > XID_CHANNEL_MAX:
            first = 1
        self._next = first + n
        return first
