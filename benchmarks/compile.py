"""Computing and packing a migration's flows for every chassis: the compiled core in one C loop over
the chassis, the agent's own path and the Python apps + os-ken, same change, same bytes, one run.

A simulated cloud (`Cloud`): P ports spread over C chassis, networks of up to 50
ports behind routers, two IPv4s per port, one port in ten with a floating IP, every
chassis hosting ports of every network (so every chassis is related to every port
and has the port's remote flows). A change is a list of moves (port -> new chassis):
one port's migration, or the evacuation of K ports of one chassis. For every chassis
the change is what its controller computes and sends: the L2, L3 and DNAT flows that
differ between the port's old and new role there, as one bundle per chassis.

* ``core loop`` (`Cloud.migrate_core`): the compiled core's work alone, every chassis in one C loop
  (`benchmarks/_core_fleet.pyx`: each chassis' transitions as records, the core's
  `compile_transitions` -- `compile_changes` once its changes are records -- and the packer's
  `frame_packed_bundle` into one reused buffer), no Python call per chassis: the shape of f085df4's
  "compiled" figure, which timed the bulk interface the core then had for it (#14 removed it);
* ``compiled``: what each chassis' controller does, looped over the chassis -- the moved
  ports' new roles (the view's answer: records it holds, `remote_role`'s and each VIF's; the
  engine's placed roles kept per chassis), compared with the old ones,
  `controller.compiler.compile_port_changes` over them (one call of the compiled core over the
  port columns, which also packs the change's deletes and adds as bundle adds, their xids and bundle
  id left for the framing; no numpy view made), the plan's one change as `Plan.messages` gives it,
  and the channel's pipelined bundle (`Datapath.send_bundle` of a
  `controller.compiler.PlanBundle`: one call copies the packed change with its xids, bundle id and
  flags patched in, between the open and the commit). `benchmarks/compile_agent_then.py` times the same calls with
  the plan's own objects, in this tree or in one from before #14 (f085df4);
* ``osken``: what a Python controller does -- the same programs run by the Python
  apps (`PortProgram.flows`), the engine's diff (`FlowState.plan`), os-ken
  `OFPFlowMod` / ONF bundle objects serialized. The run checks all three give the same bytes.
"""
from __future__ import annotations

import gc
import os
import platform
import random
import resource
import time
from typing import Any, Callable, Sequence

import numpy as np
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller import compiler
from controller.apps.dnat import DNAT_PORT_FLOWS
from controller.apps.l2 import L2_PORT_FLOWS
from controller.apps.l3 import L3_PORT_FLOWS
from controller.flowstate import FlowState
from controller.templates import FloatingIpFacts, PortFacts, PortRole, object_hash, remote_role
from dfflow.flows import Command, Flow
from dfflow.openflow.framing import XidAllocator

from benchmarks._core_fleet import frame_every_chassis

PROGRAMS = (L2_PORT_FLOWS, L3_PORT_FLOWS, DNAT_PORT_FLOWS)
PORTS_PER_NETWORK = 50
FIP_EVERY = 10
EXT_VNI = 9000
BUNDLE_FLAGS = ofproto_v1_3.ONF_BF_ATOMIC | ofproto_v1_3.ONF_BF_ORDERED


class Datapath13:
    """What `controller.compiler.flow_mods` and the bundle framing use of a connection (OpenFlow 1.3)."""
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = None

    def __init__(self, xid_start: int = 1) -> None:
        self.xids = XidAllocator(xid_start)


Move = tuple[int, int]  # (port index, destination chassis)


class Cloud:
    def __init__(self, ports: int, chassis: int, seed: int = 1):
        if ports < 1 or chassis < 2:
            raise ValueError("a cloud needs at least one port and two chassis")
        rng = random.Random(seed)
        self.n_chassis = chassis
        self.program = compiler.compile_program(*PROGRAMS)
        self.table = compiler.PortTable(capacity=ports)
        self.host = np.arange(ports, dtype=np.uint64) % chassis
        self.ofport = 100 + np.arange(ports, dtype=np.uint64)           # the VIF on its host
        self.dest_ofport = 50_000 + np.arange(ports, dtype=np.uint64)   # the VIF plugged on a destination
        # ofport on chassis c of its tunnel to chassis d
        self.tunnel = (1000 + np.arange(chassis, dtype=np.uint64)[None, :]
                       + 7 * np.arange(chassis, dtype=np.uint64)[:, None])
        self.ports: list[PortFacts] = []
        macs = rng.sample(range(1, 1 << 40), ports)
        for i in range(ports):
            net = i // PORTS_PER_NETWORK
            base = (10 << 24) | (net << 8)
            fips = ()
            if i % FIP_EVERY == 0:
                fips = (FloatingIpFacts((172 << 24) | (16 << 16) | i, 0xFA163E000000 | (0x800000 + i),
                                        base + 2 * (i % PORTS_PER_NETWORK) + 10, EXT_VNI, 0xFA163EAA0000 | net),)
            facts = PortFacts(object_hash(f"port-{i}"), 100 + net, 0xFA0000000000 | macs[i], True, True,
                              ((base + 2 * (i % PORTS_PER_NETWORK) + 10) & 0xFFFFFFFF,
                               (base + 2 * (i % PORTS_PER_NETWORK) + 11) & 0xFFFFFFFF), fips)
            self.ports.append(facts)
            self.table.set(f"port-{i}", facts)
        # what each chassis' controller keeps between changes: the port's row in its table, and the
        # role it placed each port in (made on first use); plain lists, as the view's dicts are
        self._rows = [self.table.index[f"port-{i}"] for i in range(ports)]
        self._placed: list[dict[int, PortRole]] = [{} for _ in range(chassis)]
        self._host = self.host.tolist()
        # the roles a change places ports in, held as the view holds them: on chassis c, a port moved to
        # chassis d is remote via c's tunnel to d, or local on its destination's VIF
        self._remote_roles = [[remote_role(t) for t in tunnels] for tunnels in self.tunnel.tolist()]
        self._dest_roles = [PortRole(True, ofport=o) for o in self.dest_ofport.tolist()]
        # the core loop's: the port rows as an array, and its output and offsets, reused
        self._row_array = np.array(self._rows, dtype=np.uint64)
        self._out = bytearray()
        self._offsets = np.zeros(chassis + 1, np.int64)

    # -- changes ----------------------------------------------------------------------
    def one_migration(self, port: int = 0) -> list[Move]:
        return [(port, (int(self.host[port]) + 1) % self.n_chassis)]

    def evacuation(self, host: int, k: int) -> list[Move]:
        """K ports of chassis `host` (fewer if it has fewer), spread over the other chassis."""
        on_host = [int(i) for i in np.flatnonzero(self.host == host)[:k]]
        others = [c for c in range(self.n_chassis) if c != host]
        return [(p, others[j % len(others)]) for j, p in enumerate(on_host)]

    def role(self, port: int, chassis: int, where: int, dest: bool) -> PortRole:
        if where == chassis:
            return PortRole(True, ofport=int(self.dest_ofport[port] if dest else self.ofport[port]))
        return remote_role(int(self.tunnel[chassis, where]))

    # -- the agent's path ----------------------------------------------------------------
    def migrate(self, moves: Sequence[Move], xid_start: int = 1, bundle_id_start: int = 1) -> tuple[bytes, list[int]]:
        """Every chassis' bundle for the change, made as each chassis' controller makes it, in one
        buffer, and where each chassis' starts (chassis c's bundle id is bundle_id_start + c; the
        xids run on across the chassis)."""
        if not moves:
            raise ValueError("moves: empty change (no port to migrate)")
        if any(not 0 <= p < len(self.ports) for p, _ in moves):
            raise ValueError("moves: a port index outside the cloud")
        dp = Datapath13(xid_start)
        bundles, offsets, end = [], [0], 0
        for c in range(self.n_chassis):
            messages = self.chassis_messages(moves, c)
            if messages:  # the bytes Datapath.send_bundle(PlanBundle(messages), pipelined=True) writes
                framed = compiler.PlanBundle(messages).frame_bundle(dp, bundle_id_start + c, BUNDLE_FLAGS, True)[0]
                bundles.append(framed)
                end += len(framed)
            offsets.append(end)
        return b"".join(bundles), offsets

    def chassis_messages(self, moves: Sequence[Move], chassis: int) -> Sequence[Any]:
        """The plan's batches on one chassis: the moved ports' flows from their old roles there to
        their new ones, compiled as the engine does (one call for them all: deletes, then adds).
        As in the engine, the old role is the one the chassis placed the port in (kept from its
        last change), the new one is made for the change (the view's answer)."""
        changes = []
        placed = self._placed[chassis]
        remote = self._remote_roles[chassis]
        for p, dest in moves:
            old = placed.get(p)
            if old is None:
                old = placed[p] = self.role(p, chassis, self._host[p], dest=False)
            new = self._dest_roles[p] if dest == chassis else remote[dest]
            if old != new:
                changes.append((self._rows[p], old, new))
        if not changes:
            return ()
        made = compiler.compile_port_changes(self.program, self.table, changes)
        # the plan's one change, whole, as Plan.messages lists it (its deletes, then its adds, packed)
        return (made,) if made else ()

    # -- the compiled core's work for every chassis in one C loop ------------------------------------
    def migrate_core(self, moves: Sequence[Move], xid_start: int = 1,
                     bundle_id_start: int = 1) -> tuple[bytearray, np.ndarray]:
        """The bundles `migrate` makes, made by `_core_fleet.frame_every_chassis` (each chassis'
        transitions, the core's compile and the framing in one C loop: no Python call per chassis),
        and where each chassis' starts; both reused, valid until the next call."""
        # (a negative index wraps to one past every port and chassis: refused, named as it was given)
        ports = np.fromiter((p for p, _ in moves), np.int64, len(moves)).view(np.uint64)
        dests = np.fromiter((d for _, d in moves), np.int64, len(moves)).view(np.uint64)
        frame_every_chassis(self.program, self.table, self._row_array, self.host, self.ofport, self.dest_ofport,
                            self.tunnel, ports, dests, xid_start, bundle_id_start, BUNDLE_FLAGS, self._out,
                            self._offsets)
        return self._out, self._offsets

    # -- the Python path (the reference) -----------------------------------------------------
    def python_flows(self, port: int, chassis: int) -> list[Flow]:
        role = self.role(port, chassis, int(self.host[port]), dest=False)
        return [f for program in PROGRAMS for f in program.flows(self.ports[port], role)]

    def python_plan(self, moves: Sequence[Move], chassis: int) -> tuple[list[Flow], list[Flow]]:
        """(deletes, adds) of one chassis, as the engine's FlowState computes them from the apps."""
        if not moves:
            raise ValueError("moves: empty change (no port to migrate)")
        state = FlowState()
        old_owners, new_owners = {}, {}
        for p, dest in moves:
            old = self.role(p, chassis, int(self.host[p]), dest=False)
            new = self.role(p, chassis, dest, dest=True)
            old_owners[("port", p)] = [f for prog in PROGRAMS for f in prog.flows(self.ports[p], old)]
            new_owners[("port", p)] = [f for prog in PROGRAMS for f in prog.flows(self.ports[p], new)]
        state.commit(state.plan(old_owners))
        plan = state.plan(new_owners)
        return plan.deletes, plan.adds

    def python_state(self, chassis: int, moves: Sequence[Move]) -> dict[tuple, Flow]:
        """Every port flow chassis has after the change."""
        dest = dict(moves)
        flows = {}
        for p in range(len(self.ports)):
            where = dest.get(p, int(self.host[p]))
            role = self.role(p, chassis, where, dest=p in dest)
            for program in PROGRAMS:
                flows.update((f.key, f) for f in program.flows(self.ports[p], role))
        return flows

    def osken(self, moves: Sequence[Move], xid_start: int = 1, bundle_id_start: int = 1) -> tuple[bytes, list[int]]:
        """The Python controller's path for every chassis: apps, diff, os-ken objects serialized."""
        dp, ofp, parser = Datapath13, ofproto_v1_3, ofproto_v1_3_parser
        out, offsets, xid = [], [0], xid_start
        for c in range(self.n_chassis):
            dels, adds = self.python_plan(moves, c)
            flows = [Flow(f.table, f.priority, f.match, cookie=f.cookie, command=Command.DELETE_STRICT)
                     for f in dels] + adds
            if flows:
                # numbered as the agent numbers them: the flow mods, then the open and the commit
                bid, n = bundle_id_start + c, len(flows)
                msgs = [(parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_OPEN_REQUEST, BUNDLE_FLAGS, []), xid + n)]
                msgs += [(parser.ONFBundleAddMsg(dp, bid, BUNDLE_FLAGS, f.to_osken(dp), []), xid + i)
                         for i, f in enumerate(flows)]
                msgs.append((parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_COMMIT_REQUEST, BUNDLE_FLAGS, []),
                             xid + n + 1))
                for msg, msg_xid in msgs:
                    msg.set_xid(msg_xid)
                    if isinstance(msg, parser.ONFBundleAddMsg):
                        msg.message.set_xid(msg_xid)
                    msg.serialize()
                    out.append(bytes(msg.buf))
                xid += n + 2
            offsets.append(sum(map(len, out)))
        return b"".join(out), offsets


# ------------------------------------------------------------------------------------------ runs
def _timed(fn: Callable[[], Any], min_time: float, min_reps: int = 5, max_reps: int = 100_000) -> tuple[list[float], Any]:
    times: list[float] = []
    result = None
    while len(times) < min_reps or (sum(times) < min_time and len(times) < max_reps):
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return times, result


def _stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"runs": len(times), "best_us": ordered[0] * 1e6, "median_us": ordered[len(ordered) // 2] * 1e6,
            "p95_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1e6}


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(cloud: Cloud, moves: list[Move], min_time: float, osken_reps: int,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    t_core, (loop_buf, loop_offsets) = _timed(lambda: cloud.migrate_core(moves), min_time)
    loop_buf, loop_offsets = bytes(loop_buf), loop_offsets.tolist()
    progress("core loop")
    t_compiled, (buf, offsets) = _timed(lambda: cloud.migrate(moves), min_time)
    progress("compiled")
    t_osken, (ref, ref_offsets) = _timed(lambda: cloud.osken(moves), 0.0, min_reps=osken_reps)
    progress("osken")
    if buf != ref or offsets != ref_offsets:
        raise AssertionError("the compiled path and the Python/os-ken path made different bundles")
    if loop_buf != buf or loop_offsets != offsets:
        raise AssertionError("the core loop and the agent's path made different bundles")
    n_messages = len(buf) and _count_messages(buf)
    flow_mods = n_messages - 2 * sum(1 for c in range(cloud.n_chassis) if offsets[c + 1] > offsets[c])
    core, compiled, osken = _stats(t_core), _stats(t_compiled), _stats(t_osken)
    return {"moves": len(moves), "chassis": cloud.n_chassis, "flow_mods": flow_mods, "bytes": len(buf),
            "core_loop": core, "compiled": compiled, "osken": osken,
            "ns_per_flow_mod": compiled["median_us"] * 1e3 / max(flow_mods, 1),
            "core_loop_ns_per_flow_mod": core["median_us"] * 1e3 / max(flow_mods, 1),
            "speedup": osken["median_us"] / compiled["median_us"]}


def _count_messages(buf: bytes) -> int:
    n = off = 0
    while off < len(buf):
        off += int.from_bytes(buf[off + 2:off + 4], "big")
        n += 1
    return n


def memory_check(cloud: Cloud, moves: list[Move], calls: int = 10_000) -> dict[str, int]:
    """Peak RSS before and after `calls` repeated compiled migrations (no growth expected)."""
    for _ in range(100):
        cloud.migrate(moves)
    before = _rss_kib()
    for _ in range(calls):
        cloud.migrate(moves)
    return {"calls": calls, "max_rss_before_kib": before, "max_rss_after_kib": _rss_kib()}


def run(ports: int, chassis: int, migrate: int, min_time: float = 1.0, osken_reps: int = 1,
        seed: int = 1, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    cloud = Cloud(ports, chassis, seed)
    one = measure(cloud, cloud.one_migration(0), min_time, max(osken_reps, 3), progress)
    evacuation = measure(cloud, cloud.evacuation(0, migrate), min_time, osken_reps, progress)
    memory = memory_check(cloud, cloud.one_migration(0))
    progress("memory")
    return {"ports": ports, "chassis": chassis, "evacuated": evacuation["moves"],
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "one_port": one, "evacuation": evacuation, "memory": memory}


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['ports']} ports on {r['chassis']} chassis; every chassis' bundle computed and packed "
             f"(median of repeated runs, one thread)",
             f"{'change':<22}{'flow_mods':>10}{'bytes':>10}{'core loop':>13}{'compiled':>13}{'os-ken':>14}"
             f"{'ns/flow':>9}{'ratio':>9}"]
    for name, key in (("1 port migration", "one_port"), (f"evacuate {r['evacuated']} ports", "evacuation")):
        e = r[key]
        lines.append(f"{name:<22}{e['flow_mods']:>10,}{e['bytes']:>10,}{e['core_loop']['median_us']:>10,.1f} us"
                     f"{e['compiled']['median_us']:>10,.1f} us"
                     f"{e['osken']['median_us'] / 1e3:>11,.1f} ms{e['ns_per_flow_mod']:>9.0f}{e['speedup']:>8,.0f}x")
    lines.append("core loop: every chassis' change compiled and framed in one C loop (what f085df4's 'compiled' "
                 "timed);\ncompiled: the agent's path, chassis by chassis from Python (ns/flow and ratio are its)")
    m = r["memory"]
    lines.append(f"memory: max RSS {m['max_rss_before_kib']:,} KiB before and {m['max_rss_after_kib']:,} KiB "
                 f"after {m['calls']:,} more compiled migrations")
    return "\n".join(lines)
