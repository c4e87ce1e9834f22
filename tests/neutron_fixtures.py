"""A real neutron-server with the dfflow ML2 driver and router plugin, once per test session.

The sandbox's own implementation (controller/sandbox/neutronproc.py: MariaDB, `neutron-db-manage upgrade
heads`, gunicorn serving Neutron's API with noauth on loopback) over a real redis-server as the NB db,
with Neutron's Nova notifier sending to a recorder standing in for Nova's API. Everything is stopped and
its directory removed at the end of the session. Sandboxes attach to it with
`Sandbox.up(nb_url=neutron.nb_url, neutron_url=neutron.url)`.
"""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

from controller.sandbox import neutronproc
from controller.sandbox.redisproc import RedisServer
from dfflow.nb.store import NbApi
from nova_recorder import NovaRecorder


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
