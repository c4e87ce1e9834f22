"""Neutron ports -> NB ports, with their active binding and their inactive ones (`binding-extended`).

Router interfaces, router gateways and floating IPs' ports are not NB ports: their MAC and address are
part of the NB router or floating IP (`routers.py`, `floatingips.py`)."""
from __future__ import annotations

from typing import Any, Iterable

from dfflow.models import FloatingIP, InactiveBinding, LogicalPort, PortStatus
from dfflow.nb import convert
from dfflow.neutron import resource
from dfflow.neutron.errors import refusals
from dfflow.neutron.nbclient import NbClient

UNBOUND_VIF_TYPES = ("unbound", "binding_failed")


def is_bound(vif_type: str | None) -> bool:
    return bool(vif_type) and vif_type not in UNBOUND_VIF_TYPES


def fields(port: dict[str, Any], inactive: Iterable[InactiveBinding] = ()) -> dict[str, Any]:
    """The NB port's Neutron-owned fields. It is bound (`binding_chassis`) only once Neutron bound it."""
    values = convert.port_fields(port)
    if not is_bound(port.get("binding:vif_type")):
        values["binding_chassis"] = None
    values["inactive_bindings"] = sorted(inactive, key=lambda b: b.host)
    return values


def check(port: dict[str, Any], inactive: Iterable[InactiveBinding] = ()) -> None:
    resource.checked(LogicalPort, port, fields(port, inactive))


def write(nb: NbClient, port: dict[str, Any], inactive: Iterable[InactiveBinding] = ()) -> None:
    resource.write(nb, LogicalPort, port, fields(port, inactive))


def set_inactive_bindings(nb: NbClient, port_id: str, inactive: Iterable[InactiveBinding]) -> None:
    """Make the NB port's inactive bindings these; the rest of the port is kept."""
    wanted = sorted(inactive, key=lambda b: b.host)

    def change(port: LogicalPort) -> LogicalPort | None:
        return None if port.inactive_bindings == wanted else port.replace(inactive_bindings=wanted)

    with refusals():
        nb.modify(LogicalPort.table, port_id, change)


def delete(nb: NbClient, port_id: str) -> None:
    """Neutron disassociated the port's floating IPs in the same transaction: the NB does it first too.
    The chassis' reports of its VIF (`lport_status`) go with the port; a chassis reporting its VIF down
    later only changes a row that exists, so none comes back."""
    def disassociated(fip: FloatingIP) -> FloatingIP | None:
        return fip.replace(port=None, fixed_ip=None, router=None) if fip.port == port_id else None

    with refusals():
        for fip in nb.list(FloatingIP.table):
            if fip.port == port_id:
                nb.modify(FloatingIP.table, fip.id, disassociated)
    resource.delete(nb, LogicalPort.table, port_id)
    resource.delete(nb, PortStatus.table, port_id)
