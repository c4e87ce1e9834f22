# cython: language_level=3
"""The port-flow compiler's C interface: what dfflow/_core.pyx implements and a Cython module outside
the core cimports to run the core's per-chassis compile with no Python call -- the port columns' and
transitions' records, the compiled program, the port columns and the change they make, and
compile_transitions (compile_changes' C half). benchmarks/_core_fleet.pyx builds every chassis'
transitions in one C loop over it.
"""
from libc.stdint cimport uint64_t, int16_t, int32_t
from cpython.buffer cimport Py_buffer

from dfflow._packer cimport FlowLayout, Rows

cdef enum:
    # a role's kind (RoleC.kind; controller.templates.PortRole: None, local or not)
    ROLE_NONE = 0
    ROLE_LOCAL = 1
    ROLE_REMOTE = 2
    FACTS_KEYS = 1 << 10  # every combination of the facts bits (_core.pyx's F_*, F_ROUTED the last)

# The column tables' records (_core.pyx's PORT_FIELDS, FIP_FIELDS, PAIR_FIELDS): every column a
# little-endian uint64.
cdef struct PortC:
    uint64_t object_hash, vni, mac, flags, ip_start, ip_count, fip_start, fip_count
    uint64_t pair_start, pair_hosts, pair_nets

cdef struct FipC:
    uint64_t fip, fip_mac, fixed_ip, ext_vni, router_mac

cdef struct PairC:
    uint64_t mac, ip, mask

# A port's role on a chassis (a PortRole's ROLE_FIELDS): kind ROLE_*, gated 0/1, and its ofport, tunnel
# and copy tunnel.
cdef struct RoleC:
    uint64_t kind, gated, ofport, tunnel, copy_tunnel

# (a PortRole's ==)
cdef inline bint _same_role(const RoleC *a, const RoleC *b) noexcept nogil:
    return (a.kind == b.kind and a.gated == b.gated and a.ofport == b.ofport and a.tunnel == b.tunnel
            and a.copy_tunnel == b.copy_tunnel)

cdef struct TransitionC:
    uint64_t port
    RoleC old
    RoleC new
    # the port's record as _check_transitions read and checked it: counting and compiling read only this
    # copy, never the port table again, whose contents may change in place meanwhile (another thread),
    # so the rows counted are the rows written and the ranges checked are the ranges read
    PortC rec

cdef struct ColumnsC:
    const PortC *ports
    Py_ssize_t nports
    const uint64_t *ips
    Py_ssize_t nips
    const FipC *fips
    Py_ssize_t nfips
    const PairC *pairs
    Py_ssize_t npairs

cdef struct EntryC  # a program's entry (_core.pyx): only the core reads it


cdef class CompiledProgram:
    cdef FlowLayout layout
    cdef object protos
    cdef Py_buffer view
    cdef bint held
    cdef EntryC *entries
    # per (facts, only_location) key: how many entries apply, then their indices (SELECTION_KEYS lists)
    cdef int16_t *selection
    # per key: how many of the entries that apply repeat each way (N_EACH counts: ONCE, PER_IP, ...)
    cdef int32_t *each_counts
    # per facts: whether a location-dependent entry that applies has the location in its match
    cdef bint location_keyed[FACTS_KEYS]
    cdef readonly int n
    cdef readonly tuple names


cdef class _Buf:
    cdef Py_buffer view
    cdef bint held


cdef class PortColumns:
    cdef _Buf bp, bi, bf, bpair
    cdef ColumnsC c


cdef class ChangeRows(Rows):
    cdef readonly Py_ssize_t ndel, nadd, key_conflicts
    cdef Py_ssize_t packed_deletes  # bytes of the deletes' bundle adds (the adds' follow)
    cdef Rows _deletes, _adds

    cdef Rows _side(self, Py_ssize_t offset, Py_ssize_t n, Py_ssize_t packed_off, Py_ssize_t packed_len)


# The change of the nt transitions T[0:nt] (port rows, old and new roles: the rest of each is the core's
# to fill) on a chassis: compile_changes once it has read its `changes` into T. ValueError naming the
# transition for a bad port row or a port whose ranges run past the columns, NotCompilable as there.
cdef ChangeRows compile_transitions(CompiledProgram program, PortColumns columns, TransitionC *T, Py_ssize_t nt)
