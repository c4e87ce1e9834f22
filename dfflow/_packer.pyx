# cython: language_level=3
"""dfflow's compiled OpenFlow packer.

Packs rows of a FlowBatch (dfflow/flowbatch.py declares the numpy record; FlowLayout
reads its column offsets once) into OpenFlow 1.3 FLOW_MOD messages, optionally wrapped
in an ONF bundle (EXT-230): OPEN_REQUEST, one BUNDLE_ADD per FLOW_MOD, COMMIT_REQUEST.

Every call runs two passes over the rows, both without the GIL: the first validates
every row and sizes the output exactly, the second writes it. Nothing is produced when
a row is bad: the first pass stops at the first bad value and a ValueError names the
flow (row), the field and the value. The writer never writes past its output, even if
the rows changed in between (another thread): it then raises RuntimeError. Both passes
read each value of a row once (rd8/rd16/rd64, volatile reads: the compiler may not load
it again), and the writer bounds again what it addresses with. A row is at
most MAX_ROW_BYTES (2.2 KB), far below OpenFlow's 64 KB message limit. The output is byte-identical to os-ken's
OFPFlowMod(...).serialize() as built by dfflow.flows.Flow.to_osken (idle/hard timeout
0, buffer_id NO_BUFFER, out_port ANY, out_group ANY, flags 0; deletes carry cookie_mask
~0 and no instructions; instructions in the order apply-actions, write-metadata,
goto-table).

Its C interface (the record layout, the row validator and writer, the OpenFlow numbers
and the bundle header writer) is declared in _packer.pxd, which the port-flow compiler
(dfflow/_core.pyx) and the framing (dfflow/_framing.pyx) cimport.

Longer than ~600 lines on purpose: the validator (pass 1) and the writer (pass 2) state the
same wire rules and change together, and both inline the same per-field and prefetch
helpers; in separate extensions those would become calls through function pointers in the
per-row loops `dfflow-bench pack` measures. The Python-facing calls are the thin rest, and
pack_messages / PlanBundle.frame_bundle: a plan's batches packed (and framed as one bundle) in one
call, the per-chassis cost `dfflow-bench compile` measures.
"""

from libc.stdint cimport uint16_t, uint32_t, uint64_t, int16_t, int64_t
from libc.string cimport memcpy
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE,
                               PyByteArray_Resize)

# The OpenFlow numbers the packer writes (declared in _packer.pxd), by os-ken's names;
# dfflow.openflow.protocol checks them against os-ken at import.
OPENFLOW = {
    "OFP_VERSION": OFP_VERSION, "OFPT_EXPERIMENTER": OFPT_EXPERIMENTER, "OFPT_FLOW_MOD": OFPT_FLOW_MOD,
    "OFPFC_DELETE": OFPFC_DELETE, "OFPFC_DELETE_STRICT": OFPFC_DELETE_STRICT, "OFPTT_ALL": OFPTT_ALL,
    "OFP_NO_BUFFER": OFP_NO_BUFFER, "OFPP_ANY": OFPP_ANY, "OFPG_ANY": OFPG_ANY, "OFPP_MAX": OFPP_MAX,
    "OFPP_IN_PORT": OFPP_IN_PORT, "OFPP_LOCAL": OFPP_LOCAL, "OFPMT_OXM": OFPMT_OXM,
    "OFPXMC_EXPERIMENTER": OFPXMC_EXPERIMENTER, "OFPIT_GOTO_TABLE": OFPIT_GOTO_TABLE,
    "OFPIT_WRITE_METADATA": OFPIT_WRITE_METADATA, "OFPIT_APPLY_ACTIONS": OFPIT_APPLY_ACTIONS,
    "OFPAT_OUTPUT": OFPAT_OUTPUT, "OFPAT_DEC_NW_TTL": OFPAT_DEC_NW_TTL, "OFPAT_SET_FIELD": OFPAT_SET_FIELD,
    "OFPAT_EXPERIMENTER": OFPAT_EXPERIMENTER, "ONF_EXPERIMENTER_ID": ONF_EXPERIMENTER_ID,
    "ONF_ET_BUNDLE_CONTROL": ONF_ET_BUNDLE_CONTROL, "ONF_ET_BUNDLE_ADD_MESSAGE": ONF_ET_BUNDLE_ADD_MESSAGE,
    "ONF_BCT_OPEN_REQUEST": ONF_BCT_OPEN_REQUEST, "ONF_BCT_CLOSE_REQUEST": ONF_BCT_CLOSE_REQUEST,
    "ONF_BCT_COMMIT_REQUEST": ONF_BCT_COMMIT_REQUEST, "ONF_BCT_DISCARD_REQUEST": ONF_BCT_DISCARD_REQUEST,
    "ONF_BF_ATOMIC": ONF_BF_ATOMIC, "ONF_BF_ORDERED": ONF_BF_ORDERED,
    "NX_EXPERIMENTER_ID": NX_EXPERIMENTER_ID, "NXAST_REG_MOVE": NXAST_REG_MOVE,
    "NXAST_CONJUNCTION": NXAST_CONJUNCTION, "NXAST_CT": NXAST_CT,
    "NXAST_RESUBMIT_TABLE": NXAST_RESUBMIT_TABLE, "NX_CT_F_COMMIT": NX_CT_F_COMMIT,
    # OpenFlow 1.4's
    "OFPT_BUNDLE_CONTROL": OFPT_BUNDLE_CONTROL, "OFPT_BUNDLE_ADD_MESSAGE": OFPT_BUNDLE_ADD_MESSAGE,
    "OFPBCT_OPEN_REQUEST": OFPBCT_OPEN_REQUEST, "OFPBCT_COMMIT_REQUEST": OFPBCT_COMMIT_REQUEST,
    "OFP_FLOW_MOD_SIZE": C_FLOW_MOD_FIXED_LEN + 8,  # + the match's header, padded
}
# The opcodes of a flow record's action slots (dfflow.flowbatch takes them from here).
ACTION_OPCODES = {"NONE": OP_NONE, "OUTPUT": OP_OUTPUT, "SET_FIELD": OP_SET_FIELD, "DEC_NW_TTL": OP_DEC_NW_TTL,
                  "MOVE": OP_MOVE, "CT": OP_CT, "CONJUNCTION": OP_CONJUNCTION, "RESUBMIT": OP_RESUBMIT}
FLOW_MOD_FIXED_LEN = C_FLOW_MOD_FIXED_LEN
BUNDLE_CTRL_LEN = C_BUNDLE_CTRL_LEN
BUNDLE_ADD_HEADER_LEN = C_BUNDLE_ADD_HEADER_LEN

cdef class FlowLayout:
    """Where each column of a flow-batch record lives, and the match-field table.

    Built once (dfflow.flowbatch.LAYOUT) from the numpy dtype and the field list in
    batch order, which must be OXM order: (name, oxm_class, oxm_field, bits, maskable, is_ofport, limit).
    """

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
        for i in range(1, len(fields)):
            if (fields[i][1], fields[i][2]) <= (fields[i - 1][1], fields[i - 1][2]):
                raise ValueError(f"field {fields[i][0]!r} does not come after {fields[i - 1][0]!r} in OXM order "
                                 "(class, field): the packer writes a match's fields in the layout's order")
        for i, (name, oxm_class, oxm_field, bits, maskable, ofport, limit) in enumerate(fields):
            if bits % 8 or not 8 <= bits <= 64:
                raise ValueError(f"field {name!r}: {bits} bits is not a whole number of bytes (8..64)")
            if not 0 <= oxm_class <= 0xFFFF or not 0 <= oxm_field <= 0x7F:
                raise ValueError(f"field {name!r}: bad OXM class/field {oxm_class:#x}/{oxm_field}")
            self.c.f[i].nbytes = bits // 8
            self.c.f[i].bits = bits
            # class 0xffff: ONF's experimenter fields (OpenFlow 1.3 extensions such as tcp_flags)
            self.c.f[i].extra = 4 if oxm_class == OFPXMC_EXPERIMENTER else 0
            self.c.f[i].experimenter = ONF_EXPERIMENTER_ID if oxm_class == OFPXMC_EXPERIMENTER else 0
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
    return (port >= 1 and port <= OFPP_MAX) or (port >= OFPP_IN_PORT and port <= OFPP_LOCAL)


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
    """Validate rows start..stop-1; return the packed size of their FLOW_MODs, -1 on error.

    Each value of a row is read once (rd8/rd16/rd64: another thread may be changing the rows), and
    what is checked is what the size and the table lookups use.
    """
    cdef Py_ssize_t r, total = 0, size, mlen, alen
    cdef const unsigned char *rec
    cdef const unsigned char *a
    cdef const FieldC *F
    cdef const FieldC *G
    cdef uint64_t present, masked, bits, v, m
    cdef unsigned int cmd, table, na, k, op, fi, di, nb, nconj, hasw, arg
    cdef int i, goto_
    cdef bint deleting
    for r in range(start, stop):
        _prefetch_rows(L, base, r, stop)
        rec = base + r * L.itemsize
        cmd = rd8(rec + L.command)
        if cmd >= 32 or not (L.commands >> cmd) & 1:
            return _fail(err, E_COMMAND, r, -1, -1, cmd, 0)
        deleting = cmd == OFPFC_DELETE or cmd == OFPFC_DELETE_STRICT
        table = rd8(rec + L.table)
        if table == OFPTT_ALL and not deleting:
            return _fail(err, E_TABLE, r, -1, -1, table, 0)
        present = rd64(rec + L.present)
        masked = rd64(rec + L.masked)
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
            v = rd64(rec + L.mvalue + 8 * i)
            if F.bits < 64 and (v >> F.bits):
                return _fail(err, E_MATCH_WIDE, r, i, -1, v, 0)
            if v > F.limit:
                return _fail(err, E_MATCH_RANGE, r, i, -1, v, F.limit)
            if (masked >> i) & 1:
                if not F.maskable:
                    return _fail(err, E_NOT_MASKABLE, r, i, -1, 0, 0)
                m = rd64(rec + L.mmask + 8 * i)
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
            na = rd8(rec + L.n_actions)
            hasw = rd8(rec + L.has_wmeta)
            goto_ = <int16_t>rd16(rec + L.goto_)
            if na > <unsigned int>L.max_actions:
                return _fail(err, E_N_ACTIONS, r, -1, -1, na, L.max_actions)
            if na:
                alen = 8
                nconj = 0
                for k in range(na):
                    a = rec + L.actions + k * L.a_size
                    op = rd8(a + L.a_op)
                    if op == OP_OUTPUT:
                        v = rd64(a + L.a_value)
                        if not _valid_ofport(v):
                            return _fail(err, E_OUTPUT_PORT, r, -1, k, v, 0)
                        alen += 16
                    elif op == OP_SET_FIELD:
                        fi = rd8(a + L.a_field)
                        if fi >= <unsigned int>L.nfields:
                            return _fail(err, E_ACTION_FIELD, r, -1, k, fi, 0)
                        F = &L.f[fi]
                        if F.extra:
                            return _fail(err, E_ACTION_EXPERIMENTER, r, fi, k, 0, 0)
                        v = rd64(a + L.a_value)
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
                        fi = rd8(a + L.a_field)
                        di = rd8(a + L.a_dst)
                        if fi >= <unsigned int>L.nfields:
                            return _fail(err, E_ACTION_FIELD, r, -1, k, fi, 0)
                        if di >= <unsigned int>L.nfields:
                            return _fail(err, E_MOVE_DST, r, -1, k, di, 0)
                        nb = rd16(a + L.a_arg)
                        F = &L.f[fi]
                        G = &L.f[di]
                        if F.extra or G.extra:
                            return _fail(err, E_ACTION_EXPERIMENTER, r, fi if F.extra else di, k, 0, 0)
                        if nb < 1 or nb > F.bits or nb > G.bits:
                            return _fail(err, E_MOVE_NBITS, r, fi, k, nb, di)
                        alen += 24
                    elif op == OP_CT:
                        v = rd64(a + L.a_value)
                        if v > 0xFFFF:
                            return _fail(err, E_CT_ZONE, r, -1, k, v, 0)
                        fi = rd8(a + L.a_field)
                        if fi > 1:
                            return _fail(err, E_CT_FLAGS, r, -1, k, fi, 0)
                        arg = rd16(a + L.a_arg)
                        if arg > 255:
                            return _fail(err, E_CT_TABLE, r, -1, k, arg, 0)
                        alen += 24
                    elif op == OP_CONJUNCTION:
                        nb = rd8(a + L.a_dst)
                        fi = rd8(a + L.a_field)
                        if nb < 2 or nb > 64 or fi < 1 or fi > nb:
                            return _fail(err, E_CONJ_CLAUSE, r, -1, k, fi, nb)
                        v = rd64(a + L.a_value)
                        if v > 0xFFFFFFFFULL:
                            return _fail(err, E_CONJ_ID, r, -1, k, v, 0)
                        nconj += 1
                        alen += 16
                    elif op == OP_RESUBMIT:
                        arg = rd16(a + L.a_arg)
                        if arg > 254:
                            return _fail(err, E_RESUBMIT_TABLE, r, -1, k, arg, 0)
                        alen += 16
                    else:
                        return _fail(err, E_OPCODE, r, -1, k, op, 0)
                if nconj and (nconj != na or hasw or goto_ != -1):
                    return _fail(err, E_CONJ_ALONE, r, -1, -1, 0, 0)
                size += alen
            if hasw:
                size += 24
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



cdef Py_ssize_t _write_rows(const LayoutC *L, const unsigned char *base, Py_ssize_t n,
                            unsigned char *out, Py_ssize_t room, uint32_t xid, bint bundle,
                            uint32_t bundle_id, uint16_t flags) noexcept nogil:
    """Write n validated rows as FLOW_MODs (xids xid, xid+1, ...) -- or as BUNDLE_ADDs
    around them -- into out[0:room]; return the bytes written.

    Never writes past ``room``, whatever the rows hold: a row is written in place only
    when the room surely holds it (``L.max_row``), else into a scratch row first and
    copied if it fits. It trusts nothing pass 1 checked, since the rows may have changed
    since (another thread): each value is read once (rd8/rd16/rd64) and what addresses
    anything is bounded again where it is used -- the match bitmap to the layout's fields,
    n_actions to its slots, a field index to the table, an unknown opcode written as the
    largest action -- so a row never takes more than ``L.max_row``. If the rows changed
    and no longer fit, it stops and returns -1.

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
        cmd = rd8(rec + o_command)
        deleting = cmd == OFPFC_DELETE or cmd == OFPFC_DELETE_STRICT
        m[0] = OFP_VERSION
        m[1] = OFPT_FLOW_MOD
        be32(m + 4, x)
        be64(m + 8, rd64(rec + o_cookie))
        be64(m + 16, 0xFFFFFFFFFFFFFFFFULL if deleting else 0)
        m[24] = <unsigned char>rd8(rec + o_table)
        m[25] = <unsigned char>cmd
        be32(m + 26, 0)                # idle_timeout, hard_timeout
        be16(m + 30, rd16(rec + o_priority))
        be32(m + 32, OFP_NO_BUFFER)    # buffer_id
        be32(m + 36, OFPP_ANY)         # out_port
        be32(m + 40, OFPG_ANY)         # out_group
        be32(m + 44, 0)                # flags, pad
        # match: OXM TLVs in bitmap order (= os-ken's order), padded to 8
        q = m + 48
        be16(q, OFPMT_OXM)
        p = q + 4
        present = rd64(rec + o_present) & all_fields
        masked = rd64(rec + o_masked) & present
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
            p = _put_value(p, rd64(rec + o_mvalue + 8 * i), nbytes)
            if (masked >> i) & 1:
                p = _put_value(p, rd64(rec + o_mmask + 8 * i), nbytes)
        be16(q + 2, <uint16_t>(p - q))
        p = _pad8(m, p)
        if not deleting:
            na = rd8(rec + o_nact)
            if na > max_actions:
                na = max_actions
            if na:
                q = p
                be16(p, OFPIT_APPLY_ACTIONS)
                be32(p + 4, 0)
                p += 8
                for k in range(na):
                    a = rec + o_actions + k * a_size
                    op = rd8(a + a_op)
                    if op == OP_OUTPUT:
                        be32(p, (OFPAT_OUTPUT << 16) | 16U)
                        be32(p + 4, <uint32_t>rd64(a + a_value))
                        be16(p + 8, rd16(a + a_arg))
                        be16(p + 10, 0)
                        be32(p + 12, 0)
                        p += 16
                    elif op == OP_SET_FIELD:
                        F = &fields[rd8(a + a_field) & (MAX_FIELDS - 1)]
                        nbytes = F.nbytes
                        be64(p + 8, 0)  # zero the padding the value may not cover
                        be16(p, OFPAT_SET_FIELD)
                        be16(p + 2, <uint16_t>((8 + nbytes + 7) & ~7U))
                        be32(p + 4, F.hdr)
                        _put_value(p + 8, rd64(a + a_value), nbytes)
                        p += (8 + nbytes + 7) & ~7U
                    elif op == OP_DEC_NW_TTL:
                        be32(p, (OFPAT_DEC_NW_TTL << 16) | 8U)
                        be32(p + 4, 0)
                        p += 8
                    elif op == OP_CT:  # Nicira NXAST_CT, zone immediate, no nested actions
                        be32(p, (OFPAT_EXPERIMENTER << 16) | 24U)
                        be32(p + 4, NX_EXPERIMENTER_ID)
                        be16(p + 8, NXAST_CT)
                        be16(p + 10, NX_CT_F_COMMIT if rd8(a + a_field) else 0)
                        be32(p + 12, 0)            # zone_src: none, the zone is immediate
                        be16(p + 16, <uint16_t>rd64(a + a_value))
                        p[18] = <unsigned char>rd16(a + a_arg)  # recirc_table (255: none)
                        p[19] = p[20] = p[21] = 0
                        be16(p + 22, 0)            # alg
                        p += 24
                    elif op == OP_CONJUNCTION:     # Nicira NXAST_CONJUNCTION, clauses from 0 on the wire
                        be32(p, (OFPAT_EXPERIMENTER << 16) | 16U)
                        be32(p + 4, NX_EXPERIMENTER_ID)
                        be16(p + 8, NXAST_CONJUNCTION)
                        p[10] = <unsigned char>(rd8(a + a_field) - 1)
                        p[11] = <unsigned char>rd8(a + a_dst)
                        be32(p + 12, <uint32_t>rd64(a + a_value))
                        p += 16
                    elif op == OP_RESUBMIT:        # Nicira NXAST_RESUBMIT_TABLE from the packet's in_port
                        be32(p, (OFPAT_EXPERIMENTER << 16) | 16U)
                        be32(p + 4, NX_EXPERIMENTER_ID)
                        be16(p + 8, NXAST_RESUBMIT_TABLE)
                        be16(p + 10, <uint16_t>OFPP_IN_PORT)
                        p[12] = <unsigned char>rd16(a + a_arg)
                        p[13] = p[14] = p[15] = 0
                        p += 16
                    else:              # OP_MOVE: Nicira's reg-move
                        be32(p, (OFPAT_EXPERIMENTER << 16) | 24U)
                        be32(p + 4, NX_EXPERIMENTER_ID)
                        be16(p + 8, NXAST_REG_MOVE)
                        be16(p + 10, rd16(a + a_arg))
                        be32(p + 12, 0)            # src_ofs, dst_ofs
                        be32(p + 16, fields[rd8(a + a_field) & (MAX_FIELDS - 1)].hdr)
                        be32(p + 20, fields[rd8(a + a_dst) & (MAX_FIELDS - 1)].hdr)
                        p += 24
                be16(q + 2, <uint16_t>(p - q))
            if rd8(rec + o_hasw):
                be32(p, (OFPIT_WRITE_METADATA << 16) | 24U)
                be32(p + 4, 0)
                be64(p + 8, rd64(rec + o_wmv))
                be64(p + 16, rd64(rec + o_wmm))
                p += 24
            goto_ = <int16_t>rd16(rec + o_goto)
            if goto_ != -1:
                be32(p, (OFPIT_GOTO_TABLE << 16) | 8U)
                be32(p + 4, <uint32_t>goto_ << 24)
                p += 8
        be16(m + 2, <uint16_t>(p - m))
        if bundle:                     # the add carries the inner FLOW_MOD's xid, as EXT-230 requires
            _write_onf_bundle_msg(row, <uint16_t>(p - row), x, ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, 0, flags)
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
    E_CT_ZONE: "action {action} ct zone {value} out of range (0..65535)",
    E_CT_FLAGS: "action {action} ct commit flag {value} is not 0 or 1",
    E_CT_TABLE: "action {action} ct table {value} out of range (0..255, 255: no recirculation)",
    E_CONJ_CLAUSE: "action {action} conjunction clause {value}/{extra}: need 1 <= clause <= n_clauses, "
                   "2 <= n_clauses <= 64",
    E_CONJ_ID: "action {action} conjunction id {value:#x} is wider than 32 bits",
    E_CONJ_ALONE: "a flow with conjunction actions has no other action, write-metadata or goto",
    E_RESUBMIT_TABLE: "action {action} resubmit table {value} out of range (0..254)",
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


@cython.freelist(16)
@cython.no_gc  # (it holds its layout, the buffer of its records and a numpy view of them: nothing leads back)
cdef class Rows:
    """Flow records as a batch the packer reads (``layout``, ``n``): rows the port-flow compiler made,
    over its output buffer with no numpy view unless one is read (``array``), or a FlowBatch's rows
    (held meanwhile: numpy refuses to resize them)."""

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"Rows(n={self.n})"

    @property
    def array(self):
        """The rows as a numpy array of the flow record (a view, made when first read)."""
        if self._array is None:
            global _np_frombuffer
            if _np_frombuffer is None:
                import numpy as np
                _np_frombuffer = np.frombuffer
            if self.n:
                self._array = _np_frombuffer(self.owner, self.layout.dtype, self.n, self.offset)
            else:
                self._array = _np_frombuffer(b"", self.layout.dtype, 0)
        return self._array

    @property
    def rows(self):
        """The same as ``array`` (a FlowBatch's name for its used rows)."""
        return self.array

    def flows(self):
        """The rows as dfflow.flows.Flow objects (status, reconcile, tests: never the hot path)."""
        from dfflow.flowbatch import FlowBatch  # (it imports this module: not at import time)
        return FlowBatch.of_rows(self.array).flows()


_np_frombuffer = None  # numpy's, once an array is read


cdef Rows rows_in(FlowLayout layout, bytearray owner, Py_ssize_t offset, Py_ssize_t n):
    """n rows of `layout` at byte `offset` of `owner`, a buffer its maker never resizes (not held)."""
    cdef Rows rows = Rows.__new__(Rows)
    rows.layout = layout
    rows.owner = owner
    rows.offset = offset
    rows.n = n
    rows.base = <const unsigned char *>PyByteArray_AS_STRING(owner) + offset
    return rows


cdef Rows _rows_of(batch):
    """A batch's rows: itself if it is Rows (or the compiler's ChangeRows), else a FlowBatch's array
    held for the call."""
    if isinstance(batch, Rows):
        return <Rows>batch
    cdef Rows rows = Rows.__new__(Rows)
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
    rows.owner = array
    if n < 0 or n * rows.layout.c.itemsize > rows.view.len:
        raise ValueError(f"batch claims {n} rows but its array holds {rows.view.len // rows.layout.c.itemsize}")
    rows.base = <const unsigned char *>rows.view.buf
    rows.n = n
    return rows


cdef Py_ssize_t _checked_size(Rows rows, bint bundle, bint commit, str what) except -1:
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
    cdef Rows rows = _rows_of(batch)
    cdef Err err
    cdef Py_ssize_t size, end = rows.n if stop is None else stop
    if not 0 <= start <= end <= rows.n:
        raise IndexError(f"rows {start}..{end} outside the batch's {rows.n}")
    err.code = E_OK
    with nogil:
        size = _check_rows(&rows.layout.c, rows.base, start, end, &err)
    if size < 0:
        raise _error(rows.layout, &err, "")


cdef bytes _pack_bytes(Rows rows, object xid_start, bint bundle, object bundle_id, object flags,
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
            _write_bundle_ctrl(p, xid, bid, ONF_BCT_OPEN_REQUEST, fl)
            pos = C_BUNDLE_CTRL_LEN
            xid += 1
        written = _write_rows(&rows.layout.c, rows.base, n, p + pos, size - pos, xid, bundle, bid, fl)
        if written >= 0:
            pos += written
            if bundle and commit and size - pos == C_BUNDLE_CTRL_LEN:
                _write_bundle_ctrl(p + pos, xid + <uint32_t>n, bid, ONF_BCT_COMMIT_REQUEST, fl)
                pos += C_BUNDLE_CTRL_LEN
    if written < 0 or pos != size:
        raise RuntimeError(f"{what}the batch changed while it was being packed")
    return out


def pack_flow_mods(batch, xid_start):
    """All rows as OpenFlow 1.3 FLOW_MODs in one buffer, xids xid_start, xid_start+1, ..."""
    return _pack_bytes(_rows_of(batch), xid_start, False, 0, 0, False, "")


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
    error came back send COMMIT, else DISCARD -- what
    dfflow.openflow's Datapath.send_bundle does.
    """
    return _pack_bytes(_rows_of(batch), xid_start, True, bundle_id, flags, commit, "")


def rows_with_action(batch, unsigned int op):
    """Indices of the rows whose first action slot holds opcode ``op``, in order (rows without
    actions have none): the rows a caller encodes another way before packing the rest."""
    cdef Rows rows = _rows_of(batch)
    cdef const LayoutC *L = &rows.layout.c
    cdef const unsigned char *rec
    cdef Py_ssize_t r
    found = []
    for r in range(rows.n):
        rec = rows.base + r * L.itemsize
        if rec[L.n_actions] and rec[L.actions + L.a_op] == op:
            found.append(r)
    return found





XID_CHANNEL_MAX = C_XID_CHANNEL_MAX


cdef class XidAllocator:
    """Hands out transaction ids from 1..XID_CHANNEL_MAX, in contiguous blocks if asked (a channel's:
    the packer numbers a plan's messages from one block, with no Python call).

    xids above XID_CHANNEL_MAX are never allocated: a raw-buffer packer may use them freely. After
    2**31 - 1 ids the allocator wraps back to 1 (a block never straddles the end).
    """
    def __init__(self, start=1):
        if not 1 <= start <= C_XID_CHANNEL_MAX:
            raise ValueError(f"xid start {start} out of range (1..{C_XID_CHANNEL_MAX:#x})")
        self.next_xid = start

    cpdef uint32_t alloc(self, Py_ssize_t n=1) except 0:
        """Reserve ``n`` consecutive xids and return the first."""
        cdef uint64_t first = self.next_xid
        if not 1 <= n <= C_XID_CHANNEL_MAX:
            raise ValueError(f"cannot allocate {n} xids")
        if first + <uint64_t>n - 1 > C_XID_CHANNEL_MAX:
            first = 1
        self.next_xid = first + <uint64_t>n
        return <uint32_t>first


@cython.freelist(8)
@cython.final
cdef class XidBlock:
    """Consecutive xids ``start`` .. ``stop - 1`` (a bundle's adds, numbered from one block): a
    sequence as a range is, made without range's arithmetic on Python ints for every bundle."""
    cdef uint32_t first
    cdef Py_ssize_t n

    def __init__(self, start, stop):
        if stop < start:
            raise ValueError(f"xid block {start}..{stop}: stop before start")
        self.first = _check_xids(start, stop - start, "")
        self.n = stop - start

    @property
    def start(self):
        return self.first

    @property
    def stop(self):
        return self.first + self.n

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(range(self.first, self.first + self.n))

    def __contains__(self, xid):
        return isinstance(xid, int) and self.first <= xid < self.first + self.n

    def __eq__(self, other):
        if type(other) is XidBlock:
            return self.first == (<XidBlock>other).first and self.n == (<XidBlock>other).n
        return NotImplemented

    def __hash__(self):
        return hash((self.first, self.n))

    def __repr__(self):
        return f"XidBlock({self.first}, {self.first + self.n})"


cdef uint32_t _alloc_xids(channel, Py_ssize_t n) except? 0:
    """The first of n xids from ``channel.xids`` (0 for none)."""
    if not n:
        return 0
    xids = channel.xids
    if type(xids) is XidAllocator:
        return (<XidAllocator>xids).alloc(n)
    return _check_xids(xids.alloc(n), n, "")


cdef void _append_wrapped(bytearray out, bytes encoded, uint32_t bid, uint16_t fl) except *:
    """Append each message of ``encoded`` (whole OpenFlow 1.3 messages) wrapped in an ONF bundle add."""
    cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(encoded)
    cdef Py_ssize_t n = len(encoded), off = 0, count = 0, length, pos
    cdef unsigned char *dst
    while off < n:  # walk first: the adds' room, and whole messages
        length = (<Py_ssize_t>src[off + 2] << 8) | src[off + 3] if n - off >= 8 else 0
        if length < 8 or off + length > n or length + C_BUNDLE_ADD_HEADER_LEN > 0xFFFF:
            raise ValueError(f"encoded messages: a message at byte {off} is cut or too long to bundle")
        off += length
        count += 1
    pos = len(out)
    PyByteArray_Resize(out, pos + n + count * C_BUNDLE_ADD_HEADER_LEN)
    dst = <unsigned char *>PyByteArray_AS_STRING(out) + pos
    off = 0
    while off < n:
        length = (<Py_ssize_t>src[off + 2] << 8) | src[off + 3]
        _write_onf_bundle_msg(dst, <uint16_t>(C_BUNDLE_ADD_HEADER_LEN + length),
                              (<uint32_t>src[off + 4] << 24) | (<uint32_t>src[off + 5] << 16)
                              | (<uint32_t>src[off + 6] << 8) | src[off + 7],
                              ONF_ET_BUNDLE_ADD_MESSAGE, bid, 0, fl)
        memcpy(dst + C_BUNDLE_ADD_HEADER_LEN, src + off, length)
        dst += C_BUNDLE_ADD_HEADER_LEN + length
        off += length


cdef unsigned char *_room(bytearray out, Py_ssize_t *used, Py_ssize_t need) except NULL:
    """Where to write `need` more bytes after the first *used of `out` (grown, doubling, if short; its
    length is set to the bytes used at the end); *used counts them."""
    cdef Py_ssize_t have = PyByteArray_GET_SIZE(out), want = used[0] + need
    if want > have:
        PyByteArray_Resize(out, want if want > 2 * have else 2 * have)
    cdef unsigned char *at = <unsigned char *>PyByteArray_AS_STRING(out) + used[0]
    used[0] = want
    return at


cdef Py_ssize_t _copy_packed(const unsigned char *src, Py_ssize_t length, Py_ssize_t n, unsigned char *dst,
                             Py_ssize_t room, uint32_t xid, bint bundle, uint32_t bid, uint16_t fl) noexcept nogil:
    """Copy n packed rows (bundle adds around FLOW_MODs, length bytes at src) into dst[0:room], numbered
    xid, xid+1, ...: as they are, with the bundle id and flags, if ``bundle``, else only their
    FLOW_MODs. The bytes written, or -1 if they are not n whole adds that fit (they changed: another
    thread). Each add's length is read once and bounded before it is used."""
    cdef Py_ssize_t off = 0, pos = 0, k = 0, size, skip = 0 if bundle else C_BUNDLE_ADD_HEADER_LEN
    cdef unsigned char *m
    while off < length:
        if k == n or length - off < C_BUNDLE_ADD_HEADER_LEN + 8:
            return -1
        size = (<Py_ssize_t>rd8(src + off + 2) << 8) | rd8(src + off + 3)
        if size < C_BUNDLE_ADD_HEADER_LEN + 8 or size > length - off or size - skip > room - pos:
            return -1
        memcpy(dst + pos, src + off + skip, size - skip)
        m = dst + pos + C_BUNDLE_ADD_HEADER_LEN - skip  # the FLOW_MOD
        be32(m + 4, xid)
        if bundle:                     # the add carries its FLOW_MOD's xid, as EXT-230 requires
            be16(dst + pos + 2, <uint16_t>size)
            be32(dst + pos + 4, xid)
            be32(dst + pos + 16, bid)
            be16(dst + pos + 22, fl)
        be16(m + 2, <uint16_t>(size - C_BUNDLE_ADD_HEADER_LEN))
        pos += size - skip
        off += size
        xid += 1
        k += 1
    return pos if k == n else -1


cdef Py_ssize_t frame_packed_bundle(bytearray out, Py_ssize_t used, Rows rows, uint32_t first, uint32_t bid,
                                    uint16_t fl, bint commit) except -1:
    """One Rows packed where it was made framed as a bundle after the first `used` bytes of out (grown if
    short): its open, its bundle adds copied with the xids, bundle id and flags patched in, its commit if
    ``commit``; the bytes used then. The xids are a block from `first` (rows.n + 2 of them, + 1 without
    the commit): _write_bundle_open's numbering."""
    cdef Py_ssize_t size = rows.packed_len
    if rows.packed_buf is None:
        raise ValueError("a bundle's rows: not packed where they were made")
    if rows.packed_off < 0 or size < 0 or rows.packed_off + size > PyBytes_GET_SIZE(rows.packed_buf):
        raise RuntimeError("a bundle's packed rows are not where they were made")
    cdef unsigned char *dst = _room(out, &used, size + C_BUNDLE_CTRL_LEN * (2 if commit else 1))
    _write_bundle_open(dst, first, rows.n, bid, fl)
    dst += C_BUNDLE_CTRL_LEN
    if _copy_packed(<const unsigned char *>PyBytes_AS_STRING(rows.packed_buf) + rows.packed_off, size, rows.n,
                    dst, size, first, True, bid, fl) != size:
        raise RuntimeError("a bundle's packed rows changed while they were being framed")
    if commit:
        _write_bundle_commit(dst + size, first, rows.n, bid, fl)
    return used


cdef object _pack_messages(channel, messages, batch_type, encode, int carried_op, encode_row, bint bundle,
                           uint32_t bid, uint16_t fl, bint commit):
    """pack_messages, and PlanBundle.frame_bundle when ``bundle``: the open first, each FLOW_MOD in a
    bundle add (the packer writes the adds around its rows), the commit last if ``commit``. The
    output is sized once for rows of a usual size (ROW_BYTES_GUESS), grown if they are larger; one
    packed Rows (a plan of one change) framed as a bundle by frame_packed_bundle."""
    cdef Py_ssize_t total = 0, nctrl = 0, used = 0, packed = 0, count = 0
    cdef bint all_packed = True
    for m in messages:
        if isinstance(m, Rows):
            total += (<Rows>m).n
            if (<Rows>m).packed_buf is not None:
                packed += (<Rows>m).packed_len if bundle else (<Rows>m).packed_len - C_BUNDLE_ADD_HEADER_LEN * (<Rows>m).n
            else:
                all_packed = False
        else:
            total += len(m) if isinstance(m, batch_type) else 1
            all_packed = False
        count += 1
    if bundle:
        nctrl = 2 if commit else 1
    cdef uint32_t first = _alloc_xids(channel, total + nctrl)
    cdef uint32_t xid = first
    # sized exactly when every message was packed where it was made, else for rows of a usual size
    cdef bytearray out = PyByteArray_FromStringAndSize(
        NULL, nctrl * C_BUNDLE_CTRL_LEN + (packed if all_packed else total * ROW_BYTES_GUESS))
    cdef XidBlock adds
    if bundle and all_packed and count == 1:  # (m: the one message)
        used = frame_packed_bundle(out, used, <Rows>m, first, bid, fl, commit)
    else:
        if bundle:
            _write_bundle_open(_room(out, &used, C_BUNDLE_CTRL_LEN), first, total, bid, fl)
        used = _pack_each(channel, messages, batch_type, encode, carried_op, encode_row, bundle, bid, fl, out, used,
                          xid)
        if bundle and commit:
            _write_bundle_commit(_room(out, &used, C_BUNDLE_CTRL_LEN), first, total, bid, fl)
    if used != PyByteArray_GET_SIZE(out):
        PyByteArray_Resize(out, used)
    if not bundle:
        return out
    adds = XidBlock.__new__(XidBlock)
    adds.first, adds.n = first, total
    return out, adds, first + total


cdef Py_ssize_t _pack_each(channel, messages, batch_type, encode, int carried_op, encode_row, bint bundle,
                           uint32_t bid, uint16_t fl, bytearray out, Py_ssize_t used, uint32_t xid) except -1:
    """_pack_messages' messages, one by one, after the first `used` bytes of out, numbered from xid;
    the bytes used then."""
    cdef Py_ssize_t i = 0, r, start, size, written
    cdef Rows rows
    cdef const LayoutC *L
    cdef const unsigned char *rec
    cdef unsigned char *dst
    cdef Err err
    pending = None
    for m in messages:
        if not isinstance(m, Rows) and not isinstance(m, batch_type):
            if pending is None:
                pending = []
            pending.append(m)
            i += 1
            continue
        if pending:
            used = _append_encoded(out, used, encode(channel, pending, xid), bundle, bid, fl)
            xid += <uint32_t>len(pending)
            pending = None
        rows = _rows_of(m)
        if rows.packed_buf is not None:  # packed where it was made: copied, its xids, bundle id and flags patched in
            if rows.packed_off < 0 or rows.packed_len < 0 or \
                    rows.packed_off + rows.packed_len > PyBytes_GET_SIZE(rows.packed_buf):
                raise RuntimeError(f"message {i}: its packed rows are not where they were made")
            size = rows.packed_len if bundle else rows.packed_len - C_BUNDLE_ADD_HEADER_LEN * rows.n
            dst = _room(out, &used, size)
            if _copy_packed(<const unsigned char *>PyBytes_AS_STRING(rows.packed_buf) + rows.packed_off,
                            rows.packed_len, rows.n, dst, size, xid, bundle, bid, fl) != size:
                raise RuntimeError(f"message {i}: its packed rows changed while they were being framed")
            xid += <uint32_t>rows.n
            i += 1
            continue
        L = &rows.layout.c
        start = 0
        for r in range(rows.n + 1):
            if r < rows.n:
                rec = rows.base + r * L.itemsize
                if carried_op < 0 or not rec[L.n_actions] or rec[L.actions + L.a_op] != carried_op:
                    continue
            if r > start:
                err.code = E_OK
                if r - start < NOGIL_ROWS:
                    size = _check_rows(L, rows.base, start, r, &err)
                else:
                    with nogil:
                        size = _check_rows(L, rows.base, start, r, &err)
                if size < 0:
                    raise _error(rows.layout, &err, f"message {i}: ")
                if bundle:
                    size += C_BUNDLE_ADD_HEADER_LEN * (r - start)
                dst = _room(out, &used, size)
                if r - start < NOGIL_ROWS:
                    written = _write_rows(L, rows.base + start * L.itemsize, r - start, dst, size, xid, bundle, bid, fl)
                else:
                    with nogil:
                        written = _write_rows(L, rows.base + start * L.itemsize, r - start, dst, size, xid, bundle,
                                              bid, fl)
                if written != size:
                    raise RuntimeError(f"message {i}: the batch changed while it was being packed")
                xid += <uint32_t>(r - start)
            if r < rows.n:
                used = _append_encoded(out, used, encode_row(channel, m, r, xid), bundle, bid, fl)
                xid += 1
            start = r + 1
        i += 1
    if pending:
        used = _append_encoded(out, used, encode(channel, pending, xid), bundle, bid, fl)
    return used


cdef Py_ssize_t _append_encoded(bytearray out, Py_ssize_t used, bytes encoded, bint bundle, uint32_t bid,
                                uint16_t fl) except -1:
    """Append encoded messages after the first `used` bytes of out (each in a bundle add if `bundle`);
    the bytes used then."""
    PyByteArray_Resize(out, used)
    if bundle:
        _append_wrapped(out, encoded, bid, fl)
    else:
        out += encoded
    return PyByteArray_GET_SIZE(out)


def pack_messages(channel, messages, batch_type, encode, int carried_op=-1, encode_row=None):
    """FLOW_MODs for ``messages`` in order, in one buffer, numbered from a block of
    ``channel.xids.alloc(n)``: the rows of every ``batch_type`` (a FlowBatch) packed here, each run
    of other messages (flows) by ``encode(channel, messages, xid)``, and a row whose first action
    slot holds opcode ``carried_op`` by ``encode_row(channel, batch, row, xid)`` (both return
    FLOW_MOD bytes, one message per item). One call for a plan's batches: no Python call per batch
    or row unless it carries. ValueError naming the message and flow for a bad row (nothing is
    returned then)."""
    return _pack_messages(channel, messages, batch_type, encode, carried_op, encode_row, False, 0, 0, False)


cdef class MessageEncoding:
    """How pack_messages' callers encode what is not a row it packs: ``batch_type`` (the batches of
    rows), ``encode`` (a run of other messages), ``carried_op`` and ``encode_row`` (a row carrying
    another encoding); see pack_messages. Made once by the caller, for every PlanBundle."""
    cdef readonly object batch_type, encode, encode_row
    cdef readonly int carried_op

    def __init__(self, batch_type, encode, int carried_op=-1, encode_row=None):
        self.batch_type, self.encode, self.carried_op, self.encode_row = batch_type, encode, carried_op, encode_row

    def bundle(self, messages):
        """PlanBundle(self, messages), made without a call of the class (a sender's every plan)."""
        cdef PlanBundle made = PlanBundle.__new__(PlanBundle)
        made.encoding, made.messages = self, messages
        return made


@cython.freelist(8)
cdef class PlanBundle:
    """A plan's messages as Datapath.send_bundle takes them to pack and frame in one call
    (``frame_bundle``), with ``encoding``'s encoders for what the packer does not encode itself."""
    cdef readonly MessageEncoding encoding
    cdef readonly object messages

    def __init__(self, MessageEncoding encoding not None, messages):
        self.encoding, self.messages = encoding, messages

    def frame_bundle(self, channel, bundle_id, flags, bint commit):
        """The FLOW_MODs pack_messages makes of the messages, framed as one ONF bundle (OpenFlow 1.3,
        EXT-230): its open, a bundle add around each FLOW_MOD (carrying its xid), and its commit if
        ``commit``; byte-identical to pack_messages' output through wrap_bundle_adds (dfflow._framing).
        Returns (framed bundle, the adds' xids (an XidBlock), the open's xid; the commit's is the next),
        numbered from one block of ``channel.xids``: the FLOW_MODs first, then the open and the commit."""
        cdef MessageEncoding e = self.encoding
        _check_bundle_args(bundle_id, flags, "")
        return _pack_messages(channel, self.messages, e.batch_type, e.encode, e.carried_op, e.encode_row, True,
                              bundle_id, flags, commit)
