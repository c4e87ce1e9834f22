"""A controller's start-up loads the first snapshot, its VIFs and its tunnels into the view without
computing flows per event, and computes every flow once when they are in (`Engine.loading`,
`Engine.loaded`). Through random start-ups (any order of chassis rows, networks, routers, ports with
migrations, VIFs and tunnels) it wants exactly the flows of an engine fed the same events one by one,
and goes on from there as that engine does; a switch holding none of its flows gets them all from
`desired_plan` (the port flows as the compiled core's rows), the same flows as `desired`."""
from __future__ import annotations

import random

from controller import compiler
from controller.apps.dnat import DnatApp
from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.apps.secgroups import SecurityGroupsApp
from controller.engine import Engine
from controller.view import Vif
from dfflow.models import CHASSIS_TOPIC, Chassis, FloatingIP, LogicalSwitch, Subnet
from test_view_indexes import ME, PEERS, SWITCHES, event, random_port, router


def new_engine() -> Engine:
    return Engine(ME, [L2App(), L3App(), DnatApp(), SecurityGroupsApp()])


def start_up_inputs(rng: random.Random) -> list[tuple[str, object]]:
    """What a chassis hears while starting: NB objects, VIFs and the tunnels, in a random order."""
    objects: list = [Chassis(id=c, topic=CHASSIS_TOPIC, tunnel_ip=f"192.0.2.{i + 1}", status="up")
                     for i, c in enumerate((ME,) + PEERS)]
    for i, s in enumerate(SWITCHES):
        objects += [LogicalSwitch(id=s, topic="t", segmentation_id=100 + i, version=1),
                    Subnet(id=f"s-{s}", topic="t", lswitch=s, cidr=f"10.{i + 1}.0.0/24", version=1)]
    objects.append(router(tuple(s for s in SWITCHES if rng.random() < 0.6), 2))
    ports = [random_port(rng, n, 3) for n in range(12)]
    objects += ports
    objects.append(FloatingIP(id="fip1", topic="t", floating_ip="203.0.113.5", lswitch=SWITCHES[-1],
                              mac="fa:16:3e:00:03:01", port=ports[0].id, fixed_ip=ports[0].ips[0], router="r1"))
    inputs: list[tuple[str, object]] = [("nb", obj) for obj in objects]
    inputs += [("vif", Vif(p.id, f"tap{n}", n + 1)) for n, p in enumerate(ports) if rng.random() < 0.5]
    inputs.append(("tunnels", {c: 10 + i for i, c in enumerate(PEERS) if rng.random() < 0.9}))
    rng.shuffle(inputs)
    return inputs


def feed(engine: Engine, kind: str, what) -> object:
    plan = (engine.nb_event(event(what, "create")) if kind == "nb" else
            engine.vif_online(what) if kind == "vif" else engine.tunnels_changed(what))
    engine.commit(plan)
    return plan


def flows_of_plan(plan) -> dict:
    """The flows a plan of adds leaves on an empty switch, by key (a later add of a key replaces)."""
    flows = {}
    for _, adds in plan.rows:
        flows.update((f.key, f) for f in compiler.flows_of_rows(adds.rows))
    flows.update((f.key, f) for f in plan.adds)
    return flows


def test_a_start_up_computes_once_the_flows_of_the_event_by_event_path():
    for seed in range(12):
        rng = random.Random(seed)
        inputs = start_up_inputs(rng)
        by_event, loading = new_engine(), new_engine()
        loading.loading = True
        for kind, what in inputs:
            feed(by_event, kind, what)
            assert not feed(loading, kind, what), (seed, kind, what)  # nothing computed meanwhile
        assert loading.stats["compiled_ports"] == 0
        loading.commit(loading.loaded())
        assert loading.desired() == by_event.desired(), seed
        assert by_event.desired(), seed
        assert flows_of_plan(loading.desired_plan()) == loading.desired(), seed
        # ... and from there on, both follow the same events to the same flows
        for step in range(30):
            n, version = rng.randrange(12), 10 + step
            change = rng.choice(("port", "vif", "unplug", "tunnels"))
            for engine in (by_event, loading):
                if change == "port":
                    engine.commit(engine.nb_event(event(random_port(random.Random(version), n, version))))
                elif change == "vif":
                    engine.commit(engine.vif_online(Vif(f"p{n}", f"tap{n}", n + 1)))
                elif change == "unplug":
                    engine.commit(engine.vif_offline(f"p{n}"))
                else:
                    engine.commit(engine.tunnels_changed({c: 10 + i for i, c in enumerate(PEERS) if i != n % 4}))
            assert loading.desired() == by_event.desired(), (seed, step, change)


def test_a_start_up_with_nothing_local_wants_no_port_flows():
    engine = new_engine()
    engine.loading = True
    engine.commit(engine.tunnels_changed({"B": 10}))
    engine.commit(engine.loaded())
    plan = engine.desired_plan()
    assert not plan.rows and flows_of_plan(plan) == engine.desired()
    assert not engine.loading
