"""The view keeps per-port indexes (networks needed here, each network's local ports and the chassis
hosting its remote ports) up to date as ports, VIFs, tunnels and routers change, so that a port move
costs what the port touches. After every step of a random history they answer what a pass over every
port answers, and an engine fed that history wants the same flows as one built from the end state."""
from __future__ import annotations

import random

from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.engine import Engine
from controller.view import LOCAL, REMOTE, View, Vif
from dfflow.models import LogicalPort, LogicalRouter, LogicalSwitch, MigrationRecord, RouterPort, Subnet

ME, PEERS = "A", ("B", "C", "D")
SWITCHES = ("net1", "net2", "net3")


def event(obj, action="update"):
    return {"table": obj.table, "action": action, "id": obj.id, "topic": obj.topic,
            "version": obj.version, "object": None if action == "delete" else obj.to_dict()}


def random_port(rng: random.Random, n: int, version: int) -> LogicalPort:
    where = rng.choice((ME,) + PEERS)
    migration = None
    if rng.random() < 0.3:
        dest = rng.choice([c for c in (ME,) + PEERS if c != where])
        migration = MigrationRecord(chassis=dest, source=where, state=rng.choice(("requested", "activated")),
                                    strategy=rng.choice(("announce", "unplug")), id=f"m{version}", bound=where)
    return LogicalPort(id=f"p{n}", topic="t", lswitch=rng.choice(SWITCHES), mac=f"fa:16:3e:00:01:{n:02x}",
                       ips=[f"10.{SWITCHES.index('net1') + 1}.0.{n + 10}"], binding_chassis=where,
                       migration=migration, enabled=rng.random() > 0.1, version=version)


def router(linked: tuple[str, ...], version: int) -> LogicalRouter:
    return LogicalRouter(id="r1", topic="t", version=version,
                         ports=[RouterPort(subnet=f"s-{s}", mac=f"fa:16:3e:00:02:{i:02x}", ip=f"10.{i + 1}.0.1")
                                for i, s in enumerate(linked)])


def by_brute_force(view: View) -> dict:
    """What the indexed questions answer, asked of every port."""
    present = {p.lswitch for p in view.ports() if view.is_local(p) or view.is_arriving(p)}
    needed, grown = set(present), True
    while grown:  # a router joins the networks it reaches from a needed one, until nothing is added
        grown = False
        for r in view.routers():
            attached = view.router_switches(r)
            if attached & needed and not attached <= needed:
                needed |= attached
                grown = True
    needed = {s for s in needed if view.switch(s) is not None}
    answers = {"needed": needed, "migrating": [p for p in sorted(view.ports(), key=lambda p: p.id)
                                               if p.migration is not None],
               "roles": {p.id: view.role(p) for p in view.ports()}}
    for s in SWITCHES:
        on = view.ports_on(s)
        answers[s] = {"present": any(view.is_local(p) for p in on),
                      "local": [p.id for p in on if view.role(p) == LOCAL],
                      "remote": sorted({view.location(p) for p in on if view.role(p) == REMOTE})}
    return answers


def by_index(view: View) -> dict:
    answers = {"needed": set(view.needed_switches()), "migrating": view.migrating_ports(),
               "roles": {p.id: view.placed_role(p) for p in view.ports()}}
    for s in SWITCHES:
        answers[s] = {"present": view.switch_is_present(s), "local": [p.id for p in view.local_ports(s)],
                      "remote": view.remote_chassis_of(s)}
    return answers


def flood_inputs(view: View) -> dict:
    return {s: (s in view.needed_switches(), view.switch_is_present(s),
                [(p.id, view.ofport(p), view.is_pending(p)) for p in view.local_ports(s)],
                [(c, view.tunnels[c]) for c in view.remote_chassis_of(s)]) for s in SWITCHES}


def fresh_engine(engine: Engine) -> Engine:
    """An engine given the end state at once."""
    other = Engine(ME, [L2App(), L3App()])
    other.commit(other.tunnels_changed(engine.view.tunnels))
    for table in (LogicalSwitch.table, Subnet.table, LogicalRouter.table, LogicalPort.table):
        for obj in list(engine.view.objects[table].values()):
            other.commit(other.nb_event(event(obj, "create")))
    for vif in engine.view.vifs.values():
        other.commit(other.vif_online(vif))
    return other


def test_indexes_answer_as_a_pass_over_every_port_through_a_random_history():
    rng = random.Random(16)
    engine = Engine(ME, [L2App(), L3App()])
    view = engine.view
    version = 1
    engine.commit(engine.tunnels_changed({"B": 10, "C": 11}))
    for i, s in enumerate(SWITCHES):
        for obj in (LogicalSwitch(id=s, topic="t", segmentation_id=100 + i, version=version),
                    Subnet(id=f"s-{s}", topic="t", lswitch=s, cidr=f"10.{i + 1}.0.0/24", version=version + 1)):
            engine.commit(engine.nb_event(event(obj, "create")))
        version += 2
    kinds = {"port": 0, "move": 0, "drop": 0, "vif": 0, "unplug": 0, "tunnels": 0, "router": 0,
             "flood_unchanged": 0}
    for step in range(400):
        before = flood_inputs(view)
        epoch = view.flood_version()
        n = rng.randrange(12)
        kind = rng.choices(list(kinds)[:7], weights=(25, 40, 8, 15, 10, 4, 4))[0]
        kinds[kind] += 1
        version += 1
        if kind == "port":
            plan = engine.nb_event(event(random_port(rng, n, version)))
        elif kind == "move":  # only its binding and migration change: the engine's narrowest recompute
            old, new = view.port(f"p{n}"), random_port(rng, n, version)
            moved = old.replace(binding_chassis=new.binding_chassis, migration=new.migration, version=version) \
                if old is not None else new
            plan = engine.nb_event(event(moved))
        elif kind == "drop":
            old = view.port(f"p{n}")
            plan = engine.nb_event(event(old, "delete")) if old is not None else engine.everything()
        elif kind == "vif":
            plan = engine.vif_online(Vif(f"p{n}", f"tap{n}", rng.choice((n + 1, n + 50))))
        elif kind == "unplug":
            plan = engine.vif_offline(f"p{n}")
        elif kind == "tunnels":
            plan = engine.tunnels_changed({c: 10 + i + rng.randrange(2) for i, c in enumerate(PEERS)
                                           if rng.random() < 0.8})
        else:
            linked = tuple(s for s in SWITCHES if rng.random() < 0.5)
            plan = engine.nb_event(event(router(linked, version)))
        engine.commit(plan)
        assert by_index(view) == by_brute_force(view), (step, kind)
        if flood_inputs(view) != before:
            assert view.flood_version() != epoch, (step, kind)
        else:
            kinds["flood_unchanged"] += 1
        if step % 2:
            assert engine.desired() == fresh_engine(engine).desired(), (step, kind)
    assert min(kinds.values()) > 0, kinds
