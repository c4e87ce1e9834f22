"""Port status through Neutron's provisioning blocks: a port goes ACTIVE when its VIF is up on its host.

When a port gets bound to a new host, the driver adds a provisioning block (as an L2 agent's) in the
port's pre-commit; Neutron keeps the port DOWN while it is there. The chassis report where a VIF is up
in the NB's `lport_status` table; when it shows the port's VIF up on the host of its active binding, the
block is completed (outside any DB transaction) and ML2 sets the port ACTIVE, so Neutron's own Nova
notifier sends `network-vif-plugged`. The report is looked at right after binding (the VIF may be up
already) and on every `lport_status` event (`VifUpWatcher`), and all reports again after (re)connecting.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections import Counter
from typing import Any, Iterable

from neutron.db import provisioning_blocks
from neutron.objects import ports as port_objects
from neutron_lib import constants as n_const
from neutron_lib import context as n_context
from neutron_lib.callbacks import resources
from neutron_lib.db import api as db_api

from dfflow.models import PortStatus
from dfflow.nb.connection import redis_client
from dfflow.nb.store import NbApi
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)
ENTITY = provisioning_blocks.L2_AGENT_ENTITY


def block_needed(port: dict[str, Any], host: str | None, original_host: str | None) -> bool:
    """A port moving to a new host (or bound the first time) waits for its VIF there, unless ACTIVE."""
    return bool(host) and host != original_host and port.get("status") != n_const.PORT_STATUS_ACTIVE


def add_block(plugin_context: Any, port_id: str) -> None:
    provisioning_blocks.add_provisioning_component(plugin_context, port_id, resources.PORT, ENTITY)


def up_hosts(nb: NbClient, port_id: str) -> set[str]:
    status = nb.get(PortStatus.table, port_id)
    return set(status.up) if status is not None else set()


def complete_if_up(plugin_context: Any, port_id: str, hosts: Iterable[str]) -> bool:
    """Complete the port's block if its active binding's host is among `hosts` (where its VIF is up)."""
    if db_api.is_session_active(plugin_context.session):
        return False  # Neutron forbids it inside a transaction; the watcher completes it instead
    active = port_objects.PortBinding.get_objects(plugin_context, port_id=port_id, status=n_const.ACTIVE)
    if not active or active[0].host not in set(hosts):
        return False
    if not provisioning_blocks.is_object_blocked(plugin_context, port_id, resources.PORT):
        return False
    provisioning_blocks.provisioning_complete(plugin_context, port_id, resources.PORT, ENTITY)
    LOG.info("port %s: VIF up on %s; provisioning complete", port_id, active[0].host)
    return True


class VifUpWatcher:
    """Follows every topic's NB events for `lport_status` and completes the ports whose VIF came up."""

    def __init__(self, nb: NbClient, reconnect_delay: float = 0.5, max_reconnect_delay: float = 5.0):
        self.nb = nb
        self.reconnect_delay, self.max_reconnect_delay = reconnect_delay, max_reconnect_delay
        self.stats: Counter[str] = Counter()
        # Neutron's DB work blocks: it runs here, never on the NB loop.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dfflow-vif-up")
        self._task: concurrent.futures.Future | None = None

    def start(self) -> None:
        self._task = self.nb.spawn(self._run)

    async def _run(self, api: NbApi) -> None:
        pattern = api.keys.channel("*")
        delay = self.reconnect_delay
        while True:
            client = redis_client(api.url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(pattern)
                    for status in await api.list(table=PortStatus.table):  # what happened while away
                        self._hand_over(status.id, status.up)
                    delay = self.reconnect_delay
                    async for message in pubsub.listen():
                        if message["type"] == "pmessage":
                            self._on_event(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["reconnects"] += 1
                LOG.exception("dfflow NB event watcher lost its connection; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
            finally:
                await client.aclose()

    def _on_event(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            self.stats["bad_events"] += 1
            LOG.exception("dfflow NB event is not JSON: %r", data[:200])
            return
        if event.get("table") == PortStatus.table and event.get("object"):
            self._hand_over(event["id"], event["object"].get("up", {}))

    def _hand_over(self, port_id: str, up: dict[str, float]) -> None:
        if up:
            self._worker.submit(self._complete, port_id, set(up))

    def _complete(self, port_id: str, hosts: set[str]) -> None:
        try:
            if complete_if_up(n_context.get_admin_context(), port_id, hosts):
                self.stats["completed"] += 1
        except Exception:
            self.stats["errors"] += 1
            LOG.exception("port %s: completing its provisioning block failed", port_id)
