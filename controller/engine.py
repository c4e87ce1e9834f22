"""The controller's pure core: events in, flow plans out.

The daemon (the shell) owns Redis, OVSDB, the OpenFlow socket and the clock; it
feeds this engine NB events and local facts, and sends the plans it returns.
For every port whose role on this chassis changes, the engine calls the apps'
blueprint interface: remove_local/remove_remote for the old role, then
add_local/add_remote for the new one; the union of every app's answer for
every affected object is one plan, applied as one bundle.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Iterable

from controller.apps.base import App
from controller.flowstate import FlowState, Owner, Plan
from controller.pipeline import check_flow
from controller.view import LOCAL, REMOTE, View, Vif
from dfflow.flows import Flow
from dfflow.models import LogicalPort, LogicalRouter, LogicalSwitch, Model, model_for

LOG = logging.getLogger(__name__)
PORT, SWITCH, ROUTER, STATIC = "port", "switch", "router", "static"


class Engine:
    def __init__(self, chassis: str, apps: Iterable[App]):
        self.view = View(chassis)
        self.apps = list(apps)
        self.flows = FlowState()
        # port id -> (role, chassis) its installed flows are for
        self.roles: dict[str, tuple[str, str | None]] = {}
        self.stats: Counter[str] = Counter()

    # -- inputs ------------------------------------------------------------------
    def nb_event(self, event: dict[str, Any]) -> Plan:
        table, obj_id = event["table"], event["id"]
        needed = self.view.needed_switches()
        if event["action"] == "delete":
            old, new = self.view.drop(table, obj_id), None
        else:
            new = model_for(table).from_dict(event["object"])
            old = self.view.put(new)
        if self.view.needed_switches() != needed:
            return self._recompute(self._everything())
        return self._recompute(self._affected(old, new))

    def vif_online(self, vif: Vif) -> Plan:
        if self.view.vifs.get(vif.iface_id) == vif:
            return Plan()
        needed = self.view.needed_switches()
        self.view.set_vif(vif)
        return self._recompute(self._affected_by_port_id(vif.iface_id, needed))

    def vif_offline(self, iface_id: str) -> Plan:
        needed = self.view.needed_switches()
        if self.view.remove_vif(iface_id) is None:
            return Plan()
        return self._recompute(self._affected_by_port_id(iface_id, needed))

    def tunnels_changed(self, tunnels: dict[str, int]) -> Plan:
        if tunnels == self.view.tunnels:
            return Plan()
        self.view.set_tunnels(tunnels)
        return self._recompute(self._everything())

    def everything(self) -> Plan:
        """Recompute every owner: start-up, and a check that nothing drifted."""
        return self._recompute(self._everything())

    def desired(self) -> dict[tuple, Flow]:
        return self.flows.all_flows()

    def commit(self, plan: Plan) -> None:
        self.flows.commit(plan)

    # -- what an event touches ------------------------------------------------------
    def _affected(self, old: Model | None, new: Model | None) -> set[Owner]:
        obj = new or old
        if isinstance(obj, LogicalPort):
            switches = {p.lswitch for p in (old, new) if p is not None}
            return self._switches_and_their_ports(switches)
        if isinstance(obj, LogicalSwitch):
            return self._switches_and_their_ports({obj.id})
        if obj is not None and obj.table == "chassis":
            return set()  # the daemon turns chassis into tunnels; tunnels_changed recomputes
        return self._everything()  # subnets, routers, floating IPs: rare, and they touch many objects

    def _affected_by_port_id(self, port_id: str, needed_before: frozenset[str]) -> set[Owner]:
        if self.view.needed_switches() != needed_before:
            return self._everything()
        port = self.view.port(port_id)
        if port is None:
            return set()
        return self._switches_and_their_ports({port.lswitch})

    def _switches_and_their_ports(self, switches: set[str]) -> set[Owner]:
        owners: set[Owner] = set()
        for switch_id in switches:
            owners.add((SWITCH, switch_id, ""))
            owners |= {(PORT, p.id, "") for p in self.view.ports_on(switch_id)}
        # a port deleted from the view still has installed flows: include it too
        owners |= {(PORT, port_id, "") for port_id in self.roles if self.view.port(port_id) is None}
        return owners

    def _everything(self) -> set[Owner]:
        owners: set[Owner] = {(STATIC, "", "")}
        owners |= {(SWITCH, s, "") for s in self.view.objects[LogicalSwitch.table]}
        owners |= {(ROUTER, r, "") for r in self.view.objects[LogicalRouter.table]}
        owners |= {(PORT, p.id, "") for p in self.view.ports()}
        owners |= {(kind, obj_id, "") for _, kind, obj_id in self.flows.installed}  # deleted objects
        return owners

    # -- recomputation -----------------------------------------------------------
    def _recompute(self, targets: set[Owner]) -> Plan:
        wanted: dict[Owner, list[Flow]] = {}
        for kind, obj_id, _ in sorted(targets):
            for app in self.apps:
                owner = (app.name, kind, obj_id)
                try:
                    wanted[owner] = [check_flow(f) for f in self._flows_for(app, kind, obj_id)]
                except Exception:
                    # One bad object must not stop the others: keep its current flows, count it.
                    self.stats["app_errors"] += 1
                    LOG.exception("app %s failed computing flows for %s %s", app.name, kind, obj_id)
                    wanted[owner] = self.flows.flows_of(owner)
        moved = set()
        for kind, obj_id, _ in targets:
            if kind == PORT:
                port = self.view.port(obj_id)
                new_role = self.view.role(port) if port is not None else None
                before = self.roles.get(obj_id, (None, None))
                if new_role is None:
                    self.roles.pop(obj_id, None)
                else:
                    self.roles[obj_id] = (new_role, self.view.location(port))
                if self.roles.get(obj_id, (None, None)) != before:
                    moved.add(obj_id)
        plan = self.flows.plan(wanted)
        plan.moved = moved
        return plan

    def _flows_for(self, app: App, kind: str, obj_id: str) -> list[Flow]:
        if kind == STATIC:
            return app.static_flows()
        if kind == SWITCH:
            switch = self.view.switch(obj_id)
            return app.switch_flows(switch, self.view) if switch is not None else []
        if kind == ROUTER:
            router = self.view.get(LogicalRouter.table, obj_id)
            return app.router_flows(router, self.view) if router is not None else []
        port = self.view.port(obj_id)
        if port is not None and self.view.switch(port.lswitch) is None and app is self.apps[0]:
            # Its network is in a topic this chassis does not follow (or has not arrived yet).
            self.stats["ports_without_switch"] += 1
            LOG.warning("port %s is on network %s, which this chassis does not know", port.id, port.lswitch)
        old_role, old_place = self.roles.get(obj_id, (None, None))
        new_role = self.view.role(port) if port is not None else None
        new_place = self.view.location(port) if port is not None else None
        installed = self.flows.flows_of((app.name, kind, obj_id))
        removed: list[Flow] = []
        if old_role == LOCAL:
            removed = app.remove_local_port(port, installed)
        elif old_role == REMOTE:
            removed = app.remove_remote_port(port, installed)
        if (old_role, old_place) != (new_role, new_place) and app is self.apps[0]:
            self.stats[f"port_{old_role}_to_{new_role}"] += 1
        added: list[Flow] = []
        if new_role == LOCAL:
            added = app.add_local_port(port, self.view)
        elif new_role == REMOTE:
            added = app.add_remote_port(port, self.view)
        # What the app did not name for removal stays, unless the new role re-declares its key.
        removed_keys = {f.key for f in removed}
        added_keys = {f.key for f in added}
        kept = [f for f in installed if f.key not in removed_keys and f.key not in added_keys]
        return kept + added
