"""The sandbox substrate on real OVS, real namespaces and real packets (no controller yet).

The data plane is hand-written here (Geneve ports and static flows), so a
failure points at the substrate: namespaces, veths, br-phy/br-int, userspace
tunnelling, tunnel ARP pre-seeding, VM interface settings, process
bookkeeping and teardown.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from dfflow.sandbox import names as nm
from dfflow.sandbox import netns, preflight, procs, slices
from dfflow.sandbox.redisproc import RedisServer
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.ovsproc import OVS_NICENESS
from dfflow.sandbox.topology import INT_BRIDGE, Sandbox

from sandbox_fixtures import (add_geneve_mesh, ofport, ping, require_substrate,  # noqa: F401
                              sandbox2, sandbox_factory, tcp_transfer, wait_for, wire_vms)

CLI = [sys.executable, "-m", "dfflow.sandbox.cli"]
FAKE_CONTROLLER = [sys.executable, "-c",
                   "import sys, time; print('fake-controller', *sys.argv[1:], flush=True); time.sleep(600)"]


def ours(sb: Sandbox) -> list[str]:
    return [ns for ns in netns.list_netns() if ns.startswith(sb.names.prefix)]


def all_pids(sb: Sandbox) -> list[int]:
    st = sb.status()
    pids = [p for p in (st.get("redis_pid"), st.get("api_pid")) if p]
    for ch in st["chassis"]:
        pids += [p for p in (ch["ovs_vswitchd_pid"], ch["ovsdb_server_pid"], ch["controller_pid"]) if p]
    return pids


# --- no root needed -----------------------------------------------------------------------------------
def test_names_derive_from_dir_and_fit_ifnamsiz():
    a, b = nm.sandbox_id("/var/tmp/dfflow-sandbox"), nm.sandbox_id("/var/tmp/dfflow-sandbox-2")
    assert a != b and a == nm.sandbox_id("/var/tmp/../tmp/dfflow-sandbox") and len(a) == 8
    n = nm.Names(a)
    for name in (n.underlay_bridge, n.underlay_port(250), n.chassis_uplink(250), n.tap("0123456789abcdef-x")):
        assert len(name) <= nm.IFNAMSIZ, name
    assert n.tap("4f1e2d3c-aaaa-bbbb") == "tap4f1e2d3c-aa"  # os-vif: tap + 11 characters of the port id
    assert nm.phy_mac(2) == "0a:df:00:00:00:02"


def test_preflight_names_the_missing_programs(monkeypatch):
    real_which = preflight.shutil.which
    monkeypatch.setattr(preflight.shutil, "which", lambda b: None if b in ("ethtool", "redis-server") else real_which(b))
    text = " ".join(preflight.problems())
    assert "ethtool" in text and "redis-server" in text
    assert "apt-get install -y openvswitch-switch redis-server iproute2 iputils-ping ethtool" in text
    assert preflight.missing(need_redis=False) == ["ethtool"]


def test_redis_server_helper(tmp_path):
    if preflight.shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(str(tmp_path), persistent=True).start()
    try:
        assert redis.from_url(server.url).set("k", "v")
        assert redis.from_url(server.unix_url).get("k") == b"v"
        port = server.port
        server.stop()
        assert not server.running() and not server.ping()
        server.start()  # same port, same dir, data kept by the AOF
        assert server.port == port and redis.from_url(server.url).get("k") == b"v"
    finally:
        server.stop()
    with RedisServer(str(tmp_path / "t"), port=0) as tcpless:
        assert tcpless.url.startswith("unix://") and redis.from_url(tcpless.url).ping()


# --- real OVS -------------------------------------------------------------------------------------------
@pytest.mark.ovs
def test_chassis_layout(sandbox2):
    """br-phy holds the underlay IP and a fixed MAC; tunnel ARP is pre-seeded; OVS has the route."""
    for ch in sandbox2.chassis_list():
        ovs = ch.ovs()
        assert ovs.vsctl("get", "Bridge", INT_BRIDGE, "fail_mode").strip() == "secure"
        assert ovs.vsctl("get", "Bridge", INT_BRIDGE, "datapath_type").strip() == "netdev"
        assert "OpenFlow13" in ovs.vsctl("get", "Bridge", INT_BRIDGE, "protocols")
        assert ovs.ofctl("dump-flows", INT_BRIDGE).count("actions=") == 0  # no NORMAL flow on br-int
        link = netns.run(["ip", "-n", ch.namespace, "-j", "addr", "show", "br-phy"]).stdout
        info = json.loads(link)[0]
        assert info["address"] == ch.phy_mac
        assert any(a["local"] == ch.tunnel_ip for a in info["addr_info"])
        assert "172.31.0.0/24" in ovs.appctl("ovs/route/show")
        arp = ovs.appctl("tnl/arp/show")
        for peer in sandbox2.chassis_list():
            if peer.name != ch.name:
                assert peer.tunnel_ip in arp and peer.phy_mac in arp
        assert netns.run(["ip", "netns", "exec", ch.namespace, "cat",
                          "/proc/sys/net/ipv4/conf/all/arp_ignore"]).stdout.strip() == "1"


@pytest.mark.ovs
def test_open_vswitch_runs_every_thread_at_the_niceness_ovs_ctl_gives_it(sandbox2):
    """ovs-ctl starts ovsdb-server and ovs-vswitchd at niceness -10: the sandbox's forwarding threads do not
    wait behind the emulated cloud's processes (all at 0)."""
    for ch in sandbox2.chassis_list():
        for daemon in ("ovsdb-server", "ovs-vswitchd"):
            pid = ch.ovs().pid(daemon)
            threads = os.listdir(f"/proc/{pid}/task")
            assert daemon != "ovs-vswitchd" or len(threads) > 1  # its handler and revalidator threads too
            assert {tid: os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in threads} == {
                tid: OVS_NICENESS for tid in threads}, (ch.name, daemon)


@pytest.mark.ovs
def test_the_vswitchds_forwarding_thread_preempts_on_wakeup_and_keeps_its_niceness(sandbox2):
    """The userspace datapath's forwarding thread (ovs-vswitchd's main thread) runs at the shortest slice the
    kernel allows, so a packet that wakes it does not wait for a running task's slice to end (slices.py);
    its niceness stays ovs-ctl's."""
    if slices.slice_of(os.getpid()) is None or tuple(map(int, os.uname().release.split(".")[:2])) < (6, 12):
        pytest.skip("no custom slices on this kernel (sched_getattr, Linux 6.12+)")
    for ch in sandbox2.chassis_list():
        pid = ch.ovs().pid("ovs-vswitchd")
        assert (slices.slice_of(pid), os.getpriority(os.PRIO_PROCESS, pid)) == (
            slices.FORWARDING_SLICE_NS, OVS_NICENESS), ch.name
    assert slices.slice_of(os.getpid()) != slices.FORWARDING_SLICE_NS  # the kernel's own, for everything else


@pytest.mark.ovs
def test_geneve_ping_and_tcp_across_chassis(sandbox2):
    sb = sandbox2
    sb.plug_vm("a", "chassis-1", "port-a-0001", "fa:16:3e:00:00:0a", "10.0.0.1/24")
    sb.plug_vm("b", "chassis-2", "port-b-0001", "fa:16:3e:00:00:0b", "10.0.0.2/24")
    # the VM side looks like a guest NIC, the chassis side like an os-vif plug
    eth0 = json.loads(sb.vm_exec("a", ["ip", "-j", "addr", "show", "eth0"]).stdout)[0]
    assert eth0["mtu"] == 1400 and eth0["address"] == "fa:16:3e:00:00:0a" and eth0["operstate"] == "UP"
    assert "tx-checksumming: off" in sb.vm_exec("a", ["ethtool", "-k", "eth0"]).stdout
    ovs = sb.ovs("chassis-1")
    ext = {key: ovs.vsctl("get", "Interface", "tapport-a-0001", f"external_ids:{key}").strip().strip('"')
           for key in ("iface-id", "attached-mac", "iface-status", "vm-uuid")}
    assert ext == {"iface-id": "port-a-0001", "attached-mac": "fa:16:3e:00:00:0a", "iface-status": "active",
                   "vm-uuid": sb.vm("a").uuid}

    add_geneve_mesh(sb)
    wire_vms(sb, 0x64, [("a", "eth0"), ("b", "eth0")])
    result = ping(sb, "a", "10.0.0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    tcp_transfer(sb, "a", "b", "10.0.0.2", nbytes=1_000_000)
    # the packets really went through the tunnel
    stats = sb.ovs("chassis-1").ofctl("dump-ports", INT_BRIDGE, str(ofport(sb, "chassis-1", "gnv-2")))
    assert "tx pkts=0" not in stats.replace("  ", " ")


@pytest.mark.ovs
def test_second_vif_emulates_migration(sandbox2):
    """plug_vif/unplug_vif: a destination VIF in the same VM namespace, then Nova's source unplug."""
    sb = sandbox2
    sb.plug_vm("m", "chassis-1", "port-m-0001", "fa:16:3e:00:00:0c", "10.0.1.1/24")
    sb.plug_vm("n", "chassis-2", "port-n-0001", "fa:16:3e:00:00:0d", "10.0.1.2/24")
    vif = sb.plug_vif("m", "chassis-2", "port-m-0001", "fa:16:3e:00:00:0c", "eth1", up=False)
    eth1 = json.loads(sb.vm_exec("m", ["ip", "-j", "link", "show", "eth1"]).stdout)[0]
    assert eth1["operstate"] == "DOWN" and eth1["address"] == "fa:16:3e:00:00:0c"
    assert "iface-id=port-m-0001" in sb.ovs("chassis-2").vsctl("get", "Interface", vif.tap, "external_ids")
    status_m = next(v for v in sb.status()["vms"] if v["name"] == "m")
    assert [v["ifname"] for v in status_m["vifs"]] == ["eth0", "eth1"] and status_m["chassis"] == "chassis-1"

    with pytest.raises(SandboxError, match="already has tapport-n-0001"):  # refused, n's VIF untouched
        sb.plug_vif("m", "chassis-2", "port-n-0001", "fa:16:3e:00:00:0c", "eth2")
    assert "tapport-n-0001" in sb.ovs("chassis-2").vsctl("list-ports", INT_BRIDGE).split()
    with pytest.raises(SandboxError):  # a failing plug (bad MAC) is rolled back
        sb.plug_vif("m", "chassis-1", "port-m-0002", "not-a-mac", "eth2")
    assert [v.ifname for v in sb.vm("m").vifs] == ["eth0", "eth1"]
    assert "tapport-m-0002" not in sb.ovs("chassis-1").vsctl("list-ports", INT_BRIDGE).split()

    sb.unplug_vif("m", "eth0")  # source side: del-port, the veth is gone
    assert "tapport-m-0001" not in sb.ovs("chassis-1").vsctl("list-ports", INT_BRIDGE).split()
    assert sb.vm_exec("m", ["ip", "link", "show", "eth0"], check=False).returncode != 0
    sb.vm_exec("m", ["ip", "addr", "add", "10.0.1.1/24", "dev", "eth1"])
    sb.set_vif_up("m", "eth1")
    wire_vms(sb, 0x65, [("m", "eth1"), ("n", "eth0")])  # now both on chassis-2: local flows
    result = ping(sb, "n", "10.0.1.1")
    assert result.returncode == 0, result.stdout + result.stderr

    sb.unplug_vm("m")
    assert not netns.exists(sb.names.vm_ns("m"))
    assert vif.tap not in sb.ovs("chassis-2").vsctl("list-ports", INT_BRIDGE).split()
    assert "m" not in [v["name"] for v in sb.status()["vms"]]


@pytest.mark.ovs
def test_status_json_and_vm_exec_cli(sandbox2):
    sb = sandbox2
    if "cli" not in [v["name"] for v in sb.status()["vms"]]:
        sb.plug_vm("cli", "chassis-2", "port-cli-01", "fa:16:3e:00:00:0e", "10.0.2.1/24", gateway="10.0.2.254")
    out = subprocess.run(CLI + ["status", "--json", "--dir", sb.dir], capture_output=True, text=True, check=True)
    st = json.loads(out.stdout)
    assert st["sandbox_id"] == sb.sbid and st["phase"] == "up" and st["nb_url"].startswith("unix://")
    assert redis.from_url(st["nb_url"]).ping() and redis.from_url(st["nb_tcp_url"]).ping()
    assert [c["name"] for c in st["chassis"]] == ["chassis-1", "chassis-2"]
    for ch in st["chassis"]:
        for key in ("name", "namespace", "ovsdb", "ovsdb_url", "ovs_rundir", "unixctl", "bridge", "of_target",
                    "of_listen", "of_port", "controller_pid", "tunnel_ip", "ovs_alive"):
            assert key in ch, key
        assert ch["ovs_alive"] and os.path.exists(ch["ovsdb"]) and os.path.exists(ch["unixctl"])
    vm = next(v for v in st["vms"] if v["name"] == "cli")
    assert {k: vm[k] for k in ("chassis", "namespace", "mac", "ip", "port_id", "ifname")} == {
        "chassis": "chassis-2", "namespace": sb.names.vm_ns("cli"), "mac": "fa:16:3e:00:00:0e",
        "ip": "10.0.2.1/24", "port_id": "port-cli-01", "ifname": "eth0"}
    human = subprocess.run(CLI + ["status", "--dir", sb.dir], capture_output=True, text=True, check=True).stdout
    assert "chassis-2" in human and "vm cli" in human

    out = subprocess.run(CLI + ["vm", "exec", "--dir", sb.dir, "cli", "--", "ip", "route", "show", "default"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "via 10.0.2.254 dev eth0" in out.stdout, out
    rc = subprocess.run(CLI + ["vm", "exec", "--dir", sb.dir, "cli", "--", "sh", "-c", "exit 3"]).returncode
    assert rc == 3
    bad = subprocess.run(CLI + ["vm", "exec", "--dir", sb.dir, "nosuchvm", "--", "true"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "no VM 'nosuchvm'" in bad.stderr


@pytest.mark.ovs
def test_down_after_crash_leaves_nothing(sandbox_factory):
    sb = sandbox_factory(chassis=3)
    sb.plug_vm("a", "chassis-3", "port-crash-1", "fa:16:3e:00:01:01", "10.0.3.1/24")
    sleeper = sb.vm_popen("a", ["sleep", "600"])  # a process left running in a VM namespace
    pids = all_pids(sb) + [sleeper.pid]
    assert len(ours(sb)) == 5  # underlay, 3 chassis, 1 VM
    st = sb.status()
    os.kill(st["chassis"][0]["ovs_vswitchd_pid"], signal.SIGKILL)
    os.kill(st["chassis"][1]["ovsdb_server_pid"], signal.SIGKILL)
    assert wait_for(lambda: not procs.alive(st["chassis"][0]["ovs_vswitchd_pid"]))

    t0 = time.monotonic()
    sb.down()
    took = time.monotonic() - t0
    sleeper.wait(timeout=5)
    assert ours(sb) == []
    assert [p for p in pids if procs.alive(p)] == []
    assert sb.status()["phase"] == "down"
    assert took < 8, f"down took {took:.1f} s (daemons must be stopped in parallel)"
    sb.down()  # idempotent


@pytest.mark.ovs
def test_down_without_state_file(sandbox_factory):
    """A lost state.json: names, pidfiles and the redis working directory still find everything."""
    sb = sandbox_factory(chassis=1)
    sb.plug_vm("a", "chassis-1", "port-lost-1", "fa:16:3e:00:02:01", "10.0.4.1/24")
    pids = all_pids(sb)
    os.unlink(os.path.join(sb.dir, "state.json"))
    sb.down()
    assert ours(sb) == []
    assert [p for p in pids if procs.alive(p)] == []


@pytest.mark.ovs
def test_two_sandboxes_coexist(sandbox_factory):
    """Same VM names and addresses in two sandboxes: separate namespaces, OVS, underlays."""
    one, two = sandbox_factory(chassis=1), sandbox_factory(chassis=1)
    assert one.sbid != two.sbid and not set(ours(one)) & set(ours(two))
    for sb in (one, two):
        sb.plug_vm("a", "chassis-1", "port-a-0001", "fa:16:3e:00:00:0a", "10.0.0.1/24")
        sb.plug_vm("b", "chassis-1", "port-b-0001", "fa:16:3e:00:00:0b", "10.0.0.2/24")
        wire_vms(sb, 0x64, [("a", "eth0"), ("b", "eth0")])
    for sb in (one, two):
        result = ping(sb, "a", "10.0.0.2", count=2)
        assert result.returncode == 0, result.stdout + result.stderr
    one.down()
    assert ours(one) == [] and len(ours(two)) == 4
    result = ping(two, "b", "10.0.0.1", count=2)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.ovs
def test_controllers_started_recorded_and_killed(sandbox_factory):
    sb = sandbox_factory(chassis=2, controllers=True, controller_cmd=FAKE_CONTROLLER)
    with pytest.raises(Exception, match="already up"):
        sb.up(chassis=2, controllers=False)
    st = sb.status()
    pids = []
    for ch in st["chassis"]:
        assert ch["controller_alive"]
        pids.append(ch["controller_pid"])
        sock = os.path.join(ch["ovs_rundir"], "openflow.sock")  # OVS takes socket controllers only there
        assert ch["of_listen"] == ch["of_target"] == f"unix:{sock}"
        assert sb.ovs(ch["name"]).vsctl("get-controller", INT_BRIDGE).strip() == f"unix:{sock}"
        log = wait_for(lambda: open(ch["controller_log"]).read())
        assert (f"fake-controller --chassis {ch['name']} --tunnel-ip {ch['tunnel_ip']} --nb {st['nb_url']} "
                f"--ovsdb {ch['ovsdb_url']} --bridge br-int --of-listen unix:{sock}") in log
    sb.stop_controller("chassis-1")
    assert not procs.alive(pids[0]) and sb.status()["chassis"][0]["controller_pid"] is None
    restarted = sb.start_controller("chassis-1")
    assert procs.alive(restarted.controller_pid)
    sb.down()
    assert [p for p in pids[1:] + [restarted.controller_pid] if procs.alive(p)] == []


@pytest.mark.ovs
def test_tcp_transport_runs_controllers_inside_chassis_namespaces(sandbox_factory):
    sb = sandbox_factory(chassis=1, controllers=True, controller_cmd=FAKE_CONTROLLER, of_transport="tcp")
    ch = sb.status()["chassis"][0]
    assert ch["of_target"] == "tcp:127.0.0.1:6653" and ch["of_listen"] == "127.0.0.1:6653" and ch["of_port"] == 6653
    assert os.stat(f"/proc/{ch['controller_pid']}/ns/net").st_ino == os.stat(f"/run/netns/{ch['namespace']}").st_ino
    assert sb.status()["nb_url"].startswith("unix://")  # the only NB URL reachable from inside a namespace
    pid = ch["controller_pid"]
    sb.down()
    assert not procs.alive(pid)


@pytest.mark.ovs
def test_failed_up_cleans_up_and_stale_state_is_replaced(sandbox_factory, monkeypatch):
    require_substrate()
    with pytest.raises(SandboxError, match="not found"):
        Sandbox("/tmp/dfsb-never", controller_cmd=["/nonexistent/dfflow-controller"]).up(chassis=1)
    assert not os.path.exists("/tmp/dfsb-never")

    def boom(*args, **kwargs):
        raise RuntimeError("controller start failed")

    sb = Sandbox(f"/tmp/dfsb-fail-{os.getpid()}", controller_cmd=FAKE_CONTROLLER)
    monkeypatch.setattr(sb, "_start_controller", boom)  # fails after namespaces and OVS exist
    try:
        with pytest.raises(RuntimeError, match="controller start failed"):
            sb.up(chassis=2, controllers=True)
        assert ours(sb) == [] and sb.status()["phase"] == "down"
        assert not procs.find(lambda pid: any(sb.dir in a for a in procs.cmdline(pid)))
    finally:
        sb.down()
        subprocess.run(["rm", "-rf", sb.dir])

    stale = sandbox_factory(chassis=1)
    pids = all_pids(stale)
    for pid in pids:  # everything dies at once: a reboot-like crash, state.json stays behind
        os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not any(procs.alive(p) for p in pids))
    stale.up(chassis=1, controllers=False)  # stale state is cleared, not refused
    assert all(ch["ovs_alive"] for ch in stale.status()["chassis"]) and len(ours(stale)) == 2


def test_vm_exec_refuses_its_own_options_after_the_vm_name_instead_of_running_them():
    from click.testing import CliRunner

    from dfflow.cli import main
    result = CliRunner().invoke(main, ["sandbox", "vm", "exec", "A1", "--dir", "/tmp/elsewhere", "--", "true"])
    assert result.exit_code == 2 and "options before NAME" in result.output
