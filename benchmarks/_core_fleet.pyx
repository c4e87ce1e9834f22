# cython: language_level=3
"""A migration's change on every chassis, compiled by the core and framed in one C loop over the chassis.

This is the compiled core's own work with no Python call per chassis: each chassis' transitions
built as records, the core's compile_transitions (compile_changes' C half, dfflow/_core.pxd) and the
packer's frame_packed_bundle (what PlanBundle.frame_bundle does with a plan of one change,
dfflow/_packer.pxd). It is the shape f085df4's "compiled" figure of `dfflow-bench compile` timed
(its bulk interface, since removed from the library: #14). The agent's own path, chassis by chassis
from Python as each chassis' controller runs it, is benchmarks.compile.Cloud.migrate; the two give
the same bytes.
"""
from libc.stdint cimport uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free

from dfflow._core cimport (ROLE_LOCAL, ROLE_REMOTE, ChangeRows, CompiledProgram, PortColumns, RoleC, TransitionC,
                           _same_role, compile_transitions)
from dfflow._packer cimport XidAllocator, _check_bundle_args, frame_packed_bundle
from cpython.bytearray cimport PyByteArray_GET_SIZE, PyByteArray_Resize


cdef inline void _role(RoleC *r, uint64_t chassis, uint64_t where, uint64_t vif, const uint64_t *tunnel,
                       Py_ssize_t n_chassis) noexcept nogil:
    """The port's role on `chassis` when it is on chassis `where` (on its VIF `vif` there): local on
    the VIF there, else remote via chassis' tunnel to `where` (PortRole(True, ofport=vif) and
    controller.templates.remote_role(tunnel): no copy tunnel, not gated)."""
    if where == chassis:
        r.kind, r.ofport, r.tunnel = ROLE_LOCAL, vif, 0
    else:
        r.kind, r.ofport, r.tunnel = ROLE_REMOTE, 0, tunnel[chassis * n_chassis + where]
    r.copy_tunnel = 0
    r.gated = 0


def frame_every_chassis(CompiledProgram program not None, PortColumns columns not None, const uint64_t[::1] rows,
                        const uint64_t[::1] host, const uint64_t[::1] ofport, const uint64_t[::1] dest_ofport,
                        const uint64_t[:, ::1] tunnel, const uint64_t[::1] ports, const uint64_t[::1] dests,
                        xid_start, bundle_id_start, flags, bytearray out not None, int64_t[::1] offsets):
    """Every chassis' bundle for the moves (port `ports[i]` to chassis `dests[i]`) into `out`, as the
    agent frames it (Cloud.migrate): chassis c's bundle is out[offsets[c]:offsets[c + 1]] (empty when
    nothing changes there), its id bundle_id_start + c, its xids run on from xid_start across the
    chassis. `out` is resized to the bytes used.

    A cloud's port p: its row `rows[p]` in `columns`, its host `host[p]` and VIF `ofport[p]` there, its
    VIF `dest_ofport[p]` on a destination; tunnel[c, d]: the ofport on chassis c of its tunnel to d.
    On chassis c, a moved port goes from its role there on its host to its role there on its
    destination (_role). ValueError naming the move for a port or a chassis outside the cloud.
    """
    cdef Py_ssize_t nports = rows.shape[0], n_chassis = tunnel.shape[0], k = ports.shape[0], i, nt, used = 0
    cdef uint64_t c, p
    cdef uint32_t bid
    cdef uint16_t fl
    cdef ChangeRows change
    cdef TransitionC *T
    cdef TransitionC *tr
    cdef XidAllocator xids = XidAllocator(xid_start)
    if k == 0:
        raise ValueError("moves: empty change (no port to migrate)")
    if dests.shape[0] != k:
        raise ValueError(f"moves: {k} ports, {dests.shape[0]} destinations")
    if host.shape[0] != nports or ofport.shape[0] != nports or dest_ofport.shape[0] != nports:
        raise ValueError(f"rows, host, ofport, dest_ofport: one value per port of the cloud, "
                         f"{nports}, {host.shape[0]}, {ofport.shape[0]}, {dest_ofport.shape[0]}")
    if tunnel.shape[1] != n_chassis or offsets.shape[0] != n_chassis + 1:
        raise ValueError(f"tunnel: {n_chassis} x {tunnel.shape[1]} chassis, offsets: {offsets.shape[0]} "
                         f"(a square of the chassis, and one more)")
    _check_bundle_args(bundle_id_start, flags, "")
    if bundle_id_start + n_chassis - 1 > 0xFFFFFFFF:
        raise ValueError(f"bundle_id_start {bundle_id_start:#x} + {n_chassis} chassis runs past 0xffffffff")
    for i in range(k):
        if ports[i] >= <uint64_t>nports:
            raise ValueError(f"moves: move {i}: port {<int64_t>ports[i]} is not in the cloud (0..{nports - 1})")
        if dests[i] >= <uint64_t>n_chassis or host[ports[i]] >= <uint64_t>n_chassis:
            raise ValueError(f"moves: move {i}: port {ports[i]} from chassis {host[ports[i]]} to "
                             f"{<int64_t>dests[i]}: a chassis outside 0..{n_chassis - 1}")
    bid, fl = bundle_id_start, flags
    cdef const uint64_t *tun = &tunnel[0, 0]
    T = <TransitionC *>malloc(k * sizeof(TransitionC))
    if T == NULL:
        raise MemoryError()
    try:
        offsets[0] = 0
        for c in range(<uint64_t>n_chassis):
            nt = 0
            for i in range(k):
                p = ports[i]
                tr = &T[nt]
                tr.port = rows[p]
                _role(&tr.old, c, host[p], ofport[p], tun, n_chassis)
                _role(&tr.new, c, dests[i], dest_ofport[p], tun, n_chassis)
                if not _same_role(&tr.old, &tr.new):
                    nt += 1
            if nt:
                change = compile_transitions(program, columns, T, nt)
                if change.n:
                    used = frame_packed_bundle(out, used, change, xids.alloc(change.n + 2), bid + <uint32_t>c, fl,
                                               True)
            offsets[c + 1] = used
    finally:
        free(T)
    if used != PyByteArray_GET_SIZE(out):
        PyByteArray_Resize(out, used)
