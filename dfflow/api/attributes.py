"""The Neutron resources the API serves: their attributes, what a request may set, and their JSON schemas.

One table per resource drives three things, so they cannot disagree: the checks applied to a request
body (type, size, which attributes POST and PUT accept), the list filters allowed, and the OpenAPI
document (request and response schemas). The checks on meaning (a MAC address, an IP inside a
subnet) come after, in the resource modules (`dfflow.api.networks`, `ports`, ...), and in the NB's
own model and rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfflow import models
from dfflow.api.errors import ApiError, bad_request
from dfflow.errors import ValidationError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$"

STR = {"type": "string", "maxLength": 255}
ID = {"type": "string", "minLength": 1, "maxLength": 255}
NULLABLE_ID = {"type": ["string", "null"], "maxLength": 255}
BOOL = {"type": "boolean"}
IP = {"type": "string", "minLength": 1, "maxLength": 64}
NULLABLE_IP = {"type": ["string", "null"], "maxLength": 64}
PROFILE = {"type": ["object", "null"]}  # binding:profile; its size is checked by dfflow.models.check_profile
FIXED_IP_IN = {"type": "object", "additionalProperties": False,
               "properties": {"subnet_id": ID, "ip_address": IP}}
FIXED_IP_OUT = {"type": "object", "properties": {"subnet_id": {"type": "string"},
                                                 "ip_address": {"type": "string"}}}
ADDRESS_PAIR_IN = {"type": "object", "additionalProperties": False, "required": ["ip_address"],
                   "properties": {"ip_address": IP, "mac_address": {"type": "string", "minLength": 1,
                                                                    "maxLength": 64}}}
ADDRESS_PAIR_OUT = {"type": "object", "properties": {"ip_address": {"type": "string"},
                                                     "mac_address": {"type": "string"}}}
NULLABLE_INT = {"type": ["integer", "null"]}
PORT_VALUE = {"type": ["integer", "string", "null"], "maxLength": 16}  # Neutron takes "80" for 80


@dataclass(frozen=True)
class Attr:
    name: str
    schema: dict[str, Any]  # the value's JSON schema, in requests and in responses
    post: bool = False  # a create may set it
    put: bool = False  # an update may set it
    required: bool = False  # a create must set it
    filter: bool = True  # a list may filter on it
    out: dict[str, Any] | None = None  # the response schema, when it differs from `schema`

    @property
    def out_schema(self) -> dict[str, Any]:
        return self.out if self.out is not None else self.schema


@dataclass(frozen=True)
class Resource:
    singular: str
    plural: str
    attrs: tuple[Attr, ...]
    extra_filters: dict[str, dict[str, Any]] = field(default_factory=dict)  # filters that are no attribute
    path: str = ""  # the URL's collection segment, when it is not the plural (security-groups)

    @property
    def url(self) -> str:
        return self.path or self.plural

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs if a.name == name), None)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attrs]

    def request_schema(self, action: str) -> dict[str, Any]:
        allowed = [a for a in self.attrs if (a.post if action == "POST" else a.put)]
        inner: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                 "properties": {a.name: a.schema for a in allowed}}
        required = [a.name for a in allowed if a.required and action == "POST"]
        if required:
            inner["required"] = required
        return {"type": "object", "additionalProperties": False, "required": [self.singular],
                "properties": {self.singular: inner}}

    def item_schema(self) -> dict[str, Any]:
        # No `required`: `fields=` returns only what was asked for.
        return {"type": "object", "properties": {a.name: a.out_schema for a in self.attrs}}

    def filters(self) -> dict[str, dict[str, Any]]:
        found = {a.name: a.out_schema for a in self.attrs if a.filter}
        found.update(self.extra_filters)
        return found


def _project_attrs() -> tuple[Attr, ...]:
    return (Attr("project_id", ID, post=True), Attr("tenant_id", ID, post=True))


def _common_out() -> tuple[Attr, ...]:
    return (Attr("id", ID), *_project_attrs(),
            Attr("revision_number", {"type": "integer", "minimum": 0}))


NETWORK = Resource("network", "networks", (
    *_common_out(),
    Attr("name", STR, post=True, put=True),
    Attr("admin_state_up", BOOL, post=True, put=True),
    Attr("shared", BOOL, post=True, put=True),
    Attr("status", {"type": "string"}),
    Attr("subnets", {"type": "array", "items": {"type": "string"}}),
    Attr("mtu", {"type": "integer", "minimum": 68, "maximum": 9000}, post=True, put=True),
    Attr("provider:network_type", {"type": "string", "enum": ["geneve"]}, post=True),
    Attr("provider:physical_network", {"type": "null"}, post=True),
    Attr("provider:segmentation_id", {"type": "integer", "minimum": 1, "maximum": 2**24 - 1}, post=True),
    Attr("router:external", BOOL, post=True, put=True),
    Attr("port_security_enabled", BOOL),
))

SUBNET = Resource("subnet", "subnets", (
    *_common_out(),
    Attr("name", STR, post=True, put=True),
    Attr("network_id", ID, post=True, required=True),
    Attr("cidr", {"type": "string", "minLength": 1, "maxLength": 64}, post=True, required=True),
    Attr("ip_version", {"type": "integer", "enum": [4, 6]}, post=True),
    Attr("gateway_ip", NULLABLE_IP, post=True, put=True),
    Attr("enable_dhcp", BOOL, post=True, put=True),
    Attr("allocation_pools", {"type": "array", "items": {
        "type": "object", "properties": {"start": {"type": "string"}, "end": {"type": "string"}}}},
        filter=False),
    Attr("dns_nameservers", {"type": "array", "items": {"type": "string"}}, filter=False),
    Attr("host_routes", {"type": "array", "items": {"type": "object"}}, filter=False),
    Attr("ipv6_ra_mode", {"type": "null"}),
    Attr("ipv6_address_mode", {"type": "null"}),
    Attr("subnetpool_id", {"type": "null"}),
))

PORT = Resource("port", "ports", (
    *_common_out(),
    Attr("name", STR, post=True, put=True),
    Attr("network_id", ID, post=True, required=True),
    Attr("mac_address", {"type": "string", "minLength": 1, "maxLength": 64}, post=True, put=True),
    Attr("fixed_ips", {"type": "array", "maxItems": 64, "items": FIXED_IP_IN}, post=True, put=True,
         out={"type": "array", "items": FIXED_IP_OUT}),
    Attr("device_owner", STR, post=True, put=True),
    Attr("device_id", STR, post=True, put=True),
    Attr("admin_state_up", BOOL, post=True, put=True),
    Attr("status", {"type": "string", "enum": ["ACTIVE", "DOWN"]}),
    Attr("port_security_enabled", BOOL, post=True, put=True),
    Attr("security_groups", {"type": ["array", "null"], "maxItems": 64, "items": ID}, post=True, put=True,
         out={"type": "array", "items": {"type": "string"}}),
    Attr("allowed_address_pairs", {"type": ["array", "null"], "maxItems": 64, "items": ADDRESS_PAIR_IN},
         post=True, put=True, filter=False, out={"type": "array", "items": ADDRESS_PAIR_OUT}),
    Attr("binding:host_id", STR, post=True, put=True),
    Attr("binding:profile", PROFILE, post=True, put=True, filter=False, out={"type": "object"}),
    Attr("binding:vif_type", {"type": "string"}),
    Attr("binding:vif_details", {"type": "object"}, filter=False),
    Attr("binding:vnic_type", {"type": "string", "enum": ["normal"]}, post=True, put=True),
    Attr("dfflow:activation_strategy", {"type": ["string", "null"], "enum": ["unplug", "announce", None]},
         post=True, put=True),
    Attr("dfflow:migration", {"type": ["object", "null"]}, filter=False),
), extra_filters={"ip_address": IP, "subnet_id": ID})

ROUTER_GATEWAY_IN = {
    "type": ["object", "null"], "additionalProperties": False,
    "properties": {"network_id": ID, "enable_snat": BOOL,
                   "external_fixed_ips": {"type": "array", "maxItems": 1, "items": FIXED_IP_IN}},
}
ROUTER_GATEWAY_OUT = {
    "type": ["object", "null"],
    "properties": {"network_id": {"type": "string"}, "enable_snat": BOOL,
                   "external_fixed_ips": {"type": "array", "items": FIXED_IP_OUT}},
}

ROUTER = Resource("router", "routers", (
    *_common_out(),
    Attr("name", STR, post=True, put=True),
    Attr("admin_state_up", BOOL, post=True, put=True),
    Attr("status", {"type": "string"}),
    Attr("external_gateway_info", ROUTER_GATEWAY_IN, post=True, put=True, filter=False,
         out=ROUTER_GATEWAY_OUT),
    Attr("routes", {"type": "array", "items": {"type": "object"}}, filter=False),
))

FLOATINGIP = Resource("floatingip", "floatingips", (
    *_common_out(),
    Attr("floating_network_id", ID, post=True, required=True),
    Attr("floating_ip_address", IP, post=True),
    Attr("subnet_id", NULLABLE_ID, post=True, filter=False),
    Attr("port_id", NULLABLE_ID, post=True, put=True),
    Attr("fixed_ip_address", NULLABLE_IP, post=True, put=True),
    Attr("router_id", {"type": ["string", "null"]}),
    Attr("status", {"type": "string", "enum": ["ACTIVE", "DOWN"]}),
))

SECURITY_GROUP_RULE = Resource("security_group_rule", "security_group_rules", path="security-group-rules", attrs=(
    *_common_out(),
    Attr("security_group_id", ID, post=True, required=True),
    Attr("direction", {"type": "string", "maxLength": 16}, post=True, required=True),
    Attr("ethertype", {"type": "string", "maxLength": 16}, post=True),
    Attr("protocol", {"type": ["string", "integer", "null"], "maxLength": 32}, post=True,
         out={"type": ["string", "null"]}),
    Attr("port_range_min", PORT_VALUE, post=True, out=NULLABLE_INT),
    Attr("port_range_max", PORT_VALUE, post=True, out=NULLABLE_INT),
    Attr("remote_ip_prefix", NULLABLE_IP, post=True),
    Attr("remote_group_id", NULLABLE_ID, post=True),
    Attr("remote_address_group_id", {"type": "null"}, post=True),
    Attr("normalized_cidr", {"type": ["string", "null"]}),
    Attr("description", STR, post=True, put=True),
    Attr("belongs_to_default_sg", BOOL),
))

SECURITY_GROUP = Resource("security_group", "security_groups", path="security-groups", attrs=(
    *_common_out(),
    Attr("name", STR, post=True, put=True),
    Attr("description", STR, post=True, put=True),
    Attr("stateful", BOOL, post=True, put=True),
    Attr("shared", BOOL),
    Attr("security_group_rules", {"type": "array", "items": SECURITY_GROUP_RULE.item_schema()}, filter=False),
))

RESOURCES: dict[str, Resource] = {r.plural: r for r in (NETWORK, SUBNET, PORT, ROUTER, FLOATINGIP,
                                                        SECURITY_GROUP, SECURITY_GROUP_RULE)}

# A port's bindings (the binding-extended extension): a sub-resource of ports, keyed by host.
BINDING = Resource("binding", "bindings", (
    Attr("host", ID, post=True, required=True),
    Attr("vif_type", {"type": "string", "enum": ["ovs", "binding_failed", "unbound"]}),
    Attr("vif_details", {"type": "object"}, filter=False),
    Attr("vnic_type", {"type": "string", "enum": ["normal"]}, post=True),
    Attr("profile", PROFILE, post=True, filter=False, out={"type": "object"}),
    Attr("status", {"type": "string", "enum": ["ACTIVE", "INACTIVE"]}),
    Attr("project_id", ID, post=True, filter=False),
))

INTERFACE_IN = {"type": "object", "additionalProperties": False,
                "properties": {"subnet_id": ID, "port_id": ID}}
INTERFACE_OUT = {"type": "object", "properties": {
    "id": {"type": "string"}, "tenant_id": {"type": "string"}, "project_id": {"type": "string"},
    "subnet_id": {"type": "string"}, "subnet_ids": {"type": "array", "items": {"type": "string"}},
    "port_id": {"type": "string"}, "network_id": {"type": "string"}}}


# -- checking a value against the small JSON-schema subset used above ---------------------------------

_TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list,
          "number": (int, float)}


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def check_value(name: str, schema: dict[str, Any], value: Any) -> None:
    """Raise a 400 naming `name` unless `value` fits `schema`."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            raise bad_request(name, f"{_short(value)} is not {' or '.join(_article(k) for k in kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        shown = ", ".join("null" if v is None else repr(v) for v in schema["enum"])
        raise bad_request(name, f"{_short(value)} is not one of {shown}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            raise bad_request(name, f"'{value[:32]}...' exceeds maximum length of {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            raise bad_request(name, "must not be empty")
    if isinstance(value, int) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise bad_request(name, f"{_short(value)} is not in [{lo}, {hi}]")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            raise bad_request(name, f"at most {schema['maxItems']} items allowed")
        for item in value:
            check_value(name, schema.get("items", {}), item)
    if isinstance(value, dict):
        if len(value) > schema.get("maxProperties", len(value)):
            raise bad_request(name, f"at most {schema['maxProperties']} keys allowed")
        props = schema.get("properties")
        if props is not None:
            unknown = sorted(set(value) - set(props))
            if unknown and schema.get("additionalProperties") is False:
                raise bad_request(name, f"unrecognized key(s) {', '.join(map(repr, unknown))}")
            for key, sub in props.items():
                if key in value:
                    check_value(f"{name}.{key}" if name else key, sub, value[key])
        for key in schema.get("required", ()):
            if key not in value:
                raise bad_request(name, f"required key '{key}' not specified")


def _article(kind: str) -> str:
    return {"null": "null", "integer": "an integer", "object": "an object",
            "array": "a list", "boolean": "a boolean"}.get(kind, f"a {kind}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def request_project(data: dict[str, Any], default: str) -> str:
    """The project (NB topic) a create is for: project_id or tenant_id (equal if both), else `default`."""
    project, tenant = data.get("project_id"), data.get("tenant_id")
    if project is not None and tenant is not None and project != tenant:
        raise bad_request("project_id", f"project_id {project!r} and tenant_id {tenant!r} differ")
    topic = project or tenant or default
    try:
        return models.check_id("project_id", topic)
    except ValidationError as exc:
        raise bad_request("project_id" if project is not None or tenant is None else "tenant_id",
                          exc.message) from None


def parse_body(resource: Resource, body: Any, action: str) -> dict[str, Any]:
    """The attributes of a POST/PUT body `{"<singular>": {...}}`, type-checked; 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise ApiError(400, "HTTPBadRequest", f"Invalid input for {resource.singular}. "
                                              f"Reason: the request body must be a JSON object.")
    if resource.singular not in body:
        if resource.plural in body:
            raise ApiError(400, "HTTPBadRequest", f"Invalid input for {resource.plural}. Reason: bulk "
                                                  f"requests are not supported; send one {resource.singular}.")
        raise ApiError(400, "HTTPBadRequest", f"Unable to find '{resource.singular}' in request body")
    extra = sorted(set(body) - {resource.singular})
    if extra:
        raise ApiError(400, "HTTPBadRequest", f"Unrecognized attribute(s) '{', '.join(extra)}'")
    data = body[resource.singular]
    if not isinstance(data, dict):
        raise bad_request(resource.singular, "must be a JSON object")
    unknown = sorted(k for k in data if resource.attr(k) is None)
    if unknown:
        raise ApiError(400, "HTTPBadRequest", f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    for key, value in data.items():
        attr = resource.attr(key)
        if not (attr.post if action == "POST" else attr.put):
            if action == "POST":
                raise ApiError(400, "HTTPBadRequest", f"Attribute '{key}' not allowed in POST")
            raise ApiError(400, "HTTPBadRequest", f"Cannot update read-only attribute {key}")
        check_value(key, attr.schema, value)
    if action == "POST":
        for attr in resource.attrs:
            if attr.required and attr.name not in data:
                raise ApiError(400, "HTTPBadRequest", f"Failed to parse request. Required attribute "
                                                      f"'{attr.name}' not specified")
    return data
