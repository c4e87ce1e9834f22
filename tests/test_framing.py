"""The compiled OpenFlow framing (dfflow._framing): bad buffers are refused whole, by offset or xid."""
import struct

import pytest

from dfflow.openflow import framing
from dfflow.openflow.protocol import OFP13, OFP14


def _msg(xid: int, length: int, version: int = OFP13) -> bytes:
    return struct.pack("!BBHI", version, 14, length, xid) + bytes(length - 8)


@pytest.mark.parametrize("version", [OFP13, OFP14])
def test_a_message_too_long_to_bundle_is_refused_and_nothing_is_appended(version):
    out = bytearray(b"kept")
    raw = _msg(5, 16, version) + _msg(6, 0xFFFF - 8, version)
    with pytest.raises(ValueError, match=r"message xid=6 \(65527 bytes\) too long to bundle"):
        framing.wrap_bundle_adds(raw, version, 1, 3, out=out)
    assert out == b"kept"
    wrapped, xids = framing.wrap_bundle_adds(_msg(5, 16, version), version, 1, 3, out=out)
    assert wrapped is out and xids == [5] and len(out) == 4 + (24 if version == OFP13 else 16) + 16


def test_a_truncated_or_foreign_buffer_is_refused_by_offset():
    raw = _msg(1, 16) + _msg(2, 24)
    assert [f[3] for f in framing.iter_frames(raw, OFP13)] == [1, 2]
    with pytest.raises(ValueError, match="bad OpenFlow length 24 at offset 16"):
        framing.wrap_bundle_adds(raw[:-1], OFP13, 1, 3)
    with pytest.raises(ValueError, match="truncated OpenFlow header at offset 16"):
        list(framing.iter_frames(raw[:20]))
    with pytest.raises(ValueError, match="OpenFlow version 0x04 at offset 0, expected 0x05"):
        framing.wrap_bundle_adds(raw, OFP14, 1, 3)
    with pytest.raises(ValueError, match="bundle_id"):
        framing.wrap_bundle_adds(raw, OFP13, -1, 3)


@pytest.mark.parametrize("version", [OFP13, OFP14])
def test_the_open_and_commit_framed_around_the_adds_are_the_ones_os_ken_writes(version):
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser, ofproto_v1_4, ofproto_v1_4_parser

    class Datapath:
        ofproto, ofproto_parser = ((ofproto_v1_3, ofproto_v1_3_parser) if version == OFP13
                                   else (ofproto_v1_4, ofproto_v1_4_parser))

    def ctrl(ctrl_type: int, xid: int) -> bytes:
        make = (ofproto_v1_3_parser.ONFBundleCtrlMsg if version == OFP13
                else ofproto_v1_4_parser.OFPBundleCtrlMsg)
        msg = make(Datapath, 7, ctrl_type, 3, [])
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)

    raw = _msg(5, 16, version) + _msg(6, 24, version)
    adds, _ = framing.wrap_bundle_adds(raw, version, 7, 3)
    framed, xids = framing.wrap_bundle_adds(raw, version, 7, 3, out=bytearray(b"kept"), open_xid=9,
                                            commit_xid=10)
    open_t, commit_t = ((ofproto_v1_3.ONF_BCT_OPEN_REQUEST, ofproto_v1_3.ONF_BCT_COMMIT_REQUEST) if version == OFP13
                        else (ofproto_v1_4.OFPBCT_OPEN_REQUEST, ofproto_v1_4.OFPBCT_COMMIT_REQUEST))
    assert framed == b"kept" + ctrl(open_t, 9) + adds + ctrl(commit_t, 10) and xids == [5, 6]
    assert framing.wrap_bundle_adds(raw, version, 7, 3, open_xid=9)[0] == ctrl(open_t, 9) + adds
    with pytest.raises(ValueError, match="commit_xid"):
        framing.wrap_bundle_adds(raw, version, 7, 3, commit_xid=1 << 32)
