"""Neutron's port binding, as the NB stores it: the one conversion both the API and the control plane use.

`binding:host_id` is the chassis a port is bound to; the NB keeps it in `LogicalPort.binding_chassis`.
Nova's last step of a live migration is `update_port(binding:host_id=<destination>)` (the live-migration
protocol's step 3); `update_port_binding` is that step, callable without HTTP (the API's
`PUT /v2.0/ports/{id}` calls it too). It is a compare-and-set read-modify-write on the port, so it never
undoes a concurrent change to another field (for instance the controller moving the migration record).
"""
from __future__ import annotations

from typing import Any

from dfflow.errors import ValidationError, VersionConflict
from dfflow.models import LogicalPort, check_id

HOST_FIELD = "binding:host_id"


def host_to_chassis(host: Any) -> str | None:
    """Neutron's `binding:host_id` value -> `binding_chassis`: '' or None unbinds; otherwise a chassis name."""
    if host is None or host == "":
        return None
    return check_id(HOST_FIELD, host)


def chassis_to_host(chassis: str | None) -> str:
    """`binding_chassis` -> Neutron's `binding:host_id` ('' when unbound)."""
    return chassis or ""


def bind(port: LogicalPort, host: Any) -> LogicalPort | None:
    """The port bound to `host`, or None when it already is (nothing to write).

    Only the binding changes; the migration record is the controller's to move
    (it sees the binding reach the migration's destination and finishes). An inactive
    binding `host` held is dropped: the port's one binding there is now the active one.
    """
    chassis = host_to_chassis(host)
    if port.binding_chassis == chassis:
        return None
    kept = [b for b in port.inactive_bindings if b.host != chassis]
    return port.replace(binding_chassis=chassis, inactive_bindings=kept)


async def update_port_binding(nb: Any, port_id: str, host: str | None,
                              expect_version: int | None = None) -> LogicalPort:
    """Bind NB port `port_id` to chassis `host` ('' or None unbinds) and return the port as stored.

    `nb` is an `NbApi`. Raises `NotFound` for an unknown port, `ValidationError` (field
    `binding:host_id`) for a malformed host, and `VersionConflict` if `expect_version` is given and
    the port is no longer at that version. Binding a port to the chassis it is already bound to
    writes nothing (the version does not change).
    """
    host_to_chassis(host)  # a malformed host fails before any read

    def change(port: LogicalPort) -> LogicalPort | None:
        if expect_version is not None and port.version != expect_version:
            raise VersionConflict(port.table, port.id, expect_version, port.version)
        return bind(port, host)

    try:
        return await nb.modify(LogicalPort.table, port_id, change)
    except ValidationError as exc:
        if exc.field == "binding_chassis":
            raise ValidationError(HOST_FIELD, exc.message, exc.table) from None
        raise
