"""What Neutron's database holds, as the NB objects the driver writes (for `sync.py`).

Read through Neutron's own plugins (the ML2 core plugin and the L3 plugin), with an admin context, and
converted by the same functions the driver's post-commit hooks use, so the sync can never want something
other than what the hooks write. A resource the NB would refuse is reported, not written."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from neutron.db import segments_db
from neutron.objects import ports as port_objects
from neutron.objects import securitygroup as sg_objects
from neutron_lib import constants as n_const
from neutron_lib import context as n_context
from neutron_lib.plugins import constants as plugin_constants
from neutron_lib.plugins import directory

from dfflow.errors import DfflowError
from dfflow.models import FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, SecurityGroup, SecurityGroupRule, Subnet
from dfflow.nb import convert
from dfflow.neutron import binding, networks, ports, resource
from dfflow.neutron.errors import NbInvalid
from dfflow.neutron.l3_plugin import DfflowRouterPlugin
from dfflow.neutron.sync import SYNCED, NeutronState, Wanted


class _Collector:
    def __init__(self) -> None:
        self.wanted: list[Wanted] = []
        self.refused: list[tuple[str, str, str]] = []

    def add(self, model: Any, item: dict[str, Any], fields: Any) -> None:
        """`fields` is a callable, so a conversion that refuses the resource is recorded too."""
        try:
            obj = resource.checked(model, item, fields())
        except (NbInvalid, DfflowError) as exc:
            self.refused.append((model.table, item["id"], str(exc)))
            return
        self.wanted.append(Wanted(model, obj.id, obj.topic, fields()))


def inactive_bindings_by_port(admin: Any) -> dict[str, list]:
    found: dict[str, list] = defaultdict(list)
    for row in port_objects.PortBinding.get_objects(admin, status=n_const.INACTIVE):
        if ports.is_bound(row.vif_type):
            found[row.port_id].append(binding.inactive_binding(row.host, row.vnic_type, row.profile))
    return found


def read() -> NeutronState:
    """Neutron's networks, subnets, security groups and their rules, ports and (with the `dfflow-router` plugin) routers and floating IPs, as NB objects."""
    admin = n_context.get_admin_context()
    core = directory.get_plugin()
    l3 = directory.get_plugin(plugin_constants.L3)
    if not isinstance(l3, DfflowRouterPlugin):
        l3 = None  # another router plugin: routers and floating IPs are not dfflow's
    out = _Collector()

    nets = core.get_networks(admin)
    segments = segments_db.get_networks_segments(admin, [n["id"] for n in nets])
    for net in nets:
        out.add(LogicalSwitch, net, lambda net=net: networks.fields(net, segments.get(net["id"], [])))
    for subnet in core.get_subnets(admin):
        out.add(Subnet, subnet, lambda subnet=subnet: convert.subnet_fields(subnet))

    # default_sg=True: reading must not make a default group for the admin project
    defaults = {row.security_group_id for row in sg_objects.DefaultSecurityGroup.get_objects(admin)}
    for group in core.get_security_groups(admin, default_sg=True):
        out.add(SecurityGroup, group,
                lambda group=group: convert.secgroup_fields(group, group["id"] in defaults))
        for rule in group.get("security_group_rules") or []:
            out.add(SecurityGroupRule, rule, lambda rule=rule: convert.secgroup_rule_fields(rule))

    all_ports = core.get_ports(admin)
    inactive = inactive_bindings_by_port(admin)
    owned: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)  # (owner, device id) -> ports
    for port in all_ports:
        if convert.is_nb_port(port):
            out.add(LogicalPort, port, lambda port=port: ports.fields(port, inactive.get(port["id"], [])))
        else:
            owned[(port.get("device_owner", ""), port.get("device_id", ""))].append(port)

    tables = [m.table for m in SYNCED]
    if l3 is None:
        tables.remove(LogicalRouter.table)
        tables.remove(FloatingIP.table)
    else:
        gw_ports = {p["id"]: p for p in all_ports if p.get("device_owner") == convert.OWNER_ROUTER_GATEWAY}
        for router in l3.get_routers(admin):
            interfaces = owned[(convert.OWNER_ROUTER_INTERFACE, router["id"])]
            gw_port = gw_ports.get(router.get("gw_port_id") or "")
            out.add(LogicalRouter, router,
                    lambda r=router, i=interfaces, g=gw_port: convert.router_fields(r, i, g))
        for fip in l3.get_floatingips(admin):
            own = owned[(convert.OWNER_FLOATINGIP, fip["id"])]
            if not own:
                out.refused.append((FloatingIP.table, fip["id"], "Neutron holds no port for this floating IP"))
                continue
            out.add(FloatingIP, fip, lambda f=fip, mac=own[0]["mac_address"]: convert.floatingip_fields(f, mac))
    return NeutronState.of(out.wanted, tables, out.refused)
