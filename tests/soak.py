"""The soak: live migrations back and forth on a sandbox with one VM per chassis, a fault injected in
the middle of every `fault_every`-th migration, probes from up to five chassis throughout, an NB
writer whose acknowledged writes are checked, and the controllers' RSS and open descriptors sampled.

Used by tests/test_soak.py (a short run in the default test run, the long one behind the `soak`
marker). The figures it returns are what benchmarks/RESULTS.md reports.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from dfflow.sandbox import health
from dfflow.sandbox.probe import Echo, Sender, analyse, per_target
from controller_fixtures import controller_status, migrate, pings, wait_until
from fault_audit import AckedWrites, PatientCloud, audit

PROBERS = 5
PROBE_INTERVAL = 0.2  # s between probes to each migrating VM from each prober
FAULTS = ("controller_kill", "redis_restart", "vswitchd_restart", "ovsdb_restart")


@dataclass
class SoakFigures:
    chassis: int
    migrations: int = 0
    migration_errors: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    recoveries: int = 0
    unrecovered: list[dict[str, Any]] = field(default_factory=list)
    stale_flows: int = 0  # flows still stale (or missing) after convergence, over every audit
    leftovers: int = 0  # migration records and OVS ports still left after convergence
    audits: int = 0
    acked_writes: int = 0
    lost_writes: int = 0
    probes: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def controller_usage(sb, chassis: str) -> tuple[int, int, int]:
    """(pid, RSS in kB, open file descriptors) of the chassis' controller process."""
    pid = controller_status(sb, chassis)["pid"]
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return pid, rss, len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, cloud, fault_every: int = 10, log: Callable[[str], None] | None = None):
        self.cloud = PatientCloud(cloud.sb)
        self.sb = cloud.sb
        self.fault_every = fault_every
        self.log = log or (lambda line: print(line, flush=True))
        names = [ch.name for ch in self.sb.chassis_list()]
        self.chassis = names
        self.ips = {f"V{i}": f"10.0.0.{10 + i}" for i in range(1, len(names) + 1)}
        self.home = {f"V{i}": name for i, name in enumerate(names, start=1)}
        probers = min(PROBERS, len(names) // 2)
        self.probers = [f"V{i}" for i in range(1, probers + 1)]
        self.movers = [vm for vm in self.ips if vm not in self.probers]
        self.figures = SoakFigures(chassis=len(names))
        self.usage: dict[str, list[tuple[int, int, int, int]]] = {n: [] for n in names}  # (migration, pid, rss, fds)

    # -- set-up ----------------------------------------------------------------------
    def boot(self) -> None:
        self.cloud.call("create_network", "net1", "10.0.0.0/24")
        for vm, chassis in self.home.items():
            self.cloud.call("create_vm", vm, chassis, "net1", self.ips[vm])
        for vm in self.movers:
            wait_until(lambda: pings(self.sb, self.probers[0], self.ips[vm]), 30, what=f"{self.probers[0]} -> {vm}")

    def partner(self, vm: str) -> str:
        """Where `vm` goes out to: the next chassis."""
        i = self.chassis.index(self.home[vm])
        return self.chassis[(i + 1) % len(self.chassis)]

    # -- the run -----------------------------------------------------------------------
    def run(self, migrations: int, budget: float | None = None) -> SoakFigures:
        """`migrations` of them, or as many as `budget` s allow (then `figures.migrations` says how many)."""
        started = time.monotonic()
        echoes = [Echo(self.sb, vm) for vm in self.movers]
        senders = [Sender(self.sb, vm, [self.ips[m] for m in self.movers], interval=PROBE_INTERVAL)
                   for vm in self.probers]
        try:
            with AckedWrites(self.cloud.url, interval=0.2) as writes:
                self.sample(0)
                for k in range(migrations):
                    self.one_migration(k)
                    if (k + 1) % max(1, self.fault_every // 2) == 0 or k + 1 == migrations:
                        self.sample(k + 1)
                    if (k + 1) % self.fault_every == 0 or k + 1 == migrations:
                        self.log(f"[soak] {k + 1} migrations in {time.monotonic() - started:.0f} s, faults "
                                 f"{self.figures.faults}, recoveries {self.figures.recoveries}, errors "
                                 f"{len(self.figures.migration_errors)}")
                        if budget is not None and time.monotonic() - started > budget:
                            break
                self.check(self.figures.migrations, "end")
            self.figures.acked_writes = len(writes.acked)
            self.figures.lost_writes = len(writes.lost(self.cloud))
        finally:
            results = [s.stop() for s in senders]
            for echo in echoes:
                echo.stop()
        self.figures.probes = self.probe_figures(results)
        self.figures.memory = self.memory_figures()
        self.figures.seconds = round(time.monotonic() - started, 1)
        return self.figures

    def one_migration(self, k: int) -> None:
        vm = self.movers[(k // 2) % len(self.movers)]
        here = next(v.chassis for v in self.sb.vm(vm).vifs if v.up)
        dest = self.partner(vm) if here == self.home[vm] else self.home[vm]
        kind = FAULTS[(k // self.fault_every) % len(FAULTS)] if (k + 1) % self.fault_every == 0 else None
        injector = self.start_fault(kind, vm, here, dest) if kind else None
        try:
            result = migrate(self.cloud, vm, dest)
            if "done" not in result["states"]:
                raise AssertionError(f"not done: {result['states']}")
        except Exception as exc:  # counted and reported; the audit after it says what it left
            self.figures.migration_errors.append(f"#{k} {vm} {here}->{dest} ({kind}): {exc!r}"[:400])
            self.log(f"migration #{k} failed: {exc!r}")
        finally:
            if injector is not None:
                injector.join(60)
        self.figures.migrations += 1
        if kind:
            self.figures.faults[kind] = self.figures.faults.get(kind, 0) + 1
            if self.check(k, kind, vm):
                self.figures.recoveries += 1

    def start_fault(self, kind: str, vm: str, source: str, dest: str) -> threading.Thread:
        """Inject `kind` as soon as the destination recorded step 1 of `vm`'s migration."""
        port_id = self.sb.vm(vm).vifs[0].port_id
        sb = self.sb

        def inject() -> None:
            with redis.Redis.from_url(self.cloud.url) as r:
                wait_until(lambda: b'"migration":{' in (r.get(f"dfflow:obj:lport:{port_id}") or b""), 30,
                           interval=0.005, what="step 1 recorded")
            if kind == "controller_kill":
                os.kill(controller_status(sb, source)["pid"], signal.SIGKILL)
            elif kind == "redis_restart":
                sb.stop_nb()
                sb.start_nb()
            elif kind == "vswitchd_restart":
                sb.ovs(dest).restart_vswitchd(sig=signal.SIGKILL)
            elif kind == "ovsdb_restart":
                sb.ovs(source).restart_ovsdb()

        thread = threading.Thread(target=inject, name=f"fault-{kind}")
        thread.start()
        return thread

    def check(self, k: int, what: str, vm: str | None = None) -> bool:
        """After a fault (and at the end): every controller healthy, converged and clean, and the
        moved VM answering; counted either way."""
        unhealthy = health.wait_healthy(self.sb.chassis_list(), 30)
        found = audit(self.cloud, 30)
        self.figures.audits += 1
        self.figures.stale_flows += sum(len(v) for v in found.get("stale_flows", {}).values())
        self.figures.stale_flows += sum(abs(i - w) for i, w in found.get("flow_drift", {}).values())
        self.figures.leftovers += len(found.get("migration_records", {}))
        self.figures.leftovers += sum(len(v) for v in found.get("leftover_ports", {}).values())
        answering = True
        if vm is not None:
            try:
                wait_until(lambda: pings(self.sb, self.probers[0], self.ips[vm]), 15, what=f"{vm} answering")
            except AssertionError:
                answering = False
        ok = not unhealthy and not found and answering
        if not ok:
            self.figures.unrecovered.append({"migration": k, "fault": what, "unhealthy": unhealthy,
                                             "found": str(found)[:600], "answering": answering})
            self.log(f"after #{k} ({what}): unhealthy={unhealthy} found={found} answering={answering}")
        return ok

    # -- figures -------------------------------------------------------------------------
    def sample(self, k: int) -> None:
        for name in self.chassis:
            try:
                self.usage[name].append((k, *controller_usage(self.sb, name)))
            except (OSError, ValueError, StopIteration):
                pass  # restarting right now: the next sample has it

    def memory_figures(self) -> dict[str, Any]:
        """RSS and open fds of each controller process (from its first sample: the start, or its restart
        after a fault): growth over all its samples, and over its second half, where flat means no
        leak (connection pools and bounded status buffers fill in the first)."""
        growth: dict[str, list[int]] = {"rss": [], "fds": [], "rss_late": [], "fds_late": []}
        lived = 0
        for samples in self.usage.values():
            mine = [s for s in samples if samples and s[1] == samples[-1][1]]
            if len(mine) < 3:
                continue
            lived += 1
            first_half = mine[:len(mine) // 2 + 1]
            growth["rss"].append(mine[-1][2] - mine[0][2])
            growth["fds"].append(mine[-1][3] - mine[0][3])
            growth["rss_late"].append(mine[-1][2] - max(s[2] for s in first_half))
            growth["fds_late"].append(mine[-1][3] - max(s[3] for s in first_half))
        last = [s[-1] for s in self.usage.values() if s]
        return {"controllers_sampled": lived,
                "rss_kb_now_median": sorted(s[2] for s in last)[len(last) // 2] if last else None,
                "fds_now_max": max((s[3] for s in last), default=None),
                **{f"{name}_growth_max": max(values, default=None) for name, values in growth.items()},
                "samples": {n: s for n, s in self.usage.items()}}

    def probe_figures(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        sent = answered = 0
        longest, unrecovered = 0.0, []
        for prober, result in zip(self.probers, results):
            for target, run in per_target(result).items():
                figures = analyse(run)
                sent += figures["sent"]
                answered += figures["answered"]
                if not figures["recovered"]:
                    unrecovered.append(f"{prober}->{target}")
                longest = max(longest, figures["downtime_ms"] or 0.0)
        return {"probers": len(self.probers), "targets": len(self.movers), "interval_s": PROBE_INTERVAL,
                "sent": sent, "answered": answered, "longest_gap_ms": round(longest, 1),
                "not_recovered": unrecovered}
