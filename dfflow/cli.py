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
from dfflow.sandbox.cli import nova_delay_options

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
@click.option("--nova-url", envvar="DFFLOW_NOVA_URL",
              help="Nova's compute endpoint (e.g. http://nova:8774/v2.1): send it network-vif-plugged/unplugged "
                   "events (or DFFLOW_NOVA_URL).")
@click.option("--nova-token", envvar="DFFLOW_NOVA_TOKEN", help="X-Auth-Token for Nova (or DFFLOW_NOVA_TOKEN).")
@click.option("--nova-auth-url", envvar="DFFLOW_NOVA_AUTH_URL",
              help="Instead of a token: Keystone's URL, to log in with --nova-username/--nova-password/"
                   "--nova-project (or DFFLOW_NOVA_AUTH_URL, _USERNAME, _PASSWORD, _PROJECT).")
@click.option("--nova-username", envvar="DFFLOW_NOVA_USERNAME")
@click.option("--nova-password", envvar="DFFLOW_NOVA_PASSWORD")
@click.option("--nova-project", envvar="DFFLOW_NOVA_PROJECT")
@click.option("--nova-domain", envvar="DFFLOW_NOVA_DOMAIN", default="Default", show_default=True,
              help="Keystone domain of the user and the project.")
@click.option("--nb-wait", type=click.FloatRange(0), default=10.0, show_default=True, envvar="DFFLOW_API_NB_WAIT",
              help="Seconds a request waits for an unreachable NB db before it answers 503 with Retry-After.")
def api(nb_url: str, listen: str, auth: str, token: str | None, nova_url: str | None, nova_token: str | None,
        nova_auth_url: str | None, nova_username: str | None, nova_password: str | None,
        nova_project: str | None, nova_domain: str, nb_wait: float) -> None:
    """Serve the Neutron-compatible API (networks, subnets, ports, routers, floating IPs, port bindings)."""
    from dfflow.api.server import ServeError, serve
    from dfflow.errors import ValidationError
    from dfflow.nb.nburl import parse_nb_url
    try:
        parse_nb_url(nb_url)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--nb") from None
    credentials = None
    if nova_auth_url:
        from dfflow.nova.keystone import KeystoneCredentials
        missing = [f"--nova-{n}" for n, v in (("username", nova_username), ("password", nova_password),
                                               ("project", nova_project)) if not v]
        if missing:
            raise click.UsageError(f"--nova-auth-url needs {', '.join(missing)}")
        credentials = KeystoneCredentials(nova_auth_url, nova_username, nova_password, nova_project,
                                          nova_domain, nova_domain)
    try:
        serve(nb_url, listen, auth=auth, token=token, nova_url=nova_url, nova_token=nova_token,
              nova_credentials=credentials, nb_wait=nb_wait)
    except ServeError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.option("--runs", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Migrations per strategy.")
@nova_delay_options
@click.option("--neutron", is_flag=True, help="neutron-server with the dfflow driver serves the cloud's API "
                                              "instead of `dfflow api` (scripts/setup-neutron.sh installs it).")
def demo(runs: int, memory_copy: int, unplug_delay: int, update_port_delay: int, nova_path: str,
         neutron: bool) -> None:
    """The live-migration demo on a fresh 3-chassis sandbox (needs root; tears down after)."""
    from dfflow.sandbox import demo as demo_
    try:
        demo_.run(click.echo, runs, unplug_delay / 1000, update_port_delay / 1000, memory_copy / 1000,
                  nova_path=nova_path, neutron=neutron)
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


@main.command("neutron-sync")
@click.option("--config-file", "config_files", multiple=True, required=True, type=click.Path(exists=True),
              help="neutron-server's configuration (neutron.conf, ml2_conf.ini); repeat, in neutron-server's order.")
@click.option("--config-dir", type=click.Path(exists=True, file_okay=False), help="neutron-server's config dir.")
@click.option("--mode", type=click.Choice(["log", "repair"]), default="log", show_default=True,
              help="log: report the drift (exit 1 if any); repair: also fix it (exit 1 if anything failed).")
@click.option("--verbose", "-v", is_flag=True, help="Also list every object that differs.")
def neutron_sync(config_files: tuple[str, ...], config_dir: str | None, mode: str, verbose: bool) -> None:
    """Make the NB db match Neutron's database (needs `pip install dfflow[neutron]`).

    Reads Neutron through its own plugins, with neutron-server's configuration: missing NB objects are
    created, drifted ones rewritten (NB-only fields kept), the ones Neutron does not have deleted; the
    `chassis` table, and the status of existing ports, are never touched."""
    try:
        from dfflow.neutron import sync_cmd
    except ImportError as exc:
        raise click.ClickException(f"neutron is not installed here ({exc}): pip install dfflow[neutron]") from None
    drift, write_failures = sync_cmd.run(config_files, config_dir, mode)
    for line in drift.details() if verbose else ():
        click.echo(line)
    click.echo(drift.summary())
    click.echo(f"{drift.count} differences; {drift.failed} failed" + (" (repaired)" if mode == "repair" else ""))
    if write_failures:
        click.echo("NB writes neutron-server saw fail after Neutron committed (repaired by its maintenance): "
                   + ", ".join(f"{kind}={n}" for kind, n in sorted(write_failures.items())))
    if drift.followers_resynced is not None:
        click.echo(f"the NB had been flushed: {drift.followers_resynced} followers (controllers) made to resync")
    if drift.failed or (mode == "log" and drift.count):
        sys.exit(1)


def _mount_control_plane_groups() -> None:
    from dfflow.sandbox.cli import sandbox  # the control plane ships in the same wheel
    main.add_command(sandbox)


_mount_control_plane_groups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
