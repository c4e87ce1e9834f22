"""The ML2 mechanism driver `dfflow`: ML2's hooks, handed to the per-resource modules.

Pre-commit hooks check the NB object Neutron is about to commit with the NB's own field checks, so
Neutron refuses (400, naming the field) what the NB db would; post-commit hooks write it to the NB db.
A failed create post-commit makes ML2 delete what it created; the error names the NB's reason.
`bind_port` binds a host that runs a dfflow chassis, for active and inactive bindings alike; the port
goes ACTIVE when its VIF is up there (`status.py`)."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

from neutron_lib import context as n_context
from neutron_lib.api.definitions import portbindings
from neutron_lib.api.definitions import portbindings_extended as pbe_ext
from neutron_lib.callbacks import events, registry, resources
from neutron_lib.plugins.ml2 import api

from dfflow.models import LogicalPort, LogicalSwitch, Subnet
from dfflow.nb import convert
from dfflow.neutron import (binding, config, maintenance, networks, neutron_state, ports, secgroups,
                            status, subnets)
from dfflow.neutron.errors import refusals
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)


class _MarkedOnFailure:
    """An ML2 post-commit hook that runs `hook(driver, context)`. Neutron committed already and ML2 only
    logs a failure, so a failure marks the object for the sync, as what the hook's name says
    (`update_network_postcommit`: update_network), and passes on."""

    def __init__(self, table: str, hook: Callable[[Any, Any], None]):
        self.table, self.hook = table, hook

    def __set_name__(self, owner: type, name: str) -> None:
        self.what = name.removesuffix("_postcommit")

    def __get__(self, driver: Any, owner: type | None = None) -> Any:
        if driver is None:
            return self

        def marked(context: Any) -> None:
            with maintenance.marked_on_failure(driver.dirty, self.table, context.current["id"], self.what):
                self.hook(driver, context)

        return marked


class DfflowMechanismDriver(api.MechanismDriver):
    nb: NbClient

    def initialize(self) -> None:
        self.errors: Counter[str] = Counter()  # failures no request reports (logged with traceback)
        self.nb = NbClient(**config.nb_client_args())
        self.dirty = maintenance.process_marks(self.nb)
        options = config.register()[config.GROUP]
        self.maintenance = maintenance.Maintenance(
            self.nb, neutron_state.read, self.dirty, on_startup=options.sync_on_startup,
            interval=options.sync_interval, check_every=options.maintenance_interval,
            lock_seconds=options.sync_lock_seconds)
        if options.background_tasks:
            self.vif_up = status.VifUpWatcher(self.nb)
            self.vif_up.start()
            # The API process has loaded every plugin (and forked, if it does): the sync can read them.
            registry.subscribe(self._after_init, resources.PROCESS, events.AFTER_INIT)
        registry.subscribe(self._binding_deleted, pbe_ext.RESOURCE_NAME, events.BEFORE_RESPONSE)
        self.secgroups = secgroups.SecurityGroupWriter(self.nb, self.errors)
        self.secgroups.subscribe()
        LOG.info("dfflow mechanism driver writing to the NB db at %s", self.nb.url)

    def _after_init(self, resource: str, event: str, trigger: Any, payload: Any = None) -> None:
        self.maintenance.start()

    @property
    def connectivity(self) -> str:
        return portbindings.CONNECTIVITY_L2

    # -- networks ------------------------------------------------------------------------------------
    def create_network_precommit(self, context: api.NetworkContext) -> None:
        networks.check(context.current, context.network_segments)

    def create_network_postcommit(self, context: api.NetworkContext) -> None:
        networks.write(self.nb, context.current, context.network_segments)

    update_network_precommit = create_network_precommit
    update_network_postcommit = _MarkedOnFailure(LogicalSwitch.table, create_network_postcommit)
    delete_network_postcommit = _MarkedOnFailure(LogicalSwitch.table, lambda self, context: networks.delete(
        self.nb, context.current["id"]))

    # -- subnets -------------------------------------------------------------------------------------
    def create_subnet_precommit(self, context: api.SubnetContext) -> None:
        subnets.check(context.current)

    def create_subnet_postcommit(self, context: api.SubnetContext) -> None:
        subnets.write(self.nb, context.current)

    update_subnet_precommit = create_subnet_precommit
    update_subnet_postcommit = _MarkedOnFailure(Subnet.table, create_subnet_postcommit)
    delete_subnet_postcommit = _MarkedOnFailure(Subnet.table, lambda self, context: subnets.delete(
        self.nb, context.current["id"]))

    # -- ports ---------------------------------------------------------------------------------------
    def create_port_precommit(self, context: api.PortContext) -> None:
        port = context.current
        if not convert.is_nb_port(port):
            return
        ports.check(port)
        if binding.bindable_vnic(port.get(portbindings.VNIC_TYPE)) and \
                status.block_needed(port, context.host, context.original_host):
            status.add_block(context.plugin_context, port["id"])

    def create_port_postcommit(self, context: api.PortContext) -> None:
        self._write_port(context)

    update_port_precommit = create_port_precommit
    update_port_postcommit = _MarkedOnFailure(LogicalPort.table, create_port_postcommit)
    delete_port_postcommit = _MarkedOnFailure(LogicalPort.table, lambda self, context: ports.delete(
        self.nb, context.current["id"]))

    def _write_port(self, context: api.PortContext) -> None:
        port = context.current
        if not convert.is_nb_port(port):
            # It became (or always was) part of a router or floating IP: no NB port of its own.
            ports.delete(self.nb, port["id"])
            return
        ports.write(self.nb, port, binding.inactive_bindings(context.plugin_context, port["id"]))
        if ports.is_bound(port.get(portbindings.VIF_TYPE)) and context.host:
            with refusals():
                up = status.up_hosts(self.nb, port["id"])
            if context.host in up:  # the VIF was up there before the port was bound there
                status.complete_if_up(context.plugin_context, port["id"], up)

    # -- binding -------------------------------------------------------------------------------------
    def bind_port(self, context: api.PortContext) -> None:
        port = context.current
        if not convert.is_nb_port(port) or not binding.bindable_vnic(port.get(portbindings.VNIC_TYPE)):
            return
        with refusals():
            chassis = binding.chassis_of_host(self.nb, context.host)
        if chassis is None:
            LOG.info("port %s: host %r runs no dfflow chassis; not binding it", port["id"], context.host)
            return
        for segment in context.segments_to_bind:
            if segment[api.NETWORK_TYPE] == networks.NETWORK_TYPE:
                security = port.get("port_security_enabled", True) is not False
                context.set_binding(segment[api.ID], binding.VIF_TYPE, binding.vif_details(chassis, security))
                if binding.binds_inactive(context.plugin_context, port["id"], context.host):
                    self._record_inactive_binding(context)
                return
        LOG.info("port %s: no %s segment to bind on network %s", port["id"], networks.NETWORK_TYPE,
                 port["network_id"])

    def _binding_deleted(self, resource: str, event: str, trigger: Any, payload: Any = None) -> None:
        """`DELETE /ports/{id}/bindings/{host}` (Nova aborting a live migration) reaches no driver hook
        either; Neutron's API announces it without the port: every NB port holding an inactive binding
        for that host is made to match Neutron's bindings again."""
        if payload is None or payload.method_name != f"{pbe_ext.RESOURCE_NAME}.delete.end":
            return
        hosts = {state.get("host") or (state.get(pbe_ext.RESOURCE_NAME) or {}).get("host")
                 for state in payload.states if isinstance(state, dict)} - {None}
        admin = n_context.get_admin_context()
        try:
            for lport in self.nb.list(LogicalPort.table):
                if any(lport.inactive_binding(host) for host in hosts):
                    ports.set_inactive_bindings(self.nb, lport.id, binding.inactive_bindings(admin, lport.id))
        except Exception:  # the binding is gone in Neutron: failing the response would not bring it back
            self.errors["binding_delete"] += 1
            for host in sorted(hosts):
                self.dirty.mark(LogicalPort.table, f"*@{host}", "binding_delete")  # any port bound there
            LOG.exception("NB ports keep inactive bindings for %s that Neutron deleted", sorted(hosts))

    def _record_inactive_binding(self, context: api.PortContext) -> None:
        """An inactive binding (Nova's live-migration destination) reaches no post-commit hook: ML2
        stores it right after a driver bound it, so the NB records it now."""
        port = context.current  # the port as the binding being bound shows it: its vnic type and profile
        new = binding.inactive_binding(context.host, port.get(portbindings.VNIC_TYPE), port.get(portbindings.PROFILE))
        others = [b for b in binding.inactive_bindings(context.plugin_context, port["id"]) if b.host != new.host]
        ports.set_inactive_bindings(self.nb, port["id"], [*others, new])
