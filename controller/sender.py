"""The plan sender: the one task of a controller that applies its plans to the switch.

The daemon puts each plan here once the engine committed it as the desired state (`put`); the
sender applies plans in order, each as one atomic bundle, and those queued behind one go out with it
(a burst of NB events, an evacuation, costs one round trip). On every (re)connect of the switch, and
when the daemon asks (`request_reconcile`), it first reconciles: dumps the switch's flows, diffs them
against the desired state and sends only the difference. What a plan stands for is recorded once the
switch has its flows: its timings, its migrations' stamps, the conntrack sweep of its ports.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from controller import compiler
from controller.apps.l2 import opened_gates
from controller.conntrack_sweep import ConntrackSweeper
from controller.engine import Engine
from controller.flowstate import Plan
from controller.reconcile import holds_none_of_ours, reconcile
from controller.stamps import AppliedStamps
from controller.timing import apply_entries
from dfflow.openflow import ConnectionLost, Datapath, OFChannelError

LOG = logging.getLogger("dfflow.controller")
MAX_COALESCED_FLOW_MODS = 5000
SENDER_ERROR_PAUSE = 0.5


class PlanSender:
    sent_as = "bundles"  # the stat counting what the sender applies (one atomic bundle per batch of plans)

    def __init__(self, engine: Engine, datapath: Callable[[], Datapath | None], stats: Counter[str],
                 record_error: Callable[[str], None], *, emit: Callable[[Plan], None],
                 announced: Callable[[int], Awaitable[None]], nb_behind: Callable[[], Any],
                 stamps: AppliedStamps, sweeper: ConntrackSweeper, record_apply: Callable[[dict[str, Any]], None]):
        """`datapath()`: the switch connected now (None while it is away); `emit`: the daemon's way of
        committing a plan (the reconcile's arrival-window closes); `announced(ofport)`: the migrator's
        activation of a port whose VM announced itself; `nb_behind()`: not None while the NB db is older
        than what this chassis was programmed from; `record_apply(entry)`: one applied plan's timing."""
        self.engine, self._datapath, self.stats, self._record_error = engine, datapath, stats, record_error
        self._emit, self._announced, self._nb_behind = emit, announced, nb_behind
        self.stamps, self.sweeper, self._record_apply = stamps, sweeper, record_apply
        self.outbox: asyncio.Queue[Plan] = asyncio.Queue()
        self.sending = False  # a plan is out to the switch, its reply not in yet
        self.deletions_held = False  # a reconcile kept flows because the NB db was behind
        self._need_reconcile = asyncio.Event()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing out to the switch."""
        return self.outbox.empty() and not self.sending

    def put(self, plan: Plan) -> None:
        self.outbox.put_nowait(plan)

    def request_reconcile(self) -> None:
        """Reconcile before the next plan goes out (and wake the sender for it)."""
        self._need_reconcile.set()
        self.outbox.put_nowait(Plan())

    def release_held_deletions(self) -> None:
        """The NB db caught up: reconcile again to remove what a held reconcile kept."""
        if self.deletions_held:
            self.deletions_held = False
            self.request_reconcile()

    async def run(self) -> None:
        while True:
            plan = await self.outbox.get()
            dp = self._datapath()
            if dp is None:
                continue  # applied by the reconcile that follows the next connect
            try:
                if self._need_reconcile.is_set():
                    self._need_reconcile.clear()
                    drained = self._drain_outbox()  # everything queued is part of the desired state below
                    await self._reconcile(dp)
                    for p in [plan, *drained]:
                        self.sweeper.request(p.arrived, p.narrowed)
                elif plan:
                    await self._apply([plan] + self._take_queued(MAX_COALESCED_FLOW_MODS - plan.n_flow_mods), dp)
            except ConnectionLost:
                self._need_reconcile.set()
            except OFChannelError:
                self._record_error("apply")
                self._need_reconcile.set()
            except Exception:  # a bug in one plan must not stop every later one; the reconcile repairs
                self._record_error("sender")
                self._need_reconcile.set()
                await asyncio.sleep(SENDER_ERROR_PAUSE)
            finally:
                self.sending = False

    async def _apply(self, batch: list[Plan], dp: Datapath) -> None:
        """Plans queued meanwhile go out with the first, in order, as one bundle."""
        sending = time.monotonic()
        self.sending = True
        await self.send(dp, [m for p in batch for m in p.messages()])
        applied = time.time()
        bundle_ms = round((time.monotonic() - sending) * 1e3, 3)
        self.stats[self.sent_as] += 1
        self.stats["coalesced_plans"] += len(batch) - 1
        for p in batch:
            for entry in apply_entries(p, sending, bundle_ms, applied, len(batch)):
                self._record_apply(entry)  # one by one: the metrics observe each
            self.stats["flow_mods"] += p.n_flow_mods
            for migration_id, state in p.stamps:
                self.stamps.stamp(migration_id, state, applied)
            self.sweeper.request(p.arrived, p.narrowed)  # now that its flows are in

    def _take_queued(self, room: int) -> list[Plan]:
        """Plans already waiting in the outbox, up to `room` flow mods (a reconcile request stops it)."""
        taken: list[Plan] = []
        while room > 0 and not self.outbox.empty() and not self._need_reconcile.is_set():
            queued = self.outbox.get_nowait()
            if queued:
                taken.append(queued)
                room -= queued.n_flow_mods
        return taken

    async def send(self, dp: Datapath, flows: list[Any], pipelined: bool = True) -> None:
        """Apply flow mods, packed and framed by the compiled packer in one call, in one atomic bundle.

        A plan's bundle is pipelined (open, adds and commit in one round trip): its rows were
        validated by the packer, so the switch rejecting one means it changed under us -- the
        BundleError that says so makes the sender reconcile. A reconcile's own bundle is checked
        before it commits."""
        await dp.send_bundle(compiler.PlanBundle(flows), pipelined=pipelined)

    def _drain_outbox(self) -> list[Plan]:
        return [self.outbox.get_nowait() for _ in range(self.outbox.qsize())]

    async def _reconcile(self, dp: Datapath) -> None:
        started = time.monotonic()
        dumped = await dp.dump_flows()
        await self._announced_while_away(dumped)
        app_ids = {app.app_id for app in self.engine.apps}
        if holds_none_of_ours(dumped, app_ids):
            self.engine.zones_lost()
            self._emit(Plan())  # (the arrival windows' closes)
            plan, unchanged = self.engine.desired_plan(), 0
        else:
            plan, unchanged = reconcile(dumped, self.engine.desired(), app_ids)
        if plan.deletes and (behind := self._nb_behind()) is not None:
            LOG.warning("NB db behind (%s): the reconcile keeps %d flows it cannot explain until it catches up",
                        behind, len(plan.deletes))
            self.stats["reconcile_deletions_held"] += 1
            self.deletions_held, plan.deletes = True, []
        if plan:
            await self.send(dp, plan.messages(), pipelined=False)
        applied = time.time()
        for migration_id, state in self.stamps.in_place(self.engine.view):
            self.stamps.stamp(migration_id, state, applied, first=True)
        self.stats["reconciles"] += 1
        LOG.info("reconciled in %.1f ms: %d flows kept, %d removed, %d added", (time.monotonic() - started) * 1e3,
                 unchanged, len(plan.deletes), plan.n_flow_mods - len(plan.deletes))

    async def _announced_while_away(self, dumped: list[Any]) -> None:
        """A pending VIF whose gate OVS holds open: its VM announced itself while this controller was
        away (the datapath opened the port; the packet-in was lost). It is activated as that packet-in
        would have done, before the reconcile, which would otherwise close the port again."""
        view = self.engine.view
        pending = [vif.ofport for vif in view.vifs.values()
                   if (port := view.port(vif.iface_id)) is not None and view.is_pending(port)]
        for ofport in opened_gates(dumped, pending):
            self.stats["announcements_found_open"] += 1
            try:
                await self._announced(ofport)
            except Exception:
                self._record_error("announced_while_away")
