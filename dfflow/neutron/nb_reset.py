"""An NB db that lost its history (flushed, or restored from an older backup) made safe to follow again.

Every NB write takes its version from one revision counter, and a follower (a controller's NB bus) drops
any event not newer than the version it has seen for that object. After a flush the counter starts again
from zero, so the objects the sync restores would carry versions the followers take for stale; and a flush
sends no delete events, so the followers would keep what vanished with it.

Before a repair writes, the counter is therefore raised to the current time in microseconds (never
lowered): counted up from there at far less than one write per microsecond, it stays above every version
handed out before, whatever the NB lost. A counter below `NEVER_RAISED` has only counted up from zero:
the NB is new or was flushed, and after the repair its followers are disconnected (`CLIENT KILL TYPE
pubsub`) so that they reconnect and resynchronise from a snapshot, deletions included.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)

NEVER_RAISED = 10**15  # ~31 years of microseconds: a counter below it was never raised to a time
RAISE_TO_AT_LEAST = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return current
"""


def raise_revision(nb: NbClient) -> bool:
    """Raise the NB's revision counter to now (in microseconds); True if it had never been raised."""
    floor = time.time_ns() // 1000

    async def body(api: Any) -> bool:
        return int(await api.redis.eval(RAISE_TO_AT_LEAST, 1, api.keys.rev, floor)) < NEVER_RAISED
    return nb.run(body)


def resync_followers(nb: NbClient) -> int:
    """Disconnect every subscriber of the NB's Redis: each reconnects and resynchronises its topics."""
    killed = int(nb.run(lambda api: api.redis.client_kill_filter(_type="pubsub")))
    LOG.warning("neutron-sync: the NB had been flushed (or was new); %d followers disconnected to resynchronise",
                killed)
    return killed
