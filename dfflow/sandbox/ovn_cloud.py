"""The sandbox's cloud on OVN: what Neutron's OVN driver writes to the OVN northbound database for
networks, VM ports and a live migration, and Nova's part of the migration around it (the real
os-vif plugging on each chassis, the same switchover helper as dfflow's migrations).

What Neutron's OVN driver writes, as this emulation writes it (one NB transaction per Neutron
change, over a held ovsdbapp connection as neutron-server holds one):

* a network: a Logical_Switch `neutron-<id>`;
* the project's default security group: a Port_Group with Neutron's two rules (egress anywhere,
  ingress from the group's own members, through the group's address set), stateful
  (`allow-related`), and the `neutron_pg_drop` group that drops the rest of a port's IP traffic;
* a VM port: a Logical_Switch_Port named by the port id with `addresses` and `port_security`
  "MAC IP", `options:requested-chassis` the bound host, in both port groups;
* Nova's `binding:profile.migrating_to = dest` (the destination's pre-live-migration, after its
  os-vif plug): `requested-chassis = "src,dest"` and `activation-strategy = rarp` -- OVN binds the
  port on both chassis, the destination blocked until it sees the VM's RARP;
* the destination's binding activated (Nova's post-migration, before the source's unplug):
  `requested-chassis = dest`, no activation strategy;
* Nova's clean-up (migrating_to removed, the source binding deleted): the port written again,
  unchanged (Neutron rewrites the row on every port update).

Nova waits for network-vif-plugged before the memory copy; here that is the destination's
ovn-controller having claimed the port (its chassis in the SB Port_Binding's `additional_chassis`),
which is what the event reports on OVN.
"""
from __future__ import annotations

import asyncio
import ipaddress
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl as nb_idl
from ovsdbapp.schema.ovn_southbound import impl_idl as sb_idl

from .migration_side import finish_switchover, migration_side
from .netns import SandboxError
from .nova import MEMORY_COPY, READY_TIMEOUT, Switchover, _sleep_until
from .osvif import OsVifHost, vif_spec
from .ovn import Ovn

OVSDB_TIMEOUT = 20  # s
DROP_GROUP = "neutron_pg_drop"
DEFAULT_MTU = 1400
# Neutron's ACL priorities: its security group rules above the drop of everything else
RULE_PRIORITY, DROP_PRIORITY = 1002, 1001
STRATEGY = "ovn-rarp"
SB_TABLES = ("Chassis", "Port_Binding", "Encap")


def _api(cls: type, url: str, tables: tuple[str, ...] | None = None) -> Any:
    """An ovsdbapp API on a connection of its own (ovsdbapp keeps the connection in a class
    attribute: one class per connection)."""
    idl = connection.OvsdbIdl.from_server(url, cls.schema, helper_tables=tables)
    backend = type(f"Sandbox{cls.__name__}", (cls,), {"_ovsdb_connection": None})
    return backend(connection.Connection(idl, timeout=OVSDB_TIMEOUT))


@dataclass
class Network:
    id: str
    name: str
    switch: str
    cidr: str

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.cidr).hosts()))


@dataclass
class Port:
    id: str
    network: Network
    mac: str
    ip: str
    host: str


class OvnCloud:
    """Networks and VMs of a sandbox run by OVN (`ovn` started on it), made as Neutron and Nova make them.
    Blocking calls: run them in a thread from asyncio (`migrate` does)."""

    def __init__(self, sandbox: Any, ovn: Ovn, project: str = "sandbox"):
        self.sandbox, self.ovn, self.project = sandbox, ovn, project
        self.nb = _api(nb_idl.OvnNbApiIdlImpl, ovn.central.nb_url)
        self.sb = _api(sb_idl.OvnSbApiIdlImpl, ovn.central.sb_url, SB_TABLES)
        self.networks: dict[str, Network] = {}
        self.ports: dict[str, Port] = {}  # by VM name
        self.default_group = f"pg_{uuid.uuid4().hex}"  # Neutron's name for a group: pg_ + its id, no dashes
        self._groups_made = False

    def close(self) -> None:
        for api in (self.nb, self.sb):
            api.ovsdb_connection.stop()

    # --- Neutron's OVN driver ---------------------------------------------------------------------
    def create_network(self, name: str, cidr: str) -> Network:
        if name in self.networks:
            raise SandboxError(f"network {name} exists already")
        ipaddress.ip_network(cidr)
        net_id = str(uuid.uuid4())
        network = Network(id=net_id, name=name, switch=f"neutron-{net_id}", cidr=cidr)
        with self.nb.transaction(check_error=True) as txn:
            txn.add(self.nb.ls_add(network.switch, external_ids={"neutron:network_name": name},
                                   other_config={"mcast_snoop": "false"}))
        self._security_groups()
        self.networks[name] = network
        return network

    def _security_groups(self) -> None:
        """The drop group and the project's default group with Neutron's rules (made with the first network)."""
        if self._groups_made:
            return
        pg, drop = self.default_group, DROP_GROUP
        with self.nb.transaction(check_error=True) as txn:
            txn.add(self.nb.pg_add(drop, may_exist=True))
            txn.add(self.nb.pg_add(pg, external_ids={"neutron:security_group_id": pg[3:]}))
        with self.nb.transaction(check_error=True) as txn:  # (ovsdbapp adds ACLs to committed groups only)
            txn.add(self.nb.pg_acl_add(drop, "from-lport", DROP_PRIORITY, f"inport == @{drop} && ip", "drop"))
            txn.add(self.nb.pg_acl_add(drop, "to-lport", DROP_PRIORITY, f"outport == @{drop} && ip", "drop"))
            txn.add(self.nb.pg_acl_add(pg, "from-lport", RULE_PRIORITY, f"inport == @{pg} && ip4",
                                       "allow-related"))
            txn.add(self.nb.pg_acl_add(pg, "to-lport", RULE_PRIORITY,
                                       f"outport == @{pg} && ip4 && ip4.src == ${pg}_ip4", "allow-related"))
        self._groups_made = True

    def _port_options(self, hosts: list[str], activation: bool) -> dict[str, str]:
        options = {"requested-chassis": ",".join(hosts), "mcast_flood_reports": "true"}
        if activation:
            options["activation-strategy"] = "rarp"
        return options

    def _write_port(self, port: Port, hosts: list[str], activation: bool = False, create: bool = False) -> None:
        """One NB transaction, as Neutron's create_port / update_port make for the port."""
        address = f"{port.mac} {port.ip}"
        options = self._port_options(hosts, activation)
        with self.nb.transaction(check_error=True) as txn:
            if create:
                txn.add(self.nb.lsp_add(port.network.switch, port.id, addresses=[address],
                                        port_security=[address], options=options,
                                        external_ids={"neutron:device_owner": "compute:nova"}))
                txn.add(self.nb.pg_add_ports(DROP_GROUP, port.id))
                txn.add(self.nb.pg_add_ports(self.default_group, port.id))
            else:
                txn.add(self.nb.db_set("Logical_Switch_Port", port.id, ("options", options),
                                       ("addresses", [address]), ("port_security", [address])))
                if not activation:
                    txn.add(self.nb.db_remove("Logical_Switch_Port", port.id, "options", "activation-strategy",
                                              if_exists=True))

    # --- the SB, as ovn-controller reports it --------------------------------------------------------
    def binding(self, port_id: str) -> tuple[list[str], list[str], bool]:
        """(chassis, additional chassis, up) of the port's SB Port_Binding."""
        row = self.sb.lookup("Port_Binding", port_id, default=None)
        if row is None:
            return [], [], False
        return ([c.name for c in row.chassis], [c.name for c in getattr(row, "additional_chassis", [])],
                bool(row.up and row.up[0]))

    def wait_binding(self, port_id: str, predicate: Callable[[list[str], list[str], bool], bool], what: str,
                     timeout: float = READY_TIMEOUT, interval: float = 0.002) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(*self.binding(port_id)):
            if time.monotonic() > deadline:
                raise SandboxError(f"timed out after {timeout:g} s waiting for {what} "
                                   f"(SB Port_Binding of {port_id}: {self.binding(port_id)})")
            time.sleep(interval)

    # --- Nova -------------------------------------------------------------------------------------
    def instance_info(self, vm: str) -> dict[str, Any]:
        return {"uuid": self.sandbox.vm(vm).uuid, "name": vm, "project_id": self.project}

    def vif(self, port: Port) -> dict[str, Any]:
        """The os-vif VIF Nova builds from the OVN driver's binding (vif_type ovs, br-int, its datapath)."""
        binding = {"vif_type": "ovs", "vif_details": {"bridge_name": "br-int", "datapath_type": "netdev",
                                                      "port_filter": True}}
        return vif_spec(port.id, port.mac, port.network.id, binding, mtu=DEFAULT_MTU)

    def create_vm(self, name: str, chassis: str, network: str, ip: str) -> Port:
        """Nova's boot: the port created bound to `chassis`, the tap, os-vif's plug; returns once
        ovn-controller there has bound the port and set it up."""
        self.sandbox.chassis(chassis)
        net = self.networks[network]
        mac = "fa:16:3e:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))
        port = Port(id=str(uuid.uuid4()), network=net, mac=mac, ip=ip, host=chassis)
        self._write_port(port, [chassis], create=True)
        prefix = ipaddress.ip_network(net.cidr).prefixlen
        self.sandbox.plug_vm(name, chassis, port.id, mac, ip=f"{ip}/{prefix}", gateway=net.gateway, ovs_port=False)
        host = OsVifHost(self.sandbox, chassis)
        try:
            host.call("plug", self.vif(port), self.instance_info(name))
        finally:
            host.close()
        self.ports[name] = port
        self.wait_binding(port.id, lambda main, _, up: main == [chassis] and up, f"{chassis} to bind {name}")
        return port


async def migrate(cloud: OvnCloud, vm: str, dest: str, unplug_delay: float = 0.2,
                  update_port_delay: float = 0.3, memory_copy: float = MEMORY_COPY,
                  switchover_factory: Callable[..., Any] = Switchover) -> dict[str, Any]:
    """Live-migrate `vm` to `dest` on OVN as Nova and Neutron's OVN driver do (see the module's doc);
    returns the timeline in nova.migrate's shape (seconds since the plug; no per-chassis apply times:
    OVN does not report them)."""
    sb = cloud.sandbox
    port = cloud.ports[vm]
    vmrec = sb.vm(vm)
    source_vif = next(v for v in vmrec.vifs if v.up)
    source = source_vif.chassis
    if source == dest:
        raise SandboxError(f"{vm} is already on {dest}")
    sb.chassis(dest)
    new_ifname = next(f"eth{i}" for i in range(10) if f"eth{i}" not in {v.ifname for v in vmrec.vifs})
    instance = cloud.instance_info(vm)
    steps: dict[str, float] = {}
    async with migration_side(sb, source, dest) as side:
        source_osvif, dest_osvif = side.source_osvif, side.dest_osvif
        switchover = side.switchover = switchover_factory(cloud, vm, source_vif.ifname, new_ifname, port.mac,
                                                          source_vif.ip, vmrec.gateway)
        steps["plug"] = time.time()
        # pre_live_migration on dest: QEMU's tap, os-vif's plug, then setup_networks_on_host (migrating_to)
        sb.plug_vif(vm, dest, port.id, port.mac, new_ifname, up=True, ip=source_vif.ip, configure_ip=False,
                    ovs_port=False)
        await dest_osvif.acall("plug", cloud.vif(port), instance)
        steps["plugged"] = time.time()
        await asyncio.to_thread(cloud._write_port, port, [source, dest], True)
        steps["migrating_to"] = time.time()
        switchover.prepare()
        await asyncio.to_thread(cloud.wait_binding, port.id, lambda main, extra, _: dest in extra,
                                f"{dest} to claim {vm}'s port as an additional chassis")
        steps["vif_plugged"] = time.time()
        await asyncio.sleep(memory_copy)
        steps["memory_copied"] = time.time()
        steps.update({f"vm_{k}": v for k, v in (await switchover.go()).items()})
        # _post_live_migration on the source: the destination's binding activated, then the unplug
        await _sleep_until(steps["vm_source_down"] + unplug_delay)
        steps["activate"] = time.time()
        port.host = dest
        await asyncio.to_thread(cloud._write_port, port, [dest])
        steps["activated"] = time.time()
        steps["unplug"] = time.time()
        reply = await source_osvif.acall("unplug", cloud.vif(port), instance)
        steps["unplugged"] = time.time()
        steps["osvif_unplug_returned"] = reply["returned"]
    await asyncio.sleep(0.05)
    await finish_switchover(sb, vm, source_vif.ifname, new_ifname, switchover)
    await _sleep_until(steps["unplug"] + update_port_delay)
    await asyncio.to_thread(cloud._write_port, port, [dest])  # migrating_to cleared: the row rewritten
    steps["updated_port"] = time.time()
    await asyncio.to_thread(cloud.wait_binding, port.id, lambda main, extra, up: main == [dest] and not extra,
                            f"{vm}'s port bound to {dest} alone")
    steps["done"] = time.time()
    origin = steps["plug"]
    return {"vm": vm, "port": port.id, "migration": None, "source": source, "destination": dest,
            "strategy": STRATEGY, "nova_path": "extended", "origin": origin,
            "steps": {k: round(v - origin, 6) for k, v in steps.items()}, "applied": {}, "states": {}}
