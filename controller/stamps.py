"""When this chassis applied each step of a migration, stamped on the migration's timeline.

A plan that moves ports carries the steps its flows stand for; the sender stamps them once the
switch replied. After a reconcile, every migration whose flows now stand here is stamped too,
unless its step was stamped before: a controller killed between a bundle's commit and its stamp
leaves its successor finding the flows in place, with nothing to send for them."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from controller.migration import step3_arrived
from controller.supervise import OneShots
from controller.view import View
from dfflow.models import LogicalPort
from dfflow.nb.timeline import Timelines

LOG = logging.getLogger(__name__)


class AppliedStamps:
    """Which step of its migration a port's moved flows stand for: the record's state (`bound` when
    step 3 moved it while the record still says requested), and `bound` for the migration whose
    record is gone; and the stamps under way."""

    def __init__(self, chassis: str, timelines: Timelines, on_error: Callable[[str], None]):
        self.chassis, self.timelines, self._on_error = chassis, timelines, on_error
        self._last: dict[str, str] = {}  # port id -> id of its last migration record seen moving
        self.under_way = OneShots()

    def of(self, moved: Iterable[str], port_of: Callable[[str], LogicalPort | None]) -> list[tuple[str, str]]:
        stamps = []
        for port_id in sorted(moved):
            port = port_of(port_id)
            mig = port.migration if port is not None else None
            if mig is not None:
                self._last[port_id] = mig.id
                stamps.append((mig.id, "bound" if mig.state == "requested" and step3_arrived(port) else mig.state))
            elif port_id in self._last:
                stamps.append((self._last.pop(port_id), "bound"))
        return stamps

    def in_place(self, view: View) -> list[tuple[str, str]]:
        """The step of every migration whose port has flows on this chassis."""
        return self.of([port.id for port in view.ports() if port.migration is not None and view.role(port) is not None],
                       view.port)

    def stamp(self, migration_id: str, state: str, when: float, first: bool = False) -> None:
        """Stamp that this chassis applied the step at `when` (`first`: unless it was stamped before);
        not awaited by the sender, its failure counted as a `timeline` error."""
        async def write() -> None:
            try:
                await self.timelines.applied(migration_id, self.chassis, state, when, first=first)
            except Exception:
                self._on_error("timeline")
        self.under_way.start(write(), f"stamp {migration_id} {state}")

    async def stop(self) -> None:
        await self.under_way.stop()
