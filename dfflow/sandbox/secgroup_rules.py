"""The security-group rules the sandbox's probes need, added the way a user adds them.

Every port gets its project's `default` group, which lets in only the group's own members. The sandbox's
external host stands for the world outside the cloud (no port security: `external_host_attrs`), so its
pings of a floating IP and its downtime probes (UDP `probe.PORT`) -- like those of a VM of another group
or project -- are let in only by rules: an ingress rule for ICMP and one for the probes' port, from
anywhere, on the default group of the sandbox's project, made through the Neutron API with
python-neutronclient as `openstack security group rule create` makes them. A rule that is there already
is left as it is (Neutron answers 409)."""
from __future__ import annotations

from typing import Any

from dfflow.errors import DfflowError
from dfflow.models import LogicalSwitch
from dfflow.sandbox.probe import PORT

ANYWHERE = "0.0.0.0/0"
PROBE_RULES: tuple[tuple[dict[str, Any], str], ...] = (
    ({"protocol": "icmp"}, "ping"),
    ({"protocol": "udp", "port_range_min": PORT, "port_range_max": PORT}, "the downtime probes"),
)


async def default_group(cloud: Any) -> dict[str, Any]:
    """The `default` group of the cloud's project (listing it makes it, as Neutron does)."""
    found = (await cloud.neutron("list_security_groups", project_id=cloud.topic, name="default"))["security_groups"]
    if len(found) != 1:
        raise DfflowError(f"project {cloud.topic} has {len(found)} security groups named default, not one")
    return found[0]


def describe(rule: dict[str, Any]) -> str:
    ports = rule.get("port_range_min")
    return (f"{rule['direction']} {rule['ethertype']} {rule.get('protocol') or 'any'}"
            f"{f' port {ports}' if ports is not None else ''} from {rule.get('remote_ip_prefix') or 'anywhere'}")


async def allow_probes(cloud: Any, remote: str = ANYWHERE) -> list[str]:
    """Add the probes' rules to the project's default group; what was added, one line each."""
    group = await default_group(cloud)
    added = []
    for fields, purpose in PROBE_RULES:
        rule = {"security_group_id": group["id"], "project_id": cloud.topic, "direction": "ingress",
                "ethertype": "IPv4", "remote_ip_prefix": remote, **fields}
        try:
            await cloud.neutron("create_security_group_rule", {"security_group_rule": rule})
        except DfflowError as exc:
            if getattr(exc, "status_code", None) != 409:  # 409: the same rule is there already
                raise
            continue
        added.append(f"security group default (project {cloud.topic}): {describe(rule)} ({purpose})")
    return added


async def external_host_attrs(cloud: Any, network: str) -> dict[str, Any] | None:
    """A VM on an external network is the sandbox's external host, outside the cloud's security groups:
    its port has port security off. None for any other network."""
    switch = await cloud.nb.get(LogicalSwitch.table, await cloud.network_id(network))
    return {"port_security_enabled": False} if switch is not None and switch.router_external else None
