"""A port goes ACTIVE through Neutron's provisioning blocks when the NB's `lport_status` shows its VIF up on
its host, and Neutron's own Nova notifier then sends `network-vif-plugged` (to a recorder standing in
for Nova's API)."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest

from api_fixtures import nb_call, sdk
from controller_fixtures import wait_until
from dfflow.models import Chassis, PortStatus
from neutron_fixtures import events_for

pytestmark = [pytest.mark.neutron,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")]
WAIT = 20.0  # seconds; the notifier batches events every second here


@pytest.fixture
def net(neutron):
    return sdk(neutron.url).network


def _chassis(nb_url: str, *names: str) -> None:
    for name in names:
        if nb_call(nb_url, "get", "chassis", name) is None:
            nb_call(nb_url, "create", Chassis(id=name, topic="chassis", tunnel_ip="172.31.0.7"))


def _report_vif_up(nb_url: str, port_id: str, *hosts: str) -> None:
    """What a chassis reports when the VIF of `port_id` is plugged and up on it."""
    topic = nb_call(nb_url, "get", "lport", port_id).topic
    current = nb_call(nb_url, "get", "lport_status", port_id)
    status = PortStatus(id=port_id, topic=topic, up={host: time.time() for host in hosts})
    if current is None:
        nb_call(nb_url, "create", status)
    else:
        nb_call(nb_url, "update", status.replace(version=current.version))


def _vm_port(net, network_id: str, host: str):
    return net.create_port(network_id=network_id, binding_host_id=host, device_owner="compute:nova",
                           device_id=str(uuid.uuid4()))


@pytest.fixture
def network(net):
    network = net.create_network(name="status")
    net.create_subnet(network_id=network.id, cidr="10.60.0.0/24", ip_version=4)
    return network


def test_port_goes_active_and_nova_hears_vif_plugged_when_its_vif_is_up_on_its_host(net, neutron, network):
    _chassis(neutron.nb_url, "status-host", "other-host")
    port = _vm_port(net, network.id, "status-host")
    assert (port.binding_vif_type, port.status) == ("ovs", "DOWN")

    _report_vif_up(neutron.nb_url, port.id, "other-host")  # up elsewhere: not this port's VIF being ready
    time.sleep(1.0)
    assert net.get_port(port.id).status == "DOWN"

    _report_vif_up(neutron.nb_url, port.id, "other-host", "status-host")
    wait_until(lambda: net.get_port(port.id).status == "ACTIVE", WAIT, 0.1, what="port ACTIVE")
    plugged = ("network-vif-plugged", "completed", port.device_id)
    wait_until(lambda: plugged in events_for(neutron.nova, port.id), WAIT, 0.1,
               what="network-vif-plugged sent to Nova")


def test_a_vif_already_up_when_the_port_is_bound_there_makes_it_active(net, neutron, network):
    _chassis(neutron.nb_url, "early-host")
    port = net.create_port(network_id=network.id, device_owner="compute:nova", device_id=str(uuid.uuid4()))
    _report_vif_up(neutron.nb_url, port.id, "early-host")
    time.sleep(0.5)
    assert net.get_port(port.id).status == "DOWN"  # not bound anywhere yet

    net.update_port(port, binding_host_id="early-host")
    wait_until(lambda: net.get_port(port.id).status == "ACTIVE", WAIT, 0.1, what="port ACTIVE")


def test_activating_a_binding_elsewhere_waits_for_the_vif_there(net, neutron, network):
    """Nova's live migration: the port goes DOWN at the activation on the destination (Nova hears
    vif-unplugged), and ACTIVE again with vif-plugged once the destination reports the VIF up."""
    _chassis(neutron.nb_url, "mig-src", "mig-dst")
    port = _vm_port(net, network.id, "mig-src")
    _report_vif_up(neutron.nb_url, port.id, "mig-src")
    wait_until(lambda: net.get_port(port.id).status == "ACTIVE", WAIT, 0.1, what="port ACTIVE on the source")
    nova = httpx.Client(base_url=neutron.url + "/v2.0", headers={"X-Roles": "service"}, timeout=30)
    assert nova.post(f"/ports/{port.id}/bindings", json={"binding": {"host": "mig-dst"}}).status_code == 201
    assert net.get_port(port.id).status == "ACTIVE"  # the inactive binding changes nothing yet

    assert nova.put(f"/ports/{port.id}/bindings/mig-dst/activate").status_code == 200
    time.sleep(1.0)
    assert net.get_port(port.id).status == "DOWN"
    _report_vif_up(neutron.nb_url, port.id, "mig-src", "mig-dst")
    wait_until(lambda: net.get_port(port.id).status == "ACTIVE", WAIT, 0.1, what="port ACTIVE on the destination")
    names = lambda: [name for name, _, _ in events_for(neutron.nova, port.id)]  # noqa: E731
    wait_until(lambda: names()[-2:] == ["network-vif-unplugged", "network-vif-plugged"], WAIT, 0.1,
               what="vif-unplugged then vif-plugged")
