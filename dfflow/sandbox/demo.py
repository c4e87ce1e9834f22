"""`dfflow demo`: the main job. A 3-chassis sandbox, two networks behind a router, a floating IP
and an external host; probes every millisecond while the VM is live-migrated with the `announce`
and then the `unplug` strategy; each migration's timeline and downtime printed; everything torn
down at the end, on Ctrl-C or on failure."""
from __future__ import annotations

from typing import Any, Callable

from dfflow.sandbox import scenario
from dfflow.sandbox import neutronproc
from dfflow.sandbox.nova import MEMORY_COPY, format_timeline
from dfflow.sandbox.preflight import problems

INTRO = """dfflow demo: 3 chassis (real Open vSwitch, one namespace each), a private Redis NB db,
one dfflow-controller per chassis. net1 (10.1.0.0/24) and net2 (10.2.0.0/24) behind router R,
whose gateway is on the external network `public` (172.24.4.0/24).
  M  net1, chassis-1, with a floating IP   (the VM that migrates: chassis-1 <-> chassis-2)
  P  net1, chassis-3                       (probes M over L2 every 1 ms)
  Q  net2, chassis-3                       (probes M through the router every 1 ms)
  E  public, chassis-3                     (the external host: probes M's floating IP every 1 ms)
M, P and Q are in their project's default security group, which lets in only its members; E, outside
the cloud, has no port security: the demo adds the rules that let its ping and probes in, as a user would.
"""
DFFLOW_API = "The cloud's Neutron API: `dfflow api` (embedded, over the NB db)."
NEUTRON_API = ("The cloud's Neutron API: neutron-server with the dfflow ML2 driver and router plugin "
               "(MariaDB, gunicorn); Nova's calls go through it.")


def run(echo: Callable[[str], None], runs: int = 1, unplug_delay: float = 0.2,
        update_port_delay: float = 0.3, memory_copy: float = MEMORY_COPY,
        nova_path: str = "extended", neutron: bool = False) -> dict[str, Any]:
    missing = problems(need_redis=True) + (neutronproc.missing() if neutron else [])
    if missing:
        raise RuntimeError("; ".join(missing))
    echo(INTRO)
    echo(NEUTRON_API if neutron else DFFLOW_API)
    echo("bringing the sandbox up...")

    def show(result: dict[str, Any]) -> None:
        echo("")
        echo(f"== {result['strategy']} strategy (run {result['run'] + 1})")
        echo(format_timeline(result["timeline"]))
        for name, figures in result["probes"].items():
            if not figures["recovered"]:
                echo(f"  {name}: did not recover")
                continue
            dups = f", {figures['duplicates']} duplicate replies" if figures["duplicates"] else ""
            echo(f"  downtime seen by {name}: {figures['downtime_ms']:.0f} ms without a reply "
                 f"({figures['lost_window_ms']:.0f} ms of probes lost{dups})")
        if result["convergence_ms"] is not None:
            echo(f"  convergence ({result['trigger']} -> last chassis applied): {result['convergence_ms']:.1f} ms")

    report = scenario.run(runs=runs, strategies=("announce", "unplug"), memory_copy=memory_copy,
                          unplug_delay=unplug_delay,
                          update_port_delay=update_port_delay, keep_samples=False, routed_probe=True,
                          on_migration=show, nova_path=nova_path, neutron=neutron, say=echo)
    echo("")
    echo(scenario.format_summary(report))
    echo("sandbox torn down.")
    return report
