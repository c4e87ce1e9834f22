"""The cloud side of the sandbox: what Neutron and Nova do, against the NB db and the chassis.

`Cloud` creates ports and changes their bindings through the sandbox's
Neutron-compatible API (`dfflow api`) with python-neutronclient, the client Nova
uses; networks, routers and floating IPs with the same API's operations in this
process (`dfflow.api.service`: its checks and its allocation of addresses and
MACs), under the names the sandbox gives them as ids. A network's VNI is the
sandbox's choice (`Sandbox.allocate_vni`: a high-water mark that outlives the NB
db, so that a new network never takes a VNI old flows may carry). It boots VMs as
Nova does: the port is created bound to the host, the VM's tap is made (a veth, as
QEMU's), the real os-vif plugs it into the chassis' br-int from the port's
binding:vif_details, and Nova waits for Neutron's network-vif-plugged event, which
the sandbox's Nova API (nova_events.py) receives once the chassis reported the VIF up.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from typing import Any, Callable

from neutronclient.common import exceptions as neutron_exc
from neutronclient.v2_0 import client as neutron_client

from dfflow.sandbox.nova_events import NovaEvents
from dfflow.sandbox.novaclient_neutron import nova_neutron_client
from dfflow.sandbox.osvif import OsVifHost, port_binding, vif_spec
from dfflow.sandbox.topology import API_NEUTRON, Sandbox, Vm
from dfflow.api.errors import ApiError
from dfflow.api.service import NeutronService
from dfflow.errors import Conflict, DfflowError, NotFound, ValidationError
from dfflow.models import FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, Subnet
from dfflow.nb.store import NbApi

DEFAULT_TOPIC = "demo"
VNI_ATTEMPTS = 5
# s Nova waits for network-vif-plugged here, at boot and before a live migration (Nova's
# [DEFAULT] vif_plugging_timeout, whose default is 300)
VIF_PLUGGING_TIMEOUT = 10.0


class Cloud:
    def __init__(self, sandbox: Sandbox, nb: NbApi, topic: str = DEFAULT_TOPIC,
                 vif_plugging_timeout: float | None = None):
        self.sandbox, self.nb, self.topic = sandbox, nb, topic
        self._vif_plugging_timeout = vif_plugging_timeout
        self._client: neutron_client.Client | None = None
        self._service: NeutronService | None = None

    @property
    def vif_plugging_timeout(self) -> float:
        return VIF_PLUGGING_TIMEOUT if self._vif_plugging_timeout is None else self._vif_plugging_timeout

    @staticmethod
    def for_sandbox(sandbox: Sandbox, nb: NbApi, vif_plugging_timeout: float | None = None) -> "Cloud":
        """The cloud of `sandbox`: this one over `dfflow api`, or, when neutron-server serves its API,
        one that makes everything through Neutron (neutron_cloud.py). An API that tells some other Nova of
        VIF events (a neutron-server the sandbox did not start, or given --nova-url): this Nova then does
        not wait for them, as Nova configured with `vif_plugging_timeout = 0`."""
        if vif_plugging_timeout is None and not sandbox.api_notifies_our_nova:
            vif_plugging_timeout = 0
        if sandbox.api_kind == API_NEUTRON:
            from dfflow.sandbox.neutron_cloud import NeutronCloud  # it builds on this module
            return NeutronCloud(sandbox, nb, vif_plugging_timeout=vif_plugging_timeout)
        return Cloud(sandbox, nb, vif_plugging_timeout=vif_plugging_timeout)

    async def create_network(self, name: str, cidr: str, vni: int | None = None,
                             external: bool = False, mtu: int = 1400) -> tuple[LogicalSwitch, Subnet]:
        body = {"name": name, "mtu": mtu, "router:external": external}
        for attempt in range(VNI_ATTEMPTS):
            chosen = vni
            if chosen is None:
                used = {s.segmentation_id for s in await self.nb.list(LogicalSwitch.table)}
                chosen = self.sandbox.allocate_vni(used)
            try:
                await self.service.create("networks", {**body, "provider:segmentation_id": chosen}, obj_id=name)
                break
            except ApiError as exc:  # another network took that VNI meanwhile: take the next one
                if vni is not None or exc.type != "TunnelIdInUse" or attempt == VNI_ATTEMPTS - 1:
                    raise api_refusal("create_network", exc.status, exc.message) from None
        net = ipaddress.ip_network(cidr, strict=False)
        try:
            await self._api("create", "subnets", {"network_id": name, "cidr": str(net), "enable_dhcp": False,
                                                  "gateway_ip": str(net.network_address + 1)},
                            obj_id=f"{name}-subnet")
        except Exception:
            await self.nb.delete(LogicalSwitch.table, name)
            raise
        return (await self.nb.get_or_raise(LogicalSwitch.table, name),
                await self.nb.get_or_raise(Subnet.table, f"{name}-subnet"))

    async def network_id(self, network: str) -> str:
        """The NB id of the network named `network` (the sandbox's networks are named by their id here)."""
        return network

    async def _subnet(self, network: str) -> Subnet:
        subnets = [s for s in await self.nb.list(Subnet.table) if s.lswitch == network]
        if not subnets:
            if await self.nb.get(LogicalSwitch.table, network) is None:
                raise NotFound(LogicalSwitch.table, network, field="network")
            raise ValidationError("network", f"network {network!r} has no subnet")
        return subnets[0]

    async def create_port(self, network: str, chassis: str | None, ip: str | None = None,
                          name: str = "", device_id: str = "", mac: str | None = None,
                          attrs: dict[str, Any] | None = None) -> LogicalPort:
        """POST /v2.0/ports on the sandbox's API, as Nova asks Neutron for a VM's port (`attrs`: more of
        the port's attributes, e.g. its security_groups)."""
        body: dict[str, Any] = {"network_id": network, "name": name, "device_id": device_id,
                                "device_owner": "compute:nova", "project_id": self.topic, **(attrs or {})}
        if chassis is not None:
            body["binding:host_id"] = chassis
        if mac is not None:
            body["mac_address"] = mac
        if ip is not None:
            body["fixed_ips"] = [{"ip_address": ip}]
        created = await self.neutron("create_port", {"port": body})
        return await self.nb.get_or_raise(LogicalPort.table, created["port"]["id"])

    async def update_port_binding(self, port_id: str, host: str) -> None:
        """PUT /v2.0/ports/{id} with binding:host_id: Nova's post-migration call (step 3)."""
        await self.neutron("update_port", port_id, {"port": {"binding:host_id": host}})

    @property
    def client(self) -> neutron_client.Client:
        """python-neutronclient on the sandbox's API, without Keystone, built as Nova builds it
        (connection failures retried; see novaclient_neutron)."""
        if self._client is None:
            url = self.sandbox.status().get("api_url")
            if not url:
                raise DfflowError(f"the sandbox in {self.sandbox.dir} runs no API")
            # Its constructor logs a deprecation warning on every client (Nova's too): not ours to show.
            quiet = logging.getLogger("neutronclient.v2_0.client")
            level, quiet.level = quiet.level, logging.ERROR
            try:
                self._client = nova_neutron_client(url, timeout=10)
            finally:
                quiet.setLevel(level)
        return self._client

    async def neutron(self, call: str, *args: Any, **params: Any) -> Any:
        """One python-neutronclient call (in a thread); a Neutron error becomes a DfflowError with its
        status code and message (`status_code` kept on it)."""
        method: Callable[..., Any] = getattr(self.client, call)
        try:
            return await asyncio.to_thread(method, *args, **params)
        except neutron_exc.NeutronClientException as exc:
            raise api_refusal(call, exc.status_code, str(exc)) from None

    @property
    def service(self) -> NeutronService:
        """The API's operations in this process, over the sandbox's NB db."""
        if self._service is None:
            self._service = NeutronService(self.nb, default_project=self.topic)
        return self._service

    async def _api(self, call: str, *args: Any, **params: Any) -> Any:
        """One of the API service's operations; its refusal becomes a DfflowError as `neutron` makes it."""
        try:
            return await getattr(self.service, call)(*args, **params)
        except ApiError as exc:
            raise api_refusal(f"{call} {args[0] if args else ''}".strip(), exc.status, exc.message) from None

    @property
    def nova_events(self) -> NovaEvents:
        """The sandbox's Nova, where Neutron's network-vif-plugged events arrive."""
        url = self.sandbox.nova_url
        if not url:
            raise DfflowError(f"the sandbox in {self.sandbox.dir} runs no Nova API")
        return NovaEvents(url)

    async def create_vm(self, name: str, chassis: str, network: str, ip: str | None = None,
                        mac: str | None = None, port_attrs: dict[str, Any] | None = None) -> Vm:
        """Nova's boot: Neutron creates and binds the port; the VM's tap is made; os-vif plugs it from
        the port's binding; Nova waits for network-vif-plugged (VifPluggingFailed after
        `vif_plugging_timeout`: the VM and its port are removed)."""
        ch = self.sandbox.chassis(chassis)  # fail before writing anything
        vm_uuid = str(uuid.uuid4())
        port = await self.create_port(network, chassis, ip, name=f"{name}-port", device_id=vm_uuid, mac=mac,
                                      attrs=port_attrs)
        subnet = await self._subnet(network)
        try:
            shown = (await self.neutron("show_port", port.id))["port"]
            switch = await self.nb.get_or_raise(LogicalSwitch.table, network)
            vif = vif_spec(port.id, port.mac, network, port_binding(shown), mtu=switch.mtu)
            vm = self.sandbox.plug_vm(name, chassis, port.id, port.mac,
                                      ip=f"{port.ips[0]}/{subnet.network.prefixlen}",
                                      gateway=subnet.gateway_ip, vm_uuid=vm_uuid, ovs_port=False)
            # _create_guest_with_network: the wait is prepared before the plug, then waited for
            events = self.nova_events
            cursor = await events.cursor()
            host = await asyncio.to_thread(OsVifHost, self.sandbox, ch.name)
            try:
                await host.acall("plug", vif, self.instance_info(vm))
            finally:
                host.close()
            await events.wait_vif_plugged(vm.uuid, port.id, chassis, cursor, self.vif_plugging_timeout,
                                          f"boot of {name} on {chassis} (Virtual Interface creation failed)")
            return vm
        except Exception:
            if any(v.name == name for v in self.sandbox.vms()):
                self.sandbox.unplug_vm(name)
            await self.neutron("delete_port", port.id)  # Nova's clean-up of a failed boot (status included)
            raise

    def instance_info(self, vm: Vm) -> dict[str, Any]:
        """os-vif's InstanceInfo of a sandbox VM, as Nova converts its instance."""
        return {"uuid": vm.uuid, "name": vm.name, "project_id": self.topic}

    async def delete_vm(self, name: str) -> None:
        """The VM's VIFs unplugged and its namespace gone; then its ports deleted through Neutron (their
        status with them)."""
        vm = self.sandbox.vm(name)
        port_ids = {vif.port_id for vif in vm.vifs}
        self.sandbox.unplug_vm(name)
        for port_id in sorted(port_ids):
            try:
                await self.neutron("delete_port", port_id)
            except DfflowError as exc:
                if getattr(exc, "status_code", None) != 404:
                    raise

    # -- routers and floating IPs ---------------------------------------------------
    async def create_router(self, name: str, networks: list[str], external: str | None = None) -> LogicalRouter:
        """A router with an interface on each network's subnet (at its gateway IP) and an optional
        gateway on an external network; nothing of it stays if an interface is refused."""
        body: dict[str, Any] = {"name": name}
        if external is not None:
            await self._subnet(external)
            body["external_gateway_info"] = {"network_id": external}
        subnets = [await self._subnet(network) for network in networks]
        await self._api("create", "routers", body, obj_id=name)
        try:
            for subnet in subnets:
                await self._api("add_router_interface", name, {"subnet_id": subnet.id})
        except Exception:
            await self.nb.delete(LogicalRouter.table, name)
            raise
        return await self.nb.get_or_raise(LogicalRouter.table, name)

    async def add_router_interface(self, router: str, network: str) -> LogicalRouter:
        subnet = await self._subnet(network)
        await self._api("add_router_interface", router, {"subnet_id": subnet.id})
        return await self.nb.get_or_raise(LogicalRouter.table, router)

    async def remove_router_interface(self, router: str, network: str) -> LogicalRouter:
        subnet = await self._subnet(network)
        current = await self.nb.get_or_raise(LogicalRouter.table, router)
        if subnet.id not in {p.subnet for p in current.ports}:
            raise ValidationError("network", f"router {router!r} has no interface on {network!r}")
        await self._api("remove_router_interface", router, {"subnet_id": subnet.id})
        return await self.nb.get_or_raise(LogicalRouter.table, router)

    async def create_floating_ip(self, vm: str, external: str | None = None) -> FloatingIP:
        """A floating IP on the external network of the router that serves the VM's subnet."""
        port_id = self.sandbox.vm(vm).vifs[0].port_id
        port = await self.nb.get_or_raise(LogicalPort.table, port_id)
        subnet = await self._subnet(port.lswitch)
        routers = [r for r in await self.nb.list(LogicalRouter.table)
                   if subnet.id in {p.subnet for p in r.ports} and r.external_gateway is not None
                   and (external is None or r.external_gateway.lswitch == external)]
        if not routers:
            raise ValidationError("vm", f"no router with an external gateway serves {vm}'s subnet")
        fip_id = f"fip-{vm}-{uuid.uuid4().hex[:8]}"
        await self._api("create", "floatingips", {"floating_network_id": routers[0].external_gateway.lswitch,
                                                  "port_id": port.id}, obj_id=fip_id)
        return await self.nb.get_or_raise(FloatingIP.table, fip_id)

    async def disassociate_floating_ip(self, fip_id: str) -> FloatingIP:
        await self._api("update", "floatingips", fip_id, {"port_id": None})
        return await self.nb.get_or_raise(FloatingIP.table, fip_id)

    async def delete_floating_ip(self, fip_id: str) -> None:
        await self._api("delete", "floatingips", fip_id)

    async def vm_rows(self) -> list[dict[str, Any]]:
        rows = []
        for vm in self.sandbox.vms():
            first = vm.vifs[0] if vm.vifs else None
            port = await self.nb.get(LogicalPort.table, first.port_id) if first else None
            rows.append({"name": vm.name, "chassis": first.chassis if first else None,
                         "network": port.lswitch if port else None, "ip": port.ips[0] if port else None,
                         "mac": port.mac if port else None, "port_id": first.port_id if first else None,
                         "binding": port.binding_chassis if port else None, "namespace": vm.namespace})
        return rows


def api_refusal(call: str, status: int, message: str) -> DfflowError:
    """A Neutron API error (from python-neutronclient, or the API service in this process) as a
    DfflowError (a Conflict for a 409) with its status code kept as `status_code`."""
    error = (Conflict if status == 409 else DfflowError)(f"Neutron API {call}: {status} {message}")
    error.status_code = status  # type: ignore[attr-defined]
    return error
