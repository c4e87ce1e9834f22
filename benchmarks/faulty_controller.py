"""``python -m benchmarks.faulty_controller ARGV...``: dfflow-controller with the faults of
`dfflow.sandbox.faults` (switched at run time by tests and benchmarks), kept out of the controller.

It runs the controller (same arguments) with its migrator wrapped: while a fault is on, the wrapper
drops what the fault names before the migrator sees it. The wrapper follows the faults' channel, whose
copy spares a Redis round trip in front of step 2 (until it has one, it reads the hash).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys

from controller import daemon
from controller.migrator import Migrator, is_announcement
from dfflow.models import LogicalPort
from dfflow.nb.bus import follow_channel
from dfflow.sandbox.faults import DROP_PUBLISH, IGNORE_ANNOUNCEMENTS, faults_key

LOG = logging.getLogger(__name__)


def controller_cmd() -> list[str]:
    """The sandbox's controller command for a cloud whose faults a test or benchmark switches."""
    return [sys.executable, "-m", "benchmarks.faulty_controller"]


class FaultyMigrator(Migrator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults: set[str] | None = None  # the faults on, while the channel is followed

    async def vif_offline(self, port_before: LogicalPort | None, timing: dict[str, float] | None = None) -> None:
        mig = port_before.migration if port_before is not None else None
        if mig is not None and mig.source == self.chassis and mig.chassis != self.chassis \
                and await self._on(DROP_PUBLISH):
            self._count("publishes_dropped")
            LOG.warning("fault injection: dropping the step-2 publish of port %s", port_before.id)
            return
        await super().vif_offline(port_before, timing)

    async def packet_in(self, ofport: int, data: bytes) -> None:
        if is_announcement(data) and await self._on(IGNORE_ANNOUNCEMENTS):
            self._count("announcements_ignored")
            return
        await super().packet_in(ofport, data)

    async def listen(self) -> None:
        follower = asyncio.ensure_future(self._follow_faults())
        try:
            await super().listen()
        finally:
            follower.cancel()

    async def _on(self, name: str) -> bool:
        if self.faults is not None:
            return name in self.faults
        return bool(await self.nb.redis.hget(faults_key(self.nb), name))

    async def _follow_faults(self) -> None:
        key = faults_key(self.nb)

        async def read_all() -> None:  # subscribed first: a fault switched from now on reaches us as a message
            self.faults = {k.decode() if isinstance(k, bytes) else k for k in await self.nb.redis.hkeys(key)}

        def switched(data: bytes | str) -> None:
            msg = json.loads(data)
            (self.faults.add if msg["on"] else self.faults.discard)(msg["fault"])

        def lost() -> None:
            self.faults = None

        await follow_channel(self.nb.redis, key, switched, "fault channel", on_subscribed=read_all, on_lost=lost)


def main() -> None:
    daemon.Migrator = FaultyMigrator  # type: ignore[misc]  # the daemon builds this one instead
    daemon.main()


if __name__ == "__main__":
    main()
