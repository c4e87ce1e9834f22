"""A port's bindings as Neutron's `binding-extended` extension models them, over `LogicalPort`. No HTTP.

A port has at most one ACTIVE binding, `binding_chassis` (with `vnic_type` and `binding_profile`), and
at most one INACTIVE binding per other host (`inactive_bindings`). Nova's live migration with the
extension: create an inactive binding for the destination, activate it once the memory is copied (the
source's binding becomes inactive), delete the source's binding in clean-up; on a failed migration,
delete the destination's inactive binding.

The pure functions take a port and return the port to write, or raise; the async ones are each one
compare-and-set read-modify-write of the port (`NbApi.modify`), so nothing is half written and a
concurrent change to another field (the controller's migration record) is retried around, never lost.
"""
from __future__ import annotations

from typing import Any

from dfflow.errors import Conflict, DfflowError, NotFound, ValidationError
from dfflow.models import (VNIC_TYPES, Chassis, InactiveBinding, LogicalPort, check_choice, check_id,
                           check_profile)

COMPUTE_OWNER_PREFIX = "compute:"  # Neutron binds several hosts only for Nova's ports


class BindingNotFound(NotFound):
    def __init__(self, port_id: str, host: str):
        DfflowError.__init__(self, f"Binding for port {port_id} for host {host} could not be found.")
        self.table, self.id, self.field, self.host = LogicalPort.table, port_id, "host", host


class BindingExists(Conflict):
    def __init__(self, port_id: str, host: str):
        super().__init__(f"Binding for port {port_id} on host {host} already exists.")
        self.port_id, self.host = port_id, host


class BindingAlreadyActive(Conflict):
    def __init__(self, port_id: str, host: str):
        super().__init__(f"Binding for port {port_id} on host {host} is already active.")
        self.port_id, self.host = port_id, host


class BindingFailed(Conflict):
    """Nothing can bind the port on that host (no dfflow chassis runs there)."""

    def __init__(self, port_id: str, host: str, reason: str):
        super().__init__(f"Binding for port {port_id} on host {host} could not be created or updated: "
                         f"{reason}.")
        self.port_id, self.host = port_id, host


class NotAComputePort(ValidationError):
    def __init__(self, port: LogicalPort):
        super().__init__("device_owner", f"Invalid port {port.id}: operation only valid on compute ports "
                                         f"(device_owner {COMPUTE_OWNER_PREFIX}*), not "
                                         f"{port.device_owner or 'none'!r}")


def status_of(port: LogicalPort, host: str) -> str:
    return "ACTIVE" if host == port.binding_chassis else "INACTIVE"


def bindings_of(port: LogicalPort) -> list[InactiveBinding]:
    """Every binding of the port, the active one first (as an `InactiveBinding` value: host, vnic, profile)."""
    found = []
    if port.binding_chassis is not None:
        found.append(InactiveBinding(port.binding_chassis, port.vnic_type, dict(port.binding_profile)))
    return found + list(port.inactive_bindings)


def binding_of(port: LogicalPort, host: str) -> InactiveBinding:
    for binding in bindings_of(port):
        if binding.host == host:
            return binding
    raise BindingNotFound(port.id, host)


def check_binding(host: Any, vnic_type: Any = "normal", profile: Any = None) -> InactiveBinding:
    """A requested binding, validated: ValidationError naming `host`, `vnic_type` or `profile`."""
    check_id("host", host)
    check_choice("vnic_type", vnic_type, VNIC_TYPES)
    return InactiveBinding(host, vnic_type, dict(check_profile("profile", {} if profile is None else profile)))


def check_compute(port: LogicalPort) -> None:
    if not port.device_owner.startswith(COMPUTE_OWNER_PREFIX):
        raise NotAComputePort(port)


def add_inactive(port: LogicalPort, binding: InactiveBinding) -> LogicalPort:
    """The port with an INACTIVE binding for `binding.host` added (Neutron's create while another is active).

    An unbound port has no active binding to keep: Neutron's unbound port still holds an ACTIVE binding
    with no host, so a created binding is INACTIVE there too, and activation binds the port."""
    check_compute(port)
    if binding.host == port.binding_chassis or port.inactive_binding(binding.host) is not None:
        raise BindingExists(port.id, binding.host)
    return port.replace(inactive_bindings=[*port.inactive_bindings, binding])


def activate(port: LogicalPort, host: str) -> LogicalPort:
    """The port with `host`'s inactive binding made the active one, and the active one made inactive.

    `binding_chassis`, `vnic_type` and `binding_profile` come from the activated binding (so a
    `migrating_to` the source's profile carried stays with the source's now inactive binding)."""
    check_compute(port)
    if host == port.binding_chassis:
        raise BindingAlreadyActive(port.id, host)
    chosen = port.inactive_binding(host)
    if chosen is None:
        raise BindingNotFound(port.id, host)
    others = [b for b in port.inactive_bindings if b.host != host]
    if port.binding_chassis is not None:
        others.append(InactiveBinding(port.binding_chassis, port.vnic_type, dict(port.binding_profile)))
    return port.replace(binding_chassis=host, vnic_type=chosen.vnic_type, binding_profile=dict(chosen.profile),
                        inactive_bindings=others)


def remove(port: LogicalPort, host: str) -> LogicalPort:
    """The port without its binding for `host`.

    Deleting the ACTIVE binding unbinds the port (Neutron leaves it with no active binding); its
    inactive bindings stay. Nova only deletes inactive ones."""
    check_compute(port)
    if host == port.binding_chassis:
        return port.replace(binding_chassis=None, vnic_type="normal", binding_profile={})
    if port.inactive_binding(host) is None:
        raise BindingNotFound(port.id, host)
    return port.replace(inactive_bindings=[b for b in port.inactive_bindings if b.host != host])


# -- the same, as NB writes ------------------------------------------------------------------------------

async def create_binding(nb: Any, port_id: str, host: Any, vnic_type: Any = "normal",
                         profile: Any = None) -> LogicalPort:
    """Add an INACTIVE binding of port `port_id` for `host`; returns the port as stored.

    Raises ValidationError (naming host/vnic_type/profile, or device_owner for a port that is not
    Nova's), NotFound (no such port), BindingExists (the host has a binding already), BindingFailed
    (no chassis runs on the host: nothing could plug the VIF there)."""
    binding = check_binding(host, vnic_type, profile)
    if await nb.get(Chassis.table, binding.host) is None:
        await nb.get_or_raise(LogicalPort.table, port_id)  # an unknown port is a 404 first
        raise BindingFailed(port_id, binding.host, "no dfflow chassis runs on that host")
    return await nb.modify(LogicalPort.table, port_id, lambda port: add_inactive(port, binding))


async def activate_binding(nb: Any, port_id: str, host: str) -> LogicalPort:
    """Make `host`'s inactive binding the port's active one, in one compare-and-set write.

    Raises NotFound / BindingNotFound, BindingAlreadyActive (`host` is the active binding already)."""
    return await nb.modify(LogicalPort.table, port_id, lambda port: activate(port, host))


async def delete_binding(nb: Any, port_id: str, host: str) -> LogicalPort:
    """Remove the port's binding for `host` (the active one unbinds the port). Raises NotFound / BindingNotFound."""
    return await nb.modify(LogicalPort.table, port_id, lambda port: remove(port, host))
