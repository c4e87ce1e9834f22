"""`dfflow-bench`: compares flow-update latency and migration downtime, in one run per comparison."""
from __future__ import annotations

import json
import logging
import signal
import sys

import click

from dfflow.sandbox.cli import nova_delay_options


@click.group()
@click.version_option(package_name="dfflow")
def main() -> None:
    """dfflow benchmarks. Each command compares alternatives within one run and reports ratios."""


@main.command()
@click.option("--flows", "n", type=click.IntRange(1, 10_000_000), default=100_000, show_default=True,
              help="How many FLOW_MODs (L2 lookup + ARP responder flows).")
@click.option("--min-time", type=click.FloatRange(0.0), default=1.0, show_default=True,
              help="Seconds each compiled-packer measurement repeats for (the best run counts).")
@click.option("--osken-reps", type=click.IntRange(1), default=1, show_default=True,
              help="Repetitions of the (slow) os-ken path.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def pack(n: int, min_time: float, osken_reps: int, as_json: bool) -> None:
    """Pack N FLOW_MODs with the compiled packer and with os-ken; report rates and the ratio."""
    from benchmarks.pack import format_report, run

    result = run(n, min_time=min_time, osken_reps=osken_reps)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))


@main.command()
@click.option("--members", default="10,100,1000", show_default=True,
              help="Comma-separated sizes of the remote group the port's rules name.")
@click.option("--min-time", type=click.FloatRange(0.0), default=0.5, show_default=True,
              help="Seconds each measurement repeats for (the best run counts).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def secgroups(members: str, min_time: float, as_json: bool) -> None:
    """Make one port's security-group flows with the compiled core, by remote-group size: flows
    (conjunctive matches vs a plain product) and time."""
    from benchmarks import secgroups as bench

    report = bench.run(tuple(int(m) for m in members.split(",") if m.strip()), min_time=min_time)
    click.echo(json.dumps(report, indent=2) if as_json else bench.format_report(report))


@main.command()
@click.option("--ports", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="P: ports in the simulated cloud, spread evenly over the chassis.")
@click.option("--chassis", type=click.IntRange(2, 10_000), default=20, show_default=True,
              help="C: chassis; each hosts ports of every network, so each is related to every port.")
@click.option("--migrate", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="K: ports evacuated at once from chassis 0 (at most the ports it hosts).")
@click.option("--min-time", type=click.FloatRange(0.0), default=1.0, show_default=True,
              help="Seconds each compiled measurement repeats for.")
@click.option("--osken-reps", type=click.IntRange(1), default=1, show_default=True,
              help="Repetitions of the (slow) Python apps + os-ken path for the evacuation.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def compile(ports: int, chassis: int, migrate: int, min_time: float, osken_reps: int, as_json: bool) -> None:
    """Compute and pack every chassis' flows for one port's migration and for a host evacuation:
    the compiled core in one C loop over the chassis, the agent's path (chassis by chassis) and the
    Python apps + os-ken, same change, same bytes."""
    from benchmarks import compile as bench

    steps = ["core loop", "compiled", "osken", "core loop", "compiled", "osken", "memory"]
    with click.progressbar(length=len(steps), label="compiling", file=sys.stderr) as bar:
        report = bench.run(ports, chassis, migrate, min_time=min_time, osken_reps=osken_reps,
                           progress=lambda _: bar.update(1))
    click.echo(json.dumps(report, indent=2) if as_json else bench.format_report(report))


@main.command()
@click.option("--chassis", type=click.IntRange(3, 3), default=3, show_default=True,
              help="Chassis in the sandbox (the migrating VM moves between chassis-1 and chassis-2; "
                   "the probing peers live on chassis-3).")
@click.option("--vms", type=click.IntRange(1, 100), default=1, show_default=True,
              help="VMs migrated at once (a host evacuation: all switched over together, one prober for all).")
@click.option("--runs", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Migrations per strategy.")
@click.option("--strategy", "strategies", default=None,
              help="Comma-separated: announce, unplug, fallback (step-2 publish dropped; one VM only) "
                   "[default: all of them for one VM, announce,unplug for several].")
@nova_delay_options
@click.option("--interval", type=click.FloatRange(0.0005, 1.0), default=None,
              help="Probe interval in seconds, to each VM [default: 0.001 for one VM; VMs x 0.0002 for several].")
@click.option("--secgroups", "secgroups", default="on", show_default=True,
              help="Comma-separated: on (the VMs' ports in their project's default group, the probes let in by "
                   "rules), off (port security off); on,off measures both, runs interleaved (one VM only).")
@click.option("--json", "as_json", is_flag=True, help="Print every run and the summary as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the probe timelines of the median run of each strategy to this PNG.")
@click.option("--peer", type=click.Choice(["ovn"]), default=None,
              help="Also run the same migrations on OVN (Debian's ovn-central/ovn-host, scripts/setup-ovn.sh) "
                   "after dfflow's, on a fresh sandbox of the same topology, and print both in one table "
                   "and one plot with the ratio dfflow/OVN [default strategy then: announce; one VM: probed "
                   "from its L2 peer and through its floating IP on both].")
@click.option("--cloud-niceness", type=click.IntRange(0, 19), default=10, show_default=True,
              help="One VM: the niceness of the emulated cloud's control services while it migrates (Nova's calls, "
                   "the API server, the Nova API, the os-vif agents; in a cloud they run on other hosts), on both "
                   "systems; 0 runs them at the guests' niceness.")
def migration(chassis: int, vms: int, runs: int, strategies: str | None, memory_copy: int, unplug_delay: int,
              update_port_delay: int, nova_path: str, interval: float | None, secgroups: str, as_json: bool,
              plot_path: str | None, peer: str | None, cloud_niceness: int) -> None:
    """Live-migrate a VM (or evacuate --vms VMs at once) on a real 3-chassis sandbox and measure downtime
    per strategy (needs root)."""
    from benchmarks import evacuation, faulty_controller
    from dfflow.sandbox import scenario as single

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` ends us: the sandboxes are torn down
    bench = evacuation if vms > 1 else single
    if peer is not None:
        from dfflow.sandbox import ovn

        if ovn.missing():
            raise click.ClickException("--peer ovn: " + "; ".join(ovn.missing()))
        if nova_path != "extended":
            raise click.BadParameter("the OVN peer drives Nova's binding-extended calls only", param_hint="--nova-path")
        strategies = strategies or "announce"
    chosen = tuple(s.strip() for s in (strategies or ",".join(bench.STRATEGIES)).split(",") if s.strip())
    unknown = [s for s in chosen if s not in bench.STRATEGIES]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown strategy {', '.join(unknown)}; choose from "
                                 f"{', '.join(bench.STRATEGIES)}" + (f" with --vms {vms}" if vms > 1 else ""),
                                 param_hint="--strategy")
    modes = tuple(dict.fromkeys(m.strip() for m in secgroups.split(",") if m.strip()))
    if not modes or set(modes) - set(single.SECGROUPS) or ((vms > 1 or peer) and modes != ("on",)):
        raise click.BadParameter(f"{secgroups!r}: on, off or on,off"
                                 + (" (only on with --vms or --peer)" if vms > 1 or peer else ""),
                                 param_hint="--secgroups")
    options = dict(runs=runs, strategies=chosen, memory_copy=memory_copy / 1000, unplug_delay=unplug_delay / 1000,
                   update_port_delay=update_port_delay / 1000, nova_path=nova_path,
                   keep_samples=plot_path is not None)
    if vms > 1:
        report = evacuation.run(vms, interval=interval, progress=lambda m: click.echo(m, err=True), **options)
    else:
        with click.progressbar(length=runs * len(chosen) * len(modes), label="migrating", file=sys.stderr) as bar:
            report = single.run(interval=interval or 0.001, progress=lambda _: bar.update(1), secgroups=modes,
                                say=lambda line: click.echo(line, err=True),
                                controller_cmd=faulty_controller.controller_cmd() if "fallback" in chosen else None,
                                cloud_niceness=cloud_niceness, **options)
    peer_failed = None
    if peer is not None:
        try:
            report = _with_ovn(report, vms, runs, interval, options | {"cloud_niceness": cloud_niceness})
        except Exception as exc:  # OVN's half failed: dfflow's measured half is still reported, then the failure
            logging.getLogger(__name__).exception("the OVN peer's runs failed; dfflow's runs are reported alone")
            peer_failed = report["peer_failed"] = f"{type(exc).__name__}: {exc}"
    if plot_path:
        bench.plot(report, plot_path)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif peer is not None and peer_failed is None:
        from benchmarks import ovn_peer

        click.echo(ovn_peer.format_evacuation(report) if vms > 1 else ovn_peer.format_single(report))
    else:
        click.echo(bench.format_summary(report))
        if vms == 1:
            from dfflow.sandbox.gap_phases import format_runs
            click.echo(format_runs(report["runs"]))
    if plot_path:
        click.echo(f"plot: {plot_path}", err=as_json)
    if peer_failed is not None:
        raise click.ClickException(f"the OVN peer failed, dfflow's runs above stand alone: {peer_failed}")


def _with_ovn(report: dict, vms: int, runs: int, interval: float | None, options: dict) -> dict:
    """The same migrations on OVN, after dfflow's sandbox is down; both in one report."""
    from benchmarks import evacuation, ovn_peer
    from dfflow.sandbox import scenario as single

    same = {k: options[k] for k in ("memory_copy", "unplug_delay", "update_port_delay", "keep_samples")}
    if vms > 1:
        theirs = ovn_peer.run_evacuation(vms, runs=runs, interval=interval,
                                         progress=lambda m: click.echo(m, err=True), **same)
        return ovn_peer.combine(report, theirs, evacuation.summarise)
    with click.progressbar(length=runs, label="migrating on OVN", file=sys.stderr) as bar:
        theirs = ovn_peer.run_single(runs=runs, interval=interval or 0.001, progress=lambda _: bar.update(1),
                                     cloud_niceness=options["cloud_niceness"], **same)
    return ovn_peer.combine(report, theirs, single.summarise)


@main.command("osvif-unplug")
@click.option("--runs", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Unplugs of each kind (they alternate).")
@click.option("--json", "as_json", is_flag=True, help="Print every sample and the summary as JSON.")
def osvif_unplug(runs: int, as_json: bool) -> None:
    """Nova's unplug through the real os-vif vs one raw OVSDB transaction, until OVSDB's monitor sees
    it, on a 1-chassis sandbox (needs root)."""
    from benchmarks import osvif_unplug as bench

    with click.progressbar(length=runs * 2, label="unplugging", file=sys.stderr) as bar:
        report = bench.run(runs, progress=lambda _: bar.update(1))
    click.echo(json.dumps(report, indent=2) if as_json else bench.format_report(report))


@main.command("nb-wait")
@click.option("--writes", type=click.IntRange(10, 1_000_000), default=2000, show_default=True,
              help="NB creates per setting.")
def nb_wait(writes: int) -> None:
    """The cost per NB write of waiting for the replica (WAIT), on a real Sentinel topology."""
    from benchmarks import nb_wait as bench
    click.echo(json.dumps(bench.run(writes), indent=2))


@main.command("flow-update")
@click.option("--chassis", type=click.IntRange(3, 3), default=3, show_default=True,
              help="Chassis in the sandbox (M migrates between chassis-1 and chassis-2; the evacuated "
                   "ports move between them too).")
@click.option("--ports", type=click.IntRange(1, 300), default=50, show_default=True,
              help="K: ports whose binding moves at once in the evacuation.")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Migrations and evacuations per path.")
@click.option("--paths", "paths", default="compiled+bundle,osken+bundle,compiled+flow-mods,osken+flow-mods",
              show_default=True, help="Comma-separated controller flow paths to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print every run and the summary as JSON.")
def flow_update(chassis: int, ports: int, runs: int, paths: str, as_json: bool) -> None:
    """NB event to the last chassis' commit/barrier reply on a real sandbox, per controller flow path
    (compiled packer or os-ken objects, bundle or flow mods + barrier); needs root."""
    from benchmarks import flow_update as bench

    chosen = tuple(p.strip() for p in paths.split(",") if p.strip())
    unknown = [p for p in chosen if p not in bench.PATHS]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown path {', '.join(unknown)}; choose from {', '.join(bench.PATHS)}",
                                 param_hint="--paths")
    with click.progressbar(length=2 * runs * len(chosen), label="flow updates", file=sys.stderr) as bar:
        report = bench.run(ports=ports, runs=runs, chassis=chassis, paths=chosen,
                           progress=lambda _: bar.update(1))
    click.echo(json.dumps(report, indent=2) if as_json else bench.format_summary(report))


@main.command("api")
@click.option("--concurrency", "levels", default="1,10,50,200", show_default=True,
              help="Comma-separated numbers of requests in flight.")
@click.option("--requests", type=click.IntRange(2, 253), default=200, show_default=True,
              help="Requests per operation and level (create_port: on one /24, so at most 253).")
@click.option("--servers", default="dfflow,baseline", show_default=True,
              help="Comma-separated: dfflow (this API), baseline (its allocation before).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def api(levels: str, requests: int, servers: str, as_json: bool) -> None:
    """requests/s and p50/p99 latency of create_port, update_port and create_network under concurrency,
    against `dfflow api` on loopback with a private redis-server, vs the allocation it replaced."""
    from benchmarks import api as bench

    try:
        chosen = tuple(int(c) for c in levels.split(",") if c.strip())
    except ValueError:
        raise click.BadParameter(f"{levels!r}: expected numbers separated by commas", param_hint="--concurrency")
    if not chosen or min(chosen) < 1:
        raise click.BadParameter("at least one level, each >= 1", param_hint="--concurrency")
    kinds = tuple(k.strip() for k in servers.split(",") if k.strip())
    unknown = [k for k in kinds if k not in bench.SERVERS]
    if unknown or not kinds:
        raise click.BadParameter(f"unknown server {', '.join(unknown)}; choose from {', '.join(bench.SERVERS)}",
                                 param_hint="--servers")
    with click.progressbar(length=len(kinds), label="api", file=sys.stderr) as bar:
        report = bench.run(chosen, requests, kinds, progress=lambda _: bar.update(1))
    click.echo(json.dumps(report, indent=2) if as_json else bench.format_report(report))


@main.command()
@click.option("--chassis", "chassis_counts", default="10,100", show_default=True,
              help="Comma-separated stand-in chassis counts (one fleet each).")
@click.option("--ports", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="P: VIF ports spread over the chassis (at least one per chassis; 0 = one per chassis).")
@click.option("--evacuate", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="K: also move K ports from chassis-1 to chassis-2 at once (0: single moves only).")
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True, help="Moves per fleet.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes the chassis are spread over (default 2).")
@click.option("--settle", type=click.FloatRange(0, 3600), default=0.0, show_default=True,
              help="Seconds the fleet runs idle after start-up before the first move (controllers as after a "
                   "while up: start-up's arrival windows, 10 s, closed).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write every run and the summaries to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write latency against chassis to this PNG.")
def fanout(chassis_counts: str, ports: int, evacuate: int, runs: int, workers: int | None, settle: float,
           json_path: str | None, plot_path: str | None) -> None:
    """NB binding change -> last chassis' bundle acknowledged, at many chassis: the real controller per
    chassis against a stand-in Open vSwitch (benchmarks.standin)."""
    from benchmarks import fanout as bench

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` ends us: the fleet is torn down
    try:
        counts = [int(c) for c in chassis_counts.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter(f"{chassis_counts!r} is not a comma-separated list of integers",
                                 param_hint="--chassis")
    if not counts or min(counts) < 2:
        raise click.BadParameter("at least 2 chassis", param_hint="--chassis")
    reports = []
    for n in counts:
        report = bench.run(n, ports, evacuate=evacuate, runs=runs, workers=workers, settle=settle,
                           progress=lambda m, n=n: click.echo(f"[{n} chassis] {m}", err=True))
        reports.append(report)
        click.echo(bench.format_summary(report))
    if json_path:
        with open(json_path, "w") as f:
            json.dump([{**r, "summary": bench.summarise(r)} for r in reports], f, indent=1)
    if plot_path:
        bench.plot(reports, plot_path)
        click.echo(f"plot: {plot_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
