"""Port binding: a host is bound when it runs a dfflow chassis (a row in the NB `chassis` table).

The chassis' integration bridge and datapath type go to Nova in `binding:vif_details`, so os-vif plugs
the VIF into the bridge that chassis' controller programs."""
from __future__ import annotations

from typing import Any

from neutron.objects import ports as port_objects
from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings

from dfflow.errors import ValidationError
from dfflow.models import VNIC_TYPES, Chassis, InactiveBinding
from dfflow.nb.neutron import host_to_chassis
from dfflow.neutron import ports
from dfflow.neutron.nbclient import NbClient

VIF_TYPE = portbindings.VIF_TYPE_OVS


def chassis_of_host(nb: NbClient, host: str) -> Chassis | None:
    """The chassis serving Neutron host `host`, or None (no chassis there, or not a valid chassis name)."""
    try:
        name = host_to_chassis(host)
    except ValidationError:
        return None
    return nb.get(Chassis.table, name) if name else None


def vif_details(chassis: Chassis, port_security: bool) -> dict[str, Any]:
    return {portbindings.CAP_PORT_FILTER: port_security,
            portbindings.OVS_HYBRID_PLUG: False,
            portbindings.OVS_DATAPATH_TYPE: chassis.datapath_type,
            portbindings.VIF_DETAILS_BRIDGE_NAME: chassis.bridge_name,
            portbindings.VIF_DETAILS_CONNECTIVITY: portbindings.CONNECTIVITY_L2}


def bindable_vnic(vnic_type: str | None) -> bool:
    return (vnic_type or portbindings.VNIC_NORMAL) in VNIC_TYPES


def inactive_binding(host: str, vnic_type: str | None, profile: Any) -> InactiveBinding:
    return InactiveBinding(host=host, vnic_type=vnic_type or portbindings.VNIC_NORMAL,
                           profile=profile if isinstance(profile, dict) else {})


def inactive_bindings(plugin_context: Any, port_id: str) -> list[InactiveBinding]:
    """The port's inactive bindings in Neutron's database that a driver bound."""
    rows = port_objects.PortBinding.get_objects(plugin_context, port_id=port_id, status=n_const.INACTIVE)
    return [inactive_binding(row.host, row.vnic_type, row.profile) for row in rows if ports.is_bound(row.vif_type)]


def binds_inactive(plugin_context: Any, port_id: str, host: str) -> bool:
    """Whether binding the port on `host` binds an inactive binding: its active one is on another host.
    (ML2 hands `bind_port` a copy of the binding without its status.)"""
    active = port_objects.PortBinding.get_objects(plugin_context, port_id=port_id, status=n_const.ACTIVE)
    return any(row.host != host for row in active)
