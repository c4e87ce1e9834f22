"""The controller's pure core: events in, flow plans out.

The daemon (the shell) owns Redis, OVSDB, the OpenFlow socket and the clock; it
feeds this engine NB events and local facts, and sends the plans it returns.
For every port whose role on this chassis changes, the engine calls the apps'
blueprint interface: remove_local/remove_remote for the old role, then
add_local/add_remote for the new one; the union of every app's answer for
every affected object is one plan, applied as one bundle.

A port's flows are its apps' port programs (controller.templates) run for its
facts and role. With `compiled` (the default), the engine runs them in the
compiled core: the port's facts are a row of typed columns, and the core makes
the flow mods of the role change itself, as rows sent without a Python object
per flow. The Python apps remain the path for what the core does not encode (a
pre-programmed `announce` destination's learn and resubmit flows) and for a
port whose facts changed while it keeps a role (rare: its IPs, floating IPs or
routers changed) -- and the reference the tests hold the core to.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Iterable

from controller import compiler
from controller.apps.base import App
from controller.flowstate import DerivedFlows, FlowState, Owner, Plan
from controller.pipeline import check_flow
from controller.templates import PortFacts, PortRole
from controller.view import LOCAL, REMOTE, View, Vif
from dfflow import core
from dfflow.flowbatch import FlowBatch
from dfflow.flows import Flow
from dfflow.models import LogicalPort, LogicalRouter, LogicalSwitch, Model, model_for

LOG = logging.getLogger(__name__)
PORT, SWITCH, ROUTER, STATIC = "port", "switch", "router", "static"
# A port update that changes only these moves the port and nothing else: no other port's flows.
WHERE_FIELDS = frozenset({"binding_chassis", "migration", "version", "inactive_bindings", "binding_profile"})
REVISION_FIELDS = frozenset({"version"})
# NB tables no flow depends on (the chassis' VIF reports for Neutron's port status): never in the view.
IGNORED_TABLES = frozenset({"lport_status"})
PortState = tuple["PortFacts | None", "PortRole | None"]


class Engine:
    def __init__(self, chassis: str, apps: Iterable[App], compiled: bool = True):
        self.view = View(chassis)
        self.apps = list(apps)
        self.flows = FlowState()
        # port id -> (role, chassis) its installed flows are for
        self.roles: dict[str, tuple[str, str | None]] = {}
        self.stats: Counter[str] = Counter()
        # the compiled path: each app's port program, and the ports' facts as columns
        self.programs = {app.name: compiler.compile_program(app.port_program)
                         for app in self.apps if compiled and app.port_program is not None}
        self.table = compiler.PortTable()
        self.port_state: dict[str, PortState] = {}  # port id -> (facts, role) of its installed flows
        self.windows_ending: list[str] = []  # arrivals whose migration ended: the daemon closes them later
        # What this chassis applied to a port ahead of its own NB write, laid on each NB version of
        # the port until that write settles (controller.migrator sets it).
        self.port_overlay: Callable[[LogicalPort], LogicalPort] | None = None

    # -- inputs ------------------------------------------------------------------
    def nb_event(self, event: dict[str, Any]) -> Plan:
        if event["table"] in IGNORED_TABLES:
            self.stats["ignored_events"] += 1
            return Plan()
        if event["action"] == "delete":
            return self._changed(event["table"], event["id"], None)
        obj = event.get("model") or model_for(event["table"]).from_dict(event["object"])  # the bus parsed it
        if self.port_overlay is not None and isinstance(obj, LogicalPort):
            obj = self.port_overlay(obj)
        return self.object_written(obj)

    def object_written(self, obj: Model) -> Plan:
        """An NB object as written (the migrator's own step, applied before its NB event arrives)."""
        return self._changed(obj.table, obj.id, obj)

    def _changed(self, table: str, obj_id: str, new: Model | None) -> Plan:
        if table == LogicalPort.table:
            self._track_arrival(obj_id, new)
        needed, flood = self.view.needed_switches(), self.view.flood_version()
        old = self.view.drop(table, obj_id) if new is None else self.view.put(new)
        if old is not None and new is not None and _same_content(old, new):
            # Typically the NB event of a migration step this chassis applied from the migration event.
            self.stats["unchanged_writes"] += 1
            return Plan()
        if self.view.needed_switches() != needed:
            return self._recompute(self._everything())
        return self._recompute(self._affected(old, new, self.view.flood_version() != flood))

    def _track_arrival(self, port_id: str, port: Model | None) -> None:
        mig = getattr(port, "migration", None)
        if mig is not None and mig.chassis == self.view.chassis:
            self.view.arrivals.add(port_id)
        elif port_id in self.view.arrivals and port_id not in self.windows_ending:
            self.windows_ending.append(port_id)

    def take_windows_ending(self) -> list[str]:
        ending, self.windows_ending = self.windows_ending, []
        return ending

    def arrival_window_closed(self, port_id: str) -> Plan:
        """The port's migration here ended a while ago: its connections are this chassis' own now."""
        port = self.view.port(port_id)
        mig = port.migration if port is not None else None
        if mig is not None and mig.chassis == self.view.chassis:
            return Plan()  # migrating here again meanwhile
        self.view.arrivals.discard(port_id)
        return self._recompute({(PORT, port_id, "")})

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
        for port_id, state in plan.port_states.items():
            if state == (None, None):
                self.port_state.pop(port_id, None)
            else:
                self.port_state[port_id] = state

    # -- what an event touches ------------------------------------------------------
    def _affected(self, old: Model | None, new: Model | None, flood_changed: bool = True) -> set[Owner]:
        obj = new or old
        if isinstance(old, LogicalPort) and isinstance(new, LogicalPort) and _only_moved(old, new):
            # A migration step or a binding change: the port itself, and its network's flooding if
            # that changed (not when the port moves between two chassis that host others of its ports).
            return {(PORT, new.id, ""), (SWITCH, new.lswitch, "")} if flood_changed else {(PORT, new.id, "")}
        if isinstance(obj, LogicalPort):
            switches = {p.lswitch for p in (old, new) if p is not None}
            return self._switches_and_their_ports(switches) | self._filtered_by_membership(old, new)
        if isinstance(obj, LogicalSwitch):
            return self._switches_and_their_ports({obj.id})
        if obj is not None and obj.table == "chassis":
            return set()  # the daemon turns chassis into tunnels; tunnels_changed recomputes
        return self._everything()  # subnets, routers, floating IPs: rare, and they touch many objects

    def _filtered_by_membership(self, old: LogicalPort | None, new: LogicalPort | None) -> set[Owner]:
        """A port's groups or addresses changed: the local ports whose security-group flows may name
        them (a rule's remote group expands into its members' addresses)."""
        if _membership(old) == _membership(new):
            return set()
        return {(PORT, p.id, "") for p in self.view.ports() if p.security_groups and self.view.role(p) == LOCAL}

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
        compiled: dict[Owner, tuple[Any, Any, DerivedFlows]] = {}
        port_states: dict[str, PortState] = {}
        for kind, obj_id, _ in sorted(targets):
            done: set[str] = set()
            if kind == PORT:
                port = self.view.port(obj_id)
                role = self.view.port_role(port) if port is not None else None
                facts = self.view.port_facts(port) if role is not None else None
                port_states[obj_id] = (facts, role)
                if self.programs:
                    done = self._compile_port(obj_id, facts, role, compiled)
            for app in self.apps:
                if app.name in done:
                    continue
                owner = (app.name, kind, obj_id)
                try:
                    wanted[owner] = [check_flow(f) for f in self._flows_for(app, kind, obj_id)]
                except Exception:
                    # One bad object must not stop the others: keep its current flows, count it.
                    self.stats["app_errors"] += 1
                    LOG.exception("app %s failed computing flows for %s %s", app.name, kind, obj_id)
                    wanted[owner] = self.flows.flows_of(owner)
                    port_states.pop(obj_id, None)
        moved = set()
        for kind, obj_id, _ in targets:
            if kind == PORT:
                port = self.view.port(obj_id)
                if port is not None and self.view.switch(port.lswitch) is None:
                    # Its network is in a topic this chassis does not follow (or has not arrived yet).
                    self.stats["ports_without_switch"] += 1
                    LOG.warning("port %s is on network %s, which this chassis does not know", port.id,
                                port.lswitch)
                new_role = self.view.role(port) if port is not None else None
                before = self.roles.get(obj_id, (None, None))
                if new_role is None:
                    self.roles.pop(obj_id, None)
                else:
                    self.roles[obj_id] = (new_role, self.view.location(port))
                after = self.roles.get(obj_id, (None, None))
                if after != before:
                    moved.add(obj_id)
                    self.stats[f"port_{before[0]}_to_{after[0]}"] += 1
        plan = self.flows.plan(wanted, frozenset(compiled))
        for owner, (dels, adds, flows) in compiled.items():
            if len(dels) or len(adds):
                plan.rows.append((dels, adds))
            plan.owners[owner] = flows
        plan.moved = moved
        plan.port_states = port_states
        return plan

    def _compile_port(self, port_id: str, facts: PortFacts | None, role: PortRole | None,
                      out: dict[Owner, tuple[Any, Any, DerivedFlows]]) -> set[str]:
        """The flow mods of the port's role change, made by the compiled core, per app; returns
        the apps it did (the others go the Python way)."""
        old_facts, old_role = self.port_state.get(port_id, (None, None))
        if (old_facts, old_role) == (facts, role):
            return set(self.programs)  # nothing changes
        if old_role is not None and role is not None and old_facts != facts:
            self.stats["port_facts_changed"] += 1
            return set()  # the old flows were made from other facts: the Python path diffs them
        row = self.table.set(port_id, facts if facts is not None else old_facts)
        done = set()
        for app in self.apps:
            program = self.programs.get(app.name)
            if program is None:
                continue
            try:
                dels, adds = compiler.compile_port_change(program, self.table, row, old_role, role)
            except core.NotCompilable:
                self.stats["compiled_fallbacks"] += 1
                continue
            except Exception:
                # Counted and logged; the Python path then tries the same change (and keeps the
                # port's current flows if it fails too).
                self.stats["compiler_errors"] += 1
                LOG.exception("compiled core failed computing %s flows of port %s", app.name, port_id)
                continue
            if role is None:
                flows = DerivedFlows(list, empty=True)
            else:
                flows = DerivedFlows(lambda prog=app.port_program, f=facts, r=role: prog.flows(f, r))
            out[(app.name, PORT, port_id)] = (FlowBatch.of_rows(dels), FlowBatch.of_rows(adds), flows)
            done.add(app.name)
        self.stats["compiled_ports"] += 1
        if facts is None:
            self.table.drop(port_id)
        return done

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
        old_role, _ = self.roles.get(obj_id, (None, None))
        new_role = self.view.role(port) if port is not None else None
        installed = self.flows.flows_of((app.name, kind, obj_id))
        removed: list[Flow] = []
        if old_role == LOCAL:
            removed = app.remove_local_port(port, installed)
        elif old_role == REMOTE:
            removed = app.remove_remote_port(port, installed)
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


def _equal_except(old: Model, new: Model, ignored: frozenset[str]) -> bool:
    return type(old) is type(new) and all(getattr(old, f) == getattr(new, f)
                                          for f in old.__dataclass_fields__ if f not in ignored)


def _same_content(old: Model, new: Model) -> bool:
    """The same object but for its NB revision: no flow can differ."""
    return _equal_except(old, new, REVISION_FIELDS)


def _membership(port: LogicalPort | None) -> tuple | None:
    """What a port contributes to the remote groups it is a member of."""
    if port is None or not port.security_groups:
        return None
    return tuple(port.security_groups), tuple(port.ips), tuple(port.allowed_address_pairs)


def _only_moved(old: LogicalPort, new: LogicalPort) -> bool:
    return _equal_except(old, new, WHERE_FIELDS)

