"""The NB's layout on Redis: every key and channel name, and the event format.

Layout (all keys under a prefix, "dfflow" by default):
  {p}:obj:{table}:{id}      the object's JSON
  {p}:ids:{table}           set of ids in a table
  {p}:topic:{topic}         set of "table:id" in a topic
  {p}:refs:{table}:{id}     set of "table:id" that reference this object
  {p}:uniq:{key}            "table:id" holding a unique claim (a MAC or IP on a switch, a VNI, ...)
  {p}:claims:{table}:{id}   set of the claims an object holds
  {p}:chassis-ports:{name}  set of port ids bound to, or migrating from/to, a chassis
  {p}:chassis-seen          hash: chassis name -> its controller's last heartbeat (no event: nobody's flows
                            depend on it, and every chassis hearing every beat costs N^2 events)
  {p}:counter:{name}        a high-water mark that only grows (the last VNI handed out, ...)
  {p}:rev                   the NB revision counter
  {p}:migration:{id}         a migration's timeline (dfflow.nb.timeline)
  {p}:migrations            sorted set of the timelines kept, by start
  {p}:neutron:dirty         set of the objects a failed Neutron-driver write left for the sync
  {p}:neutron:sync-lock     the neutron-server that runs the sync now
  {p}:neutron:write-failures  hash of failed driver writes, by operation
  channel {p}:ev:{topic}    events of that topic
  channel {p}:replicated    a marker after each write, for WAIT (see NbApi._replicated)
  channel {p}:migration-events  the migration-event channel (dfflow.nb.migration_events)
  channel {p}:ev-keepalive  a channel nobody publishes on: keeps a subscriber with no topics subscribed
"""
from __future__ import annotations

import time
from typing import Any


class Keys:
    def __init__(self, prefix: str = "dfflow"):
        self.prefix = prefix

    def obj(self, table: str, obj_id: str) -> str:
        return f"{self.objects}{table}:{obj_id}"

    @property
    def objects(self) -> str:
        """What every object's key starts with."""
        return f"{self.prefix}:obj:"

    def ids(self, table: str) -> str:
        return f"{self.prefix}:ids:{table}"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}:topic:{topic}"

    def refs(self, table: str, obj_id: str) -> str:
        return f"{self.prefix}:refs:{table}:{obj_id}"

    def claims(self, table: str, obj_id: str) -> str:
        return f"{self.prefix}:claims:{table}:{obj_id}"

    def uniq(self, key: str) -> str:
        return f"{self.prefix}:uniq:{key}"

    def chassis_ports(self, chassis: str) -> str:
        return f"{self.prefix}:chassis-ports:{chassis}"

    @property
    def chassis_seen(self) -> str:
        return f"{self.prefix}:chassis-seen"

    def counter(self, name: str) -> str:
        return f"{self.prefix}:counter:{name}"

    @property
    def replicated(self) -> str:
        """The channel of the marker published after a write, to WAIT for the replicas."""
        return f"{self.prefix}:replicated"

    @property
    def rev(self) -> str:
        return f"{self.prefix}:rev"

    def migration(self, migration_id: str) -> str:
        return f"{self.prefix}:migration:{migration_id}"

    @property
    def migrations(self) -> str:
        return f"{self.prefix}:migrations"

    def neutron(self, name: str) -> str:
        """The Neutron driver's own keys: dirty, sync-lock, write-failures."""
        return f"{self.prefix}:neutron:{name}"

    @property
    def migration_events(self) -> str:
        """The channel of the migration events (`dfflow.nb.migration_events`)."""
        return f"{self.prefix}:migration-events"

    @property
    def keepalive(self) -> str:
        """A channel nobody publishes on: a subscriber with no topics stays subscribed to it."""
        return f"{self.prefix}:ev-keepalive"

    def channel(self, topic: str) -> str:
        return f"{self.prefix}:ev:{topic}"

    def topic_of_channel(self, channel: str) -> str:
        return channel[len(self.prefix) + 4:]


def make_event(action: str, table: str, obj_id: str, topic: str, version: int,
               obj: dict[str, Any] | None) -> dict[str, Any]:
    return {"table": table, "action": action, "id": obj_id, "topic": topic,
            "version": version, "object": obj, "ts": time.time()}
