# cython: language_level=3
"""OpenFlow framing at the byte level, compiled: the messages of a packed buffer, and a bundle around them.

The one implementation of both: dfflow.openflow.framing (the channel) and the packer's
own bundles (dfflow/_packer.pyx, through _packer.pxd's header writer) frame the same way.
"""
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcpy
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize

from dfflow._packer cimport (OFP_VERSION, OFPBCT_COMMIT_REQUEST, OFPBCT_OPEN_REQUEST, OFPT_BUNDLE_ADD_MESSAGE,
                             OFPT_BUNDLE_CONTROL, ONF_BCT_COMMIT_REQUEST, ONF_BCT_OPEN_REQUEST, ONF_ET_BUNDLE_ADD_MESSAGE,
                             ONF_ET_BUNDLE_CONTROL, _check_bundle_args, _check_xids, _write_onf_bundle_msg, be16, be32)

cdef enum:
    OFP_HEADER_LEN = 8
    OFP_MAX_MSG_LEN = 0xFFFF
    ONF_BUNDLE_ADD_LEN = 24   # OpenFlow 1.3: ONF's experimenter message (EXT-230)
    OF14_BUNDLE_ADD_LEN = 16  # OpenFlow 1.4+: OFPT_BUNDLE_ADD_MESSAGE
    ONF_BUNDLE_CTRL_LEN = 24  # OpenFlow 1.3: ONF's bundle control (no properties)
    OF14_BUNDLE_CTRL_LEN = 16  # OpenFlow 1.4+: OFPT_BUNDLE_CONTROL (no properties)


cdef inline uint32_t _ld32be(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline unsigned int _length(const unsigned char *p) noexcept nogil:
    return (<unsigned int>p[2] << 8) | p[3]


cdef Py_ssize_t _walk(const unsigned char *p, Py_ssize_t end, int version, Py_ssize_t wrap,
                      list frames) except -1:
    """The number of messages in end bytes; ValueError unless they are whole messages (of
    `version`, unless it is -1), each short enough to take a `wrap`-byte bundle-add header.
    Appends (offset, length, msg_type, xid) of each to `frames` unless it is None."""
    cdef Py_ssize_t off = 0, n = 0
    cdef unsigned int length
    while off < end:
        if end - off < OFP_HEADER_LEN:
            raise ValueError(f"truncated OpenFlow header at offset {off}")
        length = _length(p + off)
        if length < OFP_HEADER_LEN or off + length > end:
            raise ValueError(f"bad OpenFlow length {length} at offset {off}")
        if version >= 0 and p[off] != version:
            raise ValueError(f"OpenFlow version 0x{p[off]:02x} at offset {off}, expected 0x{version:02x}")
        if wrap + length > OFP_MAX_MSG_LEN:
            raise ValueError(f"message xid={_ld32be(p + off + 4)} ({length} bytes) too long to bundle")
        if frames is not None:
            frames.append((off, length, p[off + 1], _ld32be(p + off + 4)))
        off += length
        n += 1
    return n


def frames(buf, version=None):
    """``(offset, length, msg_type, xid)`` of each message of a packed buffer.

    Raises ValueError when the buffer is not a whole number of well-formed messages (or a
    message's version differs from ``version``).
    """
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        found = []
        _walk(<const unsigned char *>view.buf, view.len, -1 if version is None else version, 0, found)
        return found
    finally:
        PyBuffer_Release(&view)


cdef inline void _write_ctrl(unsigned char *p, int version, uint32_t xid, uint32_t bundle_id, bint commit,
                             uint16_t flags) noexcept nogil:
    """A bundle's open (or commit) request, without properties: ONF's (EXT-230) on OpenFlow 1.3,
    the standard OFPT_BUNDLE_CONTROL on 1.4+."""
    if version == OFP_VERSION:
        _write_onf_bundle_msg(p, ONF_BUNDLE_CTRL_LEN, xid, ONF_ET_BUNDLE_CONTROL, bundle_id,
                              ONF_BCT_COMMIT_REQUEST if commit else ONF_BCT_OPEN_REQUEST, flags)
    else:
        p[0] = <unsigned char>version
        p[1] = OFPT_BUNDLE_CONTROL
        be16(p + 2, OF14_BUNDLE_CTRL_LEN)
        be32(p + 4, xid)
        be32(p + 8, bundle_id)
        be16(p + 12, OFPBCT_COMMIT_REQUEST if commit else OFPBCT_OPEN_REQUEST)
        be16(p + 14, flags)


cdef void _changed(bytearray out, Py_ssize_t start, Py_ssize_t off) except *:
    """The buffer being wrapped changed since it was walked (another thread): its messages no longer
    fit what was sized. Nothing is appended."""
    PyByteArray_Resize(out, start)
    raise RuntimeError(f"the buffer changed while its messages were being wrapped (at byte {off})")


def wrap_bundle_adds(buf, int version, bundle_id, flags, bytearray out=None, open_xid=None, commit_xid=None):
    """Every message of a packed buffer wrapped into a bundle add; returns ``(out, xids)``.

    OpenFlow 1.3 gets the ONF extension's (EXT-230) framing, 1.4+ the standard one; each add
    carries its inner message's xid, as the spec requires. The adds are appended to ``out``
    (a new bytearray if None), after the bundle's open request if ``open_xid`` is given and
    before its commit request if ``commit_xid`` is (both byte-identical to os-ken's, without
    properties). Raises ValueError, with nothing appended, when the buffer is not whole
    messages of ``version``, a message is too long to bundle or an argument is out of range.
    """
    cdef Py_buffer view
    cdef const unsigned char *src
    cdef unsigned char *dst
    cdef Py_ssize_t total = 0, start, off, length, n, k = 0
    cdef uint32_t xid
    cdef Py_ssize_t hdr = ONF_BUNDLE_ADD_LEN if version == OFP_VERSION else OF14_BUNDLE_ADD_LEN
    cdef Py_ssize_t ctrl = ONF_BUNDLE_CTRL_LEN if version == OFP_VERSION else OF14_BUNDLE_CTRL_LEN
    cdef uint32_t bid, oxid = 0, cxid = 0
    cdef uint16_t fl
    _check_bundle_args(bundle_id, flags, "")
    bid = bundle_id
    fl = flags
    if open_xid is not None:
        oxid = _check_xids(open_xid, 1, "open_xid: ")
        total += ctrl
    if commit_xid is not None:
        cxid = _check_xids(commit_xid, 1, "commit_xid: ")
        total += ctrl
    if out is None:
        out = bytearray()
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        src = <const unsigned char *>view.buf
        n = _walk(src, view.len, version, hdr, None)
        start = len(out)
        PyByteArray_Resize(out, start + total + view.len + n * hdr)
        dst = <unsigned char *>PyByteArray_AS_STRING(out) + start
        if open_xid is not None:
            _write_ctrl(dst, version, oxid, bid, False, fl)
            dst += ctrl
        xids = []
        off = 0
        while off < view.len:
            length = _length(src + off)
            # walked and sized above: checked again, in case the buffer changed meanwhile (another thread)
            if length < OFP_HEADER_LEN or length > view.len - off or hdr + length > OFP_MAX_MSG_LEN or k == n:
                _changed(out, start, off)
            k += 1
            xid = _ld32be(src + off + 4)
            xids.append(xid)
            if version == OFP_VERSION:
                _write_onf_bundle_msg(dst, <uint16_t>(hdr + length), xid, ONF_ET_BUNDLE_ADD_MESSAGE, bid, 0, fl)
            else:
                dst[0] = <unsigned char>version
                dst[1] = OFPT_BUNDLE_ADD_MESSAGE
                be16(dst + 2, <uint16_t>(hdr + length))
                be32(dst + 4, xid)
                be32(dst + 8, bid)
                be16(dst + 12, 0)
                be16(dst + 14, fl)
            memcpy(dst + hdr, src + off, length)
            dst += hdr + length
            off += length
        if k != n:
            _changed(out, start, off)
        if commit_xid is not None:
            _write_ctrl(dst, version, cxid, bid, True, fl)
    finally:
        PyBuffer_Release(&view)
    return out, xids
