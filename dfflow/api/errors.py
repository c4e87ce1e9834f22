"""Neutron-shaped errors: `{"NeutronError": {"type", "message", "detail"}}`, and the NB's errors translated.

The NB names fields by its own model (`lport.mac`, `lswitch.segmentation_id`); a Neutron client knows
them as `mac_address` and `provider:segmentation_id`. `translate` turns a `dfflow.errors` exception
raised while serving a resource into the error Neutron would give, naming the Neutron field.
"""
from __future__ import annotations

import re
from typing import Any

from dfflow.errors import BadObject, Conflict, DfflowError, InUse, NotFound, ValidationError, VersionConflict


class ApiError(Exception):
    """An HTTP error with a Neutron body."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


def bad_request(field: str, reason: str) -> ApiError:
    return ApiError(400, "HTTPBadRequest", f"Invalid input for {field}. Reason: {reason}")


def not_found(kind: str, obj_id: str) -> ApiError:
    name = NEUTRON_NAMES.get(kind, kind)
    return ApiError(404, f"{name.replace(' ', '')}NotFound", f"{name} {obj_id} could not be found.")


def conflict(type_: str, message: str) -> ApiError:
    return ApiError(409, type_, message)


# NB table -> the name Neutron gives the resource in its messages
NEUTRON_NAMES = {"lswitch": "Network", "subnet": "Subnet", "lport": "Port", "lrouter": "Router",
                 "floatingip": "FloatingIP", "network": "Network", "port": "Port", "router": "Router"}

# (NB table, NB field) -> Neutron field, for the fields whose names differ
_FIELDS: dict[str, dict[str, str]] = {
    "lswitch": {"segmentation_id": "provider:segmentation_id", "router_external": "router:external"},
    "subnet": {"lswitch": "network_id"},
    "lport": {"lswitch": "network_id", "mac": "mac_address", "ips": "fixed_ips",
              "binding_chassis": "binding:host_id", "enabled": "admin_state_up",
              "port_security": "port_security_enabled", "activation_strategy": "dfflow:activation_strategy"},
    "lrouter": {"ports": "subnet_id", "external_gateway": "external_gateway_info"},
    "floatingip": {"floating_ip": "floating_ip_address", "lswitch": "floating_network_id",
                   "port": "port_id", "fixed_ip": "fixed_ip_address", "router": "router_id"},
}
_INDEX = re.compile(r"\[\d+\]")


def neutron_field(table: str | None, field: str | None) -> str:
    """The Neutron name of an NB field (`ips[1]` -> `fixed_ips`, `external_gateway.ip` -> ...)."""
    if not field:
        return "body"
    if ":" in field or table is None:
        return field
    head = _INDEX.sub("", field).split(".", 1)[0]
    return _FIELDS.get(table, {}).get(head, head)


def translate(exc: DfflowError, table: str, obj: Any = None) -> ApiError:
    """The Neutron error for an NB refusal met while writing/reading `table` (writing `obj`, if known)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BadObject):  # stored data, not the request, is at fault: name the object
        return ApiError(500, "NBObjectMalformed", str(exc))
    if isinstance(exc, ValidationError):
        return bad_request(neutron_field(exc.table or table, exc.field), exc.message)
    if isinstance(exc, NotFound):
        return not_found(exc.table, exc.id)
    if isinstance(exc, VersionConflict):
        return ApiError(412, "RevisionNumberConstraintFailed",
                        f"Constrained to revision {exc.expected} but the current revision is {exc.actual}.")
    if isinstance(exc, InUse):
        return _in_use(exc)
    if isinstance(exc, Conflict):
        return _conflict(exc, table, obj)
    return ApiError(409, "Conflict", str(exc))


def _in_use(exc: InUse) -> ApiError:
    users = ", ".join(_neutron_ref(r) for r in sorted(exc.referrers)[:5])
    if exc.table == "lswitch":
        return conflict("NetworkInUse", f"Unable to complete operation on network {exc.id}. "
                                        f"There are one or more resources in use on the network: {users}.")
    if exc.table == "subnet":
        return conflict("SubnetInUse", f"Unable to complete operation on subnet {exc.id}: "
                                       f"one or more ports have an IP allocation from this subnet "
                                       f"or a router is attached to it ({users}).")
    if exc.table == "lport":
        return conflict("PortInUse", f"Unable to complete operation on port {exc.id}: it is used by {users}.")
    if exc.table == "lrouter":
        return conflict("RouterInUse", f"Router {exc.id} still has floating IPs: {users}.")
    return conflict("Conflict", str(exc))


def _neutron_ref(ref: str) -> str:
    table, _, obj_id = ref.partition(":")
    return f"{NEUTRON_NAMES.get(table, table).lower()} {obj_id}"


_HOLDER = re.compile(r"already used by (\w+):(\S+)$")
_OVERLAP = re.compile(r"overlaps subnet '([^']+)' \(([^)]+)\)")


def _value(obj: Any, field: str) -> Any:
    """`ips[1]` / `external_gateway.ip` / `ports[0].mac` of `obj`, or None."""
    value = obj
    for part in field.split("."):
        name, _, index = part.partition("[")
        value = getattr(value, name, None)
        if index and isinstance(value, list):
            i = int(index.rstrip("]"))
            value = value[i] if i < len(value) else None
        if value is None:
            return None
    return value


def _conflict(exc: Conflict, table: str, obj: Any) -> ApiError:
    """409s worded from the object being written; the NB says which field and who holds it."""
    nb_field = exc.field or ""
    field = neutron_field(table, nb_field)
    text = str(exc)
    value = _value(obj, nb_field) if obj is not None and nb_field else None
    found = _HOLDER.search(text)
    holder = f" (held by {_neutron_ref(found.group(1) + ':' + found.group(2))})" if found else ""
    network = getattr(obj, "lswitch", None)
    if nb_field.startswith("external_gateway") and obj is not None and obj.external_gateway is not None:
        network = obj.external_gateway.lswitch
    on = f" on network {network}" if network else ""
    if nb_field == "mac" or nb_field.endswith(".mac"):
        return conflict("MacAddressInUse", f"Unable to complete operation{on}. The mac address "
                                           f"{value or '?'} is in use{holder}.")
    if field == "provider:segmentation_id":
        return conflict("TunnelIdInUse", f"Unable to create the network. The segmentation ID (VNI) "
                                         f"{value or '?'} is in use{holder}.")
    if table == "subnet" and nb_field == "cidr":
        other = _OVERLAP.search(text)
        with_ = f" subnet {other.group(1)} ({other.group(2)})" if other else " another subnet"
        return conflict("SubnetOverlap", f"Invalid input for cidr. Reason: the requested subnet {value or ''} "
                                         f"overlaps{with_}{on}.")
    if table == "lrouter" and nb_field.endswith(".subnet"):
        return conflict("SubnetAlreadyAttached", f"Subnet {value or '?'} already has a router "
                                                 f"interface{holder}.")
    if table == "floatingip" and nb_field == "fixed_ip":
        return conflict("FloatingIPPortAlreadyAssociated",
                        f"Cannot associate floating IP with port {getattr(obj, 'port', '?')} using fixed IP "
                        f"{value or '?'}: that fixed IP already has a floating IP{holder}.")
    if nb_field.startswith(("ips", "floating_ip", "external_gateway", "ports")) or nb_field.endswith(".ip"):
        return conflict("IpAddressAlreadyAllocated", f"IP address {value or '?'} is already allocated{on}"
                                                     f"{holder}.")
    return conflict("Conflict", f"{field}: {text}")
