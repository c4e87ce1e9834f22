"""The Neutron-compatible API served by a real uvicorn on a free loopback port, over a real NB db."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dfflow.sandbox.redisproc import free_port
from dfflow.api.server import ApiServer
from dfflow.nb.store import NbApi

TOKEN = "s3cret-token"


@pytest.fixture
def api(nb_url):
    server = ApiServer(nb_url, free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def token_api(nb_url):
    server = ApiServer(nb_url, free_port(), auth="token", token=TOKEN).start()
    yield server
    server.stop()


def sdk(url: str, **auth: Any):
    """An openstacksdk Connection to the API with no Keystone, ignoring any clouds.yaml or OS_* variables."""
    import openstack.config
    from openstack.connection import Connection

    options: dict[str, Any] = {"auth_type": "none", "auth": {"endpoint": url}}
    options.update(auth)
    region = openstack.config.get_cloud_region(load_yaml_config=False, load_envvars=False, **options)
    return Connection(config=region)


def nb_call(url: str, method: str, *args: Any) -> Any:
    """One NbApi call from synchronous test code."""
    async def run() -> Any:
        nb = NbApi(url)
        try:
            return await getattr(nb, method)(*args)
        finally:
            await nb.close()
    return asyncio.run(run())


def neutron_client(url: str):
    """python-neutronclient as Nova builds it with `[neutron] auth_type = none` and an endpoint override:
    a keystoneauth session with no token, and the client's own v2.0 calls."""
    from keystoneauth1 import session
    from keystoneauth1.noauth import NoAuth
    from neutronclient.v2_0 import client

    return client.Client(session=session.Session(auth=NoAuth(endpoint=url)), service_type="network",
                         endpoint_override=url)
