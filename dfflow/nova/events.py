"""Which Nova events the NB's changes call for: pure, no I/O.

Nova waits for `network-vif-plugged` before a live migration's memory copy (and at boot), tagged with
the port id and addressed to the server (the port's `device_id`). A chassis reports a port's VIF up or
gone in the port's `lport_status` (`up: {chassis: since}`); `VifEvents` turns those reports, and the
port's bindings, into the events Nova should get:

- the VIF comes up (or is plugged anew: a new `since`) on a host the port is bound to — its active
  binding, an inactive binding, or the legacy `migrating_to` — -> `network-vif-plugged`;
- a host becomes bound while the VIF is already up there (Nova's legacy destination plugs first,
  then sets `migrating_to`) -> `network-vif-plugged`;
- the VIF goes from a host the port is bound to -> `network-vif-unplugged`.

A binding moving between hosts that stay bound (an activation) sends nothing. Ports with no
`device_id` send nothing. What the tracker learns while `baseline` is set (the state found at start)
is recorded, not announced: Nova must not get stale events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PLUGGED = "network-vif-plugged"
UNPLUGGED = "network-vif-unplugged"


@dataclass(frozen=True)
class _Port:
    device_id: str
    bound: frozenset[str]  # hosts holding one of its bindings, or its migrating_to


def _port(obj: dict[str, Any]) -> _Port:
    hosts = {obj.get("binding_chassis")}
    hosts.update(b.get("host") for b in obj.get("inactive_bindings") or ())
    dest = (obj.get("binding_profile") or {}).get("migrating_to")
    if isinstance(dest, str):
        hosts.add(dest)
    return _Port(obj.get("device_id") or "", frozenset(h for h in hosts if isinstance(h, str) and h))


def nova_event(name: str, server: str, port_id: str) -> dict[str, str]:
    return {"name": name, "server_uuid": server, "tag": port_id, "status": "completed"}


class VifEvents:
    """NB events (`lport`, `lport_status`) in, Nova external events out."""

    def __init__(self) -> None:
        self.ports: dict[str, _Port] = {}
        self.up: dict[str, dict[str, float]] = {}  # port id -> {chassis: since}
        self.baseline = False

    def apply(self, event: dict[str, Any]) -> list[dict[str, str]]:
        table, port_id = event.get("table"), event.get("id")
        obj = event.get("object") if event.get("action") != "delete" else None
        if table == "lport":
            found = self._port_changed(port_id, obj)
        elif table == "lport_status":
            found = self._status_changed(port_id, (obj or {}).get("up") or {})
        else:
            return []
        return [] if self.baseline else found

    def _port_changed(self, port_id: str, obj: dict[str, Any] | None) -> list[dict[str, str]]:
        old = self.ports.pop(port_id, None)
        if obj is None:
            return []
        new = self.ports[port_id] = _port(obj)
        newly = new.bound - (old.bound if old is not None else frozenset())
        up = self.up.get(port_id, {})
        return self._events(PLUGGED, new, port_id, sorted(h for h in newly if h in up))

    def _status_changed(self, port_id: str, new_up: dict[str, float]) -> list[dict[str, str]]:
        old_up = self.up.pop(port_id, {})
        if new_up:
            self.up[port_id] = dict(new_up)
        port = self.ports.get(port_id)
        if port is None:
            return []
        came = sorted(h for h, since in new_up.items() if h in port.bound and old_up.get(h) != since)
        went = sorted(h for h in old_up if h in port.bound and h not in new_up)
        return self._events(UNPLUGGED, port, port_id, went) + self._events(PLUGGED, port, port_id, came)

    @staticmethod
    def _events(name: str, port: _Port, port_id: str, hosts: list[str]) -> list[dict[str, str]]:
        """One event however many hosts changed at once: Nova's event names no host."""
        if not port.device_id or not hosts:
            return []
        return [nova_event(name, port.device_id, port_id)]
