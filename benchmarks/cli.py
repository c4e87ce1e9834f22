"""`dfflow-bench`: compares flow-update latency and migration downtime, in one run per comparison."""
from __future__ import annotations

import json

import click


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


if __name__ == "__main__":  # pragma: no cover
    main()
