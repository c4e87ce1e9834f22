# cython: language_level=3
"""dfflow's compiled core.

Address packing used by NB validation and by the flow compiler: MACs as uint64,
IPv4 addresses as uint32. Parsers are strict: anything but the canonical textual
forms raises ValueError, and the caller names the field.

The bulk OpenFlow packer (below): rows of a dfflow.flowbatch.FlowBatch to
OpenFlow 1.3 FLOW_MOD messages, plain or wrapped in an ONF bundle, in one buffer.
"""
from libc.stdint cimport uint32_t, uint64_t


cdef inline int _hexval(Py_UCS4 c):
    if c >= u'0' and c <= u'9':
        return <int>c - 48
    if c >= u'a' and c <= u'f':
        return <int>c - 87
    if c >= u'A' and c <= u'F':
        return <int>c - 55
    return -1


cpdef uint64_t mac_to_int(str mac) except? 0xFFFFFFFFFFFFFFFF:
    """'fa:16:3e:00:00:01' -> 0xfa163e000001 (six colon-separated hex pairs)."""
    cdef uint64_t value = 0
    cdef Py_ssize_t i
    cdef int hi, lo
    if len(mac) != 17:
        raise ValueError(f"not a MAC address: {mac!r}")
    for i in range(6):
        if i < 5 and mac[i * 3 + 2] != u':':
            raise ValueError(f"not a MAC address: {mac!r}")
        hi = _hexval(mac[i * 3])
        lo = _hexval(mac[i * 3 + 1])
        if hi < 0 or lo < 0:
            raise ValueError(f"not a MAC address: {mac!r}")
        value = (value << 8) | <uint64_t>(hi * 16 + lo)
    return value


cpdef str int_to_mac(uint64_t value):
    if value >> 48:
        raise ValueError(f"MAC value out of range: {value:#x}")
    return ":".join([f"{(value >> (40 - 8 * i)) & 0xff:02x}" for i in range(6)])


cpdef uint32_t ipv4_to_int(str ip) except? 0xFFFFFFFF:
    """'10.0.0.1' -> 0x0a000001 (dotted quad, no leading zeros, each 0..255)."""
    cdef uint32_t value = 0
    cdef uint32_t octet
    cdef int digits = 0, octets = 0
    cdef Py_UCS4 c
    for c in ip:
        if c == u'.':
            if digits == 0 or octets == 3:
                raise ValueError(f"not an IPv4 address: {ip!r}")
            value = (value << 8) | octet
            octets += 1
            digits = 0
        elif c >= u'0' and c <= u'9':
            if digits == 0:
                octet = 0
            elif octet == 0:
                raise ValueError(f"not an IPv4 address (leading zero): {ip!r}")
            octet = octet * 10 + (<uint32_t>c - 48)
            digits += 1
            if octet > 255:
                raise ValueError(f"not an IPv4 address: {ip!r}")
        else:
            raise ValueError(f"not an IPv4 address: {ip!r}")
    if digits == 0 or octets != 3:
        raise ValueError(f"not an IPv4 address: {ip!r}")
    return (value << 8) | octet


cpdef str int_to_ipv4(uint32_t value):
    return f"{value >> 24}.{(value >> 16) & 0xff}.{(value >> 8) & 0xff}.{value & 0xff}"


# =========================================================================== OpenFlow packer
#
# Packs rows of a FlowBatch (dfflow/flowbatch.py declares the numpy record; FlowLayout
# reads its column offsets once) into OpenFlow 1.3 FLOW_MOD messages, optionally wrapped
# in an ONF bundle (EXT-230): OPEN_REQUEST, one BUNDLE_ADD per FLOW_MOD, COMMIT_REQUEST.
#
# Every call runs two passes over the rows, both without the GIL: the first validates
# every row and sizes the output exactly, the second writes it. Nothing is produced when
# a row is bad: the first pass stops at the first bad value and a ValueError names the
# flow (row), the field and the value. The writer never writes past its output, even if
# the rows changed in between (another thread): it then raises RuntimeError. A row is at
# most MAX_ROW_BYTES (2.2 KB), far below OpenFlow's 64 KB message limit. The output is byte-identical to os-ken's
# OFPFlowMod(...).serialize() as built by dfflow.flows.Flow.to_osken (idle/hard timeout
# 0, buffer_id NO_BUFFER, out_port ANY, out_group ANY, flags 0; deletes carry cookie_mask
# ~0 and no instructions; instructions in the order apply-actions, write-metadata,
# goto-table).

from libc.stdint cimport uint16_t, int16_t, int64_t
import operator
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline void dff_be16(unsigned char *p, uint16_t v) { v = __builtin_bswap16(v); memcpy(p, &v, 2); }
    static inline void dff_be32(unsigned char *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
    static inline void dff_be64(unsigned char *p, uint64_t v) { v = __builtin_bswap64(v); memcpy(p, &v, 8); }
    static inline uint64_t dff_ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline void dff_st64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
    static inline uint16_t dff_ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline int dff_ctz64(uint64_t v) { return __builtin_ctzll(v); }
    static inline int dff_clz64(uint64_t v) { return __builtin_clzll(v); }
    /* GCC's IPA pure-const pass treats __builtin_prefetch as side-effect free and drops
       calls to (inlined later) functions that only prefetch; a volatile asm survives. */
    #if defined(__GNUC__) && defined(__x86_64__)
    #define dff_prefetch(p) __asm__ __volatile__("prefetcht0 %0" : : "m"(*(const char *)(p)))
    #define dff_prefetchw(p) __asm__ __volatile__("prefetchw %0" : : "m"(*(const char *)(p)))
    #else
    #define dff_prefetch(p) __builtin_prefetch((p), 0, 3)
    #define dff_prefetchw(p) __builtin_prefetch((p), 1, 3)
    #endif
    """
    void be16 "dff_be16"(unsigned char *p, uint16_t v) noexcept nogil
    void be32 "dff_be32"(unsigned char *p, uint32_t v) noexcept nogil
    void be64 "dff_be64"(unsigned char *p, uint64_t v) noexcept nogil
    uint64_t ld64 "dff_ld64"(const unsigned char *p) noexcept nogil
    void store64 "dff_st64"(unsigned char *p, uint64_t v) noexcept nogil
    uint16_t ld16 "dff_ld16"(const unsigned char *p) noexcept nogil
    int ctz64 "dff_ctz64"(uint64_t v) noexcept nogil
    int clz64 "dff_clz64"(uint64_t v) noexcept nogil
    void prefetch "dff_prefetch"(const void *p) noexcept nogil
    void prefetchw "dff_prefetchw"(const void *p) noexcept nogil

cdef enum:
    C_FLOW_MOD_FIXED_LEN = 48
    C_BUNDLE_CTRL_LEN = 24
    C_BUNDLE_ADD_HEADER_LEN = 24
    MAX_FIELDS = 64
    MAX_ACTION_SLOTS = 32
    # largest row: bundle add header + FLOW_MOD header + (4 + 64 fields * (4 + 2 * 8))
    # match padded + apply-actions header + 32 * 24-byte actions + write-metadata + goto
    MAX_ROW_BYTES = 24 + 48 + 1288 + 8 + 32 * 24 + 24 + 8
    OP_NONE = 0
    OP_OUTPUT = 1
    OP_SET_FIELD = 2
    OP_DEC_NW_TTL = 3
    OP_MOVE = 4

cdef enum ErrCode:
    E_OK = 0
    E_COMMAND
    E_TABLE
    E_GOTO
    E_MATCH_BIT
    E_MASK_ABSENT
    E_NOT_MASKABLE
    E_MATCH_WIDE
    E_MATCH_RANGE
    E_MATCH_OFPORT
    E_MASK_WIDE
    E_VALUE_OUTSIDE_MASK
    E_N_ACTIONS
    E_OPCODE
    E_OUTPUT_PORT
    E_ACTION_FIELD
    E_SET_WIDE
    E_SET_RANGE
    E_SET_OFPORT
    E_MOVE_DST
    E_MOVE_NBITS
    E_ACTION_EXPERIMENTER

# OpenFlow 1.3 / ONF bundle constants (values as in os_ken.ofproto.ofproto_v1_3).
OFP_VERSION = 4
OFPT_EXPERIMENTER = 4
OFPT_FLOW_MOD = 14
ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_ET_BUNDLE_CONTROL = 2300
ONF_ET_BUNDLE_ADD_MESSAGE = 2301
ONF_BCT_OPEN_REQUEST = 0
ONF_BCT_CLOSE_REQUEST = 2
ONF_BCT_COMMIT_REQUEST = 4
ONF_BCT_DISCARD_REQUEST = 6
ONF_BF_ATOMIC = 1
ONF_BF_ORDERED = 2
FLOW_MOD_FIXED_LEN = C_FLOW_MOD_FIXED_LEN
BUNDLE_CTRL_LEN = C_BUNDLE_CTRL_LEN
BUNDLE_ADD_HEADER_LEN = C_BUNDLE_ADD_HEADER_LEN

cdef struct FieldC:
    uint32_t hdr        # OXM header of the unmasked field (length = nbytes, + 4 for an experimenter's)
    uint32_t experimenter  # an experimenter field's (class 0xffff) experimenter id, after the header
    uint32_t extra      # 4 for an experimenter field (its id), else 0
    uint32_t nbytes
    uint32_t bits
    uint32_t maskable
    uint32_t ofport     # values must be valid OpenFlow port numbers
    uint64_t limit      # largest value allowed

cdef struct LayoutC:
    Py_ssize_t itemsize
    Py_ssize_t cookie, wmeta_value, wmeta_mask, present, masked
    Py_ssize_t priority, goto_, command, table, n_actions, has_wmeta
    Py_ssize_t mvalue, mmask, actions
    Py_ssize_t a_size, a_op, a_field, a_dst, a_arg, a_value
    Py_ssize_t max_row  # bytes one row can take at most (bundle add included)
    uint64_t all_fields # bitmap of the declared fields
    uint32_t commands   # bitmap of accepted FLOW_MOD commands
    int nfields
    int max_actions
    FieldC f[MAX_FIELDS]

cdef struct Err:
    int code
    Py_ssize_t row
    int field
    int action
    uint64_t value
    uint64_t extra


cdef class FlowLayout:
    """Where each column of a flow-batch record lives, and the match-field table.

    Built once (dfflow.flowbatch.LAYOUT) from the numpy dtype and the field list in
    batch order: (name, oxm_class, oxm_field, bits, maskable, is_ofport, limit).
    """
    cdef LayoutC c
    cdef readonly object dtype
    cdef readonly tuple names

    def __init__(self, dtype, fields, int max_actions, commands=(0, 2, 3, 4)):
        cdef int i
        cdef Py_ssize_t mlen = 4
        if len(fields) > MAX_FIELDS:
            raise ValueError(f"at most {MAX_FIELDS} match fields, got {len(fields)}")
        if not 0 <= max_actions <= MAX_ACTION_SLOTS:
            raise ValueError(f"at most {MAX_ACTION_SLOTS} action slots, got {max_actions}")
        self.dtype = dtype
        self.names = tuple(f[0] for f in fields)
        self.c.itemsize = dtype.itemsize
        self.c.nfields = len(fields)
        self.c.max_actions = max_actions
        self.c.commands = 0
        for cmd in commands:
            if not 0 <= cmd < 32:
                raise ValueError(f"bad command {cmd}")
            self.c.commands |= 1u << cmd
        cols = dtype.fields

        def col(name, base, kind, shape=()):
            if name not in base:
                raise TypeError(f"flow record has no column {name!r}")
            dt, off = base[name][0], base[name][1]
            if dt.base.str != kind or dt.shape != shape:
                raise TypeError(f"flow record column {name!r} is {dt}, expected {kind}{shape or ''}")
            return off

        self.c.cookie = col("cookie", cols, "<u8")
        self.c.wmeta_value = col("wmeta_value", cols, "<u8")
        self.c.wmeta_mask = col("wmeta_mask", cols, "<u8")
        self.c.present = col("match_present", cols, "<u8")
        self.c.masked = col("match_masked", cols, "<u8")
        self.c.priority = col("priority", cols, "<u2")
        self.c.goto_ = col("goto", cols, "<i2")
        self.c.command = col("command", cols, "|u1")
        self.c.table = col("table", cols, "|u1")
        self.c.n_actions = col("n_actions", cols, "|u1")
        self.c.has_wmeta = col("has_wmeta", cols, "|u1")
        self.c.mvalue = col("match_value", cols, "<u8", (len(fields),))
        self.c.mmask = col("match_mask", cols, "<u8", (len(fields),))
        adt = cols["actions"][0]
        if adt.shape != (max_actions,) or adt.base.fields is None:
            raise TypeError(f"flow record column 'actions' is {adt}, expected {max_actions} action records")
        self.c.actions = cols["actions"][1]
        acols = adt.base.fields
        self.c.a_size = adt.base.itemsize
        self.c.a_op = col("op", acols, "|u1")
        self.c.a_field = col("field", acols, "|u1")
        self.c.a_dst = col("dst", acols, "|u1")
        self.c.a_arg = col("arg", acols, "<u2")
        self.c.a_value = col("value", acols, "<u8")
        for i, (name, oxm_class, oxm_field, bits, maskable, ofport, limit) in enumerate(fields):
            if bits % 8 or not 8 <= bits <= 64:
                raise ValueError(f"field {name!r}: {bits} bits is not a whole number of bytes (8..64)")
            if not 0 <= oxm_class <= 0xFFFF or not 0 <= oxm_field <= 0x7F:
                raise ValueError(f"field {name!r}: bad OXM class/field {oxm_class:#x}/{oxm_field}")
            self.c.f[i].nbytes = bits // 8
            self.c.f[i].bits = bits
            # class 0xffff: ONF's experimenter fields (OpenFlow 1.3 extensions such as tcp_flags)
            self.c.f[i].extra = 4 if oxm_class == 0xFFFF else 0
            self.c.f[i].experimenter = 0x4F4E4600 if oxm_class == 0xFFFF else 0
            self.c.f[i].hdr = ((<uint32_t>oxm_class << 16) | (<uint32_t>oxm_field << 9)
                               | <uint32_t>(bits // 8 + self.c.f[i].extra))
            self.c.f[i].maskable = bool(maskable)
            self.c.f[i].ofport = bool(ofport)
            if limit < 0 or (bits < 64 and limit >> bits):
                raise ValueError(f"field {name!r}: limit {limit:#x} wider than {bits} bits")
            self.c.f[i].limit = limit
            mlen += 4 + self.c.f[i].extra + 2 * (bits // 8)
        self.c.all_fields = (1 << len(fields)) - 1
        self.c.max_row = 24 + 48 + ((mlen + 7) & ~7) + 8 + 24 * max_actions + 24 + 8
        assert self.c.max_row <= MAX_ROW_BYTES

    def __repr__(self):
        return f"FlowLayout({len(self.names)} fields, itemsize {self.c.itemsize})"


cdef inline bint _valid_ofport(uint64_t port) noexcept nogil:
    # physical/logical ports 1..OFPP_MAX, or a reserved port IN_PORT..LOCAL (not ANY)
    return (port >= 1 and port <= 0xFFFFFF00ULL) or (port >= 0xFFFFFFF8ULL and port <= 0xFFFFFFFEULL)


cdef inline int _fail(Err *err, int code, Py_ssize_t row, int field, int action,
                      uint64_t value, uint64_t extra) noexcept nogil:
    err.code = code
    err.row = row
    err.field = field
    err.action = action
    err.value = value
    err.extra = extra
    return -1


cdef enum:
    PREFETCH_ROWS = 12  # how far ahead the used lines of a row are prefetched


cdef inline void _prefetch_rows(const LayoutC *L, const unsigned char *base, Py_ssize_t r,
                                Py_ssize_t stop) noexcept nogil:
    """Prefetch what row r+PREFETCH_ROWS uses, and the header of row r+2*PREFETCH_ROWS.

    Rows are big (one column per field) but a flow uses few of their cache lines; the
    header (fetched a round earlier) says which: the value/mask lines of its lowest and
    highest matched field and its used action slots.
    """
    cdef const unsigned char *nxt
    cdef uint64_t present, masked
    cdef unsigned int na
    if r + 2 * PREFETCH_ROWS < stop:
        nxt = base + (r + 2 * PREFETCH_ROWS) * L.itemsize
        prefetch(nxt)
        prefetch(nxt + L.has_wmeta)
    if r + PREFETCH_ROWS < stop:
        nxt = base + (r + PREFETCH_ROWS) * L.itemsize
        present = ld64(nxt + L.present)
        if present:
            prefetch(nxt + L.mvalue + 8 * ctz64(present))
            prefetch(nxt + L.mvalue + 8 * (63 - clz64(present)))
            masked = ld64(nxt + L.masked) & present
            if masked:
                prefetch(nxt + L.mmask + 8 * ctz64(masked))
                prefetch(nxt + L.mmask + 8 * (63 - clz64(masked)))
        na = nxt[L.n_actions]
        if na:
            if na > <unsigned int>L.max_actions:
                na = L.max_actions
            prefetch(nxt + L.actions)
            prefetch(nxt + L.actions + (na - 1) * L.a_size + L.a_size - 1)


cdef Py_ssize_t _check_rows(const LayoutC *L, const unsigned char *base, Py_ssize_t start,
                            Py_ssize_t stop, Err *err) noexcept nogil:
    """Validate rows start..stop-1; return the packed size of their FLOW_MODs, -1 on error."""
    cdef Py_ssize_t r, total = 0, size, mlen, alen
    cdef const unsigned char *rec
    cdef const unsigned char *a
    cdef const FieldC *F
    cdef const FieldC *G
    cdef uint64_t present, masked, bits, v, m
    cdef unsigned int cmd, table, na, k, op, fi, di, nb
    cdef int i, goto_
    cdef bint deleting
    for r in range(start, stop):
        _prefetch_rows(L, base, r, stop)
        rec = base + r * L.itemsize
        cmd = rec[L.command]
        if cmd >= 32 or not (L.commands >> cmd) & 1:
            return _fail(err, E_COMMAND, r, -1, -1, cmd, 0)
        deleting = cmd == 3 or cmd == 4
        table = rec[L.table]
        if table == 255 and not deleting:
            return _fail(err, E_TABLE, r, -1, -1, table, 0)
        present = ld64(rec + L.present)
        masked = ld64(rec + L.masked)
        if L.nfields < 64 and (present >> L.nfields):
            return _fail(err, E_MATCH_BIT, r, ctz64(present >> L.nfields) + L.nfields, -1, present, 0)
        if masked & ~present:
            return _fail(err, E_MASK_ABSENT, r, ctz64(masked & ~present), -1, 0, 0)
        mlen = 4
        bits = present
        while bits:
            i = ctz64(bits)
            bits &= bits - 1
            F = &L.f[i]
            v = ld64(rec + L.mvalue + 8 * i)
            if F.bits < 64 and (v >> F.bits):
                return _fail(err, E_MATCH_WIDE, r, i, -1, v, 0)
            if v > F.limit:
                return _fail(err, E_MATCH_RANGE, r, i, -1, v, F.limit)
            if (masked >> i) & 1:
                if not F.maskable:
                    return _fail(err, E_NOT_MASKABLE, r, i, -1, 0, 0)
                m = ld64(rec + L.mmask + 8 * i)
                if F.bits < 64 and (m >> F.bits):
                    return _fail(err, E_MASK_WIDE, r, i, -1, m, 0)
                if v & ~m:
                    return _fail(err, E_VALUE_OUTSIDE_MASK, r, i, -1, v, m)
                mlen += 4 + F.extra + 2 * F.nbytes
            else:
                if F.ofport and not _valid_ofport(v):
                    return _fail(err, E_MATCH_OFPORT, r, i, -1, v, 0)
                mlen += 4 + F.extra + F.nbytes
        size = C_FLOW_MOD_FIXED_LEN + ((mlen + 7) & ~7)
        if not deleting:
            na = rec[L.n_actions]
            if na > <unsigned int>L.max_actions:
                return _fail(err, E_N_ACTIONS, r, -1, -1, na, L.max_actions)
            if na:
                alen = 8
                for k in range(na):
                    a = rec + L.actions + k * L.a_size
                    op = a[L.a_op]
                    if op == OP_OUTPUT:
                        v = ld64(a + L.a_value)
                        if not _valid_ofport(v):
                            return _fail(err, E_OUTPUT_PORT, r, -1, k, v, 0)
                        alen += 16
                    elif op == OP_SET_FIELD:
                        fi = a[L.a_field]
                        if fi >= <unsigned int>L.nfields:
                            return _fail(err, E_ACTION_FIELD, r, -1, k, fi, 0)
                        F = &L.f[fi]
                        if F.extra:
                            return _fail(err, E_ACTION_EXPERIMENTER, r, fi, k, 0, 0)
                        v = ld64(a + L.a_value)
                        if F.bits < 64 and (v >> F.bits):
                            return _fail(err, E_SET_WIDE, r, fi, k, v, 0)
                        if v > F.limit:
                            return _fail(err, E_SET_RANGE, r, fi, k, v, F.limit)
                        if F.ofport and not _valid_ofport(v):
                            return _fail(err, E_SET_OFPORT, r, fi, k, v, 0)
                        alen += (8 + F.nbytes + 7) & ~7
                    elif op == OP_DEC_NW_TTL:
                        alen += 8
                    elif op == OP_MOVE:
                        fi = a[L.a_field]
                        di = a[L.a_dst]
                        if fi >= <unsigned int>L.nfields:
                            return _fail(err, E_ACTION_FIELD, r, -1, k, fi, 0)
                        if di >= <unsigned int>L.nfields:
                            return _fail(err, E_MOVE_DST, r, -1, k, di, 0)
                        nb = ld16(a + L.a_arg)
                        F = &L.f[fi]
                        G = &L.f[di]
                        if F.extra or G.extra:
                            return _fail(err, E_ACTION_EXPERIMENTER, r, fi if F.extra else di, k, 0, 0)
                        if nb < 1 or nb > F.bits or nb > G.bits:
                            return _fail(err, E_MOVE_NBITS, r, fi, k, nb, di)
                        alen += 24
                    else:
                        return _fail(err, E_OPCODE, r, -1, k, op, 0)
                size += alen
            if rec[L.has_wmeta]:
                size += 24
            goto_ = <int16_t>ld16(rec + L.goto_)
            if goto_ != -1:
                if goto_ < 0 or goto_ > 254 or <unsigned int>goto_ <= table:
                    return _fail(err, E_GOTO, r, -1, -1, <uint64_t><int64_t>goto_, table)
                size += 8
        total += size
    return total


cdef inline unsigned char *_put_value(unsigned char *p, uint64_t v, uint32_t nbytes) noexcept nogil:
    cdef uint32_t k
    if nbytes == 8:
        be64(p, v)
    elif nbytes == 6:
        be16(p, <uint16_t>(v >> 32))
        be32(p + 2, <uint32_t>v)
    elif nbytes == 4:
        be32(p, <uint32_t>v)
    elif nbytes == 2:
        be16(p, <uint16_t>v)
    elif nbytes == 1:
        p[0] = <unsigned char>v
    else:
        for k in range(nbytes):
            p[k] = <unsigned char>(v >> (8 * (nbytes - 1 - k)))
    return p + nbytes


cdef inline unsigned char *_pad8(unsigned char *start, unsigned char *p) noexcept nogil:
    while (p - start) & 7:
        p[0] = 0
        p += 1
    return p


cdef inline unsigned char *_write_bundle_ctrl(unsigned char *p, uint32_t xid, uint32_t bundle_id,
                                              uint16_t ctrl_type, uint16_t flags) noexcept nogil:
    p[0] = 4
    p[1] = 4                           # OFPT_EXPERIMENTER
    be16(p + 2, 24)
    be32(p + 4, xid)
    be32(p + 8, 0x4F4E4600U)
    be32(p + 12, 2300)
    be32(p + 16, bundle_id)
    be16(p + 20, ctrl_type)
    be16(p + 22, flags)
    return p + 24


cdef Py_ssize_t _write_rows(const LayoutC *L, const unsigned char *base, Py_ssize_t n,
                            unsigned char *out, Py_ssize_t room, uint32_t xid, bint bundle,
                            uint32_t bundle_id, uint16_t flags) noexcept nogil:
    """Write n validated rows as FLOW_MODs (xids xid, xid+1, ...) -- or as BUNDLE_ADDs
    around them -- into out[0:room]; return the bytes written.

    Never writes past ``room``, whatever the rows hold: a row is written in place only
    when the room surely holds it (``L.max_row``), else into a scratch row first and
    copied if it fits; counts and indices are clamped to the layout. If the rows changed
    since they were validated and no longer fit, it stops and returns -1.

    The layout's offsets are copied into locals first: stores into the output go
    through `unsigned char *`, which may alias anything, so the compiler would
    otherwise reload every offset from *L after every store.
    """
    cdef Py_ssize_t itemsize = L.itemsize
    cdef Py_ssize_t o_cookie = L.cookie, o_wmv = L.wmeta_value, o_wmm = L.wmeta_mask
    cdef Py_ssize_t o_present = L.present, o_masked = L.masked, o_priority = L.priority
    cdef Py_ssize_t o_goto = L.goto_, o_command = L.command, o_table = L.table
    cdef Py_ssize_t o_nact = L.n_actions, o_hasw = L.has_wmeta, o_mvalue = L.mvalue, o_mmask = L.mmask
    cdef Py_ssize_t o_actions = L.actions, a_size = L.a_size, a_op = L.a_op, a_field = L.a_field
    cdef Py_ssize_t a_dst = L.a_dst, a_arg = L.a_arg, a_value = L.a_value
    cdef Py_ssize_t max_row = L.max_row
    cdef uint64_t all_fields = L.all_fields
    cdef unsigned int max_actions = L.max_actions
    cdef const FieldC *fields = &L.f[0]
    cdef const FieldC *F
    cdef unsigned char scratch[MAX_ROW_BYTES]
    cdef unsigned char *row
    cdef Py_ssize_t r, pos = 0, size
    cdef bint direct
    cdef const unsigned char *rec
    cdef const unsigned char *a
    cdef unsigned char *p
    cdef unsigned char *m
    cdef unsigned char *q
    cdef uint64_t present, masked, bits
    cdef uint32_t x = xid
    cdef unsigned int cmd, na, k, op, nbytes
    cdef int i
    cdef int16_t goto_
    cdef bint deleting
    for r in range(n):
        _prefetch_rows(L, base, r, n)
        rec = base + r * itemsize
        direct = room - pos >= max_row
        row = out + pos if direct else scratch
        if direct:
            prefetchw(row + 512)       # output lines ahead (a prefetch never faults)
        m = row + 24 if bundle else row
        cmd = rec[o_command]
        deleting = cmd == 3 or cmd == 4
        m[0] = 4
        m[1] = 14                      # OFPT_FLOW_MOD
        be32(m + 4, x)
        be64(m + 8, ld64(rec + o_cookie))
        be64(m + 16, 0xFFFFFFFFFFFFFFFFULL if deleting else 0)
        m[24] = rec[o_table]
        m[25] = <unsigned char>cmd
        be32(m + 26, 0)                # idle_timeout, hard_timeout
        be16(m + 30, ld16(rec + o_priority))
        be32(m + 32, 0xFFFFFFFFU)      # buffer_id: OFP_NO_BUFFER
        be32(m + 36, 0xFFFFFFFFU)      # out_port: OFPP_ANY
        be32(m + 40, 0xFFFFFFFFU)      # out_group: OFPG_ANY
        be32(m + 44, 0)                # flags, pad
        # match: OXM TLVs in bitmap order (= os-ken's order), padded to 8
        q = m + 48
        be16(q, 1)                     # OFPMT_OXM
        p = q + 4
        present = ld64(rec + o_present) & all_fields
        masked = ld64(rec + o_masked) & present
        bits = present
        while bits:
            i = ctz64(bits)
            bits &= bits - 1
            F = &fields[i]
            nbytes = F.nbytes
            if (masked >> i) & 1:
                be32(p, (F.hdr & 0xFFFFFF00U) | 0x100U | (2 * nbytes + F.extra))
            else:
                be32(p, F.hdr)
            p += 4
            if F.extra:
                be32(p, F.experimenter)
                p += 4
            p = _put_value(p, ld64(rec + o_mvalue + 8 * i), nbytes)
            if (masked >> i) & 1:
                p = _put_value(p, ld64(rec + o_mmask + 8 * i), nbytes)
        be16(q + 2, <uint16_t>(p - q))
        p = _pad8(m, p)
        if not deleting:
            na = rec[o_nact]
            if na > max_actions:
                na = max_actions
            if na:
                q = p
                be16(p, 4)             # OFPIT_APPLY_ACTIONS
                be32(p + 4, 0)
                p += 8
                for k in range(na):
                    a = rec + o_actions + k * a_size
                    op = a[a_op]
                    if op == OP_OUTPUT:
                        be32(p, 16)    # OFPAT_OUTPUT, len 16
                        be32(p + 4, <uint32_t>ld64(a + a_value))
                        be16(p + 8, ld16(a + a_arg))
                        be16(p + 10, 0)
                        be32(p + 12, 0)
                        p += 16
                    elif op == OP_SET_FIELD:
                        F = &fields[a[a_field] & (MAX_FIELDS - 1)]
                        nbytes = F.nbytes
                        be64(p + 8, 0)  # zero the padding the value may not cover
                        be16(p, 25)    # OFPAT_SET_FIELD
                        be16(p + 2, <uint16_t>((8 + nbytes + 7) & ~7U))
                        be32(p + 4, F.hdr)
                        _put_value(p + 8, ld64(a + a_value), nbytes)
                        p += (8 + nbytes + 7) & ~7U
                    elif op == OP_DEC_NW_TTL:
                        be32(p, (24U << 16) | 8U)  # OFPAT_DEC_NW_TTL, len 8
                        be32(p + 4, 0)
                        p += 8
                    else:              # OP_MOVE: Nicira NXAST_REG_MOVE
                        be32(p, 0xFFFF0018U)       # OFPAT_EXPERIMENTER, len 24
                        be32(p + 4, 0x00002320U)   # NX_VENDOR_ID
                        be16(p + 8, 6)             # NXAST_REG_MOVE
                        be16(p + 10, ld16(a + a_arg))
                        be32(p + 12, 0)            # src_ofs, dst_ofs
                        be32(p + 16, fields[a[a_field] & (MAX_FIELDS - 1)].hdr)
                        be32(p + 20, fields[a[a_dst] & (MAX_FIELDS - 1)].hdr)
                        p += 24
                be16(q + 2, <uint16_t>(p - q))
            if rec[o_hasw]:
                be32(p, (2U << 16) | 24U)  # OFPIT_WRITE_METADATA, len 24
                be32(p + 4, 0)
                be64(p + 8, ld64(rec + o_wmv))
                be64(p + 16, ld64(rec + o_wmm))
                p += 24
            goto_ = <int16_t>ld16(rec + o_goto)
            if goto_ != -1:
                be32(p, (1U << 16) | 8U)   # OFPIT_GOTO_TABLE, len 8
                be32(p + 4, <uint32_t>goto_ << 24)
                p += 8
        be16(m + 2, <uint16_t>(p - m))
        if bundle:
            row[0] = 4
            row[1] = 4                 # OFPT_EXPERIMENTER
            be16(row + 2, <uint16_t>(p - row))
            be32(row + 4, x)           # = the inner FLOW_MOD's xid, as EXT-230 requires
            be32(row + 8, 0x4F4E4600U)
            be32(row + 12, 2301)       # ONF_ET_BUNDLE_ADD_MESSAGE
            be32(row + 16, bundle_id)
            be16(row + 20, 0)
            be16(row + 22, flags)
        size = p - row
        if not direct:
            if size > room - pos:
                return -1
            memcpy(out + pos, scratch, size)
        pos += size
        x += 1
    return pos


# ------------------------------------------------------------------- Python-facing glue

_ERR_TEXT = {
    E_COMMAND: "command {value} is not a FLOW_MOD command dfflow sends ({extra_cmds})",
    E_TABLE: "table {value} out of range (0..254; 255 only for deletes)",
    E_GOTO: "goto {svalue} must name a later table than {extra} and at most 254",
    E_MATCH_BIT: "match_present bit {field} names no field (the layout has {nfields})",
    E_MASK_ABSENT: "match field {fname}: mask given but the field is not matched",
    E_NOT_MASKABLE: "match field {fname} cannot be masked",
    E_MATCH_WIDE: "match field {fname}: value {value:#x} is wider than {bits} bits",
    E_MATCH_RANGE: "match field {fname}: value {value:#x} out of range (max {extra:#x})",
    E_MATCH_OFPORT: "match field {fname}: {value:#x} is not a valid OpenFlow port",
    E_MASK_WIDE: "match field {fname}: mask {value:#x} is wider than {bits} bits",
    E_VALUE_OUTSIDE_MASK: "match field {fname}: value {value:#x} has bits outside mask {extra:#x}",
    E_N_ACTIONS: "n_actions {value} exceeds the {extra} action slots",
    E_OPCODE: "action {action}: unknown opcode {value}",
    E_OUTPUT_PORT: "action {action} output port {value:#x} is not a valid OpenFlow port",
    E_ACTION_FIELD: "action {action}: field index {value} names no field",
    E_SET_WIDE: "action {action} set_field {fname}: value {value:#x} is wider than {bits} bits",
    E_SET_RANGE: "action {action} set_field {fname}: value {value:#x} out of range (max {extra:#x})",
    E_SET_OFPORT: "action {action} set_field {fname}: {value:#x} is not a valid OpenFlow port",
    E_MOVE_DST: "action {action} move dst: field index {value} names no field",
    E_MOVE_NBITS: "action {action} move {fname} -> {dname}: n_bits {value} out of range "
                  "(1..{maxbits})",
    E_ACTION_EXPERIMENTER: "action {action}: {fname} is an experimenter field, which flows only match",
}


cdef object _error(FlowLayout layout, Err *err, str what):
    cdef int code = err.code
    names = layout.names
    f = err.field
    fname = repr(names[f]) if 0 <= f < len(names) else None
    dname = None
    maxbits = 0
    if code == E_MOVE_NBITS:
        dname = repr(names[err.extra])
        maxbits = min(layout.c.f[f].bits, layout.c.f[err.extra].bits)
    text = _ERR_TEXT[code].format(
        value=err.value, svalue=<int64_t>err.value, extra=err.extra, field=f, fname=fname, dname=dname,
        action=err.action, bits=layout.c.f[f].bits if 0 <= f < len(names) else 0, nfields=len(names),
        maxbits=maxbits,
        extra_cmds=", ".join(str(c) for c in range(32) if (layout.c.commands >> c) & 1))
    return ValueError(f"{what}flow {err.row}: {text}")


cdef class _Rows:
    """A batch's record buffer, held (numpy refuses to resize it meanwhile)."""
    cdef Py_buffer view
    cdef bint held
    cdef FlowLayout layout
    cdef const unsigned char *base
    cdef Py_ssize_t n

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


cdef _Rows _rows_of(batch):
    cdef _Rows rows = _Rows.__new__(_Rows)
    layout = getattr(batch, "layout", None)
    if not isinstance(layout, FlowLayout):
        raise TypeError(f"expected a FlowBatch, got {type(batch).__name__}")
    rows.layout = <FlowLayout>layout
    array = batch.array
    n = batch.n
    if array.dtype is not rows.layout.dtype and array.dtype != rows.layout.dtype:
        raise TypeError(f"batch array has dtype {array.dtype}, not the flow record")
    PyObject_GetBuffer(array, &rows.view, PyBUF_SIMPLE)
    rows.held = True
    if n < 0 or n * rows.layout.c.itemsize > rows.view.len:
        raise ValueError(f"batch claims {n} rows but its array holds {rows.view.len // rows.layout.c.itemsize}")
    rows.base = <const unsigned char *>rows.view.buf
    rows.n = n
    return rows


cdef Py_ssize_t _checked_size(_Rows rows, bint bundle, bint commit, str what) except -1:
    cdef Err err
    cdef Py_ssize_t size
    err.code = E_OK
    with nogil:
        size = _check_rows(&rows.layout.c, rows.base, 0, rows.n, &err)
    if size < 0:
        raise _error(rows.layout, &err, what)
    if bundle:
        if rows.n == 0:
            raise ValueError(f"{what}batch is empty: a bundle needs at least one flow")
        size += C_BUNDLE_CTRL_LEN * (2 if commit else 1) + C_BUNDLE_ADD_HEADER_LEN * rows.n
    return size


cdef uint32_t _check_xids(object xid_start, Py_ssize_t count, str what) except? 0:
    if not 0 <= xid_start <= 0xFFFFFFFF:
        raise ValueError(f"{what}xid_start {xid_start} out of range (0..0xffffffff)")
    if count and xid_start + count - 1 > 0xFFFFFFFF:
        raise ValueError(f"{what}xid_start {xid_start:#x} + {count} messages runs past xid 0xffffffff")
    return <uint32_t>xid_start


cdef _check_bundle_args(object bundle_id, object flags, str what):
    if not 0 <= bundle_id <= 0xFFFFFFFF:
        raise ValueError(f"{what}bundle_id {bundle_id} out of range (0..0xffffffff)")
    if not 0 <= flags <= 0xFFFF:
        raise ValueError(f"{what}bundle flags {flags} out of range (0..0xffff)")


def validate_flows(batch, Py_ssize_t start=0, stop=None):
    """Check rows start..stop-1 of a batch; raise ValueError naming the flow and field."""
    cdef _Rows rows = _rows_of(batch)
    cdef Err err
    cdef Py_ssize_t size, end = rows.n if stop is None else stop
    if not 0 <= start <= end <= rows.n:
        raise IndexError(f"rows {start}..{end} outside the batch's {rows.n}")
    err.code = E_OK
    with nogil:
        size = _check_rows(&rows.layout.c, rows.base, start, end, &err)
    if size < 0:
        raise _error(rows.layout, &err, "")


def packed_size(batch, bint bundle=False, bint commit=True):
    """Bytes pack_flow_mods (or pack_bundle with `bundle`) would produce; validates the batch."""
    return _checked_size(_rows_of(batch), bundle, commit, "")


cdef bytes _pack_bytes(_Rows rows, object xid_start, bint bundle, object bundle_id, object flags,
                       bint commit, str what):
    """Validate and size (pass 1), then write into a bytes object of exactly that size.

    Exact sizes also let the allocator hand back the same block call after call instead
    of fresh pages to fault in.
    """
    cdef Py_ssize_t n = rows.n, size, pos = 0, written = 0
    cdef uint32_t xid, bid = 0
    cdef uint16_t fl = 0
    cdef unsigned char *p
    if bundle:
        _check_bundle_args(bundle_id, flags, what)
        bid = bundle_id
        fl = flags
    size = _checked_size(rows, bundle, commit, what)
    xid = _check_xids(xid_start, n + ((2 if commit else 1) if bundle else 0), what)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = <unsigned char *>PyBytes_AS_STRING(out)
    with nogil:
        if bundle:
            _write_bundle_ctrl(p, xid, bid, 0, fl)
            pos = C_BUNDLE_CTRL_LEN
            xid += 1
        written = _write_rows(&rows.layout.c, rows.base, n, p + pos, size - pos, xid, bundle, bid, fl)
        if written >= 0:
            pos += written
            if bundle and commit and size - pos == C_BUNDLE_CTRL_LEN:
                _write_bundle_ctrl(p + pos, xid + <uint32_t>n, bid, 4, fl)
                pos += C_BUNDLE_CTRL_LEN
    if written < 0 or pos != size:
        raise RuntimeError(f"{what}the batch changed while it was being packed")
    return out


def pack_flow_mods(batch, xid_start):
    """All rows as OpenFlow 1.3 FLOW_MODs in one buffer, xids xid_start, xid_start+1, ..."""
    return _pack_bytes(_rows_of(batch), xid_start, False, 0, 0, False, "")


def pack_flow_mods_into(batch, xid_start, buffer, Py_ssize_t offset=0):
    """Like pack_flow_mods, written into a writable buffer at `offset`; returns the length.

    On a bad row, or when the buffer is too small, nothing is written.
    """
    cdef _Rows rows = _rows_of(batch)
    cdef Py_ssize_t size = _checked_size(rows, False, False, "")
    cdef uint32_t xid = _check_xids(xid_start, rows.n, "")
    cdef Py_buffer view
    cdef Py_ssize_t written
    cdef unsigned char *p
    PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
    try:
        if offset < 0 or offset + size > view.len:
            raise ValueError(f"buffer too small: {size} bytes needed at offset {offset}, "
                             f"{view.len} available")
        p = <unsigned char *>view.buf + offset
        with nogil:
            written = _write_rows(&rows.layout.c, rows.base, rows.n, p, size, xid, False, 0, 0)
        if written != size:
            raise RuntimeError("the batch changed while it was being packed")
    finally:
        PyBuffer_Release(&view)
    return size


def pack_bundle(batch, bundle_id, xid_start, flags=ONF_BF_ATOMIC | ONF_BF_ORDERED, bint commit=True):
    """One ONF bundle (OpenFlow 1.3, EXT-230): OPEN_REQUEST, a BUNDLE_ADD per FLOW_MOD, COMMIT_REQUEST.

    Byte-identical to os-ken's ONFBundleCtrlMsg / ONFBundleAddMsg (no properties).
    xids: open = xid_start, add i (and its inner FLOW_MOD, as EXT-230 requires) =
    xid_start + 1 + i, commit = xid_start + 1 + n.

    Open vSwitch 3.1 accepts these on an OpenFlow 1.3 connection (tests/test_packer.py,
    against a real ovs-vswitchd): it answers OPEN_REPLY and COMMIT_REPLY and applies the
    flows atomically. But it validates each message when it is *added*: a bad FLOW_MOD
    is answered with an OFPT_ERROR and left out of the bundle, and a COMMIT sent in the
    same write then applies the rest. For all-or-nothing, pack with ``commit=False``
    (the buffer stops after the adds), send it with a BARRIER_REQUEST, and only if no
    error came back send COMMIT, else DISCARD (pack_bundle_ctrl) -- what
    controller.ofchannel's Datapath.send_bundle does.
    """
    return _pack_bytes(_rows_of(batch), xid_start, True, bundle_id, flags, commit, "")


def pack_bundle_ctrl(bundle_id, ctrl_type, xid, flags=ONF_BF_ATOMIC | ONF_BF_ORDERED):
    """One ONF bundle control message (OPEN/CLOSE/COMMIT/DISCARD_REQUEST), 24 bytes."""
    _check_bundle_args(bundle_id, flags, "")
    if not 0 <= ctrl_type <= 0xFFFF:
        raise ValueError(f"bundle ctrl_type {ctrl_type} out of range (0..0xffff)")
    cdef uint32_t x = _check_xids(xid, 1, "")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, C_BUNDLE_CTRL_LEN)
    _write_bundle_ctrl(<unsigned char *>PyBytes_AS_STRING(out), x, bundle_id, ctrl_type, flags)
    return out


cdef list _per_batch(value, Py_ssize_t nb):
    """One int for every batch, or a sequence with one per batch."""
    try:
        return [operator.index(value)] * nb
    except TypeError:
        return [operator.index(v) for v in value]


def pack_many(batches, xid_starts, bundle_ids=None, flags=ONF_BF_ATOMIC | ONF_BF_ORDERED,
              bint commit=True):
    """Pack many batches (one per chassis) in one call; returns one buffer per batch.

    ``xid_starts``: one int for all, or one per batch. ``bundle_ids``: None for plain
    FLOW_MODs (as pack_flow_mods), else one int for all or one per batch (as pack_bundle).
    Each batch is validated then written while its rows are still in cache; an error
    names the batch, and nothing is returned.
    """
    cdef list rows_list = [_rows_of(b) for b in batches]
    cdef Py_ssize_t nb = len(rows_list), j
    cdef bint bundle = bundle_ids is not None
    xs = _per_batch(xid_starts, nb)
    if len(xs) != nb:
        raise ValueError(f"xid_starts: {len(xs)} values for {nb} batches")
    bs = _per_batch(bundle_ids, nb) if bundle else [0] * nb
    if len(bs) != nb:
        raise ValueError(f"bundle_ids: {len(bs)} values for {nb} batches")
    return [_pack_bytes(<_Rows>rows_list[j], xs[j], bundle, bs[j], flags, commit, f"batch {j}: ")
            for j in range(nb)]


# =================================================================== the port-flow compiler
#
# A port's flows are a program (controller.templates): entries, each a template made
# once, once per IPv4 address, once per floating IP or once per allowed address pair (a
# single address, or a prefix) of the port, when its facts hold.
# Here each entry is a prototype row (a FlowBatch row of the template with every param
# 0) and the byte offsets in that row where each param's value goes. Ports are typed
# columns (PORT_FIELDS, IPv4s, floating IPs); a transition says a port's role on one
# chassis before and after a change. For each transition the compiler makes the rows of
# both roles, diffs them (delete what no longer has its key, add what is new or
# different) and appends the result to the deletes and adds of its group (a chassis),
# without a Python object per flow. pack_groups then packs each group as one bundle.

from libc.string cimport memcmp
from libc.stdlib cimport malloc, free
from libc.stdint cimport int32_t, int64_t
from cpython.bytearray cimport PyByteArray_AsString

cdef enum:
    MAX_PATCHES = 24
    # params (controller.templates.Param)
    P_OBJECT = 0
    P_VNI = 1
    P_MAC = 2
    P_OFPORT = 3
    P_TUNNEL = 4
    P_COPY_TUNNEL = 5
    P_IP = 6
    P_FIP = 7
    P_FIP_MAC = 8
    P_FIXED_IP = 9
    P_EXT_VNI = 10
    P_ROUTER_MAC = 11
    P_COOKIE = 12
    P_PAIR_MAC = 13
    P_PAIR_IP = 14
    P_PAIR_MASK = 15
    N_PARAMS_C = 16
    # facts (controller.templates.Fact)
    F_LOCAL = 1 << 0
    F_REMOTE = 1 << 1
    F_GATED = 1 << 2
    F_OPEN = 1 << 3
    F_COPY = 1 << 4
    F_NO_COPY = 1 << 5
    F_PS_OFF = 1 << 6
    F_PS_MAC = 1 << 7
    F_PS_IPS = 1 << 8
    F_ROUTED = 1 << 9
    # port flags column
    PORT_SECURITY = 1
    PORT_ROUTED = 2
    ROLE_NONE = 0
    ROLE_LOCAL = 1
    ROLE_REMOTE = 2
    EACH_ONCE = 0
    EACH_PER_IP = 1
    EACH_PER_FIP = 2
    EACH_PER_PAIR_HOST = 3
    EACH_PER_PAIR_NET = 4

PARAM_NAMES = ("OBJECT", "VNI", "MAC", "OFPORT", "TUNNEL", "COPY_TUNNEL", "IP", "FIP", "FIP_MAC", "FIXED_IP",
               "EXT_VNI", "ROUTER_MAC", "COOKIE", "PAIR_MAC", "PAIR_IP", "PAIR_MASK")
FACT_BITS = {"LOCAL": F_LOCAL, "REMOTE": F_REMOTE, "GATED": F_GATED, "OPEN": F_OPEN, "COPY": F_COPY,
             "NO_COPY": F_NO_COPY, "PS_OFF": F_PS_OFF, "PS_MAC": F_PS_MAC, "PS_IPS": F_PS_IPS, "ROUTED": F_ROUTED}
PORT_FLAG_SECURITY = PORT_SECURITY
PORT_FLAG_ROUTED = PORT_ROUTED
ROLE_KINDS = {"none": ROLE_NONE, "local": ROLE_LOCAL, "remote": ROLE_REMOTE}
# The column tables' records: every column a little-endian uint64, in this order.
# A port's allowed address pairs are pairs[pair_start:...]: its pair_hosts single addresses, then
# its pair_nets prefixes.
PORT_FIELDS = ("object_hash", "vni", "mac", "flags", "ip_start", "ip_count", "fip_start", "fip_count",
               "pair_start", "pair_hosts", "pair_nets")
FIP_FIELDS = ("fip", "fip_mac", "fixed_ip", "ext_vni", "router_mac")
PAIR_FIELDS = ("mac", "ip", "mask")
ROLE_FIELDS = ("kind", "gated", "ofport", "tunnel", "copy_tunnel")
TRANSITION_FIELDS = ("port", "group") + tuple("old_" + f for f in ROLE_FIELDS) + tuple("new_" + f for f in ROLE_FIELDS)

cdef struct PortC:
    uint64_t object_hash, vni, mac, flags, ip_start, ip_count, fip_start, fip_count
    uint64_t pair_start, pair_hosts, pair_nets

cdef struct FipC:
    uint64_t fip, fip_mac, fixed_ip, ext_vni, router_mac

cdef struct PairC:
    uint64_t mac, ip, mask

cdef struct RoleC:
    uint64_t kind, gated, ofport, tunnel, copy_tunnel

cdef struct TransitionC:
    uint64_t port, group
    RoleC old
    RoleC new


cdef inline void _set_role(RoleC *role, Py_ssize_t chassis, uint64_t host, uint64_t ofport,
                           uint64_t tunnel) noexcept nogil:
    """The port's role on `chassis` when it lives on `host`: local with its VIF, or remote by a tunnel."""
    if host == <uint64_t>chassis:
        role.kind = ROLE_LOCAL
        role.ofport = ofport
    else:
        role.kind = ROLE_REMOTE
        role.tunnel = tunnel

cdef struct EntryC:
    uint64_t app_cookie     # app id << 56
    uint32_t when, each, addable, uses_location, n_patches
    uint32_t patch_off[MAX_PATCHES]
    uint32_t patch_param[MAX_PATCHES]

cdef enum CompileErr:
    C_OK = 0
    C_PORT_INDEX
    C_IP_RANGE
    C_FIP_RANGE
    C_PAIR_RANGE
    C_GROUP
    C_ROLE_KIND
    C_NOT_COMPILABLE

assert sizeof(PortC) == 8 * len(PORT_FIELDS) and sizeof(FipC) == 8 * len(FIP_FIELDS)
assert sizeof(PairC) == 8 * len(PAIR_FIELDS)
assert sizeof(TransitionC) == 8 * len(TRANSITION_FIELDS)


cdef class CompiledProgram:
    """Port-flow entries as prototype rows of a FlowLayout and where each param goes in them.

    Built by controller.compiler from controller.templates programs; `entries` is a
    sequence of (name, app_cookie, when, each, addable, uses_location, patches) with
    patches a sequence of (byte offset in the row, param index). A patch ORs the param's
    value into the (zero) 64-bit slot at its offset.
    """
    cdef FlowLayout layout
    cdef object protos
    cdef Py_buffer view
    cdef bint held
    cdef EntryC *entries
    cdef readonly int n
    cdef readonly tuple names

    def __cinit__(self):
        self.entries = NULL
        self.held = False

    def __init__(self, FlowLayout layout, protos, entries):
        cdef int i, k
        entries = list(entries)
        if protos.dtype != layout.dtype or len(protos) != len(entries):
            raise ValueError(f"protos: need {len(entries)} rows of the flow record, got {len(protos)} of {protos.dtype}")
        self.layout = layout
        self.protos = protos.copy()
        PyObject_GetBuffer(self.protos, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.n = len(entries)
        self.entries = <EntryC *>malloc(max(1, self.n) * sizeof(EntryC))
        if self.entries == NULL:
            raise MemoryError()
        names = []
        for i, (name, app_cookie, when, each, addable, uses_location, patches) in enumerate(entries):
            names.append(name)
            if len(patches) > MAX_PATCHES:
                raise ValueError(f"entry {name}: {len(patches)} params, at most {MAX_PATCHES}")
            if each not in (EACH_ONCE, EACH_PER_IP, EACH_PER_FIP, EACH_PER_PAIR_HOST, EACH_PER_PAIR_NET):
                raise ValueError(f"entry {name}: each {each} is not ONCE, PER_IP, PER_FIP, PER_PAIR_HOST or "
                                 f"PER_PAIR_NET")
            self.entries[i].app_cookie = app_cookie
            self.entries[i].when = when
            self.entries[i].each = each
            self.entries[i].addable = bool(addable)
            self.entries[i].uses_location = bool(uses_location)
            self.entries[i].n_patches = len(patches)
            for k, (offset, param) in enumerate(patches):
                if not 0 <= offset <= layout.c.itemsize - 8 or offset % 8:
                    raise ValueError(f"entry {name}: patch offset {offset} outside the row or unaligned")
                if not 0 <= param < N_PARAMS_C:
                    raise ValueError(f"entry {name}: param {param} out of range")
                self.entries[i].patch_off[k] = offset
                self.entries[i].patch_param[k] = param
        self.names = tuple(names)

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)
        free(self.entries)

    def __repr__(self):
        return f"CompiledProgram({self.n} entries)"


cdef struct ColumnsC:
    const PortC *ports
    Py_ssize_t nports
    const uint64_t *ips
    Py_ssize_t nips
    const FipC *fips
    Py_ssize_t nfips
    const PairC *pairs
    Py_ssize_t npairs


cdef inline uint32_t _facts(const PortC *p, const RoleC *r) noexcept nogil:
    cdef uint32_t f = F_LOCAL if r.kind == ROLE_LOCAL else F_REMOTE
    f |= F_GATED if r.gated else F_OPEN
    f |= F_COPY if r.copy_tunnel else F_NO_COPY
    if not (p.flags & PORT_SECURITY):
        f |= F_PS_OFF
    elif p.ip_count:
        f |= F_PS_IPS
    else:
        f |= F_PS_MAC
    if p.flags & PORT_ROUTED:
        f |= F_ROUTED
    return f


cdef Py_ssize_t _instances(const EntryC *entries, int nentries, const unsigned char *protos,
                           Py_ssize_t itemsize, const ColumnsC *C, const PortC *p, const RoleC *r,
                           bint only_location, unsigned char *out, int32_t *entry_of) noexcept nogil:
    """The rows of port p in role r (only the location-dependent ones with only_location);
    with out == NULL, just how many."""
    cdef uint32_t facts
    cdef uint64_t param[N_PARAMS_C]
    cdef Py_ssize_t count = 0, reps, j
    cdef int e, k
    cdef const EntryC *E
    cdef const FipC *fip
    cdef const PairC *pair
    cdef unsigned char *row
    if r.kind == ROLE_NONE:
        return 0
    facts = _facts(p, r)
    if out != NULL:
        param[P_OBJECT] = p.object_hash
        param[P_VNI] = p.vni
        param[P_MAC] = p.mac
        param[P_OFPORT] = r.ofport
        param[P_TUNNEL] = r.tunnel
        param[P_COPY_TUNNEL] = r.copy_tunnel
        param[P_IP] = 0
        param[P_FIP] = param[P_FIP_MAC] = param[P_FIXED_IP] = param[P_EXT_VNI] = param[P_ROUTER_MAC] = 0
        param[P_PAIR_MAC] = param[P_PAIR_IP] = param[P_PAIR_MASK] = 0
    for e in range(nentries):
        E = &entries[e]
        if E.when & ~facts:
            continue
        if only_location and not E.uses_location:
            continue
        if E.each == EACH_ONCE:
            reps = 1
        elif E.each == EACH_PER_IP:
            reps = p.ip_count
        elif E.each == EACH_PER_FIP:
            reps = p.fip_count
        elif E.each == EACH_PER_PAIR_HOST:
            reps = p.pair_hosts
        else:
            reps = p.pair_nets
        if out == NULL:
            count += reps
            continue
        param[P_COOKIE] = E.app_cookie | p.object_hash
        for j in range(reps):
            if E.each == EACH_PER_IP:
                param[P_IP] = C.ips[p.ip_start + j]
            elif E.each == EACH_PER_FIP:
                fip = &C.fips[p.fip_start + j]
                param[P_FIP] = fip.fip
                param[P_FIP_MAC] = fip.fip_mac
                param[P_FIXED_IP] = fip.fixed_ip
                param[P_EXT_VNI] = fip.ext_vni
                param[P_ROUTER_MAC] = fip.router_mac
            elif E.each == EACH_PER_PAIR_HOST or E.each == EACH_PER_PAIR_NET:
                pair = &C.pairs[p.pair_start + j + (p.pair_hosts if E.each == EACH_PER_PAIR_NET else 0)]
                param[P_PAIR_MAC] = pair.mac
                param[P_PAIR_IP] = pair.ip
                param[P_PAIR_MASK] = pair.mask
            row = out + count * itemsize
            memcpy(row, protos + e * itemsize, itemsize)
            for k in range(<int>E.n_patches):
                store64(row + E.patch_off[k], ld64(row + E.patch_off[k]) | param[E.patch_param[k]])
            entry_of[count] = e
            count += 1
    return count


cdef inline bint _same_key(const LayoutC *L, const unsigned char *a, const unsigned char *b) noexcept nogil:
    return (a[L.table] == b[L.table] and ld16(a + L.priority) == ld16(b + L.priority)
            and ld64(a + L.present) == ld64(b + L.present) and ld64(a + L.masked) == ld64(b + L.masked)
            and memcmp(a + L.mvalue, b + L.mvalue, 8 * L.nfields) == 0
            and memcmp(a + L.mmask, b + L.mmask, 8 * L.nfields) == 0)


cdef inline void _as_delete(const LayoutC *L, unsigned char *row) noexcept nogil:
    """A strict delete of the row's flow: its cookie, table, priority and match; no instructions."""
    row[L.command] = 4
    row[L.n_actions] = 0
    row[L.has_wmeta] = 0
    row[L.goto_] = 0xFF                # goto -1
    row[L.goto_ + 1] = 0xFF


cdef struct CompileOut:
    unsigned char *dels
    unsigned char *adds
    Py_ssize_t ndel, nadd
    int64_t *del_ends
    int64_t *add_ends
    int code
    Py_ssize_t where      # transition of the error
    uint64_t value


cdef inline bint _same_role(const RoleC *a, const RoleC *b) noexcept nogil:
    return (a.kind == b.kind and a.gated == b.gated and a.ofport == b.ofport and a.tunnel == b.tunnel
            and a.copy_tunnel == b.copy_tunnel)


cdef inline bint _only_location(const TransitionC *t) noexcept nogil:
    """Same facts on both sides: only the entries that use the location can differ."""
    return (t.old.kind == t.new.kind and t.old.gated == t.new.gated
            and (t.old.copy_tunnel != 0) == (t.new.copy_tunnel != 0))


cdef int _check_transitions(const ColumnsC *C, const TransitionC *T, Py_ssize_t nt, Py_ssize_t ngroups,
                            CompileOut *o) noexcept nogil:
    cdef Py_ssize_t t
    cdef const PortC *p
    cdef uint64_t group = 0
    for t in range(nt):
        o.where = t
        if T[t].port >= <uint64_t>C.nports:
            o.code = C_PORT_INDEX
            o.value = T[t].port
            return -1
        p = &C.ports[T[t].port]
        if p.ip_start > <uint64_t>C.nips or p.ip_count > <uint64_t>C.nips - p.ip_start:
            o.code = C_IP_RANGE
            o.value = T[t].port
            return -1
        if p.fip_start > <uint64_t>C.nfips or p.fip_count > <uint64_t>C.nfips - p.fip_start:
            o.code = C_FIP_RANGE
            o.value = T[t].port
            return -1
        if (p.pair_start > <uint64_t>C.npairs or p.pair_hosts > <uint64_t>C.npairs - p.pair_start
                or p.pair_nets > <uint64_t>C.npairs - p.pair_start - p.pair_hosts):
            o.code = C_PAIR_RANGE
            o.value = T[t].port
            return -1
        if T[t].group >= <uint64_t>ngroups or T[t].group < group:
            o.code = C_GROUP
            o.value = T[t].group
            return -1
        group = T[t].group
        if T[t].old.kind > ROLE_REMOTE or T[t].new.kind > ROLE_REMOTE:
            o.code = C_ROLE_KIND
            o.value = T[t].old.kind if T[t].old.kind > ROLE_REMOTE else T[t].new.kind
            return -1
    return 0


cdef int _compile(const LayoutC *L, const EntryC *entries, int nentries, const unsigned char *protos,
                  const ColumnsC *C, const TransitionC *T, Py_ssize_t nt, Py_ssize_t ngroups,
                  unsigned char *scratch_old, int32_t *ent_old, int32_t *ent_new,
                  CompileOut *o) noexcept nogil:
    """The new role's rows are made in place at the end of the adds, then the ones equal to an
    old row are squeezed out: most rows of a move are adds, so most are written once."""
    cdef Py_ssize_t itemsize = L.itemsize, t, i, j, nold, nnew, kept
    cdef Py_ssize_t g = 0
    cdef const TransitionC *tr
    cdef const PortC *p
    cdef bint only_location, found
    cdef const unsigned char *a
    cdef unsigned char *new_rows
    cdef unsigned char *b
    for t in range(nt):
        tr = &T[t]
        while g < <Py_ssize_t>tr.group:
            o.del_ends[g] = o.ndel
            o.add_ends[g] = o.nadd
            g += 1
        if _same_role(&tr.old, &tr.new):
            continue
        p = &C.ports[tr.port]
        only_location = _only_location(tr)
        new_rows = o.adds + o.nadd * itemsize
        nold = _instances(entries, nentries, protos, itemsize, C, p, &tr.old, only_location, scratch_old, ent_old)
        nnew = _instances(entries, nentries, protos, itemsize, C, p, &tr.new, only_location, new_rows, ent_new)
        for i in range(nold):
            a = scratch_old + i * itemsize
            found = False
            for j in range(nnew):
                if _same_key(L, a, new_rows + j * itemsize):
                    found = True
                    break
            if not found:
                memcpy(o.dels + o.ndel * itemsize, a, itemsize)
                _as_delete(L, o.dels + o.ndel * itemsize)
                o.ndel += 1
        kept = 0
        for j in range(nnew):
            b = new_rows + j * itemsize
            found = False
            if entries[ent_new[j]].addable:
                for i in range(nold):
                    if entries[ent_old[i]].addable and memcmp(scratch_old + i * itemsize, b, itemsize) == 0:
                        found = True
                        break
            if found:
                continue
            if not entries[ent_new[j]].addable:
                o.code = C_NOT_COMPILABLE
                o.where = t
                o.value = ent_new[j]
                return -1
            if kept != j:
                memcpy(new_rows + kept * itemsize, b, itemsize)
            kept += 1
        o.nadd += kept
    while g < ngroups:
        o.del_ends[g] = o.ndel
        o.add_ends[g] = o.nadd
        g += 1
    return 0


class NotCompilable(ValueError):
    """A change needs a flow the compiled path cannot make (a learn or resubmit action):
    the caller runs the Python program instead."""


cdef class _Buf:
    cdef Py_buffer view
    cdef bint held

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


cdef _Buf _buf(obj, Py_ssize_t record, str what):
    cdef _Buf b = _Buf.__new__(_Buf)
    if obj.dtype.itemsize != record or not obj.flags.c_contiguous:
        raise TypeError(f"{what}: expected a C-contiguous array of {record}-byte records, got {obj.dtype}")
    PyObject_GetBuffer(obj, &b.view, PyBUF_SIMPLE)
    b.held = True
    return b


def compile_transitions(CompiledProgram program, ports, ips, fips, transitions, Py_ssize_t n_groups=1,
                        workspace=None, pairs=None):
    """The flows that change, per group, when ports go from their old to their new role.

    ports: records of PORT_FIELDS; ips: uint64 IPv4s (ports[i] owns ips[ip_start:ip_start+ip_count]);
    fips: records of FIP_FIELDS; transitions: records of TRANSITION_FIELDS, sorted by group;
    pairs: records of PAIR_FIELDS (None: no port has allowed address pairs).
    Returns (deletes, adds, del_ends, add_ends): two arrays of the program's flow records
    (deletes as DELETE_STRICT) and, per group g, the end of its rows in each
    (group g's rows are [ends[g-1]:ends[g]]). Raises NotCompilable when an add needs a flow
    with actions the packer does not encode, ValueError naming the field for bad columns.

    workspace: a dict the call may keep its row arrays in and reuse next time (no fresh
    pages to fault in per call); the rows returned are then valid until the next call with it.
    """
    import numpy as np
    cdef ColumnsC C
    cdef Py_ssize_t itemsize = program.layout.c.itemsize, t, nt, total_old = 0, total_new = 0
    cdef Py_ssize_t max_old = 0, max_new = 0, k
    cdef CompileOut o
    cdef int rc
    cdef const TransitionC *T
    cdef const EntryC *E = program.entries
    cdef const unsigned char *protos = <const unsigned char *>program.view.buf
    if n_groups < 1:
        raise ValueError(f"n_groups: {n_groups}, at least 1")
    ips = np.ascontiguousarray(ips, dtype="<u8")
    if pairs is None:
        pairs = np.zeros(1, [(name, "<u8") for name in PAIR_FIELDS])
    cdef _Buf bp = _buf(ports, sizeof(PortC), "ports")
    cdef _Buf bi = _buf(ips, 8, "ips")
    cdef _Buf bf = _buf(fips, sizeof(FipC), "fips")
    cdef _Buf bt = _buf(transitions, sizeof(TransitionC), "transitions")
    cdef _Buf bpair = _buf(pairs, sizeof(PairC), "pairs")
    C.ports = <const PortC *>bp.view.buf
    C.nports = bp.view.len // sizeof(PortC)
    C.ips = <const uint64_t *>bi.view.buf
    C.nips = bi.view.len // 8
    C.fips = <const FipC *>bf.view.buf
    C.nfips = bf.view.len // sizeof(FipC)
    C.pairs = <const PairC *>bpair.view.buf
    C.npairs = bpair.view.len // sizeof(PairC)
    T = <const TransitionC *>bt.view.buf
    nt = bt.view.len // sizeof(TransitionC)
    o.code = C_OK
    if _check_transitions(&C, T, nt, n_groups, &o) < 0:
        raise _compile_error(program, &o)
    with nogil:
        for t in range(nt):
            if _same_role(&T[t].old, &T[t].new):
                continue
            k = _instances(E, program.n, protos, itemsize, &C, &C.ports[T[t].port], &T[t].old,
                           _only_location(&T[t]), NULL, NULL)
            total_old += k
            if k > max_old:
                max_old = k
            k = _instances(E, program.n, protos, itemsize, &C, &C.ports[T[t].port], &T[t].new,
                           _only_location(&T[t]), NULL, NULL)
            total_new += k
            if k > max_new:
                max_new = k
    ws = workspace if workspace is not None else {}
    # every byte of a used row is written (prototype copy), so no zeroing
    dels = _rows_room(ws, "deletes", total_old, program.layout.dtype)
    adds = _rows_room(ws, "adds", total_new, program.layout.dtype)
    del_ends = np.zeros(n_groups, np.int64)
    add_ends = np.zeros(n_groups, np.int64)
    cdef unsigned char *scratch = <unsigned char *>malloc((max_old + 1) * itemsize + (max_old + max_new + 2) * 4)
    if scratch == NULL:
        raise MemoryError()
    cdef int32_t *ent_old = <int32_t *>(scratch + (max_old + 1) * itemsize)
    cdef int32_t *ent_new = ent_old + max_old + 1
    cdef _Buf bd = _buf(dels, itemsize, "deletes")
    cdef _Buf ba = _buf(adds, itemsize, "adds")
    cdef _Buf bde = _buf(del_ends, 8, "del_ends")
    cdef _Buf bae = _buf(add_ends, 8, "add_ends")
    o.dels = <unsigned char *>bd.view.buf
    o.adds = <unsigned char *>ba.view.buf
    o.del_ends = <int64_t *>bde.view.buf
    o.add_ends = <int64_t *>bae.view.buf
    o.ndel = o.nadd = 0
    try:
        with nogil:
            rc = _compile(&program.layout.c, E, program.n, protos, &C, T, nt, n_groups,
                          scratch, ent_old, ent_new, &o)
    finally:
        free(scratch)
    if rc < 0:
        raise _compile_error(program, &o)
    return dels[:o.ndel], adds[:o.nadd], del_ends, add_ends


cdef object _rows_room(dict ws, str name, Py_ssize_t n, dtype):
    import numpy as np
    rows = ws.get(name)
    if rows is None or len(rows) < n or rows.dtype != dtype:
        rows = np.empty(max(1, n, 0 if rows is None else 2 * len(rows)), dtype)
        ws[name] = rows
    return rows


_COMPILE_ERR_TEXT = {
    C_PORT_INDEX: "port index {value} is not in the port table",
    C_IP_RANGE: "port {value}: ip_start/ip_count run past the IPv4 column",
    C_FIP_RANGE: "port {value}: fip_start/fip_count run past the floating-IP column",
    C_PAIR_RANGE: "port {value}: pair_start/pair_hosts/pair_nets run past the address-pair column",
    C_GROUP: "group {value}: groups must be sorted and below n_groups",
    C_ROLE_KIND: "role kind {value} is not none (0), local (1) or remote (2)",
}


cdef object _compile_error(CompiledProgram program, CompileOut *o):
    where = f"transition {o.where}: "
    if o.code == C_NOT_COMPILABLE:
        return NotCompilable(f"{where}{program.names[o.value]} has actions the compiled path does not encode")
    text = _COMPILE_ERR_TEXT.get(o.code, "compile error {code}")
    return ValueError(where + text.format(value=o.value, code=o.code))


cdef Py_ssize_t _groups_size(const LayoutC *L, const unsigned char *D, const unsigned char *A,
                             const int64_t *de, const int64_t *ae, Py_ssize_t ng, Py_ssize_t *n_messages,
                             Err *err, Py_ssize_t *bad_group) noexcept nogil:
    cdef Py_ssize_t g, d0 = 0, a0 = 0, n, w, total = 0
    for g in range(ng):
        bad_group[0] = g
        n = (de[g] - d0) + (ae[g] - a0)
        if n:
            w = _check_rows(L, D + d0 * L.itemsize, 0, de[g] - d0, err)
            if w < 0:
                return -1
            total += w
            w = _check_rows(L, A + a0 * L.itemsize, 0, ae[g] - a0, err)
            if w < 0:
                return -2
            total += w + 2 * C_BUNDLE_CTRL_LEN + C_BUNDLE_ADD_HEADER_LEN * n
            n_messages[0] += n + 2
        d0 = de[g]
        a0 = ae[g]
    return total


cdef Py_ssize_t _write_groups(const LayoutC *L, const unsigned char *D, const unsigned char *A,
                              const int64_t *de, const int64_t *ae, Py_ssize_t ng, unsigned char *p,
                              Py_ssize_t total, uint32_t xid, uint32_t bid, uint16_t fl,
                              int64_t *offsets) noexcept nogil:
    cdef Py_ssize_t g, d0 = 0, a0 = 0, pos = 0, w
    offsets[0] = 0
    for g in range(ng):
        if (de[g] - d0) + (ae[g] - a0):
            _write_bundle_ctrl(p + pos, xid, bid + <uint32_t>g, 0, fl)
            pos += C_BUNDLE_CTRL_LEN
            xid += 1
            w = _write_rows(L, D + d0 * L.itemsize, de[g] - d0, p + pos, total - pos, xid, 1, bid + <uint32_t>g, fl)
            if w < 0:
                return -1
            pos += w
            xid += <uint32_t>(de[g] - d0)
            w = _write_rows(L, A + a0 * L.itemsize, ae[g] - a0, p + pos, total - pos, xid, 1, bid + <uint32_t>g, fl)
            if w < 0:
                return -1
            pos += w
            xid += <uint32_t>(ae[g] - a0)
            _write_bundle_ctrl(p + pos, xid, bid + <uint32_t>g, 4, fl)
            pos += C_BUNDLE_CTRL_LEN
            xid += 1
        offsets[g + 1] = pos
        d0 = de[g]
        a0 = ae[g]
    return pos


def pack_groups(FlowLayout L, dels, adds, del_ends, add_ends, xid_start, bundle_id_start,
                flags=ONF_BF_ATOMIC | ONF_BF_ORDERED, bytearray out=None):
    """One ONF bundle per non-empty group (its deletes, then its adds) in one buffer.

    Returns (buffer, offsets): group g's bundle is buffer[offsets[g]:offsets[g+1]] (empty when the
    group changes nothing). xids run on from xid_start across the bundles; group g's bundle id is
    bundle_id_start + g. Every row is validated before a byte is written.

    With `out` (a bytearray kept between calls, grown when too small), the buffer is a
    memoryview of it (valid until it is reused) instead of new bytes.
    """
    import numpy as np
    cdef Py_ssize_t ng, g, total, n_messages = 0, bad = 0, written
    cdef Err err
    cdef uint32_t xid
    if dels.dtype != L.dtype or adds.dtype != L.dtype:
        raise TypeError(f"pack_groups: rows of {dels.dtype} / {adds.dtype}, not the layout's flow record")
    del_ends = np.ascontiguousarray(del_ends, dtype=np.int64)
    add_ends = np.ascontiguousarray(add_ends, dtype=np.int64)
    ng = len(del_ends)
    _check_bundle_args(bundle_id_start, flags, "")
    if len(add_ends) != ng:
        raise ValueError(f"add_ends: {len(add_ends)} groups, del_ends has {ng}")
    if ng and bundle_id_start + ng - 1 > 0xFFFFFFFF:
        raise ValueError(f"bundle_id_start {bundle_id_start:#x} + {ng} groups runs past 0xffffffff")
    cdef Py_ssize_t itemsize = L.c.itemsize
    cdef _Buf bd = _buf(np.ascontiguousarray(dels), itemsize, "deletes")
    cdef _Buf ba = _buf(np.ascontiguousarray(adds), itemsize, "adds")
    cdef _Buf bde = _buf(del_ends, 8, "del_ends")
    cdef _Buf bae = _buf(add_ends, 8, "add_ends")
    cdef const int64_t *de = <const int64_t *>bde.view.buf
    cdef const int64_t *ae = <const int64_t *>bae.view.buf
    for g in range(ng):
        if de[g] < (de[g - 1] if g else 0) or ae[g] < (ae[g - 1] if g else 0):
            raise ValueError(f"group {g}: ends must not decrease")
    if ng and (de[ng - 1] < 0 or ae[ng - 1] < 0 or de[ng - 1] * itemsize > bd.view.len
               or ae[ng - 1] * itemsize > ba.view.len):
        raise ValueError("del_ends/add_ends run past their rows")
    err.code = E_OK
    with nogil:
        total = _groups_size(&L.c, <const unsigned char *>bd.view.buf, <const unsigned char *>ba.view.buf,
                             de, ae, ng, &n_messages, &err, &bad)
    if total < 0:
        raise _error(L, &err, f"group {bad} {'deletes' if total == -1 else 'adds'}: ")
    xid = _check_xids(xid_start, n_messages, "")
    offsets = np.zeros(ng + 1, np.int64)
    cdef _Buf bo = _buf(offsets, 8, "offsets")
    cdef bytes fresh = None
    cdef unsigned char *p
    if out is None:
        fresh = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char *>PyBytes_AS_STRING(fresh)
    else:
        if len(out) < total:
            out.extend(bytes(total - len(out)))
        p = <unsigned char *>PyByteArray_AsString(out)
    cdef uint32_t bid = bundle_id_start
    cdef uint16_t fl = flags
    with nogil:
        written = _write_groups(&L.c, <const unsigned char *>bd.view.buf, <const unsigned char *>ba.view.buf,
                                de, ae, ng, p, total, xid, bid, fl, <int64_t *>bo.view.buf)
    if written != total:
        raise RuntimeError("the rows changed while they were being packed")
    return (fresh if out is None else memoryview(out)[:total]), offsets


def migration_transitions(ports, old_host, new_host, old_ofport, new_ofport, tunnels, Py_ssize_t n_chassis):
    """The transitions of ports migrating, on every chassis (grouped by chassis): on the source
    local -> remote, on the destination remote -> local, elsewhere remote (old) -> remote (new).

    ports, old_host, new_host, old_ofport, new_ofport: uint64 per moving port (the ofports of
    its VIF on the source and on the destination); tunnels: uint64 [n_chassis, n_chassis],
    tunnels[c, d] = the ofport on chassis c of its tunnel to chassis d.
    """
    import numpy as np
    cdef Py_ssize_t k, c, i, j
    cols = [np.ascontiguousarray(a, dtype=np.uint64) for a in (ports, old_host, new_host, old_ofport, new_ofport)]
    k = len(cols[0])
    if k == 0:
        raise ValueError("ports: empty change (no port to migrate)")
    for name, a in zip(("old_host", "new_host", "old_ofport", "new_ofport"), cols[1:]):
        if len(a) != k:
            raise ValueError(f"{name}: {len(a)} values for {k} ports")
    tunnels = np.ascontiguousarray(tunnels, dtype=np.uint64)
    if tunnels.shape != (n_chassis, n_chassis):
        raise ValueError(f"tunnels: shape {tunnels.shape}, expected ({n_chassis}, {n_chassis})")
    cdef const uint64_t[::1] P = cols[0]
    cdef const uint64_t[::1] OH = cols[1]
    cdef const uint64_t[::1] NH = cols[2]
    cdef const uint64_t[::1] OO = cols[3]
    cdef const uint64_t[::1] NO = cols[4]
    cdef const uint64_t[:, ::1] TUN = tunnels
    for i in range(k):
        if OH[i] >= <uint64_t>n_chassis or NH[i] >= <uint64_t>n_chassis:
            raise ValueError(f"old_host/new_host: port {i} names chassis outside 0..{n_chassis - 1}")
    out = np.zeros(n_chassis * k, [(name, "<u8") for name in TRANSITION_FIELDS])
    cdef _Buf bt = _buf(out, sizeof(TransitionC), "transitions")
    cdef TransitionC *T = <TransitionC *>bt.view.buf
    with nogil:
        j = 0
        for c in range(n_chassis):
            for i in range(k):
                T[j].port = P[i]
                T[j].group = c
                _set_role(&T[j].old, c, OH[i], OO[i], TUN[c, OH[i]])
                _set_role(&T[j].new, c, NH[i], NO[i], TUN[c, NH[i]])
                j += 1
    return out
