"""The sandbox's Nova talks to the API with python-neutronclient built as Nova builds it: a connection
failure is retried (`[neutron] http_retries`), a 503 is not (the API rides out NB outages instead)."""
from __future__ import annotations

import threading
import time

import pytest
from neutronclient.common import exceptions as neutron_exc

from api_fixtures import free_port
from dfflow.sandbox.novaclient_neutron import nova_neutron_client
from dfflow.api.server import ApiServer


def test_a_call_made_while_the_api_is_not_listening_yet_is_retried_until_it_is(nb_url):
    port = free_port()
    servers: list[ApiServer] = []
    starting = threading.Timer(0.8, lambda: servers.append(ApiServer(nb_url, port).start()))
    starting.start()
    try:
        started = time.monotonic()
        net = nova_neutron_client(f"http://127.0.0.1:{port}").create_network({"network": {"name": "n"}})
        assert time.monotonic() - started >= 0.5  # the first attempt met a closed port
        assert net["network"]["name"] == "n"
    finally:
        starting.join()
        for server in servers:
            server.stop()


def test_without_retries_a_closed_port_is_a_connection_failure():
    from keystoneauth1.exceptions import ConnectFailure
    client = nova_neutron_client(f"http://127.0.0.1:{free_port()}", http_retries=0)
    with pytest.raises(ConnectFailure):
        client.list_networks()


def test_a_503_reaches_the_caller_as_nova_would_see_it(nb_url, redis_server):
    server = ApiServer(nb_url, free_port(), nb_wait=0.0).start()
    try:
        redis_server.stop()
        with pytest.raises(neutron_exc.NeutronClientException) as caught:
            nova_neutron_client(server.url).list_networks()
        assert caught.value.status_code == 503
    finally:
        server.stop()
