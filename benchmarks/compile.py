"""Computing and packing a migration's flows for every chassis: the compiled core against the
Python apps + os-ken, same change, same bytes, one run.

A simulated cloud (`Cloud`): P ports spread over C chassis, networks of up to 50
ports behind routers, two IPv4s per port, one port in ten with a floating IP, every
chassis hosting ports of every network (so every chassis is related to every port
and has the port's remote flows). A change is a list of moves (port -> new chassis):
one port's migration, or the evacuation of K ports of one chassis. For every chassis
the change is what its controller computes and sends: the L2, L3 and DNAT flows that
differ between the port's old and new role there, as one bundle per chassis.

* ``compiled``: `controller.compiler` -- transition records built with numpy,
  `dfflow._core.compile_transitions` (the apps' programs run over the port columns)
  and `pack_groups` (one bundle per chassis, one buffer);
* ``osken``: what a Python controller does -- the same programs run by the Python
  apps (`PortProgram.flows`), the engine's diff (`FlowState.plan`), os-ken
  `OFPFlowMod` / ONF bundle objects serialized. The run checks both give the same bytes.
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
from controller.templates import FloatingIpFacts, PortFacts, PortRole, object_hash
from dfflow import core
from dfflow.flowbatch import LAYOUT
from dfflow.flows import Command, Flow

PROGRAMS = (L2_PORT_FLOWS, L3_PORT_FLOWS, DNAT_PORT_FLOWS)
PORTS_PER_NETWORK = 50
FIP_EVERY = 10
EXT_VNI = 9000


class _Datapath:
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = None


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
        self._workspace: dict = {}     # the compiler's row arrays and the packer's output, reused
        self._out = bytearray()
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
        return PortRole(False, tunnel=int(self.tunnel[chassis, where]))

    # -- the compiled path ----------------------------------------------------------------
    def transitions(self, moves: Sequence[Move]) -> np.ndarray:
        """One record per (chassis, moved port), grouped by chassis."""
        if not moves:
            raise ValueError("moves: empty change (no port to migrate)")
        ports = np.fromiter((p for p, _ in moves), np.uint64, len(moves))
        if ports.max() >= len(self.ports):
            raise ValueError("moves: a port index outside the cloud")
        return core.migration_transitions(ports, self.host[ports], [d for _, d in moves], self.ofport[ports],
                                          self.dest_ofport[ports], self.tunnel, self.n_chassis)

    def migrate(self, moves: Sequence[Move], xid_start: int = 1, bundle_id_start: int = 1) -> tuple[Any, Any]:
        """Every chassis' bundle for the change, in one buffer (valid until the next call), and
        where each chassis' starts."""
        dels, adds, del_ends, add_ends = core.compile_transitions(
            self.program, self.table.ports, self.table.ips, self.table.fips, self.transitions(moves),
            self.n_chassis, self._workspace)
        return core.pack_groups(LAYOUT, dels, adds, del_ends, add_ends, xid_start, bundle_id_start,
                                out=self._out)

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
        dp, ofp, parser = _Datapath, ofproto_v1_3, ofproto_v1_3_parser
        out, offsets, xid = [], [0], xid_start
        for c in range(self.n_chassis):
            dels, adds = self.python_plan(moves, c)
            flows = [Flow(f.table, f.priority, f.match, cookie=f.cookie, command=Command.DELETE_STRICT)
                     for f in dels] + adds
            if flows:
                bid = bundle_id_start + c
                msgs = [parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_OPEN_REQUEST, 3, [])]
                msgs += [parser.ONFBundleAddMsg(dp, bid, 3, f.to_osken(dp), []) for f in flows]
                msgs.append(parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_COMMIT_REQUEST, 3, []))
                for msg in msgs:
                    msg.set_xid(xid)
                    if isinstance(msg, parser.ONFBundleAddMsg):
                        msg.message.set_xid(xid)
                    msg.serialize()
                    out.append(bytes(msg.buf))
                    xid += 1
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
    t_compiled, (view, offsets) = _timed(lambda: cloud.migrate(moves), min_time)
    buf = bytes(view)
    progress("compiled")
    t_osken, (ref, ref_offsets) = _timed(lambda: cloud.osken(moves), 0.0, min_reps=osken_reps)
    progress("osken")
    if buf != ref or list(offsets) != ref_offsets:
        raise AssertionError("the compiled path and the Python/os-ken path made different bundles")
    n_messages = len(buf) and _count_messages(buf)
    flow_mods = n_messages - 2 * sum(1 for c in range(cloud.n_chassis) if offsets[c + 1] > offsets[c])
    compiled, osken = _stats(t_compiled), _stats(t_osken)
    return {"moves": len(moves), "chassis": cloud.n_chassis, "flow_mods": flow_mods, "bytes": len(buf),
            "compiled": compiled, "osken": osken,
            "ns_per_flow_mod": compiled["median_us"] * 1e3 / max(flow_mods, 1),
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
             f"{'change':<22}{'flow_mods':>10}{'bytes':>10}{'compiled':>13}{'os-ken':>14}{'ns/flow':>9}"
             f"{'ratio':>9}"]
    for name, key in (("1 port migration", "one_port"), (f"evacuate {r['evacuated']} ports", "evacuation")):
        e = r[key]
        lines.append(f"{name:<22}{e['flow_mods']:>10,}{e['bytes']:>10,}{e['compiled']['median_us']:>10,.1f} us"
                     f"{e['osken']['median_us'] / 1e3:>11,.1f} ms{e['ns_per_flow_mod']:>9.0f}{e['speedup']:>8,.0f}x")
    m = r["memory"]
    lines.append(f"memory: max RSS {m['max_rss_before_kib']:,} KiB before and {m['max_rss_after_kib']:,} KiB "
                 f"after {m['calls']:,} more compiled migrations")
    return "\n".join(lines)
