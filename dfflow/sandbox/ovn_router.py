"""A router, its gateway and a floating IP on the sandbox's OVN, as Neutron's OVN driver writes them
(read in Neutron's `ovn_client.py` and `common/ovn/utils.py`; our own code).

The sandbox's external network is tunnelled (Geneve, like every other network of it: the external
host E is a VM port on it), not a flat or VLAN provider network. For that case Neutron's OVN driver
(since 2024.2, "Logical_Router pinned to chassis") writes:

* the router: a Logical_Router `neutron-<id>` with Neutron's options (`always_learn_from_arp_request`
  false, `dynamic_neigh_routers` true, `mac_binding_age_threshold` 300);
* an interface per subnet: Neutron's port on the network (device_owner network:router_interface)
  becomes a Logical_Switch_Port of type `router`, `addresses` "router", `options:router-port` =
  `lrp-<port id>`, and the Logical_Router_Port `lrp-<port id>` with the port's MAC and the subnet's
  gateway address;
* the gateway: the same for the gateway port on the external network (plus `nat-addresses` "router"
  and `exclude-lb-vips-from-garp` on the switch side, `gateway_mtu` and `neutron:is_ext_gw` on the
  router side); because the external network has no physical network, the *router* is pinned to a
  gateway chassis instead of the gateway port: an HA_Chassis_Group `neutron-<router id>` of the
  chassis that say `enable-chassis-as-gw` in their `ovn-cms-options`, and the highest of them in the
  router's `options:chassis` (which makes it an OVN gateway router, routed on that chassis);
  the default route to the external subnet's gateway, and an SNAT of each internal subnet to the
  gateway's address;
* a floating IP: a NAT row `dnat_and_snat` from the floating address to the VM's fixed address with
  `logical_port` = the VM's port and **no `external_mac`**: Neutron's default
  (`enable_distributed_floating_ip = False`) is a centralized floating IP, translated on the gateway
  chassis (the distributed kind also needs a provider network for the external one, which the sandbox
  does not have); stateful (`stateless_nat_enabled = False`).
"""
from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any

from .netns import SandboxError
from .ovn import GW_CMS_OPTIONS

HA_CHASSIS_TOP_PRIORITY = 32767  # Neutron's highest HA_Chassis priority
MAC_BINDING_AGE = "300"  # s, Neutron's default mac_binding_age_threshold


@dataclass
class Router:
    id: str
    name: str
    lr: str
    chassis: str
    gateway_ip: str
    interfaces: dict[str, str] = field(default_factory=dict)  # network name -> its LRP
    floating_ips: dict[str, str] = field(default_factory=dict)  # VM name -> floating IP


def gateway_chassis(cloud: Any) -> list[str]:
    """The SB chassis that offer to host gateways (Neutron's get_gateway_chassis_from_cms_options)."""
    rows = cloud.sb.tables["Chassis"].rows.values()
    return sorted(r.name for r in rows
                  if GW_CMS_OPTIONS in (r.other_config.get("ovn-cms-options", "") or
                                       r.external_ids.get("ovn-cms-options", "")).split(","))


def _new_mac() -> str:
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])


def _router_lsp(cloud: Any, txn: Any, network: Any, port_id: str, lrp: str, owner: str, gateway: bool) -> None:
    """Neutron's port for a router on `network`, as the switch side of `lrp` (set_lrouter_port_in_lswitch_port)."""
    options = {"router-port": lrp}
    if gateway:
        options |= {"nat-addresses": "router", "exclude-lb-vips-from-garp": "true"}
    txn.add(cloud.nb.lsp_add(network.switch, port_id, type="router", addresses=["router"], options=options,
                             external_ids={"neutron:device_owner": owner}))


def create_router(cloud: Any, name: str, networks: list[str], external: str) -> Router:
    """A router with an interface at each network's gateway address and its gateway on `external`,
    SNAT on; pinned to the highest-priority gateway chassis. One NB transaction, as Neutron's create
    (its gateway included) and each add_router_interface are one each."""
    chosen = gateway_chassis(cloud)
    if not chosen:
        raise SandboxError(f"no chassis has ovn-cms-options={GW_CMS_OPTIONS}: start OVN with a gateway chassis")
    for net in [*networks, external]:
        if net not in cloud.networks:
            raise SandboxError(f"network {net} does not exist")
    ext = cloud.networks[external]
    if not ext.external:
        raise SandboxError(f"network {external} is not external (router:external)")
    router_id = str(uuid.uuid4())
    router = Router(id=router_id, name=name, lr=f"neutron-{router_id}", chassis=chosen[0],
                    gateway_ip=ext.allocate())
    prefix = ipaddress.ip_network(ext.cidr).prefixlen
    group = router.lr
    # (ovsdbapp's commands on a group's chassis or a router's routes find committed rows only: the
    # group and the router are committed first)
    with cloud.nb.transaction(check_error=True) as txn:
        txn.add(cloud.nb.ha_chassis_group_add(group, external_ids={"neutron:router_id": router_id}))
        txn.add(cloud.nb.lr_add(router.lr, external_ids={"neutron:router_name": name}, enabled=True,
                                options={"always_learn_from_arp_request": "false", "dynamic_neigh_routers": "true",
                                         "mac_binding_age_threshold": MAC_BINDING_AGE, "chassis": router.chassis}))
    with cloud.nb.transaction(check_error=True) as txn:
        for priority, chassis in enumerate(chosen):
            txn.add(cloud.nb.ha_chassis_group_add_chassis(group, chassis, HA_CHASSIS_TOP_PRIORITY - priority))
        gw_port = str(uuid.uuid4())
        gw_lrp = f"lrp-{gw_port}"
        txn.add(cloud.nb.lrp_add(router.lr, gw_lrp, _new_mac(), [f"{router.gateway_ip}/{prefix}"],
                                 external_ids={"neutron:is_ext_gw": "True", "neutron:router_name": router.lr,
                                               "neutron:network_name": ext.switch},
                                 options={"gateway_mtu": str(min(n.mtu for n in cloud.networks.values()))}))
        _router_lsp(cloud, txn, ext, gw_port, gw_lrp, "network:router_gateway", gateway=True)
        txn.add(cloud.nb.lr_route_add(router.lr, "0.0.0.0/0", ext.gateway))
    for net_name in networks:  # Neutron's add_router_interface, one transaction each
        with cloud.nb.transaction(check_error=True) as txn:
            net = cloud.networks[net_name]
            port_id = str(uuid.uuid4())
            lrp = f"lrp-{port_id}"
            net_prefix = ipaddress.ip_network(net.cidr).prefixlen
            txn.add(cloud.nb.lrp_add(router.lr, lrp, _new_mac(), [f"{net.gateway}/{net_prefix}"],
                                     external_ids={"neutron:is_ext_gw": "False", "neutron:router_name": router.lr,
                                                   "neutron:network_name": net.switch}))
            _router_lsp(cloud, txn, net, port_id, lrp, "network:router_interface", gateway=False)
            txn.add(cloud.nb.lr_nat_add(router.lr, "snat", router.gateway_ip, net.cidr))
            router.interfaces[net_name] = lrp
    cloud.routers[name] = router
    return router


def create_floating_ip(cloud: Any, router: Router, vm: str) -> str:
    """A floating IP on the router's external network for `vm`'s port (centralized, as Neutron's default)."""
    port = cloud.ports.get(vm)
    if port is None:
        raise SandboxError(f"VM {vm} has no port on this cloud")
    if port.network.name not in router.interfaces:
        raise SandboxError(f"router {router.name} has no interface on {vm}'s network {port.network.name}")
    ext = next(n for n in cloud.networks.values() if n.external)
    fip = ext.allocate()
    with cloud.nb.transaction(check_error=True) as txn:
        # (ovsdbapp's lr_nat_add takes logical_port only with external_mac, the distributed kind)
        nat = txn.add(cloud.nb.db_create("NAT", type="dnat_and_snat", external_ip=fip, logical_ip=port.ip,
                                         logical_port=port.id, options={"stateless": "false"},
                                         external_ids={"neutron:fip_port_id": port.id,
                                                       "neutron:router_name": router.lr}))
        txn.add(cloud.nb.db_add("Logical_Router", router.lr, "nat", nat))
        txn.add(cloud.nb.db_set("Logical_Switch_Port", port.id, ("external_ids", {"neutron:port_fip": fip})))
    router.floating_ips[vm] = fip
    return fip
