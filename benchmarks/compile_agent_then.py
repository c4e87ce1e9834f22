"""The agent's per-chassis compile path of one tree, timed over `dfflow-bench compile`'s simulated cloud:
run in a tree before #14's rework (f085df4) and in one after it, the same change costs each chassis what
that tree's own controller calls cost.

    cd TREE && PYTHONPATH=$PWD python -P /path/to/benchmarks/compile_agent_then.py --ports 2000 --chassis 100

(`-P`: the tree on PYTHONPATH is the one imported, whichever tree holds this script.) Each chassis, from
its moved ports' old and new roles (the view's answer, made beforehand: both trees' views are left out)
to the bytes of its bundle, as its controller computes them:

* before (`controller.compiler.compile_port_change`, f085df4's `Engine._compile_port`, `daemon._send` and
  `ofchannel.Datapath.send_bundle`): per moved port, its facts stored (`PortTable.set`), then per app
  (L2, L3, DNAT) the compiled core over one port (`compile_port_change`), both sides as `FlowBatch`es and
  the owner's `DerivedFlows`; the plan's rows (`Plan.rows`, `Plan.owners`); `plan.messages()`;
  `compiler.flow_mods` (the packer, one buffer); the channel's framing: the buffer's xids
  (`Datapath._pack`), the open as an os-ken object serialized, `wrap_bundle_adds` (Python), the
  commit serialized (a pipelined bundle);
* after (`compile_port_changes`, main's `Engine._compile_ports`, `PlanSender.send`,
  `Datapath.send_bundle`): per moved port its facts stored, then one call of the compiled core for
  all of them (`compile_port_changes`: the three apps' programs as one, packing its rows in the same
  call), the plan's change, `plan.messages()`, and `PlanBundle(...).frame_bundle` (the packed change
  copied with its xids, bundle id and flags patched in, the open and the commit around it).

Each side uses its own tree's real `Datapath` (made on a loop, never connected) for the xids and the
os-ken objects. The moved ports have no security groups (the cloud's ports have none). A run checks every
chassis' flow mods (xids aside) against the tree's own Python/os-ken reference (`Cloud.osken`).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from typing import Any, Callable

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from benchmarks import compile as bench
from controller import compiler
from controller.flowstate import Plan

BEFORE = hasattr(compiler, "compile_port_change")  # f085df4's per-port call (main has compile_port_changes)
if BEFORE:
    from controller.flowstate import DerivedFlows
    from controller.ofchannel import Datapath, wrap_bundle_adds
    from dfflow.flowbatch import FlowBatch
else:
    from dfflow.openflow.datapath import Datapath

FLAGS = ofproto_v1_3.ONF_BF_ATOMIC | ofproto_v1_3.ONF_BF_ORDERED
APPS = ("l2", "l3", "dnat")  # bench.PROGRAMS, in its order


def channel() -> Any:
    """The tree's own OpenFlow 1.3 connection object, never connected (made on a running loop)."""
    async def make() -> Any:
        dp = Datapath(server=None)
        dp.version, dp.ofproto, dp.ofproto_parser = ofproto_v1_3.OFP_VERSION, ofproto_v1_3, ofproto_v1_3_parser
        return dp
    return asyncio.run(make())


class Chassis:
    """What one chassis' controller holds for the change: each moved port's id, facts, old and new role."""

    def __init__(self, cloud: bench.Cloud, moves: list[bench.Move], c: int):
        self.ports = []
        for p, dest in moves:
            old = cloud.role(p, c, int(cloud.host[p]), dest=False)
            new = cloud.role(p, c, dest, dest=True)
            if old != new:
                self.ports.append((f"port-{p}", cloud.ports[p], old, new))


def before_path(cloud: bench.Cloud) -> Callable[[Any, Chassis, int], bytes | None]:
    programs = [compiler.compile_program(program) for program in bench.PROGRAMS]
    table = cloud.table

    def send(dp: Any, chassis: Chassis, bundle_id: int) -> bytes | None:
        compiled = {}
        for port_id, facts, old, new in chassis.ports:  # Engine._compile_port
            row = table.set(port_id, facts)
            for app, program, port_program in zip(APPS, programs, bench.PROGRAMS):
                dels, adds = compiler.compile_port_change(program, table, row, old, new)
                flows = DerivedFlows(lambda prog=port_program, f=facts, r=new: prog.flows(f, r))
                compiled[(app, "port", port_id)] = (FlowBatch.of_rows(dels), FlowBatch.of_rows(adds), flows)
        plan = Plan()  # Engine._recompute
        for owner, (dels, adds, flows) in compiled.items():
            if len(dels) or len(adds):
                plan.rows.append((dels, adds))
            plan.owners[owner] = flows
        if not plan:
            return None
        buf = compiler.flow_mods(dp, plan.messages())  # daemon._send
        buf, _ = dp._pack(buf)  # Datapath.send_bundle, pipelined
        opener = dp._bundle_ctrl(bundle_id, ofproto_v1_3.ONF_BCT_OPEN_REQUEST, FLAGS)
        opener.set_xid(dp.xids.alloc())
        ctrl = bytearray(dp._pack([opener])[0])
        ctrl, _ = wrap_bundle_adds(buf, ofproto_v1_3.OFP_VERSION, bundle_id, FLAGS, out=ctrl)
        commit = dp._bundle_ctrl(bundle_id, ofproto_v1_3.ONF_BCT_COMMIT_REQUEST, FLAGS)
        commit.set_xid(dp.xids.alloc())
        ctrl += dp._pack([commit])[0]
        return ctrl
    return send


def after_path(cloud: bench.Cloud) -> Callable[[Any, Chassis, int], bytes | None]:
    program, table = cloud.program, cloud.table

    def send(dp: Any, chassis: Chassis, bundle_id: int) -> bytes | None:
        changes = [(table.set(port_id, facts), old, new) for port_id, facts, old, new in chassis.ports]
        if not changes:
            return None
        made = compiler.compile_port_changes(program, table, changes)  # Engine._compile_ports
        plan = Plan()
        if hasattr(plan, "changes"):  # the change packed where it was compiled (h14-pack on)
            plan.changes = [made] if made else []
        else:
            plan.rows = [(made.deletes, made.adds)] if made.deletes.n or made.adds.n else []
        if not plan:
            return None
        return compiler.PlanBundle(plan.messages()).frame_bundle(dp, bundle_id, FLAGS, True)[0]  # send_bundle
    return send


def run_change(cloud: bench.Cloud, moves: list[bench.Move], send: Callable, min_time: float) -> dict[str, Any]:
    chassis = [Chassis(cloud, moves, c) for c in range(cloud.n_chassis)]
    dp = channel()

    def every_chassis() -> list[bytes | None]:
        return [send(dp, ch, c + 1) for c, ch in enumerate(chassis)]

    made = every_chassis()
    check(cloud, moves, made)
    times: list[float] = []
    while len(times) < 5 or sum(times) < min_time:
        gc.disable()
        try:
            t0 = time.perf_counter()
            every_chassis()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    times.sort()
    return {"moves": len(moves), "runs": len(times), "best_us": times[0] * 1e6,
            "median_us": times[len(times) // 2] * 1e6,
            "flow_mods": sum(len(flow_mods(b)) for b in made if b)}


def flow_mods(buf: bytes) -> list[bytes]:
    """The FLOW_MODs inside a buffer of bundle messages, their xids zeroed."""
    out, off = [], 0
    while off < len(buf):
        length = int.from_bytes(buf[off + 2:off + 4], "big")
        msg = buf[off:off + length]
        if msg[1] == ofproto_v1_3.OFPT_EXPERIMENTER and int.from_bytes(msg[12:16], "big") == \
                ofproto_v1_3.ONF_ET_BUNDLE_ADD_MESSAGE:
            inner = bytearray(msg[24:])
            inner[4:8] = bytes(4)
            out.append(bytes(inner))
        off += length
    return out


def check(cloud: bench.Cloud, moves: list[bench.Move], made: list[bytes | None]) -> None:
    ref, offsets = cloud.osken(moves)
    for c, buf in enumerate(made):
        want = sorted(flow_mods(ref[offsets[c]:offsets[c + 1]]))
        if sorted(flow_mods(buf or b"")) != want:
            raise AssertionError(f"chassis {c}: the agent's flow mods differ from the tree's os-ken reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=2000)
    parser.add_argument("--chassis", type=int, default=100)
    parser.add_argument("--migrate", type=int, default=20)
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    cloud = bench.Cloud(args.ports, args.chassis)
    send = (before_path if BEFORE else after_path)(cloud)
    result = {"tree": os.environ.get("PYTHONPATH", ""), "path": "before" if BEFORE else "after",
              "ports": args.ports, "chassis": args.chassis,
              "one_port": run_change(cloud, cloud.one_migration(0), send, args.min_time),
              "evacuation": run_change(cloud, cloud.evacuation(0, args.migrate), send, args.min_time)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
