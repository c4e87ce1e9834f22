"""A burst of NB events -- what the bus reads at once -- is planned as one change: the subscriber hands
it over whole and in order, the engine makes one plan of it (one bundle), and that plan leaves the
chassis wanting exactly the flows that applying the events one by one leaves it wanting."""
from __future__ import annotations

import asyncio
import random

from controller.apps.dnat import DnatApp
from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.apps.secgroups import SecurityGroupsApp
from controller.daemon import ControllerDaemon
from controller.engine import Engine
from controller.view import Vif
from dfflow.models import LogicalPort, LogicalSwitch, Subnet
from dfflow.nb.bus import Subscriber
from test_view_indexes import ME, SWITCHES, event, random_port, router


def full_engine() -> Engine:
    """An engine with the daemon's apps, three networks, tunnels to B, C, D and VIFs p0-p3 here."""
    engine = Engine(ME, [L2App(), L3App(), DnatApp(), SecurityGroupsApp()])
    engine.commit(engine.tunnels_changed({"B": 10, "C": 11, "D": 12}))
    for i, s in enumerate(SWITCHES):
        for obj in (LogicalSwitch(id=s, topic="t", segmentation_id=100 + i, version=1 + 2 * i),
                    Subnet(id=f"s-{s}", topic="t", lswitch=s, cidr=f"10.{i + 1}.0.0/24", version=2 + 2 * i)):
            engine.commit(engine.nb_event(event(obj, "create")))
    for n in range(4):
        engine.commit(engine.vif_online(Vif(f"p{n}", f"tap{n}", n + 1)))
    return engine


def random_burst(rng: random.Random, view_of: Engine, version: int) -> tuple[list[dict], int]:
    """Port writes (some of one port twice), moves, deletions and a router change, as the NB publishes them."""
    burst, alive = [], {p.id: p for p in view_of.view.ports()}
    for _ in range(rng.randrange(1, 25)):
        version += 1
        n = rng.randrange(12)
        old = alive.get(f"p{n}")
        kind = rng.choices(("port", "move", "drop", "router"), weights=(30, 50, 10, 3))[0]
        if kind == "drop" and old is not None:
            burst.append(event(old.replace(version=version), "delete"))
            del alive[old.id]
            continue
        if kind == "router":
            burst.append(event(router(tuple(s for s in SWITCHES if rng.random() < 0.5), version)))
            continue
        new = random_port(rng, n, version)
        if kind == "move" and old is not None:
            new = old.replace(binding_chassis=new.binding_chassis, migration=new.migration, version=version)
        burst.append(event(new, "update" if old is not None else "create"))
        alive[new.id] = new
    return burst, version


def test_a_burst_is_one_plan_that_ends_where_its_events_one_by_one_end():
    rng = random.Random(1616)
    by_burst, one_by_one = full_engine(), full_engine()
    version, changed = 100, 0
    for step in range(60):
        burst, version = random_burst(rng, one_by_one, version)
        for e in burst:
            one_by_one.commit(one_by_one.nb_event(dict(e)))
        plan = by_burst.nb_events([dict(e) for e in burst])
        by_burst.commit(plan)
        changed += bool(plan)
        assert by_burst.desired() == one_by_one.desired(), (step, [(e["action"], e["id"]) for e in burst])
        assert by_burst.placed == one_by_one.placed, step
    assert changed > 40  # the bursts did change flows


def _daemon() -> ControllerDaemon:
    daemon = ControllerDaemon(ME, "192.0.2.1", "unix:///nonexistent/redis.sock", "unix:/nonexistent/db.sock",
                              "br-int", "unix:/nonexistent/of.sock")
    daemon.engine = daemon.migrator.engine = full_engine()  # the state a running controller would hold
    daemon.engine.port_overlay = daemon.migrator._overlay
    return daemon


async def test_the_daemon_plans_a_burst_of_port_moves_once_and_times_every_event():
    daemon, twin = _daemon(), full_engine()
    ports = [random_port(random.Random(n), n, 200 + n) for n in range(12)]
    for p in ports:
        daemon.engine.commit(daemon.engine.nb_event(event(p, "create")))
        twin.commit(twin.nb_event(event(p, "create")))
    moves = [event(p.replace(binding_chassis="D" if p.binding_chassis != "D" else "B", migration=None,
                             version=300 + i)) for i, p in enumerate(ports)]
    for e in moves:
        e["ts"] = 1.0
    await daemon._on_nb_events([dict(e) for e in moves])
    assert daemon.sender.outbox.qsize() == 1  # one plan: the sender applies it as one bundle
    plan = daemon.sender.outbox.get_nowait()
    assert [plan.cause] + [cause for cause, _ in plan.batched] == [f"lport:{p.id}" for p in ports]
    assert all(timing["event_ts"] == 1.0 for _, timing in plan.batched)
    assert daemon.stats["nb_events.lport"] == len(ports) + 0 and daemon.stats.get("handler_errors", 0) == 0
    for e in moves:
        twin.commit(twin.nb_event(dict(e)))
    assert daemon.engine.desired() == twin.desired()


async def test_the_bus_hands_over_what_it_read_at_once_as_one_burst_in_order(nb, nb_url):
    bursts: list[list[dict]] = []
    busy = asyncio.Event()
    release = asyncio.Event()

    async def handle(events):
        bursts.append(events)
        if len(bursts) == 1:  # a chassis busy with its first event while the others are published
            busy.set()
            await release.wait()

    sub = Subscriber(nb_url, burst_callback=handle)
    await sub.start()
    try:
        await sub.add_topic("tb")
        await nb.create(LogicalSwitch(id="tb-n0", topic="tb", segmentation_id=1))
        await asyncio.wait_for(busy.wait(), 10)
        for i in range(1, 41):
            await nb.create(LogicalSwitch(id=f"tb-n{i}", topic="tb", segmentation_id=1 + i))
        await nb.delete("lswitch", "tb-n3")
        await asyncio.sleep(0.3)  # all of it published and on this subscriber's connection
        release.set()
        deadline = asyncio.get_running_loop().time() + 10
        while sum(map(len, bursts)) < 42 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        release.set()
        await sub.stop()
    assert [len(b) for b in bursts] == [1, 41]
    assert [(e["action"], e["id"]) for e in bursts[1]] == \
        [("create", f"tb-n{i}") for i in range(1, 41)] + [("delete", "tb-n3")]
    assert all(e["model"].id == e["id"] for e in bursts[1] if e["action"] == "create")
    assert sub.stats["bursts"] == 2 and sub.stats["events"] == 42


async def test_a_buffered_burst_is_read_from_the_hiredis_reader_with_subscriptions_confirmed_in_it(nb, nb_url):
    """The events a connection holds are taken from hiredis' reader, not one by one through redis-py's
    get_message; a topic subscribed to in the middle of them (its confirmation among them) is kept."""
    bursts: list[list[dict]] = []
    busy, release = asyncio.Event(), asyncio.Event()

    async def handle(events):
        bursts.append(events)
        if len(bursts) == 1:
            busy.set()
            await release.wait()

    sub = Subscriber(nb_url, burst_callback=handle)
    await sub.start()
    reads = 0
    try:
        await sub.add_topic("hr")
        get_message = sub._pubsub.get_message

        async def counted(*args, **kwargs):
            nonlocal reads
            reads += 1
            return await get_message(*args, **kwargs)

        sub._pubsub.get_message = counted
        await nb.create(LogicalSwitch(id="hr-n0", topic="hr", segmentation_id=1))
        await asyncio.wait_for(busy.wait(), 10)
        for i in range(1, 21):
            await nb.create(LogicalSwitch(id=f"hr-n{i}", topic="hr", segmentation_id=1 + i))
        adding = asyncio.create_task(sub.add_topic("hr2"))  # its confirmation lands among the events
        await asyncio.sleep(0.1)
        for i in range(21, 31):
            await nb.create(LogicalSwitch(id=f"hr-n{i}", topic="hr", segmentation_id=1 + i))
        await nb.create(LogicalSwitch(id="hr2-n1", topic="hr2", segmentation_id=100))
        await asyncio.sleep(0.3)
        reads_before = reads
        release.set()
        await asyncio.wait_for(adding, 10)
        deadline = asyncio.get_running_loop().time() + 10
        while sum(map(len, bursts)) < 32 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        release.set()
        await sub.stop()
    delivered = [e["id"] for b in bursts for e in b]
    assert delivered[:31] == [f"hr-n{i}" for i in range(31)]
    assert "hr2-n1" in delivered and sub.stats["bad_events"] == 0
    assert reads - reads_before <= 3, f"{reads - reads_before} get_message calls for a burst of 31 messages"
