"""A multi-chassis Open vSwitch sandbox on one machine: the real thing, no mocks.

Layout (N chassis, sandbox id ``<sbid>`` derived from the sandbox dir, see names.py)::

    netns <sbid>-ul          Linux bridge <sbid>-br  (the underlay L2 segment, 172.31.0.0/24)
       │ veth <sbid>-uN ─── <sbid>-cN
    netns <sbid>-chN         ovsdb-server + ovs-vswitchd (private rundir <dir>/<chassis>/ovs)
                             br-phy (netdev): port <sbid>-cN, internal port has 172.31.0.N/24, MAC 0a:df:00:00:00:NN
                             br-int (netdev, fail_mode=secure, OF13+OF14): VIF taps, tunnel ports (controller's job)
       │ veth tapXXXX ─── eth0
    netns <sbid>-vm-NAME     the VM: eth0 with MAC/IP, MTU 1400, tx checksum offload off

Facts of this machine that shape it (see DESIGN.md, "The sandbox"):

* There is no OVS kernel module: every bridge is ``datapath_type=netdev`` and
  tunnels are done in userspace. Userspace tunnelling sends encapsulated
  packets through the bridge that owns the tunnel's local IP (``br-phy``), so
  the underlay IP sits on br-phy's internal port and the veth is a plain port
  of br-phy without an IP. OVS finds the route (``ovs/route/show``) from the
  kernel routing table of the namespace vswitchd runs in; we check it and add
  it by hand if missing.
* OVS resolves the tunnel next hop by its own ARP (waiting ~1 s for the first
  packet); every chassis is pre-seeded with ``tnl/arp/set br-phy <peer IP>
  <peer br-phy MAC>``, which is why br-phy MACs are fixed (other_config:hwaddr).
  Pre-seeded entries age like learnt ones, so ``tnl/neigh/aging`` is raised
  to OVS's maximum (3600 s); after that OVS simply ARPs again.
* ``arp_ignore=1`` in every chassis namespace: otherwise the chassis kernel
  also answers underlay ARP on the veth (which OVS owns) with the veth's MAC,
  OVS then sends Geneve to a MAC nobody forwards to, and VMs are unreachable
  for tens of seconds, intermittently.
* VM interfaces get ``ethtool -K <if> tx off``: veths leave TCP/UDP checksums
  partial, the userspace datapath forwards them as they are and the receiver
  drops them (ping works, TCP does not). Geneve costs 50 bytes: MTU 1400.
* IPv6 is disabled in chassis and VM namespaces (unless asked for on a VM):
  router solicitations, MLD and DAD would otherwise reach br-int and the
  controller as unexplained noise, and a 2-core machine saturates quickly.
* Stopping an ovs-vswitchd takes ~1.7 s: `down` signals every daemon first
  and then waits for all of them.

How controllers reach OVS and the NB database across namespaces
----------------------------------------------------------------
OVS must run inside its chassis namespace (it owns that chassis' interfaces),
but each namespace has its own loopback: ``tcp:127.0.0.1:PORT`` seen from a
chassis namespace is not the root namespace's 127.0.0.1. Unix sockets have no
such problem: they are file-system paths and connect across network
namespaces. So, by default (``of_transport="unix"``):

* every controller runs in the **root** namespace (an ordinary process: easy
  to debug, reaches any NB URL the user gives, its CPU time is not in a
  chassis namespace's accounting);
* it reaches OVSDB through the chassis' ``unix:<rundir>/db.sock``;
* it listens for OpenFlow on ``unix:<dir>/<chassis>/ovs/openflow.sock``
  (``--of-listen unix:PATH``; it must sit in OVS_RUNDIR: OVS refuses a socket
  controller anywhere else), and br-int's controller target is that same
  path (``set-controller br-int unix:PATH``: OVS connects actively, as it does
  to ``tcp:``), so no port numbers are allocated at all and nothing races for
  them;
* the sandbox's redis-server listens on a loopback TCP port *and* on
  ``<dir>/redis/redis.sock``; the NB URL given to controllers is the
  ``unix://`` one, which works from any namespace.

``of_transport="tcp"`` is the alternative for a controller that only speaks
TCP: each controller then runs *inside* its chassis namespace (``ip netns
exec``), listens on ``127.0.0.1:6653`` of that namespace (every namespace has
a private loopback, so the same port never collides) and OVS connects to
``tcp:127.0.0.1:6653``. Its NB URL must then be reachable from inside a
namespace, i.e. a ``unix://`` URL (the default sandbox redis gives one).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import os
import shutil
import time
from dataclasses import asdict
from typing import Any, Iterator, Sequence

from dfflow.sandbox.ovsproc import OvsInstance

from . import health
from . import names as nm
from . import netns, neutronproc, nova_events, preflight, procs, state
from .netns import SandboxError
from .daemons import SandboxDaemons
from .records import (API_DFFLOW, API_NEUTRON, CHASSIS_SYSCTLS, DATAPATH_TYPE, DEFAULT_DIR, HEALTHY_WITHIN,
                      INT_BRIDGE, NB_SENTINEL, PHY_BRIDGE, STATE_VERSION, TNL_NEIGH_AGING, UNDERLAY_SYSCTLS,
                      UNIX_PATH_MAX, Chassis, Vif, Vm, _chassis_from, _vm_from, default_controller_cmd)
from .redisproc import RedisServer
from .sentinelproc import SentinelNb
from .vms import SandboxVms

__all__ = ["Chassis", "Sandbox", "SandboxError", "Vif", "Vm", "API_DFFLOW", "API_NEUTRON", "DATAPATH_TYPE",
           "DEFAULT_DIR", "INT_BRIDGE", "NB_SENTINEL"]

# ------------------------------------------------------------------------------------------------
# The sandbox
# ------------------------------------------------------------------------------------------------
class Sandbox(SandboxDaemons, SandboxVms):
    """One sandbox, rooted at `dir`; everything it starts is recorded in ``<dir>/state.json``.

    Several ``Sandbox`` objects (in several processes) may work on the same dir:
    each operation re-reads the state under a lock. Methods that change the
    topology need root.
    """

    def __init__(self, dir: str = DEFAULT_DIR, controller_cmd: Sequence[str] | None = None):
        self.dir = os.path.realpath(dir)
        self.sbid = nm.sandbox_id(self.dir)
        self.names = nm.Names(self.sbid)
        self.controller_cmd = list(controller_cmd) if controller_cmd else None

    # --- state ------------------------------------------------------------------------------------
    def _empty_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "sbid": self.sbid, "dir": self.dir, "phase": "creating",
                "created": time.time(), "namespaces": [], "underlay": None, "nb": None, "redis": None,
                "of_transport": "unix", "chassis": [], "vms": {}}

    def _load(self) -> dict[str, Any] | None:
        return state.load(self.dir)

    @contextlib.contextmanager
    def _txn(self, create: bool = False) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write of the state; written back even if the body fails half-way."""
        with state.locked(self.dir):
            st = self._load()
            if st is None:
                if not create:
                    raise SandboxError(f"no sandbox is up in {self.dir} (run `dfflow sandbox up`)")
                st = self._empty_state()
            try:
                yield st
            finally:
                state.save(self.dir, st)

    @property
    def is_up(self) -> bool:
        st = self._load()
        return bool(st and st.get("phase") == "up")

    def chassis_list(self) -> list[Chassis]:
        st = self._load() or {}
        return [_chassis_from(c) for c in st.get("chassis", [])]

    def chassis(self, name: str | int) -> Chassis:
        """Chassis by name (``chassis-1``) or by 1-based index."""
        for ch in self.chassis_list():
            if ch.name == name or ch.index == name:
                return ch
        raise SandboxError(f"no chassis {name!r} in sandbox {self.dir}")

    def ovs(self, chassis: str | int) -> OvsInstance:
        """The chassis' OVS: use its vsctl/ofctl/appctl (every chassis has a br-int)."""
        return self.chassis(chassis).ovs()

    def vms(self) -> list[Vm]:
        st = self._load() or {}
        return [_vm_from(v) for v in st.get("vms", {}).values()]

    def vm(self, name: str) -> Vm:
        st = self._load() or {}
        if name not in st.get("vms", {}):
            raise SandboxError(f"no VM {name!r} in sandbox {self.dir}")
        return _vm_from(st["vms"][name])

    @property
    def nb_url(self) -> str | None:
        st = self._load() or {}
        return (st.get("nb") or {}).get("url")

    @property
    def nova_url(self) -> str | None:
        """The sandbox's Nova API (compute endpoint, `.../v2.1`): where Neutron sends its events."""
        st = self._load() or {}
        return (st.get("nova") or {}).get("url")

    # --- up ---------------------------------------------------------------------------------------
    def up(self, chassis: int = 2, names: Sequence[str] | None = None, nb_url: str | None = None,
           controllers: bool = True, of_transport: str = "unix",
           controller_args: Sequence[str] | None = None, neutron: bool = False,
           neutron_url: str | None = None, nova_url: str | None = None) -> dict[str, Any]:
        """Build the sandbox; returns `status()`. On failure everything built so far is removed.

        `controller_args` are appended to every controller's command line (e.g. the benchmark
        switches ``--flow-path osken --no-bundle``); they are kept in the state, so `start_controller`
        uses them too until `set_controller_args` changes them.

        The cloud's API is `dfflow api`; with `neutron`, a neutron-server with the dfflow driver started
        for the sandbox (MariaDB and gunicorn in <dir>/neutron; its Nova notifier sends to `nova_url`,
        or to the sandbox's Nova events URL when it has one); with `neutron_url`, a running one that
        writes to the NB db `nb_url`."""
        names = list(names) if names else [f"chassis-{i}" for i in range(1, chassis + 1)]
        for n in names:
            nm.check_name("chassis", n)
        if len(set(names)) != len(names) or not 1 <= len(names) <= nm.MAX_CHASSIS:
            raise SandboxError(f"need 1..{nm.MAX_CHASSIS} distinct chassis names, got {names}")
        if of_transport not in ("unix", "tcp"):
            raise SandboxError(f"of_transport must be 'unix' or 'tcp', not {of_transport!r}")
        if controllers and of_transport == "tcp" and nb_url and not nb_url.startswith("unix:"):
            raise SandboxError("with of_transport=tcp controllers run inside chassis namespaces, whose "
                               "loopback is not the root one: give a unix:// NB URL or use of_transport=unix")
        preflight.check(need_redis=nb_url in (None, NB_SENTINEL))
        if neutron_url is not None and nb_url in (None, NB_SENTINEL):
            raise SandboxError("neutron_url: a running neutron-server writes to its own NB db: give that as nb_url")
        if neutron and neutron_url is None and neutronproc.missing():
            raise SandboxError("cannot run neutron-server: " + "; ".join(neutronproc.missing()))
        api = {"kind": API_NEUTRON, "url": neutron_url, "external": neutron_url is not None,
               "nova_url": nova_url} if neutron or neutron_url else {"kind": API_DFFLOW}
        cmd = (self.controller_cmd or default_controller_cmd()) if controllers else None
        if cmd is not None and shutil.which(cmd[0]) is None:
            raise SandboxError(f"controller command {cmd[0]!r} not found")
        self._check_path_lengths(names)
        with state.locked(self.dir, state.UP_LOCK_FILE):
            self._clear_stale()
            try:
                self._build(names, nb_url, cmd, of_transport, list(controller_args or []), api)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.down()
                raise
        return self.status()

    def _check_path_lengths(self, names: Sequence[str]) -> None:
        longest = max(len(os.path.join(self.dir, n, "ovs", "openflow.sock")) for n in names)
        longest = max(longest, len(os.path.join(self.dir, "redis", "redis.sock")))
        if longest > UNIX_PATH_MAX:
            raise SandboxError(f"sandbox dir {self.dir} is too long for unix socket paths "
                               f"({longest} > {UNIX_PATH_MAX} bytes): use a shorter --dir")

    def _clear_stale(self) -> None:
        """Refuse to build over a live sandbox; clean up after a dead one."""
        st = self._load()
        leftovers = [ns for ns in netns.list_netns() if ns.startswith(self.names.prefix)]
        if st is None and not leftovers:
            return
        if st is not None and self._anything_alive(st):
            raise SandboxError(f"a sandbox is already up in {self.dir}: run `dfflow sandbox down --dir {self.dir}`")
        self.down()

    def _anything_alive(self, st: dict[str, Any]) -> bool:
        for c in st.get("chassis", []):
            ch = _chassis_from(c)
            if any(procs.alive(p) for p in self._ovs_pids(ch.rundir)):
                return True
            if procs.same_process(ch.controller_pid, ch.controller_starttime) or \
                    procs.same_process(ch.supervisor_pid, ch.supervisor_starttime):
                return True
        if st.get("redis") and RedisServer.from_state(st["redis"]).running():
            return True
        if st.get("nb_sentinel") and SentinelNb.from_state(st["nb_sentinel"]).pids():
            return True
        return bool(neutronproc.running_in(self.neutron_dir))

    def _build(self, names: list[str], nb_url: str | None, cmd: list[str] | None, of_transport: str,
               controller_args: list[str] | None = None, api: dict[str, Any] | None = None) -> None:
        os.makedirs(self.dir, exist_ok=True)
        n = self.names
        chs = [self._new_chassis(i, name) for i, name in enumerate(names, start=1)]
        for ch in chs:  # fresh databases and logs for a fresh sandbox
            shutil.rmtree(ch.dir, ignore_errors=True)
            os.makedirs(ch.dir)
        with self._txn(create=True) as st:
            st.update(self._empty_state())
            st["of_transport"] = of_transport
            st["controller_args"] = list(controller_args or [])
            st["underlay"] = {"namespace": n.underlay_ns, "bridge": n.underlay_bridge,
                              "cidr": f"{nm.UNDERLAY_NET}.0/{nm.UNDERLAY_PREFIXLEN}"}
            st["chassis"] = [asdict(ch) for ch in chs]
            st["namespaces"] = [n.underlay_ns] + [ch.namespace for ch in chs]

        # NB database first: the controllers need it, and it is independent of the network.
        if nb_url == NB_SENTINEL:
            self._start_sentinel_nb()
        elif nb_url is None:
            # The NB survives a restart of its redis-server: an empty NB after one would hand out
            # VNIs, MACs and IPs again that running VMs still use.
            redis = RedisServer(os.path.join(self.dir, "redis"), persistent=True, appendfsync="everysec")
            shutil.rmtree(redis.dir, ignore_errors=True)
            with self._txn() as st:
                st["redis"] = redis.to_state()
            redis.start()
            with self._txn() as st:
                st["redis"] = redis.to_state()
                st["nb"] = {"url": redis.unix_url, "tcp_url": redis.url, "external": False}
        else:
            with self._txn() as st:
                st["nb"] = {"url": nb_url, "tcp_url": None, "external": True}

        self._start_nova()
        if (api or {}).get("kind") == API_NEUTRON:
            self._start_neutron(api)
        else:
            self._start_api()
        self._build_underlay(chs)
        # OVS start-up and configuration is mostly waiting on daemons: do the chassis in parallel.
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(chs))) as pool:
            for fut in [pool.submit(self._build_chassis, ch, chs) for ch in chs]:
                fut.result()
        if cmd is not None:
            for ch in chs:
                self._start_controller(ch.name, cmd, of_transport)
            # a cloud: nova-compute's os-vif runs on every chassis from the start, as on compute hosts
            for ch in chs:
                self._start_osvif(ch.name)
            if self.controller_cmd is None:  # dfflow-controller: it answers on its status socket
                started = [self.chassis(ch.name) for ch in chs]
                problems = health.wait_healthy(started, HEALTHY_WITHIN)
                if problems:
                    raise SandboxError(f"{len(problems)} of {len(chs)} controllers not healthy "
                                       f"{HEALTHY_WITHIN:g} s after start-up:\n{health.describe(problems, started)}")
            for ch in chs:
                self._wait_osvif(self.chassis(ch.name))
        with self._txn() as st:
            st["phase"] = "up"


    def _new_chassis(self, index: int, name: str) -> Chassis:
        n = self.names
        return Chassis(name=name, index=index, namespace=n.chassis_ns(index), tunnel_ip=nm.tunnel_ip(index),
                       phy_mac=nm.phy_mac(index), int_mac=nm.int_mac(index),
                       dir=os.path.join(self.dir, name), uplink=n.chassis_uplink(index),
                       underlay_port=n.underlay_port(index))

    def _build_underlay(self, chs: list[Chassis]) -> None:
        n = self.names
        ul = n.underlay_ns
        netns.add(ul)
        netns.sh(ul, netns.sysctl_script(UNDERLAY_SYSCTLS))
        cmds = ["link set lo up",
                f"link add name {n.underlay_bridge} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
                f"link set {n.underlay_bridge} up"]
        for ch in chs:
            netns.add(ch.namespace)
            # sysctls before any interface exists, so that `default` applies to all of them
            netns.sh(ch.namespace, netns.sysctl_script(CHASSIS_SYSCTLS) + "\nip link set lo up")
            # the veth is created in the underlay ns with its peer directly in the chassis ns:
            # no interface of ours ever exists in the root namespace
            cmds += [f"link add {ch.underlay_port} type veth peer name {ch.uplink} netns {ch.namespace}",
                     f"link set {ch.underlay_port} master {n.underlay_bridge}",
                     f"link set {ch.underlay_port} up"]
        netns.batch(ul, cmds)

    def _build_chassis(self, ch: Chassis, all_chassis: list[Chassis]) -> None:
        netns.batch(ch.namespace, [f"link set {ch.uplink} up"])
        ovs = ch.ovs()
        try:
            ovs.start()
        finally:  # record what did start, even if start() failed half-way
            ch.ovs_pids = {d: [pid, procs.starttime(pid)] for d in ("ovsdb-server", "ovs-vswitchd")
                           if (pid := ovs.pid(d))}
            self._save_chassis(ch)
        prefix = f"{nm.UNDERLAY_NET}.0/{nm.UNDERLAY_PREFIXLEN}"
        ovs.vsctl(
            "--", "set", "Open_vSwitch", ".", f"external_ids:system-id={ch.name}",
            f"external_ids:hostname={ch.name}", f"external_ids:dfflow-tunnel-ip={ch.tunnel_ip}",
            "--", "add-br", PHY_BRIDGE,
            "--", "set", "Bridge", PHY_BRIDGE, f"datapath_type={DATAPATH_TYPE}", f'other_config:hwaddr="{ch.phy_mac}"',
            "other_config:disable-in-band=true",
            "--", "add-port", PHY_BRIDGE, ch.uplink,
            "--", "add-br", INT_BRIDGE,
            "--", "set", "Bridge", INT_BRIDGE, f"datapath_type={DATAPATH_TYPE}", "fail_mode=secure",
            "protocols=OpenFlow13,OpenFlow14", f'other_config:hwaddr="{ch.int_mac}"',
            "other_config:disable-in-band=true",
        )
        # the underlay IP lives on br-phy's internal port (OVS created it in this namespace)
        netns.batch(ch.namespace, [f"addr add {ch.tunnel_ip}/{nm.UNDERLAY_PREFIXLEN} dev {PHY_BRIDGE}",
                                   f"link set {PHY_BRIDGE} up"])
        self._ensure_ovs_route(ovs, prefix)
        # pre-seeded entries are ordinary cache entries that age out (900 s by default): keep them for
        # the longest time OVS allows; after that OVS ARPs for the peer itself (safe with arp_ignore=1)
        ovs.appctl("tnl/neigh/aging", str(TNL_NEIGH_AGING), check=False)
        for peer in all_chassis:
            if peer.name != ch.name:
                ovs.appctl("tnl/arp/set", PHY_BRIDGE, peer.tunnel_ip, peer.phy_mac)

    @staticmethod
    def _ensure_ovs_route(ovs: OvsInstance, prefix: str, timeout: float = 3.0) -> None:
        """OVS learns routes from the kernel of its namespace; wait for the underlay one, else add it."""
        deadline = time.monotonic() + timeout
        while True:
            if any(prefix in line and PHY_BRIDGE in line for line in ovs.appctl("ovs/route/show").splitlines()):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        ovs.appctl("ovs/route/add", prefix, PHY_BRIDGE)

    def allocate_vni(self, used: set[int], first: int = 101) -> int:
        """A VNI above every one in `used` and every one this sandbox handed out before. The high-water
        mark lives in the sandbox's state, outside the NB: an NB that lost its data must never give a
        new network a VNI that flows of an old one may still carry (tenant isolation)."""
        with self._txn() as st:
            vni = max([first - 1, int(st.get("vni_high_water") or 0), *used]) + 1
            st["vni_high_water"] = vni
        return vni


    # --- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Everything a tool needs to talk to this sandbox (JSON-serialisable)."""
        st = self._load()
        if st is None:
            return {"sandbox_id": self.sbid, "dir": self.dir, "phase": "down", "nb_url": None,
                    "nb_tcp_url": None, "underlay": None, "of_transport": None, "chassis": [], "vms": [],
                    "namespaces": [ns for ns in netns.list_netns() if ns.startswith(self.names.prefix)]}
        chassis = []
        for c in st.get("chassis", []):
            ch = _chassis_from(c)
            ovs = ch.ovs()
            vswitchd, ovsdb = ovs.pid("ovs-vswitchd"), ovs.pid("ovsdb-server")
            supervised = ch.supervised()
            controller_pid, controller_start = ch.controller_now()
            chassis.append({
                "name": ch.name, "index": ch.index, "namespace": ch.namespace, "tunnel_ip": ch.tunnel_ip,
                "bridge": INT_BRIDGE, "phy_bridge": PHY_BRIDGE, "phy_mac": ch.phy_mac, "int_mac": ch.int_mac,
                "ovs_rundir": ch.rundir, "ovsdb": ovs.db_sock, "ovsdb_url": ovs.ovsdb_url,
                "unixctl": ovs.vswitchd_ctl, "ovsdb_unixctl": ovs.ovsdb_ctl,
                "ovs_vswitchd_pid": vswitchd, "ovsdb_server_pid": ovsdb,
                "ovs_alive": procs.alive(vswitchd) and procs.alive(ovsdb),
                "of_listen": ch.of_listen or None, "of_target": ch.of_target or None, "of_port": ch.of_port,
                "controller_pid": controller_pid,
                "controller_alive": procs.same_process(controller_pid, controller_start),
                "controller_supervised": bool(supervised), "controller_restarts": supervised.get("restarts", 0),
                "controller_last_exit": supervised.get("last_exit"),
                "controller_last_exit_at": supervised.get("last_exit_at"),
                "controller_log": ch.controller_log, "status_socket": ch.status_socket, "dir": ch.dir,
                "osvif_pid": ch.osvif_pid, "osvif_alive": procs.same_process(ch.osvif_pid, ch.osvif_starttime),
                "osvif_socket": ch.osvif_socket,
            })
        vms = []
        for v in st.get("vms", {}).values():
            vm = _vm_from(v)
            first = vm.vifs[0] if vm.vifs else None
            vms.append({
                "name": vm.name, "namespace": vm.namespace, "uuid": vm.uuid, "gateway": vm.gateway,
                "chassis": first.chassis if first else None, "mac": first.mac if first else None,
                "ip": first.ip if first else None, "port_id": first.port_id if first else None,
                "ifname": first.ifname if first else None, "tap": first.tap if first else None,
                "vifs": [asdict(x) for x in vm.vifs],
            })
        nb = st.get("nb") or {}
        return {"sandbox_id": self.sbid, "dir": self.dir, "phase": st.get("phase"),
                "nb_url": nb.get("url"), "nb_tcp_url": nb.get("tcp_url"), "nb_external": nb.get("external"),
                "redis_pid": (st.get("redis") or {}).get("pid"), "underlay": st.get("underlay"),
                "api_url": (st.get("api") or {}).get("url"), "api_pid": (st.get("api") or {}).get("pid"),
                "nova_url": (st.get("nova") or {}).get("url"), "nova_pid": (st.get("nova") or {}).get("pid"),
                "api_kind": (st.get("api") or {}).get("kind", API_DFFLOW), "neutron": self._neutron_status(st),
                "of_transport": st.get("of_transport"), "chassis": chassis, "vms": vms,
                "namespaces": list(st.get("namespaces", []))}

    @staticmethod
    def _neutron_status(st: dict[str, Any]) -> dict[str, Any] | None:
        if st.get("neutron"):
            server = neutronproc.NeutronServer.from_state(st["neutron"])
            return {**st["neutron"], "alive": server.alive()}
        api = st.get("api") or {}
        return {"url": api["url"], "external": True} if api.get("kind") == API_NEUTRON else None

    # --- down -------------------------------------------------------------------------------------
    def _ovs_pids(self, rundir: str) -> list[int]:
        """PIDs from the rundir's pidfiles that really are daemons using those pidfiles."""
        found = []
        for pidfile in glob.glob(os.path.join(rundir, "*.pid")):
            pid = procs.read_pidfile(pidfile)
            if pid and procs.alive(pid) and any(pidfile in a for a in procs.cmdline(pid)):
                found.append(pid)
        return found

    def down(self, timeout: float = 5.0) -> dict[str, Any]:
        """Remove everything this sandbox started; safe to call any number of times, and after a crash.

        What is ours comes from three sources, so that a lost or stale state file
        is not a problem: the state (controller and redis PIDs checked against
        their start times), OVS pidfiles under the dir (checked against the
        daemon's command line), and every namespace named ``<sbid>-*`` together
        with every process inside it. All processes are signalled at once and
        waited for together; then namespaces go (VMs, chassis, underlay), which
        takes every interface we made with them.
        """
        with state.locked(self.dir):
            st = self._load() or {}
            victims: set[int] = set()
            redis = RedisServer.from_state(st["redis"]) if st.get("redis") else None
            if redis is not None and redis.running():
                victims.add(redis.pid)  # type: ignore[arg-type]
            if st.get("nb_sentinel"):
                victims.update(SentinelNb.from_state(st["nb_sentinel"]).pids())
            sentinel_dir = os.path.join(self.dir, "nb-sentinel") + os.sep
            victims.update(procs.find(lambda pid: procs.comm(pid) in ("redis-server", "redis-sentinel")
                                      and (procs.cwd(pid) or "").startswith(sentinel_dir)))
            api = st.get("api") or {}
            if procs.same_process(api.get("pid"), api.get("starttime")):
                victims.add(api["pid"])
            nova = st.get("nova") or {}
            if procs.same_process(nova.get("pid"), nova.get("starttime")):
                victims.add(nova["pid"])
            victims.update(procs.find(lambda pid: nova_events.is_ours(pid, self.dir)))
            victims.update(neutronproc.running_in(self.neutron_dir))  # MariaDB, gunicorn and its workers
            rundirs = {os.path.join(self.dir, c["name"], "ovs") for c in st.get("chassis", [])}
            rundirs |= {os.path.dirname(p) for p in glob.glob(os.path.join(self.dir, "*", "ovs", "*.pid"))}
            for c in st.get("chassis", []):
                ch = _chassis_from(c)
                for pid, start in [ch.controller_now(), (ch.controller_pid, ch.controller_starttime),
                                   (ch.supervisor_pid, ch.supervisor_starttime), (ch.osvif_pid, ch.osvif_starttime),
                                   *ch.ovs_pids.values()]:
                    if procs.same_process(pid, start):
                        victims.add(pid)  # type: ignore[arg-type]
            for rundir in rundirs:
                victims.update(self._ovs_pids(rundir))
            # without (or with a stale) state: our redis is the redis-server working in <dir>/redis, our
            # controllers are the processes told to use one of our OVSDB sockets
            victims.update(procs.find(lambda pid: procs.comm(pid) == "redis-server"
                                      and procs.cwd(pid) == os.path.join(self.dir, "redis")))
            # our Neutron API is the `dfflow.cli api` working in <dir>
            victims.update(procs.find(lambda pid: procs.cwd(pid) == self.dir
                                      and procs.cmdline(pid)[1:4] == ["-m", "dfflow.cli", "api"]))
            dbsocks = tuple(f"unix:{os.path.join(r, 'db.sock')}" for r in rundirs)
            if dbsocks:
                victims.update(procs.find(lambda pid: "--ovsdb" in (argv := procs.cmdline(pid))
                                          and any(a in dbsocks for a in argv)))
            namespaces = set(st.get("namespaces", []))
            namespaces |= {ns for ns in netns.list_netns() if ns.startswith(self.names.prefix)}
            for ns in namespaces:
                victims.update(netns.pids(ns))
            stopped = procs.terminate_all(victims, timeout)
            # VM namespaces first (their veth peers sit in chassis namespaces), underlay last
            order = sorted(namespaces, key=lambda ns: (0 if "-vm-" in ns else 2 if ns.endswith("-ul") else 1, ns))
            for ns in order:
                netns.delete(ns)
            for rundir in rundirs:  # sockets of dead daemons would only confuse the next reader
                for sock in glob.glob(os.path.join(rundir, "*.sock")) + glob.glob(os.path.join(rundir, "*.ctl")):
                    with contextlib.suppress(OSError):
                        os.unlink(sock)
            if redis is not None and redis.unixsocket:
                with contextlib.suppress(OSError):
                    os.unlink(redis.unixsocket)
            state.remove(self.dir)
        left = [ns for ns in netns.list_netns() if ns.startswith(self.names.prefix)]
        if left:
            raise SandboxError(f"could not delete namespaces {left}")
        return {"stopped_pids": stopped, "deleted_namespaces": order}
