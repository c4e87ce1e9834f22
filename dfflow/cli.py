"""The `dfflow` command: NB inspection, the sandbox, and the demo."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import click
from redis.exceptions import RedisError

from dfflow.errors import DfflowError
from dfflow.models import MODELS
from controller.sandbox.cli import nova_delay_options

DEFAULT_NB = os.environ.get("DFFLOW_NB", "redis://127.0.0.1:6379/0")


@click.group()
@click.version_option(package_name="dfflow")
def main() -> None:
    """dfflow: a distributed SDN controller that keeps VMs reachable through live migration."""


@main.group()
def nb() -> None:
    """Inspect the northbound database."""


def _nb_call(url: str, body) -> Any:
    """Run `body(api)` against the NB db at `url`, turning failures into one clear line."""
    from dfflow.nb.store import NbApi

    async def runner() -> Any:
        api = NbApi(url)
        try:
            return await body(api)
        finally:
            await api.close()

    try:
        return asyncio.run(runner())
    except DfflowError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, RedisError) as exc:
        raise click.ClickException(f"NB db at {url}: {exc}") from None


def _summary(obj: Any) -> str:
    data = obj.to_dict()
    for key in ("id", "topic", "version"):
        data.pop(key)
    shown = []
    for key, value in data.items():
        if value in (None, "", [], {}, False) and key != "router_external":
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(",", ":"))
        shown.append(f"{key}={value}")
    text = " ".join(shown)
    return text if len(text) <= 100 else text[:97] + "..."


@nb.command("list")
@click.argument("table", required=False, type=click.Choice(sorted(MODELS)))
@click.option("--topic", help="Only objects of this topic (tenant).")
@click.option("--nb", "nb_url", default=DEFAULT_NB, show_default=True, envvar="DFFLOW_NB",
              help="NB database URL (redis://, rediss://, unix://).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def nb_list(table: str | None, topic: str | None, nb_url: str, as_json: bool) -> None:
    """List NB objects of TABLE (or of every table)."""
    tables = [table] if table else sorted(MODELS)

    bad: list = []

    async def body(api):
        found = []
        for name in tables:
            found += await api.list(table=name, topic=topic, bad=bad)
        return found

    objects = _nb_call(nb_url, body)
    if as_json:
        click.echo(json.dumps([dict(o.to_dict(), table=o.table) for o in objects], indent=2))
    else:
        rows = [(o.table, o.id, o.topic, str(o.version), _summary(o)) for o in objects]
        header = ("TABLE", "ID", "TOPIC", "VERSION", "FIELDS")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
        for row in [header] + rows:
            click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    if bad:
        for exc in bad:
            click.echo(f"skipped: {exc}", err=True)
        raise SystemExit(1)


@nb.command("show")
@click.argument("table", type=click.Choice(sorted(MODELS)))
@click.argument("obj_id")
@click.option("--nb", "nb_url", default=DEFAULT_NB, show_default=True, envvar="DFFLOW_NB")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (default is key: value lines).")
def nb_show(table: str, obj_id: str, nb_url: str, as_json: bool) -> None:
    """Show one NB object."""
    obj = _nb_call(nb_url, lambda api: api.get_or_raise(table, obj_id))
    data = obj.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{key}: {value}")


@main.command("api")
@click.option("--nb", "nb_url", default=DEFAULT_NB, show_default=True, envvar="DFFLOW_NB", help="NB database URL.")
@click.option("--listen", default="127.0.0.1:9696", show_default=True, help="HOST:PORT to serve on.")
@click.option("--auth", type=click.Choice(["none", "token"]), default="none", show_default=True,
              help="'token': clients must send X-Auth-Token (required off loopback).")
@click.option("--token", envvar="DFFLOW_API_TOKEN", help="The token for --auth token (or DFFLOW_API_TOKEN).")
def api(nb_url: str, listen: str, auth: str, token: str | None) -> None:
    """Serve the Neutron-compatible API (networks, subnets, ports, routers, floating IPs)."""
    from dfflow.api.server import ServeError, serve
    from dfflow.errors import ValidationError
    from dfflow.nb.nburl import parse_nb_url
    try:
        parse_nb_url(nb_url)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--nb") from None
    try:
        serve(nb_url, listen, auth=auth, token=token)
    except ServeError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.option("--runs", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Migrations per strategy.")
@nova_delay_options
def demo(runs: int, memory_copy: int, unplug_delay: int, update_port_delay: int) -> None:
    """The live-migration demo on a fresh 3-chassis sandbox (needs root; tears down after)."""
    from controller.sandbox import demo as demo_
    try:
        demo_.run(click.echo, runs, unplug_delay / 1000, update_port_delay / 1000, memory_copy / 1000)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def migration() -> None:
    """Live migrations: their steps and each chassis' apply time."""


def _timelines(nb_url: str, port: str | None, limit: int) -> list[dict[str, Any]]:
    from dfflow.nb.timeline import Timelines
    return _nb_call(nb_url, lambda api: Timelines(api.redis, api.keys).list(port, limit))


def _print_timeline(entry: dict[str, Any]) -> None:
    start = entry.get("requested", 0.0)
    click.echo(f"{entry['id']}: port {entry['port']} {entry.get('source') or '-'} -> {entry['chassis']} "
               f"({entry['strategy']})")
    events = [(entry[s], f"NB: {s}") for s in ("requested", "activated", "switched", "done", "aborted")
              if s in entry]
    events += [(t, f"{ch}: flows applied ({state})") for state, per in entry["applied"].items()
               for ch, t in per.items()]
    for t, what in sorted(events):
        click.echo(f"  {(t - start) * 1000:9.1f} ms  {what}")


@migration.command("list")
@click.option("--nb", "nb_url", default=DEFAULT_NB, show_default=True, envvar="DFFLOW_NB")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def migration_list(nb_url: str, limit: int, as_json: bool) -> None:
    """The latest migrations, newest first."""
    entries = _timelines(nb_url, None, limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        last = next((s for s in ("done", "aborted", "switched", "activated", "requested") if s in e), "-")
        click.echo(f"{e['id']:60} {e.get('source') or '-':12} -> {e['chassis']:12} {e['strategy']:9} {last}")


@migration.command("show")
@click.argument("port")
@click.option("--nb", "nb_url", default=DEFAULT_NB, show_default=True, envvar="DFFLOW_NB")
@click.option("--limit", type=click.IntRange(1, 10_000), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def migration_show(port: str, nb_url: str, limit: int, as_json: bool) -> None:
    """The migrations of PORT (id), with their timelines."""
    entries = _timelines(nb_url, port, limit)
    if not entries:
        raise click.ClickException(f"no migration recorded for port {port!r}")
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        _print_timeline(entry)


def _mount_control_plane_groups() -> None:
    from controller.sandbox.cli import sandbox  # the control plane ships in the same wheel
    main.add_command(sandbox)


_mount_control_plane_groups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
