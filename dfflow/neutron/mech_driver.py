"""The ML2 mechanism driver `dfflow`: ML2's hooks, handed to the per-resource modules.

Pre-commit hooks check the NB object Neutron is about to commit with the NB's own field checks, so
Neutron refuses (400, naming the field) what the NB db would; post-commit hooks write it to the NB db.
A failed create post-commit makes ML2 delete what it created; the error names the NB's reason.
`bind_port` binds a host that runs a dfflow chassis, for active and inactive bindings alike; the port
goes ACTIVE when its VIF is up there (`status.py`)."""
from __future__ import annotations

import logging
from typing import Any

from neutron.objects import ports as port_objects
from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api

from dfflow.nb import convert
from dfflow.neutron import binding, config, networks, ports, status, subnets
from dfflow.neutron.errors import refusals
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)


class DfflowMechanismDriver(api.MechanismDriver):
    nb: NbClient

    def initialize(self) -> None:
        self.nb = NbClient(**config.nb_client_args())
        self.vif_up = status.VifUpWatcher(self.nb)
        self.vif_up.start()
        LOG.info("dfflow mechanism driver writing to the NB db at %s", self.nb.url)

    @property
    def connectivity(self) -> str:
        return portbindings.CONNECTIVITY_L2

    # -- networks ------------------------------------------------------------------------------------
    def create_network_precommit(self, context: api.NetworkContext) -> None:
        networks.check(context.current, context.network_segments)

    def create_network_postcommit(self, context: api.NetworkContext) -> None:
        networks.write(self.nb, context.current, context.network_segments)

    update_network_precommit = create_network_precommit
    update_network_postcommit = create_network_postcommit

    def delete_network_postcommit(self, context: api.NetworkContext) -> None:
        networks.delete(self.nb, context.current["id"])

    # -- subnets -------------------------------------------------------------------------------------
    def create_subnet_precommit(self, context: api.SubnetContext) -> None:
        subnets.check(context.current)

    def create_subnet_postcommit(self, context: api.SubnetContext) -> None:
        subnets.write(self.nb, context.current)

    update_subnet_precommit = create_subnet_precommit
    update_subnet_postcommit = create_subnet_postcommit

    def delete_subnet_postcommit(self, context: api.SubnetContext) -> None:
        subnets.delete(self.nb, context.current["id"])

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
    update_port_postcommit = create_port_postcommit

    def delete_port_postcommit(self, context: api.PortContext) -> None:
        ports.delete(self.nb, context.current["id"])

    def _write_port(self, context: api.PortContext) -> None:
        port = context.current
        if not convert.is_nb_port(port):
            # It became (or always was) part of a router or floating IP: no NB port of its own.
            ports.delete(self.nb, port["id"])
            return
        ports.write(self.nb, port, self._inactive_bindings(context.plugin_context, port["id"]))
        if ports.is_bound(port.get(portbindings.VIF_TYPE)) and context.host:
            with refusals():
                up = status.up_hosts(self.nb, port["id"])
            if context.host in up:  # the VIF was up there before the port was bound there
                status.complete_if_up(context.plugin_context, port["id"], up)

    @staticmethod
    def _inactive_bindings(plugin_context: Any, port_id: str) -> list:
        rows = port_objects.PortBinding.get_objects(plugin_context, port_id=port_id, status=n_const.INACTIVE)
        return [binding.inactive_binding(row.host, row.vnic_type, row.profile) for row in rows
                if ports.is_bound(row.vif_type)]

    @staticmethod
    def _binds_inactive(context: api.PortContext) -> bool:
        """Whether `bind_port` is binding an inactive binding: the port's active one is on another host.
        (ML2 hands the driver a copy of the binding without its status.)"""
        active = port_objects.PortBinding.get_objects(context.plugin_context, port_id=context.current["id"],
                                                      status=n_const.ACTIVE)
        return any(row.host != context.host for row in active)

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
                if self._binds_inactive(context):
                    self._record_inactive_binding(context)
                return
        LOG.info("port %s: no %s segment to bind on network %s", port["id"], networks.NETWORK_TYPE,
                 port["network_id"])

    def _record_inactive_binding(self, context: api.PortContext) -> None:
        """An inactive binding (Nova's live-migration destination) reaches no post-commit hook: ML2
        stores it right after a driver bound it, so the NB records it now."""
        port = context.current  # the port as the binding being bound shows it: its vnic type and profile
        ports.add_inactive_binding(self.nb, port["id"], binding.inactive_binding(
            context.host, port.get(portbindings.VNIC_TYPE), port.get(portbindings.PROFILE)))
