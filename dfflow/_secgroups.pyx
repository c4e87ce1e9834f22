# cython: language_level=3
"""The compiled core's security-group compiler: a port's rules as rows -> its flows as rows.

A port's security-group rules are variable-length facts, so they are rows of their own (one per
rule, SG_RULE_FIELDS, with a slice of SG_MEMBER_FIELDS rows for a remote group's members) rather
than params of a port program. compile_secgroups makes every security-group flow of one local
port from them (controller.apps.secgroups; tests/sg_oracle.py is the Python reference): the
conntrack flows of its zone (and the drop of IPv6 for it), each rule's remotes times protocol
matches (a port range as the fewest value/mask prefixes covering it), or a conjunctive match
(clause 1: a remote address, clause 2: a protocol match, then one flow on conj_id) when that
product outgrows their sum, and, while the port arrives here, the mid-stream TCP flows. Flows of
one key are made once; conjunction clauses of one key carry one conjunction action per
conjunctive match. The rows are the packer's (dfflow/_packer.pxd), packed like any other.

The caller's arrays may change in place while it runs (another thread; it runs without the GIL):
it copies them once, each word read once (rd64), and checks, counts and writes from that copy
only, so the flows counted are the flows written and the ranges checked the ranges read.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint16_t, uint64_t
from libc.string cimport memcpy, memset

from dfflow._packer cimport (OP_CONJUNCTION, OP_CT, OP_SET_FIELD, FlowLayout, LayoutC, _same_key, ctz64, ld16,
                             ld64, rd64, store64)

SG_RULE_FIELDS = ("direction", "ip_proto", "flags", "low", "high", "remote_ip", "remote_mask", "member_start",
                  "member_count")
SG_MEMBER_FIELDS = ("ip", "mask")
SG_SHAPE_FIELDS = ("egress_conntrack", "egress_security_groups", "egress_next", "ingress_conntrack",
                   "ingress_security_groups", "ingress_next", "conntrack_priority", "rule_priority",
                   "conjunction_priority", "mid_stream_priority", "max_conjunctions")

cdef enum:
    SG_EGRESS_C = 0
    SG_INGRESS_C = 1
    SG_LOW = 1      # low is given: the port range's start, or the ICMP type
    SG_HIGH = 2     # high is given: the port range's end, or the ICMP code
    SG_GROUP = 4    # the remote end is members[member_start:member_start + member_count]
    SG_MAX_PREFIXES = 32  # a 16-bit range needs at most 30
    SG_ETH_IP = 0x0800
    SG_ETH_IPV6 = 0x86DD
    SG_CT_TRK_NEW = 0x21
    SG_TCP_SYN = 0x002
    SG_IPPROTO_ICMP = 1
    SG_IPPROTO_TCP = 6

SG_EGRESS = SG_EGRESS_C
SG_INGRESS = SG_INGRESS_C
SG_FLAG_LOW = SG_LOW
SG_FLAG_HIGH = SG_HIGH
SG_FLAG_GROUP = SG_GROUP

cdef struct SgRuleC:
    uint64_t direction, ip_proto, flags, low, high, remote_ip, remote_mask, member_start, member_count

cdef struct SgMemberC:
    uint64_t ip, mask

assert sizeof(SgRuleC) == 8 * len(SG_RULE_FIELDS) and sizeof(SgMemberC) == 8 * len(SG_MEMBER_FIELDS)

cdef struct SgFieldsC:  # field indices of the layout
    int reg6, reg7, metadata, eth_dst, eth_type, ip_proto, ipv4_src, ipv4_dst, tcp_dst, udp_dst, sctp_dst
    int icmp_type, icmp_code, tcp_flags, ct_state, conj_id

cdef struct SgShapeC:
    uint64_t ct_table[2], sg_table[2], next_table[2]
    uint64_t p_ct, p_rule, p_conj, p_mid
    uint64_t max_conj

cdef struct SgPortC:
    uint64_t zone, vni, cookie
    uint64_t nconj  # conjunctive matches made so far
    uint64_t dir_conj[2]


cdef class SecGroupProgram:
    """Where a port's security-group flows go: the pipeline's tables and priorities (SG_SHAPE_FIELDS,
    a mapping), and the layout's fields they match."""
    cdef FlowLayout layout
    cdef SgFieldsC f
    cdef SgShapeC s

    def __init__(self, FlowLayout layout, shape):
        names = {name: i for i, name in enumerate(layout.names)}
        missing = [n for n in ("reg6", "reg7", "metadata", "eth_dst", "eth_type", "ip_proto", "ipv4_src",
                               "ipv4_dst", "tcp_dst", "udp_dst", "sctp_dst", "icmpv4_type", "icmpv4_code",
                               "tcp_flags", "ct_state", "conj_id") if n not in names]
        if missing:
            raise ValueError(f"the flow layout lacks the fields security groups match: {', '.join(missing)}")
        unknown = set(shape) - set(SG_SHAPE_FIELDS)
        if unknown or len(shape) != len(SG_SHAPE_FIELDS):
            raise ValueError(f"shape: need exactly {', '.join(SG_SHAPE_FIELDS)}; unknown: {sorted(unknown)}")
        for name in SG_SHAPE_FIELDS:
            limit = 254 if name.endswith(("conntrack", "security_groups", "next")) else 0xFFFF
            if not 0 <= shape[name] <= limit:
                raise ValueError(f"shape {name}: {shape[name]} out of range (0..{limit})")
        if not 0 <= shape["max_conjunctions"] <= layout.c.max_actions:
            raise ValueError(f"shape max_conjunctions: {shape['max_conjunctions']}, at most the "
                             f"{layout.c.max_actions} action slots of a row")
        self.layout = layout
        self.f.reg6, self.f.reg7, self.f.metadata = names["reg6"], names["reg7"], names["metadata"]
        self.f.eth_dst, self.f.eth_type, self.f.ip_proto = names["eth_dst"], names["eth_type"], names["ip_proto"]
        self.f.ipv4_src, self.f.ipv4_dst = names["ipv4_src"], names["ipv4_dst"]
        self.f.tcp_dst, self.f.udp_dst, self.f.sctp_dst = names["tcp_dst"], names["udp_dst"], names["sctp_dst"]
        self.f.icmp_type, self.f.icmp_code = names["icmpv4_type"], names["icmpv4_code"]
        self.f.tcp_flags, self.f.ct_state, self.f.conj_id = names["tcp_flags"], names["ct_state"], names["conj_id"]
        self.s.ct_table[0], self.s.ct_table[1] = shape["egress_conntrack"], shape["ingress_conntrack"]
        self.s.sg_table[0], self.s.sg_table[1] = shape["egress_security_groups"], shape["ingress_security_groups"]
        self.s.next_table[0], self.s.next_table[1] = shape["egress_next"], shape["ingress_next"]
        self.s.p_ct, self.s.p_rule = shape["conntrack_priority"], shape["rule_priority"]
        self.s.p_conj, self.s.p_mid = shape["conjunction_priority"], shape["mid_stream_priority"]
        self.s.max_conj = shape["max_conjunctions"]


cdef inline unsigned char *_sg_row(const LayoutC *L, unsigned char *out, Py_ssize_t i, uint64_t table,
                                   uint64_t priority, uint64_t cookie) noexcept nogil:
    cdef unsigned char *row = out + i * L.itemsize
    memset(row, 0, L.itemsize)
    row[L.table] = <unsigned char>table
    store64(row + L.cookie, cookie)
    row[L.priority] = <unsigned char>priority      # little-endian u16
    row[L.priority + 1] = <unsigned char>(priority >> 8)
    row[L.goto_] = row[L.goto_ + 1] = 0xFF         # goto -1
    return row


cdef inline void _sg_match(const LayoutC *L, unsigned char *row, int field, uint64_t value,
                           uint64_t mask, bint masked) noexcept nogil:
    store64(row + L.present, ld64(row + L.present) | (1ULL << field))
    store64(row + L.mvalue + 8 * field, value & mask if masked else value)
    if masked:
        store64(row + L.masked, ld64(row + L.masked) | (1ULL << field))
        store64(row + L.mmask + 8 * field, mask)


cdef inline void _sg_action(const LayoutC *L, unsigned char *row, unsigned char op, unsigned char field,
                            unsigned char dst, uint16_t arg, uint64_t value) noexcept nogil:
    cdef unsigned char *a = row + L.actions + row[L.n_actions] * L.a_size
    a[L.a_op] = op
    a[L.a_field] = field
    a[L.a_dst] = dst
    a[L.a_arg] = <unsigned char>arg
    a[L.a_arg + 1] = <unsigned char>(arg >> 8)
    store64(a + L.a_value, value)
    row[L.n_actions] += 1


cdef inline void _sg_goto(const LayoutC *L, unsigned char *row, uint64_t table) noexcept nogil:
    row[L.goto_] = <unsigned char>table
    row[L.goto_ + 1] = 0


cdef int _range_prefixes(uint64_t low, uint64_t high, uint64_t *values, uint64_t *masks) noexcept nogil:
    """[low, high] (16 bits) as the fewest aligned blocks that cover it; returns how many."""
    cdef uint64_t size
    cdef int n = 0
    while low <= high:
        size = (low & (~low + 1)) if low else 0x10000
        while low + size - 1 > high:
            size >>= 1
        values[n] = low
        masks[n] = 0xFFFF & ~(size - 1)
        n += 1
        low += size
    return n


cdef int _protocols(const SgRuleC *rule, uint64_t *values, uint64_t *masks) noexcept nogil:
    """How many protocol matches the rule has (a range's prefixes in values/masks)."""
    if rule.ip_proto != SG_IPPROTO_ICMP and rule.flags & (SG_LOW | SG_HIGH):
        return _range_prefixes(rule.low, rule.high, values, masks)
    return 1


cdef inline int _port_field(const SgFieldsC *F, uint64_t proto) noexcept nogil:
    if proto == 6:
        return F.tcp_dst
    if proto == 17:
        return F.udp_dst
    return F.sctp_dst


cdef void _sg_new(const LayoutC *L, const SgFieldsC *F, unsigned char *row, int direction,
                  uint64_t zone) noexcept nogil:
    """A new connection of the port in `direction`: whose (reg6 or reg7 = zone), +trk+new, IPv4."""
    _sg_match(L, row, F.reg6 if direction == SG_EGRESS_C else F.reg7, zone, 0, False)
    _sg_match(L, row, F.eth_type, SG_ETH_IP, 0, False)
    _sg_match(L, row, F.ct_state, SG_CT_TRK_NEW, SG_CT_TRK_NEW, True)


cdef void _sg_protocol(const LayoutC *L, const SgFieldsC *F, unsigned char *row, const SgRuleC *rule,
                       const uint64_t *values, const uint64_t *masks, int j) noexcept nogil:
    if rule.ip_proto == 0:
        return
    _sg_match(L, row, F.ip_proto, rule.ip_proto, 0, False)
    if rule.ip_proto == SG_IPPROTO_ICMP:
        if rule.flags & SG_LOW:
            _sg_match(L, row, F.icmp_type, rule.low, 0, False)
        if rule.flags & SG_HIGH:
            _sg_match(L, row, F.icmp_code, rule.high, 0, False)
    elif rule.flags & (SG_LOW | SG_HIGH):
        _sg_match(L, row, _port_field(F, rule.ip_proto), values[j], masks[j], masks[j] != 0xFFFF)


cdef void _sg_remote(const LayoutC *L, const SgFieldsC *F, unsigned char *row, int direction, uint64_t ip,
                     uint64_t mask) noexcept nogil:
    if mask == 0:
        return  # any address
    _sg_match(L, row, F.ipv4_dst if direction == SG_EGRESS_C else F.ipv4_src, ip, mask, mask != 0xFFFFFFFFULL)


cdef inline void _sg_allow(const LayoutC *L, const SgShapeC *S, unsigned char *row, int direction,
                           uint64_t zone) noexcept nogil:
    _sg_action(L, row, OP_CT, 1, 0, 255, zone)   # ct(commit, zone)
    _sg_goto(L, row, S.next_table[direction])


cdef Py_ssize_t _sg_rule_flows(const LayoutC *L, const SgFieldsC *F, const SgShapeC *S, const SgRuleC *rule,
                               const SgMemberC *members, SgPortC *port, unsigned char *out,
                               Py_ssize_t n) noexcept nogil:
    """Write one rule's flows from row n (out NULL: count them); returns the new row count."""
    cdef uint64_t values[SG_MAX_PREFIXES]
    cdef uint64_t masks[SG_MAX_PREFIXES]
    cdef int direction = <int>rule.direction, j, nproto = _protocols(rule, values, masks)
    cdef Py_ssize_t nremote = rule.member_count if rule.flags & SG_GROUP else 1, k
    cdef uint64_t ip, mask, conj
    cdef uint64_t table = S.sg_table[direction]
    cdef unsigned char *row
    if (rule.flags & SG_GROUP and port.dir_conj[direction] < S.max_conj
            and nremote * nproto > nremote + nproto + 1):
        port.dir_conj[direction] += 1
        port.nconj += 1
        conj = port.zone << 16 | port.nconj
        if out == NULL:
            return n + nremote + nproto + 1
        for k in range(nremote):
            row = _sg_row(L, out, n, table, S.p_conj, port.cookie)
            _sg_new(L, F, row, direction, port.zone)
            _sg_remote(L, F, row, direction, members[rule.member_start + k].ip, members[rule.member_start + k].mask)
            _sg_action(L, row, OP_CONJUNCTION, 1, 2, 0, conj)
            n += 1
        for j in range(nproto):
            row = _sg_row(L, out, n, table, S.p_conj, port.cookie)
            _sg_new(L, F, row, direction, port.zone)
            _sg_protocol(L, F, row, rule, values, masks, j)
            _sg_action(L, row, OP_CONJUNCTION, 2, 2, 0, conj)
            n += 1
        row = _sg_row(L, out, n, table, S.p_conj, port.cookie)
        _sg_match(L, row, F.reg6 if direction == SG_EGRESS_C else F.reg7, port.zone, 0, False)
        _sg_match(L, row, F.conj_id, conj, 0, False)
        _sg_match(L, row, F.eth_type, SG_ETH_IP, 0, False)
        _sg_allow(L, S, row, direction, port.zone)
        return n + 1
    if out == NULL:
        return n + nremote * nproto
    for k in range(nremote):
        if rule.flags & SG_GROUP:
            ip, mask = members[rule.member_start + k].ip, members[rule.member_start + k].mask
        else:
            ip, mask = rule.remote_ip, rule.remote_mask
        for j in range(nproto):
            row = _sg_row(L, out, n, table, S.p_rule, port.cookie)
            _sg_new(L, F, row, direction, port.zone)
            _sg_remote(L, F, row, direction, ip, mask)
            _sg_protocol(L, F, row, rule, values, masks, j)
            _sg_allow(L, S, row, direction, port.zone)
            n += 1
    return n


cdef Py_ssize_t _sg_port_flows(const LayoutC *L, const SgFieldsC *F, const SgShapeC *S, SgPortC *port,
                               const uint64_t *macs, Py_ssize_t nmacs, const SgRuleC *rules, Py_ssize_t nrules,
                               const SgMemberC *members, bint arriving, unsigned char *out) noexcept nogil:
    """Every flow of the port from row 0 (out NULL: count them). The groups filter IPv4 only, so IPv6 for
    the port is dropped (not let past them) in its ingress_conntrack."""
    cdef Py_ssize_t n = 0, i
    cdef int direction
    cdef unsigned char *row
    port.nconj = port.dir_conj[0] = port.dir_conj[1] = 0
    if out != NULL:
        row = _sg_row(L, out, n, S.ct_table[SG_EGRESS_C], S.p_ct, port.cookie)
        _sg_match(L, row, F.reg6, port.zone, 0, False)
        _sg_match(L, row, F.eth_type, SG_ETH_IP, 0, False)
        _sg_action(L, row, OP_CT, 0, 0, <uint16_t>S.sg_table[SG_EGRESS_C], port.zone)
        for i in range(nmacs):
            row = _sg_row(L, out, 1 + i, S.ct_table[SG_INGRESS_C], S.p_ct, port.cookie)
            _sg_match(L, row, F.metadata, port.vni, 0, False)
            _sg_match(L, row, F.eth_dst, macs[i], 0, False)
            _sg_match(L, row, F.eth_type, SG_ETH_IP, 0, False)
            _sg_action(L, row, OP_SET_FIELD, <unsigned char>F.reg7, 0, 0, port.zone)
            _sg_action(L, row, OP_CT, 0, 0, <uint16_t>S.sg_table[SG_INGRESS_C], port.zone)
            row = _sg_row(L, out, 1 + nmacs + i, S.ct_table[SG_INGRESS_C], S.p_ct, port.cookie)
            _sg_match(L, row, F.metadata, port.vni, 0, False)
            _sg_match(L, row, F.eth_dst, macs[i], 0, False)
            _sg_match(L, row, F.eth_type, SG_ETH_IPV6, 0, False)
    n = 1 + 2 * nmacs
    for i in range(nrules):
        n = _sg_rule_flows(L, F, S, &rules[i], members, port, out, n)
    if arriving:
        if out != NULL:
            for direction in range(2):
                row = _sg_row(L, out, n + direction, S.sg_table[direction], S.p_mid, port.cookie)
                _sg_new(L, F, row, direction, port.zone)
                _sg_match(L, row, F.ip_proto, SG_IPPROTO_TCP, 0, False)
                _sg_match(L, row, F.tcp_flags, 0, SG_TCP_SYN, True)
                _sg_allow(L, S, row, direction, port.zone)
        n += 2
    return n


cdef inline uint64_t _sg_key_hash(const LayoutC *L, const unsigned char *row) noexcept nogil:
    cdef uint64_t h = 0xcbf29ce484222325ULL ^ (<uint64_t>row[L.table] << 16 | ld16(row + L.priority))
    cdef uint64_t present = ld64(row + L.present), masked = ld64(row + L.masked), bits = present
    cdef int i
    h = (h ^ present) * 0x100000001b3ULL
    h = (h ^ masked) * 0x100000001b3ULL
    while bits:
        i = ctz64(bits)
        bits &= bits - 1
        h = (h ^ ld64(row + L.mvalue + 8 * i)) * 0x100000001b3ULL
        if (masked >> i) & 1:
            h = (h ^ ld64(row + L.mmask + 8 * i)) * 0x100000001b3ULL
    return h ^ (h >> 29)


cdef Py_ssize_t _sg_unique(const LayoutC *L, unsigned char *rows, Py_ssize_t n, Py_ssize_t *slots,
                           Py_ssize_t nslots) noexcept nogil:
    """Keep the first row of each key, in order; a later conjunction clause of the same key adds its
    conjunction action to it. Returns the rows kept, -1 when a clause's actions overflow the row."""
    cdef Py_ssize_t i, kept = 0, s, j
    cdef unsigned char *row
    cdef unsigned char *first
    cdef const unsigned char *a
    cdef unsigned int na
    for s in range(nslots):
        slots[s] = -1
    for i in range(n):
        row = rows + i * L.itemsize
        s = <Py_ssize_t>(_sg_key_hash(L, row) & <uint64_t>(nslots - 1))
        while True:
            j = slots[s]
            if j < 0:
                slots[s] = kept
                if kept != i:
                    memcpy(rows + kept * L.itemsize, row, L.itemsize)
                kept += 1
                break
            first = rows + j * L.itemsize
            if _same_key(L, first, row):
                a = row + L.actions
                if row[L.n_actions] == 1 and a[L.a_op] == OP_CONJUNCTION:
                    na = first[L.n_actions]
                    if na >= <unsigned int>L.max_actions:
                        return -1
                    memcpy(first + L.actions + na * L.a_size, a, L.a_size)
                    first[L.n_actions] = na + 1
                break
            s = (s + 1) & (nslots - 1)
    return kept


cdef str _sg_check_rules(const SgRuleC *R, Py_ssize_t nrules, Py_ssize_t nmembers):
    """The first field of the rule rows that is wrong, named, or None."""
    cdef Py_ssize_t i
    cdef const SgRuleC *r
    for i in range(nrules):
        r = &R[i]
        if r.direction > SG_INGRESS_C:
            return f"rules[{i}].direction: {r.direction} is not egress (0) or ingress (1)"
        if r.ip_proto > 255:
            return f"rules[{i}].ip_proto: {r.ip_proto} out of range (0..255)"
        if r.flags & ~<uint64_t>(SG_LOW | SG_HIGH | SG_GROUP):
            return f"rules[{i}].flags: {r.flags:#x} has unknown bits"
        if r.flags & (SG_LOW | SG_HIGH):
            if r.ip_proto == SG_IPPROTO_ICMP:
                if r.low > 255 or r.high > 255:
                    return f"rules[{i}].low/high: ICMP type {r.low} and code {r.high} must fit 8 bits"
            elif r.ip_proto in (6, 17, 132):
                if r.flags & (SG_LOW | SG_HIGH) != (SG_LOW | SG_HIGH) or r.low > r.high or r.high > 0xFFFF:
                    return f"rules[{i}].low/high: port range {r.low}..{r.high} is not 0 <= low <= high <= 65535"
            else:
                return f"rules[{i}].flags: protocol {r.ip_proto} has no port range OpenFlow can match"
        if r.flags & SG_GROUP:
            if r.member_start > <uint64_t>nmembers or r.member_count > <uint64_t>nmembers - r.member_start:
                return (f"rules[{i}].member_start/member_count: {r.member_start}+{r.member_count} runs past "
                        f"the {nmembers} members")
        elif r.remote_mask > 0xFFFFFFFFULL or r.remote_ip & ~r.remote_mask:
            return f"rules[{i}].remote_ip: {r.remote_ip:#x} is not a prefix of mask {r.remote_mask:#x}"
    return None


cdef uint64_t *_take(uint64_t *dst, const uint64_t[::1] src) noexcept:
    """src's words into dst, each read once (rd64): after a plain memcpy the compiler may read the
    caller's words again where ours are read. Returns the end of what it wrote."""
    cdef Py_ssize_t k, n = src.shape[0]
    cdef const unsigned char *p = <const unsigned char *>&src[0] if n else NULL
    for k in range(n):
        dst[k] = rd64(p + 8 * k)
    return dst + n


def _words(records, Py_ssize_t record, str what):
    """The records as one run of uint64 words (refused unless they are C-contiguous `record`-byte ones)."""
    import numpy as np
    if records.dtype.itemsize != record or not records.flags.c_contiguous:
        raise TypeError(f"{what}: expected a C-contiguous array of {record}-byte records, got {records.dtype}")
    return records.view(np.uint64).reshape(-1) if len(records) else np.zeros(1, np.uint64)[:0]


def compile_secgroups(SecGroupProgram program, uint64_t zone, uint64_t vni, uint64_t cookie, macs, rules,
                      members, bint arriving):
    """Every security-group flow of one local port in conntrack zone `zone` (its ofport), as rows of the
    program's flow record (adds).

    macs: uint64 MACs the port receives on (its own and its allowed address pairs', distinct);
    rules: records of SG_RULE_FIELDS in the order of the port's rules; members: records of
    SG_MEMBER_FIELDS the rules' remote groups point into; arriving: the port migrates here (its
    established TCP is admitted). Raises ValueError naming the field of a bad input.
    """
    import numpy as np
    if not 1 <= zone <= 0xFFFF:
        raise ValueError(f"zone: {zone} is not a conntrack zone (1..65535)")
    cdef const uint64_t[::1] mac_words = np.ascontiguousarray(macs, dtype="<u8").reshape(-1)
    cdef const uint64_t[::1] rule_words = _words(rules, sizeof(SgRuleC), "rules")
    cdef const uint64_t[::1] member_words = _words(members, sizeof(SgMemberC), "members")
    cdef Py_ssize_t nmacs = mac_words.shape[0], nrules = rule_words.shape[0] * 8 // sizeof(SgRuleC)
    cdef Py_ssize_t nmembers = member_words.shape[0] * 8 // sizeof(SgMemberC)
    # our copy of the three arrays, which everything below reads: the caller's may change meanwhile
    cdef uint64_t *copy = <uint64_t *>PyMem_Malloc(8 * (nmacs + rule_words.shape[0] + member_words.shape[0] + 1))
    cdef uint64_t *rules_at
    cdef uint64_t *members_at
    if copy == NULL:
        raise MemoryError()
    try:
        rules_at = _take(copy, mac_words)
        members_at = _take(rules_at, rule_words)
        _take(members_at, member_words)
        return _compile(program, zone, vni, cookie, copy, nmacs, <const SgRuleC *>rules_at, nrules,
                        <const SgMemberC *>members_at, nmembers, arriving)
    finally:
        PyMem_Free(copy)


cdef _compile(SecGroupProgram program, uint64_t zone, uint64_t vni, uint64_t cookie, const uint64_t *mac,
              Py_ssize_t nmacs, const SgRuleC *R, Py_ssize_t nrules, const SgMemberC *M, Py_ssize_t nmembers,
              bint arriving):
    """compile_secgroups over our copy of its arrays: checked, counted and written from it alone."""
    import numpy as np
    cdef const LayoutC *L = &program.layout.c
    cdef SgPortC port
    cdef Py_ssize_t n, nslots, kept, i
    for i in range(nmacs):
        if mac[i] >> 48:
            raise ValueError(f"macs[{i}]: {mac[i]:#x} is wider than 48 bits")
    for i in range(nmembers):
        if M[i].mask > 0xFFFFFFFFULL or M[i].ip & ~M[i].mask:
            raise ValueError(f"members[{i}].ip: {M[i].ip:#x} is not a prefix of mask {M[i].mask:#x}")
    problem = _sg_check_rules(R, nrules, nmembers)
    if problem is not None:
        raise ValueError(problem)
    port.zone, port.vni, port.cookie = zone, vni, cookie
    with nogil:
        n = _sg_port_flows(L, &program.f, &program.s, &port, mac, nmacs, R, nrules, M, arriving, NULL)
    if port.nconj > 0xFFFF:
        raise ValueError(f"rules: {port.nconj} conjunctive matches, at most 65535 per port")
    out = np.empty(max(n, 1), program.layout.dtype)
    nslots = 16
    while nslots < 2 * n:
        nslots *= 2
    cdef unsigned char[::1] out_bytes = out.view(np.uint8).reshape(-1)
    cdef Py_ssize_t[::1] slots = np.empty(nslots, np.intp)
    with nogil:
        _sg_port_flows(L, &program.f, &program.s, &port, mac, nmacs, R, nrules, M, arriving, &out_bytes[0])
        kept = _sg_unique(L, &out_bytes[0], n, &slots[0], nslots)
    if kept < 0:
        raise ValueError(f"rules: a conjunction clause's flow needs more than {L.max_actions} actions")
    return out[:kept]
