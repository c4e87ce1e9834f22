"""The NB client neutron-server's threads use: NbApi on a loop thread of its own, called from plain threads."""
from __future__ import annotations

import threading

import pytest

from dfflow.errors import NotFound
from dfflow.models import LogicalPort, LogicalSwitch, MigrationRecord, Subnet
from dfflow.neutron.nbclient import NbClient


@pytest.fixture
def client(nb_url):
    client = NbClient(nb_url, timeout=10)
    yield client
    client.close()


def test_put_creates_then_changes_only_the_given_fields_and_writes_nothing_when_equal(client):
    client.put(LogicalSwitch, "n1", "tenant", {"name": "net", "segmentation_id": 5})
    created = client.put(LogicalPort, "p1", "tenant", {"lswitch": "n1", "mac": "fa:16:3e:00:00:01", "name": "a"})
    # The controller records a migration meanwhile: a later put from Neutron keeps it.
    moving = client.modify("lport", "p1", lambda p: p.replace(migration=MigrationRecord(chassis="c2")))
    renamed = client.put(LogicalPort, "p1", "tenant", {"lswitch": "n1", "mac": "fa:16:3e:00:00:01", "name": "b"})
    assert (renamed.name, renamed.migration) == ("b", MigrationRecord(chassis="c2"))
    assert created.version < moving.version < renamed.version
    again = client.put(LogicalPort, "p1", "tenant", {"lswitch": "n1", "mac": "fa:16:3e:00:00:01", "name": "b"})
    assert again.version == renamed.version


def test_put_of_an_object_whose_reference_is_missing_fails_naming_it(client):
    with pytest.raises(NotFound) as caught:
        client.put(Subnet, "s1", "tenant", {"lswitch": "no-such-net", "cidr": "10.0.0.0/24"})
    assert caught.value.field == "lswitch" and client.get("subnet", "s1") is None


def test_discard_deletes_once_and_is_then_a_no_op(client):
    client.put(LogicalSwitch, "n1", "tenant", {"segmentation_id": 9})
    assert client.discard("lswitch", "n1") is True
    assert client.discard("lswitch", "n1") is False
    assert client.get("lswitch", "n1") is None


def test_calls_from_many_threads_at_once_all_land(client):
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            client.put(LogicalSwitch, f"n{i}", "tenant", {"segmentation_id": 100 + i})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(s.segmentation_id for s in client.list("lswitch")) == list(range(100, 116))
