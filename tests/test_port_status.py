"""A chassis' reports of its VIFs up and down (lport_status), against a real Redis."""
import asyncio

import pytest

from controller.portstatus import StatusReporter
from dfflow.models import LogicalPort, LogicalSwitch, PortStatus, Subnet


async def make_port(nb, pid="p1", n=1):
    if await nb.get(LogicalSwitch.table, "net1") is None:
        await nb.create(LogicalSwitch(id="net1", topic="t", segmentation_id=101))
        await nb.create(Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24"))
    return await nb.create(LogicalPort(id=pid, topic="t", lswitch="net1", mac=f"fa:16:3e:00:00:{n:02x}",
                                       ips=[f"10.0.0.{n}"], binding_chassis="A"))


def reporter(nb, chassis, topics=None):
    return StatusReporter(chassis, nb, lambda pid: (topics or {}).get(pid), coalesce_delay=0)


async def test_up_creates_the_status_and_down_takes_this_chassis_out_of_it(nb):
    await make_port(nb)
    a = reporter(nb, "A")
    a.up("p1", since=10.0)
    assert not await a.flush()
    assert (await nb.get(PortStatus.table, "p1")).up == {"A": 10.0}
    assert (await nb.get(PortStatus.table, "p1")).topic == "t"
    a.down("p1")
    assert not await a.flush()
    assert (await nb.get(PortStatus.table, "p1")).up == {}


async def test_two_chassis_reporting_at_once_keep_each_others_entries(nb):
    await make_port(nb)
    a, b = reporter(nb, "A"), reporter(nb, "B")
    a.up("p1", 1.0)
    b.up("p1", 2.0)
    await asyncio.gather(a.flush(), b.flush())
    assert (await nb.get(PortStatus.table, "p1")).up == {"A": 1.0, "B": 2.0}
    a.down("p1")
    b.up("p1", 3.0)  # up already: keeps when it came up
    await asyncio.gather(a.flush(), b.flush())
    assert (await nb.get(PortStatus.table, "p1")).up == {"B": 2.0}


async def test_reports_coalesce_to_the_last_word_per_port(nb):
    await make_port(nb)
    a = reporter(nb, "A")
    a.up("p1", 1.0)
    a.down("p1")
    assert a.pending == 1
    await a.flush()
    assert await nb.get(PortStatus.table, "p1") is None  # never up anywhere: nothing written
    assert a.stats["writes"] == 1


async def test_a_vif_whose_port_is_not_known_yet_is_retried_until_it_is(nb):
    a = reporter(nb, "A")
    a.up("p1", 1.0)
    assert await a.flush()  # left for a retry
    assert a.stats["ports_not_known"] == 1 and a.pending == 1
    await make_port(nb)
    assert not await a.flush()
    assert (await nb.get(PortStatus.table, "p1")).up == {"A": 1.0}


async def test_a_failed_write_is_counted_logged_and_retried(nb, caplog):
    await make_port(nb)
    a = reporter(nb, "A")
    real_create = nb.create
    calls = []

    async def failing_once(obj, **kwargs):
        calls.append(obj)
        if len(calls) == 1:
            raise ConnectionError("redis went away")
        return await real_create(obj, **kwargs)

    nb.create = failing_once
    task = asyncio.ensure_future(a.run())
    try:
        a.up("p1", 1.0)
        for _ in range(200):
            status = await nb.get(PortStatus.table, "p1")
            if status is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert status.up == {"A": 1.0}
    assert a.stats["write_errors"] == 1 and "redis went away" in a.errors[0]
    assert "not written; retrying" in caplog.text


async def test_resync_reports_the_vifs_here_and_removes_this_chassis_from_the_others(nb):
    await make_port(nb, "p1")
    await make_port(nb, "p2", 2)
    await nb.create(PortStatus(id="p2", topic="t", up={"A": 1.0, "B": 2.0}))  # went while A was away
    a = reporter(nb, "A")
    await a.resync({"p1"})
    await a.flush()
    assert (await nb.get(PortStatus.table, "p1")).up.keys() == {"A"}
    assert (await nb.get(PortStatus.table, "p2")).up == {"B": 2.0}
