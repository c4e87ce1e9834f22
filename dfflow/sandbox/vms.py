"""A sandbox's VMs: one network namespace each, its VIFs plugged into a chassis' br-int as Nova's
os-vif and QEMU leave them, and commands run inside. A mixin of `topology.Sandbox`, whose state
(`_txn`, `_load`, `chassis`, `names`) it uses."""
from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import uuid as uuidlib
from dataclasses import asdict
from typing import Any, Sequence

from . import names as nm
from . import netns, priorities, procs
from .netns import SandboxError
from .records import INT_BRIDGE, NO_IPV6_SYSCTLS, VM_MTU, Chassis, Vif, Vm


class SandboxVms:
    # --- VMs --------------------------------------------------------------------------------------
    def plug_vm(self, name: str, chassis: str, port_id: str, mac: str, ip: str | None = None,
                gateway: str | None = None, vm_uuid: str | None = None, ifname: str = "eth0",
                mtu: int = VM_MTU, ipv6: bool = False, ovs_port: bool = True) -> Vm:
        """Create VM namespace ``<sbid>-vm-<name>`` and plug its first VIF into `chassis`' br-int.

        `ip` is ``address/prefix``; `gateway` adds a default route. The chassis end
        is plugged like os-vif does it (iface-id, attached-mac, iface-status, vm-uuid); with
        `ovs_port=False` it is left as QEMU leaves its tap, for the caller's os-vif to plug.
        """
        nm.check_name("VM", name)
        nm.check_port_id(port_id)
        nm.check_ifname(ifname)
        self.chassis(chassis)  # fail before creating anything
        ns = self.names.vm_ns(name)
        vm = Vm(name=name, namespace=ns, uuid=vm_uuid or str(uuidlib.uuid4()), gateway=gateway)
        with self._txn() as st:
            if name in st["vms"]:
                raise SandboxError(f"VM {name} exists already in sandbox {self.dir}")
            st["vms"][name] = asdict(vm)
            if ns not in st["namespaces"]:
                st["namespaces"].append(ns)
        try:
            netns.add(ns)
            sysctls = {} if ipv6 else dict(NO_IPV6_SYSCTLS)
            netns.sh(ns, netns.sysctl_script(sysctls) + "\nip link set lo up")
            self.plug_vif(name, chassis, port_id, mac, ifname, up=True, ip=ip, mtu=mtu, ovs_port=ovs_port)
        except BaseException:
            with contextlib.suppress(Exception):
                self.unplug_vm(name)
            raise
        return self.vm(name)

    def plug_vif(self, vm: str, chassis: str, port_id: str, mac: str, ifname: str, up: bool = False,
                 ip: str | None = None, mtu: int = VM_MTU, configure_ip: bool = True,
                 ovs_port: bool = True) -> Vif:
        """Add an interface to an existing VM namespace, plugged into `chassis`' br-int.

        For live-migration emulation: the destination VIF of a VM (same port id and
        MAC, another ifname such as eth1, `up=False`) sits in the same VM namespace
        while the source VIF still carries the traffic.
        """
        nm.check_port_id(port_id)
        nm.check_ifname(ifname)
        ch = self.chassis(chassis)
        vmrec = self.vm(vm)
        if any(v.ifname == ifname for v in vmrec.vifs):
            raise SandboxError(f"VM {vm} has an interface {ifname} already")
        if ip is not None:
            ipaddress.ip_interface(ip)  # validate early
        tap = nm.Names.tap(port_id)
        for other in self.vms():
            for v in other.vifs:
                if v.chassis == ch.name and v.tap == tap:
                    raise SandboxError(f"{ch.name} already has {tap} (VM {other.name} {v.ifname}): "
                                       "port ids must differ in their first 11 characters on one chassis")
        vif = Vif(vm=vm, ifname=ifname, chassis=ch.name, port_id=port_id, mac=mac, tap=tap, ip=ip, mtu=mtu, up=up)
        with self._txn() as st:
            st["vms"][vm]["vifs"].append(asdict(vif))
        try:
            self._create_vif(ch, vmrec, vif, configure_ip, ovs_port)
        except BaseException:
            with contextlib.suppress(Exception):
                self.unplug_vif(vm, ifname)
            raise
        return vif

    def _create_vif(self, ch: Chassis, vmrec: Vm, vif: Vif, configure_ip: bool = True,
                    ovs_port: bool = True) -> None:
        tap, ifname = vif.tap, vif.ifname
        netns.batch(ch.namespace, [
            f"link add {tap} address {nm.tap_mac(vif.port_id, ch.name)} mtu {vif.mtu} type veth "
            f"peer name {ifname} address {vif.mac} mtu {vif.mtu} netns {vmrec.namespace}",
            f"link set {tap} up"])
        script = [f"ethtool -K {ifname} tx off >/dev/null"]
        if vif.ip and configure_ip:  # (a migration's destination VIF gets it at the switchover)
            script.append(f"ip addr add {vif.ip} dev {ifname}")
        if vif.up:
            script.append(f"ip link set {ifname} up")
            if vmrec.gateway and not vmrec.vifs:
                script.append(f"ip route add default via {vmrec.gateway} dev {ifname}")
        netns.sh(vmrec.namespace, "\n".join(script))
        if not ovs_port:
            return
        ch.ovs().vsctl(
            "--", "--may-exist", "add-port", INT_BRIDGE, tap,
            "--", "set", "Interface", tap, f"external_ids:iface-id={vif.port_id}",
            f'external_ids:attached-mac="{vif.mac}"', "external_ids:iface-status=active",
            f"external_ids:vm-uuid={vmrec.uuid}")

    def unplug_vif(self, vm: str, ifname: str) -> None:
        """Nova's post-migration unplug: del-port from br-int, then the veth goes away."""
        vif = self.vm(vm).vif(ifname)
        ch = self.chassis(vif.chassis)
        ch.ovs().vsctl("--if-exists", "del-port", INT_BRIDGE, vif.tap, check=False)
        netns.run(["ip", "-n", ch.namespace, "link", "del", vif.tap], check=False)
        with self._txn() as st:
            rec = st["vms"].get(vm)
            if rec:
                rec["vifs"] = [v for v in rec["vifs"] if v["ifname"] != ifname]

    def set_vif_up(self, vm: str, ifname: str, up: bool = True) -> None:
        vmrec = self.vm(vm)
        vmrec.vif(ifname)
        netns.batch(vmrec.namespace, [f"link set {ifname} {'up' if up else 'down'}"])
        with self._txn() as st:
            for v in st["vms"][vm]["vifs"]:
                if v["ifname"] == ifname:
                    v["up"] = up

    def unplug_vm(self, name: str) -> None:
        """Unplug every VIF of the VM, end the processes in its namespace, delete the namespace."""
        vmrec = self.vm(name)
        for vif in vmrec.vifs:
            self.unplug_vif(name, vif.ifname)
        procs.terminate_all(netns.pids(vmrec.namespace), timeout=2.0)
        netns.delete(vmrec.namespace)
        with self._txn() as st:
            st["vms"].pop(name, None)
            with contextlib.suppress(ValueError):
                st["namespaces"].remove(vmrec.namespace)

    def vm_argv(self, vm: str, argv: Sequence[str]) -> list[str]:
        return netns.exec_argv(self.vm(vm).namespace, list(argv))

    def vm_exec(self, vm: str, argv: Sequence[str], check: bool = True, timeout: float | None = 30.0,
                **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command in the VM's namespace (output captured as text unless told otherwise)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.vm_argv(vm, argv), check=check, timeout=timeout, **kwargs)

    def vm_popen(self, vm: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """A guest's process in the VM's namespace, at a guest's niceness whatever this process' is
        (a benchmark drives Nova's calls at a lower priority: see priorities.py)."""
        kwargs.setdefault("preexec_fn", priorities.as_guest)
        return subprocess.Popen(self.vm_argv(vm, argv), **kwargs)
