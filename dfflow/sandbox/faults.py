"""Faults that tests and benchmarks switch on and off at run time in a sandbox's controllers.

A fault is on while its field is set in the NB Redis hash ``<prefix>:faults``; `set_fault` sets it and
announces the change on the channel of the same name. Only controllers started with the wrapper
`benchmarks.faulty_controller` (pass its `controller_cmd()` to the sandbox) act on them; the controller
itself knows nothing of faults.

  drop_migration_publish   the source does not act on its VIF's unplug (no step-2 write or event):
                           the migration must end by Nova's step 3 alone
  ignore_announcements     the controller never hears the VM's RARP/GARP (the datapath still does)
"""
from __future__ import annotations

import json

from dfflow.nb.store import NbApi

DROP_PUBLISH = "drop_migration_publish"
IGNORE_ANNOUNCEMENTS = "ignore_announcements"


def faults_key(nb: NbApi) -> str:
    """The hash of the faults that are on, and the channel that announces each change."""
    return f"{nb.keys.prefix}:faults"


async def set_fault(nb: NbApi, name: str, on: bool) -> None:
    key = faults_key(nb)
    if on:
        await nb.redis.hset(key, name, "1")
    else:
        await nb.redis.hdel(key, name)
    await nb.redis.publish(key, json.dumps({"fault": name, "on": on}))
