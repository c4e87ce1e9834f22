"""A real neutron-server with the dfflow ML2 driver and router plugin, once per test session.

The sandbox's own implementation (dfflow/sandbox/neutronproc.py: MariaDB, `neutron-db-manage upgrade
heads`, gunicorn serving Neutron's API with noauth on loopback) over a real redis-server as the NB db,
with Neutron's Nova notifier sending to a recorder standing in for Nova's API. Everything is stopped and
its directory removed at the end of the session. Sandboxes attach to it with
`Sandbox.up(nb_url=neutron.nb_url, neutron_url=neutron.url)`.
"""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from api_fixtures import nb_call
from dfflow.sandbox import neutronproc
from dfflow.sandbox.redisproc import RedisServer
from dfflow.sandbox.topology import Sandbox
from controller.templates import APP_COOKIE_SHIFT, object_hash
from controller_fixtures import dump_flows, flow_cookies, wait_controllers_ready
from dfflow.models import MODELS
from dfflow.nb.store import NbApi
from nova_recorder import NovaRecorder
from sandbox_fixtures import _new_dir, _teardown, require_substrate


class NeutronDeployment:
    """redis (the NB) + MariaDB + Neutron's API with dfflow, started in order and stopped in reverse:
    `.url` (Neutron's API), `.nb_url`, `.api` (the NeutronServer: `sync`, `restart_api`), `.nova` (the
    events Neutron sent to Nova)."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.redis = RedisServer(str(workdir / "redis"), unixsocket=False)
        self.nova = NovaRecorder()
        self.api: neutronproc.NeutronServer | None = None

    @property
    def nb_url(self) -> str:
        return self.redis.url

    @property
    def url(self) -> str:
        assert self.api is not None, "not started"
        return self.api.url

    def start(self) -> "NeutronDeployment":
        self.nova.__enter__()
        try:
            self.redis.start()
            self.api = neutronproc.NeutronServer(self.dir / "neutron", self.redis.url, self.nova.url).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        self.redis.stop()
        self.nova.__exit__(None, None, None)


def events_for(nova: NovaRecorder, port_id: str) -> list[tuple[str, str, str]]:
    """(name, status, server_uuid) of the events Nova accepted about `port_id`, in the order received."""
    return [(e["name"], e.get("status", ""), e["server_uuid"]) for e in nova.events if e.get("tag") == port_id]


def flush_nb(nb_url: str) -> None:
    """The NB db lost entirely (FLUSHDB): no object, no revision counter, no event sent."""
    async def flush() -> None:
        nb = NbApi(nb_url)
        try:
            await nb.redis.flushdb()
        finally:
            await nb.close()
    asyncio.run(flush())


@contextlib.contextmanager
def sandbox_on(neutron: NeutronDeployment, chassis: int) -> Iterator[Sandbox]:
    """A sandbox whose controllers follow the session neutron-server's NB db and whose cloud's API is that
    neutron-server, its controllers ready; torn down after. A controller tunnels to every chassis row in
    the NB: the rows other tests made for hosts that do not exist are removed first."""
    require_substrate()
    for row in nb_call(neutron.nb_url, "list", "chassis"):
        nb_call(neutron.nb_url, "delete", "chassis", row.id)
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=chassis, controllers=True, nb_url=neutron.nb_url, neutron_url=neutron.url)
        wait_controllers_ready(sb)
        yield sb
    finally:
        _teardown([sb])


def stale_flows(sb: Sandbox, nb_url: str) -> dict[str, list[str]]:
    """Per chassis, the flows whose cookie names an object the NB no longer holds (every cookie of an app is
    `app id << 56 | hash of an object id`; the pipeline's own flows hash the name "pipeline")."""
    alive = {object_hash("pipeline")} | {object_hash(obj.id) for table in MODELS
                                         for obj in nb_call(nb_url, "list", table)}
    mask = (1 << APP_COOKIE_SHIFT) - 1
    found = {}
    for chassis in sb.chassis_list():
        lines = dump_flows(sb, chassis.name)
        found[chassis.name] = [line for line, cookie in zip(lines, flow_cookies(lines))
                               if cookie and cookie & mask not in alive]
    return {name: lines for name, lines in found.items() if lines}


@pytest.fixture(scope="session")
def neutron() -> Any:
    """The session's neutron-server with dfflow."""
    reasons = neutronproc.missing()
    if reasons:
        pytest.skip("; ".join(reasons))
    with tempfile.TemporaryDirectory(prefix="dfflow-neutron-") as workdir:
        deployment = NeutronDeployment(Path(workdir)).start()
        try:
            yield deployment
        finally:
            deployment.stop()
