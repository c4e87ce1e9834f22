# cython: language_level=3
"""The compiled packer's C interface: what dfflow/_packer.pyx implements and dfflow/_core.pyx
(the port-flow compiler) builds on -- the flow-record layout, the row validator and writer, and
the byte helpers both use.
"""
from libc.stdint cimport uint16_t, uint32_t, uint64_t, int16_t, int64_t
from libc.string cimport memcmp

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
    /* Reads of what another thread may be writing meanwhile (a caller's flow records, which the packer
       checks and writes from without the GIL; a port table's records): for a plain read the compiler may
       load a value again for a later use -- GCC did: an action's opcode read once for the jump table's
       range check and again for its index, a jump through garbage when the byte changed in between.
       A volatile read is done exactly once, where it is written, like the kernel's READ_ONCE. */
    typedef uint16_t __attribute__((may_alias, aligned(1))) dff_u16_any;
    typedef uint64_t __attribute__((may_alias, aligned(1))) dff_u64_any;
    static inline unsigned int dff_rd8(const unsigned char *p) { return *(const volatile unsigned char *)p; }
    static inline uint16_t dff_rd16(const unsigned char *p) { return *(const volatile dff_u16_any *)p; }
    static inline uint64_t dff_rd64(const unsigned char *p) { return *(const volatile dff_u64_any *)p; }
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
    unsigned int rd8 "dff_rd8"(const unsigned char *p) noexcept nogil      # a row's byte, read once
    uint16_t rd16 "dff_rd16"(const unsigned char *p) noexcept nogil        # a row's u16, read once
    uint64_t rd64 "dff_rd64"(const unsigned char *p) noexcept nogil        # a row's u64, read once
    int ctz64 "dff_ctz64"(uint64_t v) noexcept nogil
    int clz64 "dff_clz64"(uint64_t v) noexcept nogil
    void prefetch "dff_prefetch"(const void *p) noexcept nogil
    void prefetchw "dff_prefetchw"(const void *p) noexcept nogil

cdef extern from *:
    """
    /* The numbers of OpenFlow 1.3 (and one of 1.4), and of its ONF and Nicira extensions, that
       the packer and the framing write and read, by os-ken's names: dfflow.openflow.protocol checks every one of
       them (the packer's OPENFLOW table) against os-ken at import. */
    #define DFF_OFP_VERSION 4u
    #define DFF_OFPT_EXPERIMENTER 4u
    #define DFF_OFPT_FLOW_MOD 14u
    #define DFF_OFPFC_DELETE 3u
    #define DFF_OFPFC_DELETE_STRICT 4u
    #define DFF_OFPTT_ALL 255u
    #define DFF_OFP_NO_BUFFER 0xFFFFFFFFu
    #define DFF_OFPP_ANY 0xFFFFFFFFu
    #define DFF_OFPG_ANY 0xFFFFFFFFu
    #define DFF_OFPP_MAX 0xFFFFFF00u
    #define DFF_OFPP_IN_PORT 0xFFFFFFF8u
    #define DFF_OFPP_LOCAL 0xFFFFFFFEu
    #define DFF_OFPMT_OXM 1u
    #define DFF_OFPXMC_EXPERIMENTER 0xFFFFu
    #define DFF_OFPIT_GOTO_TABLE 1u
    #define DFF_OFPIT_WRITE_METADATA 2u
    #define DFF_OFPIT_APPLY_ACTIONS 4u
    #define DFF_OFPAT_OUTPUT 0u
    #define DFF_OFPAT_DEC_NW_TTL 24u
    #define DFF_OFPAT_SET_FIELD 25u
    #define DFF_OFPAT_EXPERIMENTER 0xFFFFu
    #define DFF_ONF_EXPERIMENTER_ID 0x4F4E4600u
    #define DFF_ONF_ET_BUNDLE_CONTROL 2300u
    #define DFF_ONF_ET_BUNDLE_ADD_MESSAGE 2301u
    #define DFF_ONF_BCT_OPEN_REQUEST 0u
    #define DFF_ONF_BCT_CLOSE_REQUEST 2u
    #define DFF_ONF_BCT_COMMIT_REQUEST 4u
    #define DFF_ONF_BCT_DISCARD_REQUEST 6u
    #define DFF_ONF_BF_ATOMIC 1u
    #define DFF_ONF_BF_ORDERED 2u
    #define DFF_NX_EXPERIMENTER_ID 0x2320u
    #define DFF_NXAST_REG_MOVE 6u
    #define DFF_NXAST_CONJUNCTION 34u
    #define DFF_NXAST_CT 35u
    #define DFF_NXAST_RESUBMIT_TABLE 14u
    #define DFF_NX_CT_F_COMMIT 1u
    #define DFF_OFPT_BUNDLE_CONTROL 33u  /* OpenFlow 1.4's */
    #define DFF_OFPT_BUNDLE_ADD_MESSAGE 34u  /* OpenFlow 1.4's */
    #define DFF_OFPBCT_OPEN_REQUEST 0u  /* OpenFlow 1.4's */
    #define DFF_OFPBCT_COMMIT_REQUEST 4u  /* OpenFlow 1.4's */
    """
    uint32_t OFP_VERSION "DFF_OFP_VERSION"
    uint32_t OFPT_EXPERIMENTER "DFF_OFPT_EXPERIMENTER"
    uint32_t OFPT_FLOW_MOD "DFF_OFPT_FLOW_MOD"
    uint32_t OFPFC_DELETE "DFF_OFPFC_DELETE"
    uint32_t OFPFC_DELETE_STRICT "DFF_OFPFC_DELETE_STRICT"
    uint32_t OFPTT_ALL "DFF_OFPTT_ALL"
    uint32_t OFP_NO_BUFFER "DFF_OFP_NO_BUFFER"
    uint32_t OFPP_ANY "DFF_OFPP_ANY"
    uint32_t OFPG_ANY "DFF_OFPG_ANY"
    uint32_t OFPP_MAX "DFF_OFPP_MAX"
    uint32_t OFPP_IN_PORT "DFF_OFPP_IN_PORT"
    uint32_t OFPP_LOCAL "DFF_OFPP_LOCAL"
    uint32_t OFPMT_OXM "DFF_OFPMT_OXM"
    uint32_t OFPXMC_EXPERIMENTER "DFF_OFPXMC_EXPERIMENTER"
    uint32_t OFPIT_GOTO_TABLE "DFF_OFPIT_GOTO_TABLE"
    uint32_t OFPIT_WRITE_METADATA "DFF_OFPIT_WRITE_METADATA"
    uint32_t OFPIT_APPLY_ACTIONS "DFF_OFPIT_APPLY_ACTIONS"
    uint32_t OFPAT_OUTPUT "DFF_OFPAT_OUTPUT"
    uint32_t OFPAT_DEC_NW_TTL "DFF_OFPAT_DEC_NW_TTL"
    uint32_t OFPAT_SET_FIELD "DFF_OFPAT_SET_FIELD"
    uint32_t OFPAT_EXPERIMENTER "DFF_OFPAT_EXPERIMENTER"
    uint32_t ONF_EXPERIMENTER_ID "DFF_ONF_EXPERIMENTER_ID"
    uint32_t ONF_ET_BUNDLE_CONTROL "DFF_ONF_ET_BUNDLE_CONTROL"
    uint32_t ONF_ET_BUNDLE_ADD_MESSAGE "DFF_ONF_ET_BUNDLE_ADD_MESSAGE"
    uint32_t ONF_BCT_OPEN_REQUEST "DFF_ONF_BCT_OPEN_REQUEST"
    uint32_t ONF_BCT_CLOSE_REQUEST "DFF_ONF_BCT_CLOSE_REQUEST"
    uint32_t ONF_BCT_COMMIT_REQUEST "DFF_ONF_BCT_COMMIT_REQUEST"
    uint32_t ONF_BCT_DISCARD_REQUEST "DFF_ONF_BCT_DISCARD_REQUEST"
    uint32_t ONF_BF_ATOMIC "DFF_ONF_BF_ATOMIC"
    uint32_t ONF_BF_ORDERED "DFF_ONF_BF_ORDERED"
    uint32_t NX_EXPERIMENTER_ID "DFF_NX_EXPERIMENTER_ID"
    uint32_t NXAST_REG_MOVE "DFF_NXAST_REG_MOVE"
    uint32_t NXAST_CONJUNCTION "DFF_NXAST_CONJUNCTION"
    uint32_t NXAST_CT "DFF_NXAST_CT"
    uint32_t NXAST_RESUBMIT_TABLE "DFF_NXAST_RESUBMIT_TABLE"
    uint32_t NX_CT_F_COMMIT "DFF_NX_CT_F_COMMIT"
    uint32_t OFPT_BUNDLE_CONTROL "DFF_OFPT_BUNDLE_CONTROL"
    uint32_t OFPT_BUNDLE_ADD_MESSAGE "DFF_OFPT_BUNDLE_ADD_MESSAGE"
    uint32_t OFPBCT_OPEN_REQUEST "DFF_OFPBCT_OPEN_REQUEST"
    uint32_t OFPBCT_COMMIT_REQUEST "DFF_OFPBCT_COMMIT_REQUEST"

cdef enum:
    # Work on fewer rows (or port changes) than this holds the GIL: releasing and taking it back costs
    # more than it lets another thread do (the agent's plans are mostly a few rows per chassis).
    NOGIL_ROWS = 128
    ROW_BYTES_GUESS = 256            # a usual FLOW_MOD in its bundle add (the packer grows its output if more)
    C_XID_CHANNEL_MAX = 0x7FFFFFFF   # a channel's xids: 1..this (dfflow.openflow.framing)
    C_FLOW_MOD_FIXED_LEN = 48
    C_BUNDLE_CTRL_LEN = 24
    C_BUNDLE_ADD_HEADER_LEN = 24
    MAX_FIELDS = 64
    MAX_ACTION_SLOTS = 32
    # largest row: bundle add header + FLOW_MOD header + (4 + 64 fields * (4 + 2 * 8))
    # match padded + apply-actions header + 32 * 24-byte actions + write-metadata + goto
    MAX_ROW_BYTES = 24 + 48 + 1288 + 8 + 32 * 24 + 24 + 8
    # action opcodes of a flow record's action slots (dfflow.flowbatch reads them: ACTION_OPCODES)
    OP_NONE = 0
    OP_OUTPUT = 1
    OP_SET_FIELD = 2
    OP_DEC_NW_TTL = 3
    OP_MOVE = 4
    OP_CT = 5
    OP_CONJUNCTION = 6
    OP_RESUBMIT = 7

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
    E_CT_ZONE
    E_CT_FLAGS
    E_CT_TABLE
    E_CONJ_CLAUSE
    E_CONJ_ID
    E_CONJ_ALONE
    E_RESUBMIT_TABLE


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
    cdef LayoutC c
    cdef readonly object dtype
    cdef readonly tuple names


# Flow records the packer reads: n rows from base. The port-flow compiler makes them over its own
# output buffer (rows_in: no numpy view unless one is read); a FlowBatch's are made per call.
cdef class Rows:
    cdef readonly FlowLayout layout
    cdef readonly Py_ssize_t n
    cdef const unsigned char *base
    cdef object owner          # what holds the records (a bytearray the compiler made, or an array)
    cdef Py_ssize_t offset     # where the first record is in owner, in bytes
    cdef Py_buffer view        # owner's buffer, when held (an array's: it must not move meanwhile)
    cdef bint held
    cdef object _array         # the numpy view, made when first read
    # The rows already packed where they were made (the port-flow compiler packs its rows in the same
    # call): packed_len bytes at packed_off of packed_buf, each row a bundle add around its FLOW_MOD with
    # the xids, the bundle id and the flags as placeholders, patched when the bundle is framed.
    cdef bytes packed_buf      # None: not packed
    cdef Py_ssize_t packed_off, packed_len


cdef Rows rows_in(FlowLayout layout, bytearray owner, Py_ssize_t offset, Py_ssize_t n)


# A channel's transaction ids (dfflow.openflow.framing.XidAllocator).
cdef class XidAllocator:
    cdef uint64_t next_xid

    cpdef uint32_t alloc(self, Py_ssize_t n=*) except 0



cdef inline void _write_onf_bundle_msg(unsigned char *p, uint16_t length, uint32_t xid, uint32_t exp_type,
                                       uint32_t bundle_id, uint16_t ctrl_type, uint16_t flags) noexcept nogil:
    """The 24 bytes of an ONF bundle control message, or the header of a bundle add (ctrl_type 0)
    whose inner message follows: header, experimenter, exp_type, bundle_id, type (or pad), flags."""
    p[0] = OFP_VERSION
    p[1] = OFPT_EXPERIMENTER
    be16(p + 2, length)
    be32(p + 4, xid)
    be32(p + 8, ONF_EXPERIMENTER_ID)
    be32(p + 12, exp_type)
    be32(p + 16, bundle_id)
    be16(p + 20, ctrl_type)
    be16(p + 22, flags)


cdef inline unsigned char *_write_bundle_ctrl(unsigned char *p, uint32_t xid, uint32_t bundle_id,
                                              uint16_t ctrl_type, uint16_t flags) noexcept nogil:
    _write_onf_bundle_msg(p, C_BUNDLE_CTRL_LEN, xid, ONF_ET_BUNDLE_CONTROL, bundle_id, ctrl_type, flags)
    return p + C_BUNDLE_CTRL_LEN

# A bundle's xids are one block from `first`: its nadds adds first, then its open, then its commit
# (PlanBundle.frame_bundle's numbering).
cdef inline void _write_bundle_open(unsigned char *p, uint32_t first, Py_ssize_t nadds, uint32_t bundle_id,
                                    uint16_t flags) noexcept nogil:
    _write_bundle_ctrl(p, first + <uint32_t>nadds, bundle_id, ONF_BCT_OPEN_REQUEST, flags)

cdef inline void _write_bundle_commit(unsigned char *p, uint32_t first, Py_ssize_t nadds, uint32_t bundle_id,
                                      uint16_t flags) noexcept nogil:
    _write_bundle_ctrl(p, first + <uint32_t>nadds + 1, bundle_id, ONF_BCT_COMMIT_REQUEST, flags)

# Whether two rows are the same flow for OpenFlow (table, priority, match): the fields the match has,
# each value (and mask, where masked) -- as the packer writes them, a few words of the 27 fields' columns.
cdef inline bint _same_key(const LayoutC *L, const unsigned char *a, const unsigned char *b) noexcept nogil:
    cdef uint64_t present = ld64(a + L.present), masked = ld64(a + L.masked)
    cdef int i
    if (a[L.table] != b[L.table] or ld16(a + L.priority) != ld16(b + L.priority)
            or present != ld64(b + L.present) or masked != ld64(b + L.masked)):
        return False
    while present:
        i = ctz64(present)
        present &= present - 1
        if ld64(a + L.mvalue + 8 * i) != ld64(b + L.mvalue + 8 * i):
            return False
    while masked:
        i = ctz64(masked)
        masked &= masked - 1
        if ld64(a + L.mmask + 8 * i) != ld64(b + L.mmask + 8 * i):
            return False
    return True


# Validate rows start..stop-1; the packed size of their FLOW_MODs, or -1 with *err set.
cdef Py_ssize_t _check_rows(const LayoutC *L, const unsigned char *base, Py_ssize_t start,
                            Py_ssize_t stop, Err *err) noexcept nogil
# Write n validated rows as FLOW_MODs (or BUNDLE_ADDs around them) into out[0:room]; bytes written, or -1.
cdef Py_ssize_t _write_rows(const LayoutC *L, const unsigned char *base, Py_ssize_t n,
                            unsigned char *out, Py_ssize_t room, uint32_t xid, bint bundle,
                            uint32_t bundle_id, uint16_t flags) noexcept nogil
cdef object _error(FlowLayout layout, Err *err, str what)
# One Rows packed where it was made (a ChangeRows) framed as a bundle after the first `used` bytes of out
# (grown if short), numbered from a block of rows.n + 2 xids at `first` (+ 1 without the commit): as
# PlanBundle((rows,)).frame_bundle frames it. The bytes of out used then.
cdef Py_ssize_t frame_packed_bundle(bytearray out, Py_ssize_t used, Rows rows, uint32_t first, uint32_t bid,
                                    uint16_t fl, bint commit) except -1
cdef uint32_t _check_xids(object xid_start, Py_ssize_t count, str what) except? 0
cdef _check_bundle_args(object bundle_id, object flags, str what)
