"""`dfflow-controller`: one per chassis, the shell around the engine.

It owns every connection and the clock: the NB store and bus (Redis), this
chassis' OVSDB (ovsdbapp) and the OpenFlow channel to br-int. Events from all
three are handled one at a time on one asyncio loop (a burst of NB events, what
the bus read at once, as one): the engine turns each into a plan, commits it as
the desired state at once, and a single sender task applies plans to OVS in
order, each as one atomic bundle (`controller/sender.py`). On every (re)connect of
the switch the sender first reconciles (dump, diff, fix the difference). The daemon
wires these parts together and owns their tasks.

Errors in any handler are logged with their traceback and counted; the counts
and the rest of the state are served as JSON on the status socket.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
import traceback
from collections import Counter, deque
from typing import Any

from redis.exceptions import RedisError

from controller import collector, nbmark, options
from controller.apps.dnat import DnatApp
from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.apps.secgroups import ARRIVAL_WINDOW, SecurityGroupsApp
from controller.engine import Engine
from controller.flowstate import Plan
from controller.metrics import ControllerMetrics
from controller.migrator import Migrator
from controller.sender import PlanSender
from dfflow.openflow import Datapath, OpenFlowServer
from controller.interfaces import InterfaceTracker, PendingVifs, is_tunnel_row, is_vif_row
from dfflow.ovsdb.chassis import Ovsdb
from controller.portstatus import StatusReporter
from controller.conntrack_sweep import ConntrackSweeper, appctl_command, policy_of as sweep_policy
from controller.stamps import AppliedStamps
from dfflow.retry import TRANSIENT, Backoff, retried
from controller.status import GcPauses, controller_status, serve_status
from controller.supervise import TaskSupervisor
from controller.timing import event_timing, ovsdb_row_timing, timed
from dfflow.errors import Conflict, DfflowError
from dfflow.models import CHASSIS_TOPIC, DATAPATH_TYPES, Chassis, LogicalPort, PortStatus
from dfflow.nb.bus import Subscriber
from dfflow.nb.store import NbApi

LOG = logging.getLogger("dfflow.controller")
HEARTBEAT_INTERVAL = 5.0
PENDING_VIF_RETRY = 0.5
HOUSEKEEPING_START, HOUSEKEEPING_INTERVAL = 3.0, 1.0
STARTUP_NB_ATTEMPTS = 12  # ~40 s of back-off for the NB db at start-up
NB_MARK_INTERVAL = 10.0  # s between records of the NB revision the flows come from (in OVSDB)
APPLY_TIMINGS_KEPT = 1024


class ControllerDaemon:
    sender_class: type[PlanSender] = PlanSender

    def __init__(self, chassis: str, tunnel_ip: str, nb_url: str, ovsdb: str, bridge: str,
                 of_listen: str, status_socket: str | None = None, tunnel_type: str = "geneve",
                 strategy: str = "announce", datapath_type: str = "system",
                 metrics_listen: tuple[str, int] | None = None, activation_settle_ms: float = 0.0):
        if datapath_type not in DATAPATH_TYPES:
            raise ValueError(f"datapath_type must be one of {DATAPATH_TYPES}, not {datapath_type!r}")
        self.datapath_type, self.bridge = datapath_type, bridge
        self.chassis, self.tunnel_ip, self.tunnel_type = chassis, tunnel_ip, tunnel_type
        self.of_listen, self.status_socket = of_listen, status_socket
        self.engine = self._new_engine()
        self.nb = NbApi(nb_url)
        self.bus = Subscriber(nb_url, burst_callback=self._guard(self._on_nb_events, "nb_event"))
        self.ovsdb = Ovsdb(ovsdb, bridge)
        self.interfaces = InterfaceTracker()
        self.of = self._make_of_server(of_listen)
        self.stats: Counter[str] = Counter()
        self.errors: list[str] = []
        self.dp: Datapath | None = None
        self.pending_vifs = PendingVifs()
        self._ovsdb_busy = False
        self._stopping = asyncio.Event()
        self.tasks = TaskSupervisor(self.stats, self._task_died, self._fatal)
        self.exit_code, self.exit_reason = 0, ""
        self._mark_written, self._mark_at = 0, 0.0
        self._peers: dict[str, str] = {}
        self._chassis_synced = False  # tunnels follow chassis rows once the first snapshot is complete
        self._peers_stale = False  # a chassis change came while tunnels could not follow it
        self.migrator = Migrator(chassis, self.engine, self.nb, self._emit, strategy,
                                 activation_settle=activation_settle_ms / 1e3)
        self.port_status = StatusReporter(chassis, self.nb, self._topic_of)
        self.stamps = AppliedStamps(chassis, self.migrator.timelines, self._record_error)
        self._plugged_before_known: set[str] = set()  # VIFs that came online before their NB port
        self.apply_timings: deque[dict[str, Any]] = deque(maxlen=APPLY_TIMINGS_KEPT)  # the last applies
        self.gc_pauses, self.settle_collector = GcPauses(), collector.settle_after_startup
        self._ovsdb_received = 0.0  # time.time() when the OVSDB update being handled reached the loop
        self.metrics_listen, self.metrics_url = metrics_listen, None
        self.metrics = ControllerMetrics(self) if metrics_listen is not None else None
        self.conntrack_sweeper = ConntrackSweeper(lambda port_id: sweep_policy(self.engine.view, port_id),
                                                  self.stats, self._record_error, appctl_command(ovsdb))
        self.sender = self.sender_class(
            self.engine, lambda: self.dp, self.stats, self._record_error, emit=self._emit,
            announced=self.migrator.announced, nb_behind=lambda: self.bus.behind, stamps=self.stamps,
            sweeper=self.conntrack_sweeper, record_apply=lambda entry: self.apply_timings.append(entry))

    def _new_engine(self) -> Engine:
        return Engine(self.chassis, [L2App(), L3App(), DnatApp(), SecurityGroupsApp()])

    # -- plumbing ------------------------------------------------------------------
    def _make_of_server(self, listen: str) -> OpenFlowServer:
        kwargs = dict(on_connect=self._guard(self._on_switch_connect, "switch_connect"),
                      on_disconnect=self._on_switch_disconnect,
                      on_packet_in=self._guard(self._on_packet_in, "packet_in"))
        if listen.startswith("unix:"):
            return OpenFlowServer(path=listen[5:], **kwargs)
        host, _, port = listen.rpartition(":")
        return OpenFlowServer(host or "127.0.0.1", int(port), **kwargs)

    @property
    def of_target(self) -> str:
        return self.of_listen if self.of_listen.startswith("unix:") else f"tcp:{self.of_listen}"

    def _guard(self, handler: Any, what: str) -> Any:
        """Wrap a handler: an exception is logged with its traceback, counted and kept for status."""
        async def guarded(*args: Any) -> None:
            try:
                result = handler(*args)
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                self._record_error(what)
        return guarded

    def _record_error(self, what: str) -> None:
        self.stats["handler_errors"] += 1
        self.stats[f"errors.{what}"] += 1
        text = traceback.format_exc()
        self.errors = (self.errors + [f"{what}: {text}"])[-20:]
        LOG.error("%s handler failed:\n%s", what, text)

    def _spawn(self, factory: Any, name: str) -> None:
        """A long-lived task, started again (with back-off) whenever it dies."""
        self.tasks.spawn(factory, name)

    def _task_died(self, name: str, exc: BaseException) -> None:
        self.stats["task_crashes"] += 1
        text = "".join(traceback.format_exception(exc))
        self.errors = (self.errors + [f"task {name}: {text}"])[-20:]
        LOG.error("task %s died; starting it again:\n%s", name, text)

    def _fatal(self, reason: str) -> None:
        """A fault this controller cannot handle: stop, and exit non-zero saying why."""
        if not self.exit_code:
            self.exit_code, self.exit_reason = 1, reason
        self._stopping.set()

    def _emit(self, plan: Plan) -> None:
        """The engine's plan is now the desired state; the sender applies it to OVS."""
        for port_id in self.engine.take_windows_ending():  # also when the plan is empty (step 3 at the destination)
            asyncio.get_running_loop().call_later(ARRIVAL_WINDOW, self._close_arrival_window, port_id)
        if not plan:
            return
        plan.stamps += self.stamps.of(plan.moved, self.engine.view.port)
        plan.timing["emitted"] = time.monotonic()
        self.engine.commit(plan)
        self.sender.put(plan)

    def _close_arrival_window(self, port_id: str) -> None:
        try:
            plan = self.engine.arrival_window_closed(port_id)
            plan.cause = f"arrival_window_closed:{port_id}"
            self._emit(plan)
        except Exception:
            self._record_error("arrival window")
            LOG.exception("closing the arrival window of port %s failed", port_id)

    # -- life cycle --------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self.gc_pauses.install()
        self.engine.loading = True  # until the first snapshot and the tunnels are in: flows computed once
        await retried(self._register_chassis, "nb_register", self.stats, attempts=STARTUP_NB_ATTEMPTS,
                      backoff=Backoff(0.2, 5.0))
        await self.ovsdb.start()
        # What this chassis' flows were programmed from: an NB db older than that is not trusted.
        self._mark_written = self.bus.high_water = await nbmark.read_mark(self.ovsdb.remote)
        await self.of.start()  # listen before pointing OVS here: its first connection attempt succeeds
        await self.ovsdb.setup_bridge(self.of_target, self.datapath_type)
        self._spawn(self._ovsdb_loop, "ovsdb")
        await self.bus.start()
        await self.bus.add_topic(CHASSIS_TOPIC)
        self._chassis_synced = True
        await self._sync_tunnels()
        # Ports tied to this chassis by the NB db even without a VIF here now (a migration that
        # went on while this controller was away): follow their topics from the start.
        for port in await self.nb.ports_of_chassis(self.chassis):
            await self.bus.add_topic(port.topic)
        await self._settle()
        self._emit(self.engine.loaded())
        # Only now may the switch be reconciled: a partial view would delete flows that still serve.
        self._spawn(self.sender.run, "sender")
        self.settle_collector()  # the view just loaded is long-lived: out of the collector's way
        if self.status_socket:
            await self._start_status_server()
        if self.metrics is not None:
            self.metrics_url = await self.metrics.serve(*self.metrics_listen)
            LOG.info("Prometheus metrics on %s", self.metrics_url)
        self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(self.conntrack_sweeper.run, "conntrack-sweep")
        self._spawn(self._pending_vif_loop, "pending-vifs")
        self._spawn(self._housekeeping_loop, "migration-housekeeping")
        self._spawn(self.migrator.listen, "migration-events")
        self._spawn(lambda: self.port_status.run(lambda: set(self.engine.view.vifs)), "port-status")
        LOG.info("chassis %s up: tunnel %s, OpenFlow on %s", self.chassis, self.tunnel_ip, self.of_listen)
        await self._stopping.wait()
        await self.stop()
        return self.exit_code

    async def stop(self) -> None:
        LOG.info("chassis %s stopping", self.chassis)
        await self.tasks.stop()
        await self.stamps.stop()
        await self.migrator.one_shots.stop()
        if self.metrics is not None:
            await self.metrics.close()
        try:
            await self.nb.modify(Chassis.table, self.chassis, lambda c: c.replace(status="down"))
        except (DfflowError, RedisError, *TRANSIENT) as exc:
            LOG.warning("could not mark chassis down: %s", exc)
        await self.bus.stop()
        await self.of.stop()
        await self.ovsdb.stop()
        await self.nb.close()
        self.gc_pauses.uninstall()

    async def _register_chassis(self) -> None:
        # datapath_type and bridge_name are what the API puts in binding:vif_details for os-vif.
        where = dict(tunnel_ip=self.tunnel_ip, tunnel_type=self.tunnel_type, datapath_type=self.datapath_type,
                     bridge_name=self.bridge)
        row = Chassis(id=self.chassis, topic=CHASSIS_TOPIC, status="up", last_seen=time.time(), **where)
        try:
            await self.nb.create(row)
        except Conflict:
            await self.nb.modify(Chassis.table, self.chassis, lambda c: c.replace(
                status="up", last_seen=time.time(), **where))

    async def _heartbeat_loop(self) -> None:
        """The chassis row kept up (registered again if the NB db lost it); the beat stamped unheard."""
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                row = await self.nb.get(Chassis.table, self.chassis)
                if row is None or row.status != "up":
                    await self._guard(self._register_chassis, "heartbeat")()
                await self.nb.chassis_seen(self.chassis, time.time())
            except TRANSIENT as exc:  # the NB db is away: say so, and beat again when it is back
                self.stats["heartbeat_failures"] += 1
                LOG.warning("heartbeat: NB db unreachable (%s)", exc)
            except (DfflowError, RedisError):
                self._record_error("heartbeat")

    # -- NB ------------------------------------------------------------------------
    async def _on_nb_events(self, events: list[dict[str, Any]]) -> None:
        """A burst of NB events (what the bus read at once, in order): each changes the view in its
        turn, and everything they touched is planned once -- one plan, one bundle -- from the view
        after the last; then the migrator hears each port's latest version."""
        received = time.time()
        owners: set[Any] = set()
        planned: list[dict[str, Any]] = []
        peers_moved = False
        for event in events:
            self.stats["nb_events"] += 1
            self.stats[f"nb_events.{event['table']}"] += 1
            if event["table"] == PortStatus.table:
                continue  # what the chassis report for Neutron's port status: no flow depends on it
            try:
                if event["table"] == Chassis.table:
                    before = _tunnel_end(self.engine.view.chassis_row(event["id"]))
                    self.engine.take_event(event)  # keeps the view; tunnels follow below
                    # A heartbeat or a re-registration changes no tunnel: every chassis hears every one of
                    # them, so only a change of a peer's tunnel end costs a pass over the peers.
                    peers_moved |= _tunnel_end(self.engine.view.chassis_row(event["id"])) != before
                    continue
                if event["table"] == LogicalPort.table and event["action"] == "delete":
                    self._status_of_deleted_port(event["id"])
                owners |= self.engine.take_event(event)
                planned.append(event)
            except Exception:  # one bad event must not keep the others of its burst from their flows
                self._record_error("nb_event")
        if planned:
            plan = self.engine.plan_owners(owners)
            computed = time.time()
            plan.cause, plan.timing = event_timing(planned[0], received, computed)
            plan.batched = [event_timing(e, received, computed) for e in planned[1:]]
            self._emit(plan)
        for port_id in dict.fromkeys(e["id"] for e in planned
                                     if e["table"] == LogicalPort.table and e["action"] != "delete"):
            await self._guard(self._port_written, "nb_event")(port_id)
        if peers_moved or self._peers_stale:
            await self._sync_tunnels()

    async def _port_written(self, port_id: str) -> None:
        """What a port's NB version (the latest of a burst) asks of the migrator."""
        self.pending_vifs.discard(port_id)
        port = self.engine.view.port(port_id)
        if port is not None:
            if port.id in self._plugged_before_known:
                self._plugged_before_known.discard(port.id)
                await self.migrator.vif_online(port.id)  # its VIF came before the port did
            await self.migrator.port_changed(port)

    def _status_of_deleted_port(self, port_id: str) -> None:
        """A port deleted from the NB while its VIF or its binding is here: its status row goes too
        (the API deletes it, but neutron-server's driver does not, and a report may race the delete)."""
        port = self.engine.view.port(port_id)
        if port_id in self.engine.view.vifs or (port is not None and port.binding_chassis == self.chassis):
            self.port_status.gone(port_id)

    def _topic_of(self, port_id: str) -> str | None:
        port = self.engine.view.port(port_id)
        return port.topic if port is not None else None

    async def _sync_tunnels(self) -> None:
        if not self._chassis_synced or self.bus.behind is not None:
            self._peers_stale = True
            return  # half a snapshot, or an NB older than ours, would delete tunnels still in use
        self._peers_stale = False
        peers = {c.id: c.tunnel_ip for c in self.engine.view.objects[Chassis.table].values()
                 if c.id != self.chassis and c.status == "up"}
        if peers != self._peers:
            await self.ovsdb.ensure_tunnels(peers, self.tunnel_ip, self.tunnel_type)
            self._peers = peers

    async def _follow_port(self, port_id: str) -> None:
        """Subscribe to the topic of a port plugged here, so its network and neighbours arrive."""
        if self.engine.view.port(port_id) is not None:
            return
        port = await self.nb.get(LogicalPort.table, port_id)
        if port is None:
            if port_id not in self.pending_vifs:
                LOG.warning("VIF with iface-id %s has no NB port (yet); waiting for it", port_id)
                self.stats["unknown_vifs"] += 1
            self.pending_vifs.add(port_id)
            return
        self.pending_vifs.discard(port_id)
        await self.bus.add_topic(port.topic)

    async def _pending_vif_loop(self) -> None:
        while True:
            await self.pending_vifs.wait()
            await asyncio.sleep(PENDING_VIF_RETRY)
            for port_id in sorted(self.pending_vifs):
                if port_id in self.engine.view.vifs:
                    await self._guard(self._follow_port, "pending_vif")(port_id)

    # -- OVSDB ---------------------------------------------------------------------
    async def _ovsdb_loop(self) -> None:
        while True:
            updates = [await self.ovsdb.updates.get()]
            while not self.ovsdb.updates.empty():  # a transaction of N-1 tunnels comes as N-1 rows
                updates.append(self.ovsdb.updates.get_nowait())
            self._ovsdb_busy = True
            self._ovsdb_received = time.time()
            try:
                await self._on_interfaces(updates)
            finally:
                self._ovsdb_busy = self.ovsdb.updates.qsize() > 0

    async def _settle(self, quiet_for: float = 0.1, limit: float = 10.0, tunnels_limit: float = 2.0) -> None:
        """Wait until OVSDB's initial rows are handled (and the topics they pulled in synced), and the
        tunnels asked for have their ofports (for up to `tunnels_limit`: one that never gets one is
        not waited for): the flows are then computed once, from all of it."""
        started = quiet_since = time.monotonic()
        while (now := time.monotonic()) < started + limit and (
                now - quiet_since < quiet_for or (now - started < tunnels_limit
                                                  and not self._peers.keys() <= self.engine.view.tunnels.keys())):
            await asyncio.sleep(0.02)
            if self._ovsdb_busy or not self.ovsdb.updates.empty():
                quiet_since = time.monotonic()

    async def _on_interfaces(self, updates: list[Any]) -> None:
        """Interface rows in the order they came: the tunnel rows among them change the tunnels once."""
        tunnel_rows = 0
        for update in updates:
            row_before = self.interfaces.by_name.get(update.name)
            if ((is_tunnel_row(row_before) or is_tunnel_row(update))
                    and not (is_vif_row(row_before) or is_vif_row(update))):
                self.stats["ovsdb_events"] += 1
                self.interfaces.apply(update)
                tunnel_rows += 1
            else:
                await self._guard(self._on_interface, "ovsdb_event")(update)
        if tunnel_rows:
            await self._guard(self._follow_tunnel_ofports, "ovsdb_event")()

    def _follow_tunnel_ofports(self) -> None:
        if (tunnels := self.interfaces.tunnels()) != self.engine.view.tunnels:
            self._emit(self.engine.tunnels_changed(tunnels))

    async def _on_interface(self, update: Any) -> None:
        self.stats["ovsdb_events"] += 1
        self.interfaces.apply(update)
        before_vifs = dict(self.engine.view.vifs)
        vifs, tunnels = self.interfaces.vifs(), self.interfaces.tunnels()
        for iface_id in sorted(set(before_vifs) - set(vifs)):
            self._plugged_before_known.discard(iface_id)
            port_before = self.engine.view.port(iface_id)
            timing = ovsdb_row_timing(update, self._ovsdb_received)
            await self.migrator.vif_offline(port_before, timing)  # step 2 on the source, or an abort
            self._emit(timed(self.engine.vif_offline(iface_id), timing, f"vif:{iface_id}"))
            self.pending_vifs.discard(iface_id)
            self.port_status.down(iface_id)  # written after this update's publishes and flows
        for iface_id, vif in sorted(vifs.items()):
            if before_vifs.get(iface_id) != vif:
                self._emit(self.engine.vif_online(vif))
                await self._follow_port(iface_id)
                if self.engine.view.port(iface_id) is None:
                    self._plugged_before_known.add(iface_id)
                else:
                    await self.migrator.vif_online(iface_id)  # step 1 when the port lives elsewhere
                self.port_status.up(iface_id, since=update.seen or None)
        if tunnels != self.engine.view.tunnels:
            self._emit(self.engine.tunnels_changed(tunnels))

    async def _housekeeping_loop(self) -> None:
        await asyncio.sleep(HOUSEKEEPING_START)  # let OVSDB's rows and the NB snapshot arrive first
        while True:
            await self._guard(self.migrator.housekeeping, "housekeeping")()
            await self._guard(self._follow_nb_revision, "nb_mark")()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def _follow_nb_revision(self) -> None:
        """Record (in OVSDB) the NB revision the flows come from; once an NB db that was behind has
        caught up, reconcile again to remove what the held reconcile kept."""
        if self.bus.behind is not None:
            return
        self.sender.release_held_deletions()
        now = time.monotonic()
        if self.bus.high_water > self._mark_written and now - self._mark_at >= NB_MARK_INTERVAL:
            self._mark_at = now
            await nbmark.write_mark(self.ovsdb.remote, self.bus.high_water)
            self._mark_written = self.bus.high_water

    # -- OpenFlow ------------------------------------------------------------------
    async def _on_packet_in(self, dp: Datapath, msg: Any) -> None:
        self.stats["packet_in"] += 1
        await self.migrator.packet_in(msg.match["in_port"], bytes(msg.data))

    async def _on_switch_connect(self, dp: Datapath) -> None:
        LOG.info("switch connected: datapath %016x", dp.id or 0)
        self.dp = dp
        self.stats["switch_connects"] += 1
        self.sender.request_reconcile()

    def _on_switch_disconnect(self, dp: Datapath, *args: Any) -> None:
        if self.dp is dp:
            self.dp = None
            self.stats["switch_disconnects"] += 1

    # -- status --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return controller_status(self)

    async def _start_status_server(self) -> None:
        server = await serve_status(self.status_socket, self.status)
        self._spawn(server.serve_forever, "status")


def _tunnel_end(row: Chassis | None) -> tuple[str, bool] | None:
    """What a chassis row says of the tunnel to it."""
    return (row.tunnel_ip, row.status == "up") if row is not None else None


def main(argv: list[str] | None = None, daemon_class: type[ControllerDaemon] | None = None) -> None:
    """`dfflow-controller` (`daemon_class`: a variant of the daemon, built by a benchmark)."""
    args = options.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = (daemon_class or ControllerDaemon)(args.chassis, args.tunnel_ip, args.nb, args.ovsdb, args.bridge,
                                              args.of_listen, args.status_socket, args.tunnel_type, args.strategy,
                                              datapath_type=args.datapath_type,
                                              activation_settle_ms=args.activation_settle_ms,
                                              metrics_listen=None if args.metrics_port is None
                                              else (args.metrics_listen, args.metrics_port))
    try:
        code = asyncio.run(daemon.run())
        reason = daemon.exit_reason or "stopped"
    except Exception as exc:  # a fault at start-up, or one the tasks' supervision did not cover
        LOG.exception("unrecoverable fault")
        code, reason = 1, f"{type(exc).__name__}: {exc}"
    (LOG.critical if code else LOG.info)("dfflow-controller on %s exits with status %d: %s", args.chassis, code,
                                         reason)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
