"""``dfflow sandbox ...``: bring a multi-chassis OVS sandbox up, inspect it, tear it down.

The click group is `sandbox`; the main `dfflow` CLI mounts it. It also runs on
its own: ``python -m dfflow.sandbox.cli up --chassis 3 --no-controllers``.
Every subcommand takes ``--dir`` (default /var/tmp/dfflow-sandbox, or
$DFFLOW_SANDBOX_DIR): the directory *is* the sandbox's identity.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any, Awaitable, Callable

import click

from dfflow.errors import DfflowError
from dfflow.nb.store import NbApi

from .cloud import VIF_PLUGGING_TIMEOUT, Cloud
from .secgroup_rules import allow_probes, external_host_attrs
from .netns import SandboxError
from .topology import DEFAULT_DIR, Sandbox

dir_option = click.option(
    "--dir", "dir_", default=DEFAULT_DIR, show_default=True, envvar="DFFLOW_SANDBOX_DIR",
    type=click.Path(file_okay=False), help="Sandbox directory (state, OVS databases, logs); names derive from it.")


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))



MEMORY_COPY_OPTION = click.option(
    "--memory-copy", type=click.IntRange(0, 600_000), default=500, show_default=True,
    help="ms of libvirt's memory copy, from the destination being ready to the VM's switchover.")


NOVA_PATH_OPTION = click.option(
    "--nova-path", type=click.Choice(["extended", "legacy"]), default="extended", show_default=True,
    help="Nova's calls: binding-extended (inactive binding, activation before the unplug) or legacy "
         "(binding:profile migrating_to, update_port(binding:host_id) after the unplug).")


def nova_delay_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--memory-copy, --unplug-delay and --update-port-delay (ms) and --nova-path, as the demo and the
    downtime benchmark take them."""
    fn = NOVA_PATH_OPTION(fn)
    fn = MEMORY_COPY_OPTION(fn)
    fn = click.option("--update-port-delay", type=click.IntRange(0, 60_000), default=300, show_default=True,
                      help="ms from the unplug to update_port(binding:host_id).")(fn)
    return click.option("--unplug-delay", type=click.IntRange(0, 60_000), default=200, show_default=True,
                        help="ms from the VM's switchover to Nova's unplug of the source VIF.")(fn)

@click.group()
def sandbox() -> None:
    """Real Open vSwitch chassis, each in its own network namespace, joined by an underlay."""


@sandbox.command()
@click.option("--chassis", "count", default=2, show_default=True, type=click.IntRange(1, 250),
              help="Number of chassis.")
@click.option("--names", default=None, help="Comma-separated chassis names (default chassis-1..N).")
@dir_option
@click.option("--nb", "nb_url", default=None,
              help="NB database URL to use instead of starting a private redis-server, or `sentinel`: "
                   "start a highly available one (a primary, a replica, three redis-sentinels).")
@click.option("--no-controllers", is_flag=True, help="Do not start dfflow-controller on the chassis.")
@click.option("--of-transport", type=click.Choice(["unix", "tcp"]), default="unix", show_default=True,
              help="unix: controllers in the root namespace, OpenFlow over a unix socket; "
                   "tcp: controllers inside the chassis namespaces on 127.0.0.1:6653.")
@click.option("--strategy", type=click.Choice(["unplug", "announce"]), default=None,
              help="The deployment's live-migration activation strategy (dfflow-controller --strategy, "
                   "default announce); ports may override it.")
@click.option("--metrics", is_flag=True, help="Controllers serve Prometheus metrics on a free loopback port "
                                            "each (its URL is metrics_url in the controller's status).")
@click.option("--neutron", is_flag=True,
              help="Serve the cloud's API with neutron-server and the dfflow ML2 driver (MariaDB, gunicorn; "
                   "scripts/setup-neutron.sh installs them) instead of `dfflow api`.")
@click.option("--nova-url", default=None,
              help="With --neutron: where Neutron's Nova notifier sends network-vif-plugged (Nova's API, "
                   "e.g. http://127.0.0.1:8774/v2.1; default: the sandbox's Nova, if it serves events).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def up(count: int, names: str | None, dir_: str, nb_url: str | None, no_controllers: bool,
       of_transport: str, strategy: str | None, metrics: bool, neutron: bool, nova_url: str | None,
       as_json: bool) -> None:
    """Create the underlay, the chassis (OVS, br-phy, br-int), the NB redis, the Neutron API and the
    controllers."""
    if nova_url and not neutron:
        raise click.UsageError("--nova-url is for neutron-server's notifier: give --neutron too")
    name_list = [n.strip() for n in names.split(",") if n.strip()] if names else None
    try:
        status = Sandbox(dir_).up(chassis=count, names=name_list, nb_url=nb_url,
                                  controllers=not no_controllers, of_transport=of_transport,
                                  controller_args=(["--strategy", strategy] if strategy else [])
                                  + (["--metrics-port", "0"] if metrics else []),
                                  neutron=neutron, nova_url=nova_url)
    except (SandboxError, ValueError) as exc:
        raise _fail(exc)
    # The cloud's VMs get their project's default group: let the sandbox's probes from outside it in.
    added = _with_cloud(dir_, allow_probes) if status.get("api_url") else []
    _print_status(status | {"security_group_rules_added": added} if as_json else status, as_json)
    for line in [] if as_json else added:
        click.echo(f"added {line}")


@sandbox.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(dir_: str, as_json: bool) -> None:
    """Show chassis (namespace, OVS paths, OpenFlow target, controller), NB URL, VMs, networks,
    routers and floating IPs."""
    status_ = Sandbox(dir_).status()
    if status_.get("nb_url") and status_["phase"] != "down":
        status_.update(_nb_summary(dir_))
    _print_status(status_, as_json)


@sandbox.command()
@dir_option
def down(dir_: str) -> None:
    """Stop everything the sandbox started and delete its namespaces (idempotent; works after a crash)."""
    try:
        result = Sandbox(dir_).down()
    except SandboxError as exc:
        raise _fail(exc)
    click.echo(f"stopped {len(result['stopped_pids'])} processes, "
               f"deleted {len(result['deleted_namespaces'])} namespaces")


@sandbox.group()
def vm() -> None:
    """Work with the VMs (network namespaces) of a sandbox."""


@vm.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@dir_option
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def vm_exec(dir_: str, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside VM NAME's namespace: ``vm exec NAME -- ping -c1 10.0.0.2``."""
    if command and (command[0] == "--dir" or command[0].startswith("--dir=")):
        raise click.UsageError("vm exec takes its options before NAME: vm exec [--dir DIR] NAME -- CMD...")
    if command and command[0] == "--":  # click keeps it once it stopped parsing options after NAME
        command = command[1:]
    if not command:
        raise click.UsageError("no command given: vm exec NAME -- CMD...")
    try:
        argv = Sandbox(dir_).vm_argv(name, command)
    except SandboxError as exc:
        raise _fail(exc)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise click.ClickException(f"cannot run {argv[0]}: {exc}")


def _with_cloud(dir_: str, body: Callable[[Cloud], Awaitable[Any]], vif_plugging_timeout: float | None = None) -> Any:
    """Run `body` with the sandbox's cloud (NB db + chassis); errors become one clear line."""
    sb = Sandbox(dir_)
    url = sb.status().get("nb_url")
    if not url:
        raise click.ClickException(f"no sandbox is up in {sb.dir}: run `dfflow sandbox up` first")

    async def run() -> Any:
        nb = NbApi(url)
        try:
            return await body(Cloud.for_sandbox(sb, nb, vif_plugging_timeout=vif_plugging_timeout))
        finally:
            await nb.close()

    try:
        return asyncio.run(run())
    except (DfflowError, SandboxError) as exc:
        raise _fail(exc)


@sandbox.group()
def net() -> None:
    """Networks (a Neutron network and its subnet) of the sandbox."""


@net.command("create")
@dir_option
@click.argument("name")
@click.option("--cidr", required=True, help="The subnet, e.g. 10.0.0.0/24 (gateway: its first address).")
@click.option("--vni", type=int, default=None, help="Segmentation id (default: the next free one).")
@click.option("--external", is_flag=True, help="An external network (router gateways, floating IPs).")
def net_create(dir_: str, name: str, cidr: str, vni: int | None, external: bool) -> None:
    """Create network NAME with one subnet."""
    switch, subnet = _with_cloud(dir_, lambda c: c.create_network(name, cidr, vni, external))
    click.echo(f"network {switch.id}: vni {switch.segmentation_id}, subnet {subnet.cidr} "
               f"gateway {subnet.gateway_ip}")


VIF_PLUGGING_TIMEOUT_OPTION = click.option(
    "--vif-plugging-timeout", type=click.FloatRange(0, 3600), default=None,
    help=f"s Nova waits for Neutron's network-vif-plugged before failing; 0: no wait (default {VIF_PLUGGING_TIMEOUT:g}, "
         "or 0 when the API tells another Nova; Nova's own default: 300).")


@vm.command("create")
@dir_option
@click.argument("name")
@click.option("--chassis", required=True, help="The chassis (host) to start the VM on.")
@click.option("--network", required=True, help="The network to attach it to.")
@click.option("--ip", default=None, help="Fixed IP (default: the next free address).")
@click.option("--port-security/--no-port-security", default=None,
              help="Port security and the project's default security group on the VM's port [default: on, "
                   "but off on an external network: a VM there is an external host, outside the cloud's groups].")
@VIF_PLUGGING_TIMEOUT_OPTION
def vm_create(dir_: str, name: str, chassis: str, network: str, ip: str | None, port_security: bool | None,
              vif_plugging_timeout: float) -> None:
    """Create a port for VM NAME (as Neutron) and plug the VM into CHASSIS (as Nova/os-vif)."""
    async def create(cloud: Cloud) -> tuple[Any, bool]:
        attrs = (await external_host_attrs(cloud, network) if port_security is None
                 else {"port_security_enabled": port_security})
        vm_ = await cloud.create_vm(name, chassis, network, ip, port_attrs=attrs)
        return vm_, attrs == {"port_security_enabled": False}

    vm_, unsecured = _with_cloud(dir_, create, vif_plugging_timeout)
    vif = vm_.vifs[0]
    click.echo(f"vm {vm_.name} on {vif.chassis}: {vif.mac} {vif.ip} port {vif.port_id}"
               + (", port security off (no security group)" if unsecured else ""))


@vm.command("delete")
@dir_option
@click.argument("name")
def vm_delete(dir_: str, name: str) -> None:
    """Unplug VM NAME, delete its namespace and its NB port."""
    _with_cloud(dir_, lambda c: c.delete_vm(name))
    click.echo(f"vm {name} deleted")


@vm.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def vm_list(dir_: str, as_json: bool) -> None:
    """The sandbox's VMs with their ports."""
    rows = _with_cloud(dir_, lambda c: c.vm_rows())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:12} {row['chassis'] or '-':12} {row['network'] or '-':10} "
                   f"{row['ip'] or '-':15} {row['mac'] or '-'}  port {row['port_id']}")


def _update_port_delay(value: str) -> float | None:
    if value == "never":
        return None
    try:
        return int(value) / 1000
    except ValueError:
        raise click.BadParameter("a number of ms, or 'never'", param_hint="--update-port-delay")


def migrate_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What `vm migrate` and `evacuate` take: Nova's delays and calls, the strategy, --json."""
    for option in reversed([
            click.option("--to", "dest", required=True, help="Destination chassis."),
            click.option("--unplug-delay", default=200, show_default=True, type=click.IntRange(0, 600_000),
                         help="ms between the VM's switchover and Nova's unplug of the source VIF (step 2)."),
            click.option("--update-port-delay", default="300", show_default=True,
                         help="ms after the unplug until the destination's post-migration (legacy: update_port("
                              "binding:host_id), step 3; extended: the source binding's clean-up), or 'never' (no "
                              "step 3 at all: no activation either)."),
            click.option("--strategy", type=click.Choice(["unplug", "announce"]), default=None,
                         help="Activation strategy for the ports (default: the deployment's)."),
            MEMORY_COPY_OPTION, NOVA_PATH_OPTION, VIF_PLUGGING_TIMEOUT_OPTION,
            click.option("--json", "as_json", is_flag=True)]):
        fn = option(fn)
    return fn


@vm.command("migrate")
@dir_option
@click.argument("names", nargs=-1, required=True)
@migrate_options
def vm_migrate(dir_: str, names: tuple[str, ...], dest: str, unplug_delay: int, update_port_delay: str,
               strategy: str | None, memory_copy: int, nova_path: str, vif_plugging_timeout: float,
               as_json: bool) -> None:
    """Live-migrate VM NAMES to chassis DEST as Nova, os-vif and QEMU do, and print the timeline.
    Several VMs move at once, as Nova with max_concurrent_live_migrations = their number (see
    `evacuate`)."""
    from .nova import format_timeline, migrate
    if len(names) > 1:
        _evacuate(dir_, list(names), dest, unplug_delay, update_port_delay, strategy, memory_copy, nova_path,
                  vif_plugging_timeout, as_json)
        return
    update_delay = _update_port_delay(update_port_delay)
    result = _with_cloud(dir_, lambda c: migrate(c, names[0], dest, unplug_delay / 1000, update_delay, strategy,
                                                  memory_copy / 1000, nova_path=nova_path),
                         vif_plugging_timeout)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(format_timeline(result))


@sandbox.command("evacuate")
@dir_option
@click.argument("chassis")
@migrate_options
def evacuate_(dir_: str, chassis: str, dest: str, unplug_delay: int, update_port_delay: str,
              strategy: str | None, memory_copy: int, nova_path: str, vif_plugging_timeout: float,
              as_json: bool) -> None:
    """Live-migrate every VM of CHASSIS to DEST at once (a host evacuation: all destination VIFs
    plugged, every VM switched over together, then the unplugs and the binding calls)."""
    from .evacuate import vms_on
    try:
        names = vms_on(Sandbox(dir_), chassis)
    except SandboxError as exc:
        raise _fail(exc)
    if not names:
        raise click.ClickException(f"no VM runs on {chassis}")
    _evacuate(dir_, names, dest, unplug_delay, update_port_delay, strategy, memory_copy, nova_path,
              vif_plugging_timeout, as_json)


def _evacuate(dir_: str, names: list[str], dest: str, unplug_delay: int, update_port_delay: str,
              strategy: str | None, memory_copy: int, nova_path: str, vif_plugging_timeout: float,
              as_json: bool) -> None:
    from .evacuate import evacuate, format_evacuation
    update_delay = _update_port_delay(update_port_delay)
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:7.2f} s] {message}", err=True)

    result = _with_cloud(dir_, lambda c: evacuate(
        c, names, dest, progress=progress, unplug_delay=unplug_delay / 1000, update_port_delay=update_delay,
        strategy=strategy, memory_copy=memory_copy / 1000, nova_path=nova_path), vif_plugging_timeout)
    click.echo(json.dumps(result, indent=2) if as_json else format_evacuation(result))
    if result["failed"]:
        raise click.ClickException(f"{len(result['failed'])} of {len(names)} migrations failed: "
                                   + ", ".join(sorted(result["failed"])))


@sandbox.group()
def router() -> None:
    """Routers of the sandbox (distributed: they route on every chassis)."""


@router.command("create")
@dir_option
@click.argument("name")
@click.option("--subnets", "networks", required=True,
              help="Comma-separated networks to attach (an interface at each subnet's gateway IP).")
@click.option("--external", default=None, help="External network for the router's gateway.")
def router_create(dir_: str, name: str, networks: str, external: str | None) -> None:
    """Create router NAME attached to NETWORKS."""
    nets = [n.strip() for n in networks.split(",") if n.strip()]
    r = _with_cloud(dir_, lambda c: c.create_router(name, nets, external))
    gw = f", gateway {r.external_gateway.ip} on {r.external_gateway.lswitch}" if r.external_gateway else ""
    click.echo(f"router {r.id}: interfaces {', '.join(p.ip for p in r.ports)}{gw}")


@router.command("add-interface")
@dir_option
@click.argument("name")
@click.argument("network")
def router_add_interface(dir_: str, name: str, network: str) -> None:
    """Attach NETWORK's subnet to router NAME."""
    _with_cloud(dir_, lambda c: c.add_router_interface(name, network))
    click.echo(f"router {name}: attached {network}")


@router.command("remove-interface")
@dir_option
@click.argument("name")
@click.argument("network")
def router_remove_interface(dir_: str, name: str, network: str) -> None:
    """Detach NETWORK's subnet from router NAME."""
    _with_cloud(dir_, lambda c: c.remove_router_interface(name, network))
    click.echo(f"router {name}: detached {network}")


@sandbox.group()
def fip() -> None:
    """Floating IPs of the sandbox (DNAT on the chassis hosting the VM)."""


@fip.command("create")
@dir_option
@click.option("--port", "vm_name", required=True, help="The VM whose port gets the floating IP.")
@click.option("--external", default=None, help="External network (default: the router's gateway network).")
def fip_create(dir_: str, vm_name: str, external: str | None) -> None:
    """Give VM a floating IP."""
    f = _with_cloud(dir_, lambda c: c.create_floating_ip(vm_name, external))
    click.echo(f"floating IP {f.id}: {f.floating_ip} -> {vm_name} ({f.fixed_ip})")


@fip.command("disassociate")
@dir_option
@click.argument("fip_id")
def fip_disassociate(dir_: str, fip_id: str) -> None:
    _with_cloud(dir_, lambda c: c.disassociate_floating_ip(fip_id))
    click.echo(f"floating IP {fip_id}: disassociated")


@fip.command("delete")
@dir_option
@click.argument("fip_id")
def fip_delete(dir_: str, fip_id: str) -> None:
    _with_cloud(dir_, lambda c: c.delete_floating_ip(fip_id))
    click.echo(f"floating IP {fip_id}: deleted")


def _nb_summary(dir_: str) -> dict[str, Any]:
    """Networks, routers and floating IPs, from the sandbox's NB db."""
    async def body(cloud: Cloud) -> dict[str, Any]:
        nb = cloud.nb
        return {
            "networks": [{"name": s.id, "vni": s.segmentation_id, "external": s.router_external,
                          "subnets": [n.cidr for n in await nb.list("subnet") if n.lswitch == s.id]}
                         for s in await nb.list("lswitch")],
            "routers": [{"name": r.id, "interfaces": [{"subnet": p.subnet, "ip": p.ip, "mac": p.mac}
                                                     for p in r.ports],
                         "external_gateway": (None if r.external_gateway is None else
                                              {"network": r.external_gateway.lswitch,
                                               "ip": r.external_gateway.ip})}
                        for r in await nb.list("lrouter")],
            "floating_ips": [{"id": f.id, "floating_ip": f.floating_ip, "network": f.lswitch, "port": f.port,
                              "fixed_ip": f.fixed_ip, "router": f.router}
                             for f in await nb.list("floatingip")],
        }
    return _with_cloud(dir_, body)


def _api_description(status: dict) -> str:
    server = status.get("neutron")
    if status.get("api_kind") != "neutron-server" or server is None:
        return f"dfflow api, pid {status.get('api_pid')}"
    if server.get("external"):
        return "neutron-server with the dfflow driver, not the sandbox's"
    alive = server["alive"]
    return (f"neutron-server with the dfflow driver, gunicorn pid {server['pid']} "
            f"({'alive' if alive['api'] else 'DEAD'}), MariaDB pid {server['db']['pid']} "
            f"({'alive' if alive['db'] else 'DEAD'}), log {server['log']}"
            + (f", Nova notifier to {server['nova_url']}" if server.get("nova_url") else ""))


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
        return
    click.echo(f"sandbox {status['sandbox_id']} in {status['dir']}: {status['phase']}")
    if status["phase"] == "down":
        return
    click.echo(f"  NB: {status['nb_url']}" + (f"  (root ns: {status['nb_tcp_url']})" if status.get("nb_tcp_url") else ""))
    if status.get("api_url"):
        click.echo(f"  Neutron API: {status['api_url']} ({_api_description(status)})")
    if status.get("nova_url"):
        click.echo(f"  Nova API (os-server-external-events): {status['nova_url']}")
    for ch in status["chassis"]:
        ctl = (f"controller pid {ch['controller_pid']} ({'alive' if ch['controller_alive'] else 'DEAD'})"
               if ch["controller_pid"] else "no controller")
        if ch.get("controller_restarts"):
            ctl += f", restarted {ch['controller_restarts']} times (last: {ch['controller_last_exit']})"
        elif ch.get("controller_pid") and not ch.get("controller_supervised"):
            ctl += ", not supervised"
        click.echo(f"  {ch['name']}: netns {ch['namespace']}  tunnel {ch['tunnel_ip']}  "
                   f"ovs {'up' if ch['ovs_alive'] else 'DOWN'}  OVS_RUNDIR={ch['ovs_rundir']}")
        click.echo(f"      ovsdb {ch['ovsdb_url']}  of-target {ch['of_target'] or '-'}  {ctl}")
    for vm_ in status["vms"]:
        click.echo(f"  vm {vm_['name']}: {vm_['chassis']} netns {vm_['namespace']} {vm_['ifname']} "
                   f"{vm_['mac']} {vm_['ip'] or '-'} port {vm_['port_id']}"
                   + (f" (+{len(vm_['vifs']) - 1} vifs)" if len(vm_["vifs"]) > 1 else ""))
    for net_ in status.get("networks", []):
        click.echo(f"  network {net_['name']}: vni {net_['vni']} {', '.join(net_['subnets'])}"
                   + (" (external)" if net_["external"] else ""))
    for r in status.get("routers", []):
        gw = r["external_gateway"]
        click.echo(f"  router {r['name']}: {', '.join(i['ip'] for i in r['interfaces'])}"
                   + (f", gateway {gw['ip']} on {gw['network']}" if gw else ""))
    for f in status.get("floating_ips", []):
        click.echo(f"  floating IP {f['floating_ip']} -> {f['fixed_ip'] or '-'} ({f['id']})")


if __name__ == "__main__":
    sandbox()
