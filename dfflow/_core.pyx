# cython: language_level=3
"""dfflow's compiled core.

Address packing used by NB validation and by the flow compiler: MACs as uint64,
IPv4 addresses as uint32. Parsers are strict: anything but the canonical textual
forms raises ValueError, and the caller names the field.

The port-flow compiler (below): port programs over typed port columns to the rows
that change, packed in the same call by the packer's row writer (dfflow/_packer.pyx, whose C
interface _packer.pxd declares) as the bundle adds the framing sends with their xids patched in.
Its own C interface (the records, the classes' C attributes, compile_transitions) is declared in
_core.pxd, for a module that runs it with no Python call per change (benchmarks/_core_fleet.pyx).

Longer than ~600 lines on purpose: the compiler's per-transition loop (_instances,
_compile) inlines this unit's role, key and delete helpers; split across extensions they
would become calls through function pointers in the loops `dfflow-bench compile` measures.
The parsers are the small rest.
"""
cimport cython
from libc.stdint cimport uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy, memcmp, memmove, memset
from libc.stdlib cimport calloc, malloc, free
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS, PyBUF_SIMPLE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

from dfflow._packer cimport (C_BUNDLE_ADD_HEADER_LEN, E_OK, NOGIL_ROWS, OFPFC_DELETE_STRICT, Err,
                             FlowLayout, LayoutC, Rows, _check_rows, _same_key, _write_rows, ctz64, ld16, ld64, rd8,
                             rd64, rows_in, store64)


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
# different) and appends the result to the change's deletes and adds, without a Python
# object per flow or per role; an add made twice is kept once, and adds that share a flow
# key but differ are counted for the caller to flag. The packer packs the rows.

cdef enum:
    MAX_PATCHES = 24
    SMALL_SCRATCH = 8192  # bytes of a compile's scratch taken from the stack (more: malloc)
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
    EACH_ONCE = 0
    EACH_PER_IP = 1
    EACH_PER_FIP = 2
    EACH_PER_PAIR_HOST = 3
    EACH_PER_PAIR_NET = 4
    N_EACH = 5
    SELECTION_KEYS = 2 * FACTS_KEYS      # every combination of the facts bits (_core.pxd), with only_location or not

PARAM_NAMES = ("OBJECT", "VNI", "MAC", "OFPORT", "TUNNEL", "COPY_TUNNEL", "IP", "FIP", "FIP_MAC", "FIXED_IP",
               "EXT_VNI", "ROUTER_MAC", "COOKIE", "PAIR_MAC", "PAIR_IP", "PAIR_MASK")
FACT_BITS = {"LOCAL": F_LOCAL, "REMOTE": F_REMOTE, "GATED": F_GATED, "OPEN": F_OPEN, "COPY": F_COPY,
             "NO_COPY": F_NO_COPY, "PS_OFF": F_PS_OFF, "PS_MAC": F_PS_MAC, "PS_IPS": F_PS_IPS, "ROUTED": F_ROUTED}
PORT_FLAG_SECURITY = PORT_SECURITY
PORT_FLAG_ROUTED = PORT_ROUTED
ROLE_KINDS = {"none": ROLE_NONE, "local": ROLE_LOCAL, "remote": ROLE_REMOTE}
# A role's items, in order (a tuple: indexed, not looked up by name, for every change of a plan).
ROLE_FIELDS = ("local", "ofport", "tunnel", "copy_tunnel", "gated")
EACH_KINDS = {"ONCE": EACH_ONCE, "PER_IP": EACH_PER_IP, "PER_FIP": EACH_PER_FIP, "PER_PAIR_HOST": EACH_PER_PAIR_HOST,
              "PER_PAIR_NET": EACH_PER_PAIR_NET}
# The column tables' records: every column a little-endian uint64, in this order.
# A port's allowed address pairs are pairs[pair_start:...]: its pair_hosts single addresses, then
# its pair_nets prefixes.
PORT_FIELDS = ("object_hash", "vni", "mac", "flags", "ip_start", "ip_count", "fip_start", "fip_count",
               "pair_start", "pair_hosts", "pair_nets")
FIP_FIELDS = ("fip", "fip_mac", "fixed_ip", "ext_vni", "router_mac")
PAIR_FIELDS = ("mac", "ip", "mask")

cdef struct EntryC:
    uint64_t app_cookie     # app id << 56
    uint32_t when, each, addable, uses_location, n_patches
    uint32_t location_in_key  # a location param patches its match (a move changes its flow key)
    uint32_t patch_off[MAX_PATCHES]
    uint32_t patch_param[MAX_PATCHES]

cdef enum CompileErr:
    C_OK = 0
    C_PORT_INDEX
    C_IP_RANGE
    C_FIP_RANGE
    C_PAIR_RANGE
    C_NOT_COMPILABLE

assert sizeof(PortC) == 8 * len(PORT_FIELDS) and sizeof(FipC) == 8 * len(FIP_FIELDS)
assert sizeof(PairC) == 8 * len(PAIR_FIELDS)
assert FACTS_KEYS == F_ROUTED << 1


def _padding_zeroed(rows):
    """The bytes of `rows` (records of a structured dtype) with the padding between fields zeroed.

    The compiler compares rows byte for byte (an add equal to an old row is not sent, an add made
    twice is kept once), and every row is a copy of a prototype: two prototypes that make the same
    flow must agree in their padding too. numpy copies such records field by field, so the padding
    of a copy (rows.copy(), rows[mask], a concatenation) is whatever the allocator left there."""
    import numpy as np
    data = bytearray(np.ascontiguousarray(rows).tobytes())
    np.frombuffer(data, np.uint8).reshape(-1, rows.dtype.itemsize)[...] &= field_bytes(rows.dtype)
    return data


def field_bytes(dtype):
    """A mask of a structured dtype's record: 0xFF at each byte of a field, 0 at the padding."""
    import numpy as np
    used = np.zeros(dtype.itemsize, np.uint8)
    for offset, scalar in field_spans(dtype):
        used[offset:offset + scalar.itemsize] = 0xFF
    return used


def field_spans(dtype, Py_ssize_t base=0):
    """(offset, scalar dtype) of every scalar field of a structured dtype's record, the items of
    sub-arrays and the fields of nested records included, in the order of the dtype."""
    import numpy as np
    spans = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        count = 1
        if sub.subdtype is not None:
            sub, shape = sub.subdtype
            count = int(np.prod(shape))
        for k in range(count):
            at = base + offset + k * sub.itemsize
            if sub.names:
                spans += field_spans(sub, at)
            else:
                spans.append((at, sub))
    return spans


cdef class CompiledProgram:
    """Port-flow entries as prototype rows of a FlowLayout and where each param goes in them.

    Built by controller.compiler from controller.templates programs; `entries` is a
    sequence of (name, app_cookie, when, each, addable, uses_location, patches) with
    patches a sequence of (byte offset in the row, param index). A patch ORs the param's
    value into the (zero) 64-bit slot at its offset.
    """
    def __cinit__(self):
        self.entries = NULL
        self.selection = NULL
        self.each_counts = NULL
        self.held = False

    def __init__(self, FlowLayout layout, protos, entries):
        cdef int i, k, facts
        cdef const int16_t *sel
        entries = list(entries)
        if protos.dtype != layout.dtype or len(protos) != len(entries):
            raise ValueError(f"protos: need {len(entries)} rows of the flow record, got {len(protos)} of {protos.dtype}")
        self.layout = layout
        self.protos = _padding_zeroed(protos)
        PyObject_GetBuffer(self.protos, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.n = len(entries)
        if self.n > 0x7FFF:
            raise ValueError(f"entries: {self.n}, at most {0x7FFF}")
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
            if len({offset for offset, _ in patches}) != len(patches):
                raise ValueError(f"entry {name}: two params patch one slot")
            self.entries[i].location_in_key = False
            for k, (offset, param) in enumerate(patches):
                if not 0 <= offset <= layout.c.itemsize - 8 or offset % 8:
                    raise ValueError(f"entry {name}: patch offset {offset} outside the row or unaligned")
                if not 0 <= param < N_PARAMS_C:
                    raise ValueError(f"entry {name}: param {param} out of range")
                self.entries[i].patch_off[k] = offset
                self.entries[i].patch_param[k] = param
                if _is_location(param) and _in_match(&layout.c, offset):
                    self.entries[i].location_in_key = True
        self.names = tuple(names)
        self.selection = _selection(self.entries, self.n)
        if self.selection == NULL:
            raise MemoryError()
        self.each_counts = _each_counts(self.entries, self.selection, self.n)
        if self.each_counts == NULL:
            raise MemoryError()
        for facts in range(FACTS_KEYS):
            sel = self.selection + (facts | FACTS_KEYS) * (self.n + 1)
            self.location_keyed[facts] = any(self.entries[sel[1 + k]].location_in_key for k in range(sel[0]))

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)
        free(self.entries)
        free(self.selection)
        free(self.each_counts)

    def __repr__(self):
        return f"CompiledProgram({self.n} entries)"


cdef inline bint _is_location(uint32_t param) noexcept nogil:
    return param == P_OFPORT or param == P_TUNNEL or param == P_COPY_TUNNEL


cdef inline bint _in_match(const LayoutC *L, Py_ssize_t offset) noexcept nogil:
    """Whether a row's byte offset is in a match value or mask slot (part of the flow key)."""
    return (L.mvalue <= offset < L.mvalue + 8 * L.nfields) or (L.mmask <= offset < L.mmask + 8 * L.nfields)


cdef inline uint64_t _location(const RoleC *r, uint32_t param) noexcept nogil:
    if param == P_OFPORT:
        return r.ofport
    return r.tunnel if param == P_TUNNEL else r.copy_tunnel


cdef inline bint _entry_moves(const EntryC *E, const unsigned char *proto, const RoleC *old,
                              const RoleC *new) noexcept nogil:
    """Whether the entry's rows differ between two roles of the same facts: a location param it
    patches has another value in the row."""
    cdef uint32_t k, param
    cdef uint64_t slot
    for k in range(E.n_patches):
        param = E.patch_param[k]
        if _is_location(param):
            slot = ld64(proto + E.patch_off[k])
            if (slot | _location(old, param)) != (slot | _location(new, param)):
                return True
    return False


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


cdef int16_t *_selection(const EntryC *entries, int nentries) noexcept nogil:
    """For every (facts, only_location) key, the entries that apply: their number, then their
    indices in order (so the per-transition loops visit only those)."""
    cdef int16_t *selection = <int16_t *>malloc(SELECTION_KEYS * (nentries + 1) * sizeof(int16_t))
    cdef int16_t *sel
    cdef uint32_t key, facts
    cdef bint only_location
    cdef int e
    if selection == NULL:
        return NULL
    for key in range(SELECTION_KEYS):
        facts = key & (FACTS_KEYS - 1)
        only_location = key >= FACTS_KEYS
        sel = selection + key * (nentries + 1)
        sel[0] = 0
        for e in range(nentries):
            if entries[e].when & ~facts or (only_location and not entries[e].uses_location):
                continue
            sel[0] += 1
            sel[sel[0]] = <int16_t>e
    return selection


cdef int32_t *_each_counts(const EntryC *entries, const int16_t *selection, int nentries) noexcept nogil:
    """For every (facts, only_location) key, how many of the entries that apply repeat each way
    (N_EACH counts, by EACH_*): a role's rows are counted without visiting its entries."""
    cdef int32_t *counts = <int32_t *>calloc(SELECTION_KEYS * N_EACH, sizeof(int32_t))
    cdef const int16_t *sel
    cdef int key, i
    if counts == NULL:
        return NULL
    for key in range(SELECTION_KEYS):
        sel = selection + key * (nentries + 1)
        for i in range(sel[0]):
            counts[key * N_EACH + entries[sel[1 + i]].each] += 1
    return counts


cdef inline Py_ssize_t _count_rows(const int32_t *each_counts, const PortC *p, const RoleC *r,
                                   bint only_location) noexcept nogil:
    """How many rows _instances makes of port p in role r."""
    cdef const int32_t *c
    if r.kind == ROLE_NONE:
        return 0
    c = each_counts + (_facts(p, r) | (FACTS_KEYS if only_location else 0)) * N_EACH
    return (c[EACH_ONCE] + c[EACH_PER_IP] * <Py_ssize_t>p.ip_count + c[EACH_PER_FIP] * <Py_ssize_t>p.fip_count
            + c[EACH_PER_PAIR_HOST] * <Py_ssize_t>p.pair_hosts + c[EACH_PER_PAIR_NET] * <Py_ssize_t>p.pair_nets)


cdef Py_ssize_t _instances(const EntryC *entries, const int16_t *selection, int nentries,
                           const unsigned char *protos,
                           Py_ssize_t itemsize, const ColumnsC *C, const PortC *p, const RoleC *r,
                           bint only_location, unsigned char *out, int32_t *entry_of,
                           const RoleC *since=NULL) noexcept nogil:
    """The rows of port p in role r (only the location-dependent ones with only_location), written
    at out (at most _count_rows of them), the entry of each at entry_of; how many. With `since` (a
    role of the same facts), only the rows of entries whose rows differ from since's (_entry_moves)."""
    cdef uint32_t facts
    cdef uint64_t param[N_PARAMS_C]
    cdef Py_ssize_t count = 0, reps, j
    cdef int e, k, i
    cdef const int16_t *sel
    cdef const EntryC *E
    cdef const FipC *fip
    cdef const PairC *pair
    cdef unsigned char *row
    cdef const unsigned char *proto
    if r.kind == ROLE_NONE:
        return 0
    facts = _facts(p, r)
    param[P_OBJECT] = p.object_hash
    param[P_VNI] = p.vni
    param[P_MAC] = p.mac
    param[P_OFPORT] = r.ofport
    param[P_TUNNEL] = r.tunnel
    param[P_COPY_TUNNEL] = r.copy_tunnel
    param[P_IP] = 0
    param[P_FIP] = param[P_FIP_MAC] = param[P_FIXED_IP] = param[P_EXT_VNI] = param[P_ROUTER_MAC] = 0
    param[P_PAIR_MAC] = param[P_PAIR_IP] = param[P_PAIR_MASK] = 0
    sel = selection + (facts | (FACTS_KEYS if only_location else 0)) * (nentries + 1)
    for i in range(sel[0]):
        e = sel[1 + i]
        E = &entries[e]
        if since != NULL and not _entry_moves(E, protos + e * itemsize, since, r):
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
            proto = protos + e * itemsize
            memcpy(row, proto, itemsize)
            # (each slot patched once: read from the prototype, not from the copy just stored, whose
            # wide stores a narrow load would wait for)
            for k in range(<int>E.n_patches):
                store64(row + E.patch_off[k], ld64(proto + E.patch_off[k]) | param[E.patch_param[k]])
            entry_of[count] = e
            count += 1
    return count


cdef inline void _as_delete(const LayoutC *L, unsigned char *row) noexcept nogil:
    """A strict delete of the row's flow: its cookie, table, priority and match; no instructions."""
    row[L.command] = OFPFC_DELETE_STRICT
    row[L.n_actions] = 0
    row[L.has_wmeta] = 0
    row[L.goto_] = 0xFF                # goto -1
    row[L.goto_ + 1] = 0xFF


cdef struct CompileOut:
    unsigned char *dels
    unsigned char *adds
    Py_ssize_t ndel, nadd
    Py_ssize_t key_conflicts  # adds whose flow key an earlier, different add has
    int code
    Py_ssize_t where      # transition of the error
    uint64_t value


cdef inline bint _only_location(const TransitionC *t) noexcept nogil:
    """Same facts on both sides: only the entries that use the location can differ."""
    return (t.old.kind == t.new.kind and t.old.gated == t.new.gated
            and (t.old.copy_tunnel != 0) == (t.new.copy_tunnel != 0))


cdef inline void _copy_once(void *dst, const void *src, Py_ssize_t nwords) noexcept nogil:
    """Copy nwords 64-bit words, each read once (rd64): the compiler may see through a plain memcpy and
    read the source again where the copy is read."""
    cdef Py_ssize_t k
    for k in range(nwords):
        (<uint64_t *>dst)[k] = rd64(<const unsigned char *>src + 8 * k)


cdef inline void _copy_bytes_once(unsigned char *dst, const unsigned char *src, Py_ssize_t nbytes) noexcept nogil:
    """Copy nbytes, each read once (_copy_once's words, then rd8)."""
    cdef Py_ssize_t k
    _copy_once(dst, src, nbytes // 8)
    for k in range(nbytes - nbytes % 8, nbytes):
        dst[k] = <unsigned char>rd8(src + k)


cdef int _check_transitions(const ColumnsC *C, TransitionC *T, Py_ssize_t nt, CompileOut *o) noexcept nogil:
    """Copy each transition's port record (TransitionC.rec) and check its ranges against the columns."""
    cdef Py_ssize_t t
    cdef const PortC *p
    for t in range(nt):
        o.where = t
        if T[t].port >= <uint64_t>C.nports:
            o.code = C_PORT_INDEX
            o.value = T[t].port
            return -1
        _copy_once(&T[t].rec, &C.ports[T[t].port], sizeof(PortC) // 8)
        p = &T[t].rec
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
    return 0


cdef inline bint _keeps_keys(const bint *location_keyed, const TransitionC *t) noexcept nogil:
    """Whether a move keeps every flow key of the port (only the location changes, and no entry
    that applies has it in its match): its changed rows are adds of the new role's, no deletes."""
    return _only_location(t) and not location_keyed[_facts(&t.rec, &t.new)]


cdef inline int _not_compilable(CompileOut *o, Py_ssize_t t, int32_t entry) noexcept nogil:
    """Transition t needs a row of `entry`, which the packer cannot encode (a learn action)."""
    o.code = C_NOT_COMPILABLE
    o.where = t
    o.value = entry
    return -1


cdef int _compile(const LayoutC *L, const EntryC *entries, const int16_t *selection, int nentries,
                  const unsigned char *protos, const bint *location_keyed,
                  const ColumnsC *C, const TransitionC *T, Py_ssize_t nt,
                  unsigned char *gone, int32_t *ent_old, int32_t *ent_new,
                  CompileOut *o) noexcept nogil:
    """Each role's rows are made in place: the old role's at the end of the deletes, the new one's
    at the end of the adds; then the new rows equal to an old row, and the old rows whose key a new
    row has, are squeezed out (the old ones kept made deletes): every row is written once, where it
    is sent. A move that keeps the port's flow keys (_keeps_keys: a remote port's new tunnel) makes
    only the rows that change, each an add. gone: a byte for each old row of the largest role."""
    cdef Py_ssize_t itemsize = L.itemsize, t, i, j, nold, nnew, kept
    cdef const TransitionC *tr
    cdef const PortC *p
    cdef bint only_location, found
    cdef const unsigned char *a
    cdef unsigned char *new_rows
    cdef unsigned char *old_rows
    cdef unsigned char *b
    for t in range(nt):
        tr = &T[t]
        if _same_role(&tr.old, &tr.new):
            continue
        p = &tr.rec
        only_location = _only_location(tr)
        new_rows = o.adds + o.nadd * itemsize
        if _keeps_keys(location_keyed, tr):
            nnew = _instances(entries, selection, nentries, protos, itemsize, C, p, &tr.new, True,
                              new_rows, ent_new, &tr.old)
            for j in range(nnew):
                if not entries[ent_new[j]].addable:
                    return _not_compilable(o, t, ent_new[j])
            o.nadd += nnew
            continue
        old_rows = o.dels + o.ndel * itemsize
        nold = _instances(entries, selection, nentries, protos, itemsize, C, p, &tr.old, only_location,
                          old_rows, ent_old)
        nnew = _instances(entries, selection, nentries, protos, itemsize, C, p, &tr.new, only_location,
                          new_rows, ent_new)
        for i in range(nold):  # (only marked: the adds are compared with the old rows as they are)
            a = old_rows + i * itemsize
            gone[i] = True
            for j in range(nnew):
                if _same_key(L, a, new_rows + j * itemsize):
                    gone[i] = False
                    break
        kept = 0
        for j in range(nnew):
            b = new_rows + j * itemsize
            found = False
            if entries[ent_new[j]].addable:
                for i in range(nold):
                    a = old_rows + i * itemsize
                    # (the table, priority and match bitmap first: most rows differ there)
                    if (entries[ent_old[i]].addable and a[L.table] == b[L.table]
                            and ld64(a + L.present) == ld64(b + L.present)
                            and ld16(a + L.priority) == ld16(b + L.priority) and memcmp(a, b, itemsize) == 0):
                        found = True
                        break
            if found:
                continue
            if not entries[ent_new[j]].addable:
                return _not_compilable(o, t, ent_new[j])
            if kept != j:
                memcpy(new_rows + kept * itemsize, b, itemsize)
            kept += 1
        o.nadd += kept
        kept = 0
        for i in range(nold):
            if gone[i]:
                if kept != i:
                    memcpy(old_rows + kept * itemsize, old_rows + i * itemsize, itemsize)
                _as_delete(L, old_rows + kept * itemsize)
                kept += 1
        o.ndel += kept
    return 0


cdef inline uint64_t _key_hash(const LayoutC *L, const unsigned char *row) noexcept nogil:
    """A hash of the row's flow key (FNV-1a over its words): equal keys, equal hashes. Only the
    fields the key has are hashed (equal keys have the same ones): a few, of the layout's 27."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef uint64_t present = ld64(row + L.present), masked = ld64(row + L.masked)
    cdef int i
    h = (h ^ (row[L.table] | (present << 8))) * 1099511628211ULL
    h = (h ^ masked ^ (<uint64_t>ld16(row + L.priority) << 48)) * 1099511628211ULL
    while present:
        i = ctz64(present)
        present &= present - 1
        h = (h ^ ld64(row + L.mvalue + 8 * i)
             ^ ((ld64(row + L.mmask + 8 * i) << 1) if masked >> i & 1 else 0)) * 1099511628211ULL
    return h ^ (h >> 31)


cdef Py_ssize_t _distinct_adds(const LayoutC *L, unsigned char *rows, Py_ssize_t n, int32_t *slots,
                               Py_ssize_t nslots, Py_ssize_t *conflicts) noexcept nogil:
    """Squeeze out of rows[0:n] each row identical to an earlier one (two templates can make the
    same flow: a floating IP whose MAC is its port's own, on the port's own network; the switch
    and FlowState hold it once), counting in *conflicts each kept row whose flow key an earlier,
    different row has. slots: nslots (a power of two > n) zeroed ints. Returns the rows kept."""
    cdef Py_ssize_t itemsize = L.itemsize, j, kept = 0, s, mask = nslots - 1
    cdef unsigned char *b
    cdef const unsigned char *a
    cdef bint same, conflict
    for j in range(n):
        b = rows + j * itemsize
        s = <Py_ssize_t>(_key_hash(L, b) & <uint64_t>mask)
        same = conflict = False
        while slots[s]:
            a = rows + (slots[s] - 1) * itemsize
            if _same_key(L, a, b):
                if memcmp(a, b, itemsize) == 0:
                    same = True
                    break
                conflict = True
            s = (s + 1) & mask
        if same:
            continue
        if conflict:
            conflicts[0] += 1
        if kept != j:
            memcpy(rows + kept * itemsize, b, itemsize)
        slots[s] = <int32_t>(kept + 1)
        kept += 1
    return kept


class NotCompilable(ValueError):
    """A change needs a flow the compiled path cannot make (a learn action):
    the caller runs the Python program instead."""


cdef class _Buf:
    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


cdef _Buf _buf(obj, Py_ssize_t record, str what):
    """An input array's records, held: C-contiguous, each `record` bytes (TypeError naming it if not)."""
    cdef _Buf b = _Buf.__new__(_Buf)
    try:
        PyObject_GetBuffer(obj, &b.view, PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError, TypeError):
        b.held = False
    else:
        b.held = True
        if b.view.itemsize == record:
            return b
    raise TypeError(f"{what}: expected a C-contiguous array of {record}-byte records, "
                    f"got {getattr(obj, 'dtype', type(obj).__name__)}")


cdef int _role_of(object role, RoleC *r, Py_ssize_t t, str side) except -1:
    """A role (None, or a tuple of ROLE_FIELDS: controller.templates.PortRole) as a record;
    ValueError naming the change and field if bad."""
    cdef int k = 0
    if role is None:
        r.kind = ROLE_NONE
        r.gated = r.ofport = r.tunnel = r.copy_tunnel = 0
        return 0
    if not isinstance(role, tuple) or PyTuple_GET_SIZE(role) != 5:
        raise ValueError(f"change {t}: {side} role {role!r}: expected a tuple of {', '.join(ROLE_FIELDS)}")
    try:
        r.kind = ROLE_LOCAL if <object>PyTuple_GET_ITEM(role, 0) else ROLE_REMOTE
        k = 1
        r.ofport = <object>PyTuple_GET_ITEM(role, 1)
        k = 2
        r.tunnel = <object>PyTuple_GET_ITEM(role, 2)
        k = 3
        r.copy_tunnel = <object>PyTuple_GET_ITEM(role, 3)
        k = 4
        r.gated = 1 if <object>PyTuple_GET_ITEM(role, 4) else 0
    except (OverflowError, TypeError) as exc:
        raise ValueError(f"change {t}: {side} role {role!r}: {ROLE_FIELDS[k]}: {exc}") from None
    return 0


cdef class PortColumns:
    """A port table's columns, held for compile_changes (checked once, not per call): ports
    (records of PORT_FIELDS), ips (uint64 IPv4s: ports[i] owns ips[ip_start:ip_start+ip_count]),
    fips (records of FIP_FIELDS) and pairs (records of PAIR_FIELDS), each C-contiguous. Their
    contents may change in place; an owner that replaces an array holds the new ones anew (calls
    __init__ again: controller.compiler.PortTable is a PortColumns, handed to the core as it is)."""
    def __init__(self, ports, ips, fips, pairs):
        if getattr(ips, "dtype", None) != "<u8":
            raise TypeError(f"ips: expected a C-contiguous array of uint64, "
                            f"got {getattr(ips, 'dtype', type(ips).__name__)}")
        self.bp = _buf(ports, sizeof(PortC), "ports")
        self.bi = _buf(ips, 8, "ips")
        self.bf = _buf(fips, sizeof(FipC), "fips")
        self.bpair = _buf(pairs, sizeof(PairC), "pairs")
        self.c.ports = <const PortC *>self.bp.view.buf
        self.c.nports = self.bp.view.len // sizeof(PortC)
        self.c.ips = <const uint64_t *>self.bi.view.buf
        self.c.nips = self.bi.view.len // 8
        self.c.fips = <const FipC *>self.bf.view.buf
        self.c.nfips = self.bf.view.len // sizeof(FipC)
        self.c.pairs = <const PairC *>self.bpair.view.buf
        self.c.npairs = self.bpair.view.len // sizeof(PairC)


cdef void _count_instances(CompiledProgram program, const ColumnsC *C, const TransitionC *T, Py_ssize_t nt,
                           Py_ssize_t *sizes) noexcept nogil:
    """sizes: the rows of the old roles, of the new ones, and the most of one old and of one new role."""
    cdef Py_ssize_t t, k
    cdef bint only_location
    cdef const PortC *p
    sizes[0] = sizes[1] = sizes[2] = sizes[3] = 0
    for t in range(nt):
        if _same_role(&T[t].old, &T[t].new):
            continue
        p = &T[t].rec  # the record copied once (_check_transitions): counted and written from the same values
        only_location = _only_location(&T[t])
        if not _keeps_keys(program.location_keyed, &T[t]):  # (else no old row is made)
            k = _count_rows(program.each_counts, p, &T[t].old, only_location)
            sizes[0] += k
            if k > sizes[2]:
                sizes[2] = k
        k = _count_rows(program.each_counts, p, &T[t].new, only_location)
        sizes[1] += k
        if k > sizes[3]:
            sizes[3] = k


cdef int _compile_distinct(CompiledProgram program, const ColumnsC *C, const TransitionC *T, Py_ssize_t nt,
                           unsigned char *gone, int32_t *ent_old, int32_t *ent_new, int32_t *slots,
                           Py_ssize_t nslots, CompileOut *o) noexcept nogil:
    """_compile, then each add once (_distinct_adds)."""
    cdef int rc = _compile(&program.layout.c, program.entries, program.selection, program.n,
                           <const unsigned char *>program.view.buf, program.location_keyed, C, T, nt, gone,
                           ent_old, ent_new, o)
    if rc == 0 and o.nadd > 1:
        memset(slots, 0, nslots * 4)
        o.nadd = _distinct_adds(&program.layout.c, o.adds, o.nadd, slots, nslots, &o.key_conflicts)
    return rc


def compile_changes(CompiledProgram program, PortColumns columns, changes):
    """The flows that change when ports go from their old to their new role on a chassis.

    columns: the ports' facts; changes: a sequence of (port row, old role, new role), a role
    None or a tuple of ROLE_FIELDS (controller.templates.PortRole).
    Returns a ChangeRows: the deletes (DELETE_STRICT) and the adds (each once) as rows of the program's
    flow record in one read-only buffer, no numpy view made unless one is read, packed in the same call
    (bundle adds around their FLOW_MODs, the xids, bundle id and flags patched in when a bundle is
    framed: PlanBundle.frame_bundle), and how many adds have the flow key of an earlier, different add
    (the switch would keep the later: the caller flags it). Raises ValueError naming the field for bad
    columns or changes.
    """
    cdef Py_ssize_t t, nt = len(changes)
    cdef TransitionC one
    cdef TransitionC *T = &one
    if nt > 1:
        T = <TransitionC *>malloc(nt * sizeof(TransitionC))
        if T == NULL:
            raise MemoryError()
    try:
        for t in range(nt):
            port, old, new = changes[t]
            try:
                T[t].port = port
            except (OverflowError, TypeError) as exc:
                raise ValueError(f"change {t}: port row {port!r}: {exc}") from None
            _role_of(old, &T[t].old, t, "old")
            _role_of(new, &T[t].new, t, "new")
        return compile_transitions(program, columns, T, nt)
    finally:
        if T != &one:
            free(T)


cdef ChangeRows compile_transitions(CompiledProgram program, PortColumns columns, TransitionC *T, Py_ssize_t nt):
    """compile_changes' work once its changes are records: T[t].port, .old and .new set (.rec is
    filled here, from the columns)."""
    cdef const ColumnsC *C = &columns.c
    cdef Py_ssize_t itemsize = program.layout.c.itemsize, total_old = 0, total_new = 0
    cdef Py_ssize_t max_old = 0, max_new = 0, nslots = 2
    cdef Py_ssize_t sizes[4]
    cdef Py_ssize_t need
    cdef unsigned char small_scratch[SMALL_SCRATCH]
    cdef CompileOut o
    cdef int rc = 0
    cdef int32_t *ent_old
    cdef int32_t *ent_new
    cdef int32_t *slots
    cdef bytes out
    cdef ChangeRows made = None
    cdef unsigned char *scratch = NULL
    try:
        o.code = C_OK
        o.ndel = o.nadd = o.key_conflicts = 0
        if _check_transitions(C, T, nt, &o) < 0:
            raise _compile_error(program, &o)
        if nt < NOGIL_ROWS:
            _count_instances(program, C, T, nt, sizes)
        else:
            with nogil:
                _count_instances(program, C, T, nt, sizes)
        total_old, total_new, max_old, max_new = sizes[0], sizes[1], sizes[2], sizes[3]
        # the deletes, then room for the adds, in one buffer (every byte of a used row is written; the
        # buffer is the ChangeRows' own, immutable once made)
        out = PyBytes_FromStringAndSize(NULL, (total_old + total_new) * itemsize)
        while nslots <= total_new:
            nslots *= 2
        need = (max_old + max_new + 2 + nslots) * 4 + max_old + 1  # the entries, the slots, gone
        if need <= SMALL_SCRATCH:  # most changes of a plan on one chassis: a few rows
            scratch = small_scratch
        else:
            scratch = <unsigned char *>malloc(need)
            if scratch == NULL:
                raise MemoryError()
        ent_old = <int32_t *>scratch
        ent_new = ent_old + max_old + 1
        slots = ent_new + max_new + 1
        o.dels = <unsigned char *>PyBytes_AS_STRING(out)
        o.adds = o.dels + total_old * itemsize
        if nt < NOGIL_ROWS:
            rc = _compile_distinct(program, C, T, nt, <unsigned char *>(slots + nslots), ent_old, ent_new, slots,
                                   nslots, &o)
        else:
            with nogil:
                rc = _compile_distinct(program, C, T, nt, <unsigned char *>(slots + nslots), ent_old, ent_new,
                                       slots, nslots, &o)
    finally:
        if scratch != small_scratch:
            free(scratch)
    if rc < 0:
        raise _compile_error(program, &o)
    made = ChangeRows.__new__(ChangeRows)
    _pack_change(made, program.layout, out, total_old * itemsize, o.ndel, o.nadd, o.key_conflicts)
    return made


cdef int _pack_change(ChangeRows made, FlowLayout layout, bytes out, Py_ssize_t adds_at, Py_ssize_t ndel,
                      Py_ssize_t nadd, Py_ssize_t key_conflicts) except -1:
    """Make `made` the change whose ndel deletes start `out` (its own rows, which nothing else writes)
    and whose nadd adds start at byte adds_at of it: the two sides made adjacent (the smaller one
    moved), and the rows packed into a bytes object of their own -- each a bundle add around its
    FLOW_MOD, the xids, bundle id and flags placeholders the framing patches. Rows the packer cannot
    encode (a template's carried params, or a bad value) are left unpacked: the framing packs them as
    it packs any rows (naming a bad one then)."""
    cdef const LayoutC *L = &layout.c
    cdef Py_ssize_t itemsize = L.itemsize, n = ndel + nadd, start = 0, dsize = 0, asize = 0, size, written = 0
    cdef unsigned char *base = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned char *dst
    cdef Err err
    if ndel == 0:
        start = adds_at
    elif nadd and adds_at != ndel * itemsize:
        if ndel <= nadd:  # the deletes moved up to the adds
            start = adds_at - ndel * itemsize
            memmove(base + start, base, ndel * itemsize)
        else:             # the adds moved down to the deletes
            memmove(base + ndel * itemsize, base + adds_at, nadd * itemsize)
    base += start
    err.code = E_OK
    if n < NOGIL_ROWS:
        dsize = _check_rows(L, base, 0, ndel, &err)
        if dsize >= 0:
            asize = _check_rows(L, base, ndel, n, &err)
    else:
        with nogil:
            dsize = _check_rows(L, base, 0, ndel, &err)
            if dsize >= 0:
                asize = _check_rows(L, base, ndel, n, &err)
    made.packed_buf = None
    if dsize >= 0 and asize >= 0:
        size = dsize + asize + C_BUNDLE_ADD_HEADER_LEN * n
        packed = PyBytes_FromStringAndSize(NULL, size)
        dst = <unsigned char *>PyBytes_AS_STRING(packed)
        if n < NOGIL_ROWS:
            written = _write_rows(L, base, n, dst, size, 0, True, 0, 0)
        else:
            with nogil:
                written = _write_rows(L, base, n, dst, size, 0, True, 0, 0)
        if written != size:  # (its own rows, checked above: cannot differ)
            raise RuntimeError("a change's rows changed while they were being packed")
        made.packed_buf, made.packed_off, made.packed_len = packed, 0, size
        made.packed_deletes = dsize + C_BUNDLE_ADD_HEADER_LEN * ndel
    made.layout, made.owner, made.offset, made.base, made.n = layout, out, start, base, n
    made.ndel, made.nadd, made.key_conflicts = ndel, nadd, key_conflicts
    return 0


@cython.no_gc  # (it holds its two sides' Rows, which hold nothing that could lead back to it)
cdef class ChangeRows(Rows):
    """What a change sends on a chassis, packed where it was compiled: its rows (a Rows the packer
    reads: the ``ndel`` deletes (DELETE_STRICT), then the ``nadd`` adds) and the bundle adds they make,
    which the framing copies with the bundle's xids, id and flags patched in (PlanBundle.frame_bundle).
    ``deletes`` and ``adds``: each side as Rows (made when first read); ``key_conflicts``: how many
    adds have the flow key of an earlier, different add (the switch would keep the later: the caller
    flags it). Unpacked or indexed, it is the two sides as numpy arrays of the flow record:
    ``dels, adds = change``. True when it sends something (a row on either side), as a plan is."""
    def __init__(self, Rows deletes, Rows adds, Py_ssize_t key_conflicts=0):
        """The change of two sides' rows (a diff's): copied (once: another thread may be writing
        them) and packed, as compile_changes makes its own."""
        if deletes.layout is not adds.layout:
            raise ValueError("a change's deletes and adds must be rows of one flow record")
        cdef Py_ssize_t itemsize = deletes.layout.c.itemsize
        cdef bytes out = PyBytes_FromStringAndSize(NULL, (deletes.n + adds.n) * itemsize)
        cdef unsigned char *copy = <unsigned char *>PyBytes_AS_STRING(out)
        _copy_bytes_once(copy, deletes.base, deletes.n * itemsize)
        _copy_bytes_once(copy + deletes.n * itemsize, adds.base, adds.n * itemsize)
        _pack_change(self, deletes.layout, out, deletes.n * itemsize, deletes.n, adds.n, key_conflicts)

    cdef Rows _side(self, Py_ssize_t offset, Py_ssize_t n, Py_ssize_t packed_off, Py_ssize_t packed_len):
        """n of its rows from byte offset as Rows (with their packed bundle adds, if packed)."""
        cdef Rows side = Rows.__new__(Rows)
        side.layout, side.owner, side.offset, side.n = self.layout, self.owner, self.offset + offset, n
        side.base = self.base + offset
        side.packed_buf, side.packed_off, side.packed_len = self.packed_buf, packed_off, packed_len
        return side

    @property
    def deletes(self):
        """The deletes (DELETE_STRICT) as Rows."""
        if self._deletes is None:
            self._deletes = self._side(0, self.ndel, self.packed_off, self.packed_deletes)
        return self._deletes

    @property
    def adds(self):
        """The adds as Rows."""
        if self._adds is None:
            self._adds = self._side(self.ndel * self.layout.c.itemsize, self.nadd, self.packed_off + self.packed_deletes,
                                    self.packed_len - self.packed_deletes)
        return self._adds

    @property
    def packed(self):
        """Whether its rows were packed where they were made (else the framing packs them)."""
        return self.packed_buf is not None

    def __repr__(self):
        return f"ChangeRows(ndel={self.ndel}, nadd={self.nadd}, packed={self.packed_buf is not None})"

    def __bool__(self):
        return self.n != 0

    def __len__(self):
        return 2

    def __getitem__(self, Py_ssize_t side):
        if side == 0 or side == -2:
            return self.deletes.array
        if side == 1 or side == -1:
            return self.adds.array
        raise IndexError("a change has two sides: deletes (0) and adds (1)")

    def __iter__(self):
        return iter((self.deletes.array, self.adds.array))


def rows_of_array(FlowLayout layout, rows):
    """Rows over a C-contiguous numpy array of `layout`'s flow record (a copy of it: the packer
    reads it as the compiler's own), e.g. a diff's deletes or adds for a ChangeRows."""
    if getattr(rows, "dtype", None) != layout.dtype:
        raise TypeError(f"rows: expected an array of the flow record, got {getattr(rows, 'dtype', type(rows).__name__)}")
    cdef Py_ssize_t n = len(rows)
    return rows_in(layout, bytearray(rows.tobytes()) if n else bytearray(), 0, n)


_COMPILE_ERR_TEXT = {
    C_PORT_INDEX: "port index {value} is not in the port table",
    C_IP_RANGE: "port {value}: ip_start/ip_count run past the IPv4 column",
    C_FIP_RANGE: "port {value}: fip_start/fip_count run past the floating-IP column",
    C_PAIR_RANGE: "port {value}: pair_start/pair_hosts/pair_nets run past the address-pair column",
}


cdef object _compile_error(CompiledProgram program, CompileOut *o):
    where = f"change {o.where}: "
    if o.code == C_NOT_COMPILABLE:
        return NotCompilable(f"{where}{program.names[o.value]} has actions the compiled path does not encode")
    text = _COMPILE_ERR_TEXT.get(o.code, "compile error {code}")
    return ValueError(where + text.format(value=o.value, code=o.code))
