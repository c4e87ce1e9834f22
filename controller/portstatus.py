"""This chassis' reports of its VIFs up and down, into the NB table `lport_status`.

Neutron's port status (DOWN until the VIF is up where the port is bound) and the
`network-vif-plugged` event Nova waits for come from these reports (dfflow api
reads them). A report is never on a migration's critical path: `up()` and
`down()` only note what is wanted, and one writer task writes a little later,
the last word per port winning (a plug and an unplug in one burst cost at most
one write each), so the step-2 publish and the flows of the same OVSDB update go
first. A write that fails is logged with its traceback, counted and retried with
back-off; a VIF whose NB port is not known yet is retried until it is, or until
the VIF is gone.

Each write is a compare-and-set of the port's `PortStatus` row (created when the
first chassis reports it up): this chassis adds or removes only its own entry in
`up`, so the source and the destination of a migration never overwrite each
other. A row whose `up` is empty stays (Neutron's DOWN), so that its last event
says which chassis left.

At start-up `resync()` reports what OVSDB shows and takes this chassis out of
the rows of VIFs it no longer has (they went while the controller was away).

A row exists only while its port does: every write requires the NB port in the
same transaction (a port deleted meanwhile makes it a "not known" VIF, retried,
and its row is removed rather than updated), and `gone()` -- the port deleted
from the NB while its VIF or binding was here -- removes the row.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from dfflow.errors import Conflict, DfflowError, NotFound
from dfflow.models import LogicalPort, PortStatus
from dfflow.nb.store import NbApi

LOG = logging.getLogger(__name__)
COALESCE_DELAY = 0.02  # s between the first report of a burst and its writes
RETRY_DELAY, RETRY_MAX = 0.2, 5.0  # s, doubling
CAS_ATTEMPTS = 10
GONE = "gone"  # wanted: the port was deleted from the NB, its status row goes too


class PortNotKnown(DfflowError):
    """The VIF's iface-id names no NB port (yet)."""


class StatusReporter:
    def __init__(self, chassis: str, nb: NbApi, topic_of: Callable[[str], str | None],
                 coalesce_delay: float = COALESCE_DELAY):
        """`topic_of(port_id)`: the port's topic from the controller's view, or None (then read from NB)."""
        self.chassis, self.nb, self.topic_of = chassis, nb, topic_of
        self.coalesce_delay = coalesce_delay
        self.stats: Counter[str] = Counter()
        self.errors: list[str] = []
        self._wanted: dict[str, float | str | None] = {}  # port id -> up since (None: down; GONE), not written
        self._wake = asyncio.Event()
        self._retry_delay = RETRY_DELAY

    # -- what the controller sees ---------------------------------------------------
    def up(self, port_id: str, since: float | None = None) -> None:
        self._want(port_id, time.time() if since is None else since)

    def down(self, port_id: str) -> None:
        self._want(port_id, None)

    def gone(self, port_id: str) -> None:
        """The port was deleted from the NB: remove its status row."""
        self._want(port_id, GONE)

    def _want(self, port_id: str, since: float | str | None) -> None:
        self._wanted[port_id] = since
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._wanted)

    async def resync(self, vifs: set[str]) -> None:
        """Report every VIF in `vifs` up, and this chassis off every other port's status."""
        for status in await self.nb.list(PortStatus.table):
            if self.chassis in status.up and status.id not in vifs:
                self.down(status.id)
        for port_id in sorted(vifs):
            self.up(port_id)

    # -- the writer -------------------------------------------------------------------
    async def run(self, vifs_now: Callable[[], set[str]] | None = None) -> None:
        """Write what is wanted, for as long as the controller runs; first resync with `vifs_now()`
        (retried until the NB db answers)."""
        while vifs_now is not None:
            try:
                await self.resync(vifs_now())
                break
            except Exception as exc:
                self.stats["resync_errors"] += 1
                self.errors = (self.errors + [f"resync: {exc!r}"])[-10:]
                LOG.exception("port statuses of %s not resynchronised; retrying", self.chassis)
                await asyncio.sleep(self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
        self._retry_delay = RETRY_DELAY
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.coalesce_delay)
            failed = await self.flush()
            if failed:
                await asyncio.sleep(self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
                self._wake.set()
            else:
                self._retry_delay = RETRY_DELAY

    async def flush(self) -> bool:
        """Write every wanted report once; returns whether any is left for a retry."""
        batch, self._wanted = self._wanted, {}
        left = False
        for port_id, since in batch.items():
            try:
                await self._write(port_id, since)
                self.stats["writes"] += 1
            except PortNotKnown:
                self.stats["ports_not_known"] += 1
                left |= self._requeue(port_id, since)
            except Exception as exc:
                self.stats["write_errors"] += 1
                self.errors = (self.errors + [f"{port_id}: {exc!r}"])[-10:]
                LOG.exception("status of port %s on %s not written; retrying", port_id, self.chassis)
                left |= self._requeue(port_id, since)
        return left

    def _requeue(self, port_id: str, since: float | str | None) -> bool:
        """Retry a failed report unless a newer one came meanwhile."""
        self._wanted.setdefault(port_id, since)
        return True

    async def _write(self, port_id: str, since: float | str | None) -> None:
        if since == GONE:
            await self._remove(port_id)
            return
        port = ((LogicalPort.table, port_id),)  # required by every write: no row outlives its port
        for _ in range(CAS_ATTEMPTS):
            current = await self.nb.get(PortStatus.table, port_id)
            if current is None:
                if since is None:
                    return  # never reported up anywhere: nothing to take back
                try:
                    await self.nb.create(PortStatus(id=port_id, topic=await self._topic(port_id),
                                                    up={self.chassis: since}), requires=port)
                    return
                except NotFound as exc:
                    if exc.table == LogicalPort.table:
                        raise PortNotKnown(f"VIF {port_id!r} names no NB port") from exc
                    raise
                except Conflict:
                    continue  # another chassis created it meanwhile: add ours to it
            up = dict(current.up)
            if since is None:
                if up.pop(self.chassis, None) is None:
                    return
            elif self.chassis in up:
                return  # up here already: keep when it came up
            else:
                up[self.chassis] = since
            try:
                await self.nb.update(current.replace(up=up), requires=port)
                return
            except NotFound as exc:
                if exc.table != LogicalPort.table:
                    continue  # the row went meanwhile
                await self._remove(port_id)  # the port went: a row of a deleted port is an orphan
                if since is None:
                    return
                raise PortNotKnown(f"VIF {port_id!r} names no NB port") from exc
            except Conflict:
                continue
        raise Conflict(f"lport_status {port_id!r} kept changing; gave up after {CAS_ATTEMPTS} tries")

    async def _remove(self, port_id: str) -> None:
        try:
            await self.nb.delete(PortStatus.table, port_id)
            self.stats["rows_removed"] += 1
        except NotFound:
            pass

    async def _topic(self, port_id: str) -> str:
        topic = self.topic_of(port_id)
        if topic is None:
            port = await self.nb.get(LogicalPort.table, port_id)
            if port is None:
                raise PortNotKnown(f"VIF {port_id!r} names no NB port")
            topic = port.topic
        return topic

    def status(self) -> dict[str, object]:
        return {"pending": self.pending, "stats": dict(self.stats), "errors": self.errors[-3:]}
