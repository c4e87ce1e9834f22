"""A port's facts (what its flows are made of besides its role) are kept per port and made again only when
something they read changed: a move reuses them. Through a random history of moves, address changes, VIFs,
networks, routers and floating IPs, every port's kept facts are those made again from the view."""
from __future__ import annotations

import random

from controller.view import View, Vif
from dfflow.models import (ExternalGateway, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, RouterPort,
                           Subnet)

ME, PEERS = "A", ("B", "C")
SWITCHES = ("net1", "net2", "ext")


def port(n: int, where: str, **fields) -> LogicalPort:
    return LogicalPort(id=f"p{n}", topic="t", lswitch=SWITCHES[n % 2], mac=f"fa:16:3e:00:01:{n:02x}",
                       ips=[f"10.{n % 2 + 1}.0.{n + 10}"], binding_chassis=where, **fields)


def moved(held: LogicalPort, **fields) -> LogicalPort:
    """The next version as the NB subscriber reads it: the values it does not change are the held ones."""
    new, _ = LogicalPort.updated(held, {**held.to_dict(), **fields, "version": held.version + 1})
    return new


def view_with_networks() -> View:
    view = View(ME)
    view.set_tunnels({c: 10 + i for i, c in enumerate(PEERS)})
    for i, s in enumerate(SWITCHES):
        view.put(LogicalSwitch(id=s, topic="t", segmentation_id=100 + i))
        view.put(Subnet(id=f"s-{s}", topic="t", lswitch=s, cidr=f"10.{i + 1}.0.0/24"))
    return view


def test_a_move_reuses_the_ports_facts_and_an_address_change_makes_them_again():
    view = view_with_networks()
    view.set_vif(Vif("p0", "tap0", 5))
    view.put(port(0, ME))
    held = port(1, "B")
    view.put(held)
    facts = view.port_facts(held)
    to_c = moved(held, binding_chassis="C")
    view.put(to_c)
    assert view.port_facts(to_c) is facts
    new_mac = moved(to_c, mac="fa:16:3e:00:09:09")
    view.put(new_mac)
    assert view.port_facts(new_mac) == view.facts_of(new_mac) != facts


def test_every_ports_kept_facts_are_those_made_again_through_a_random_history():
    rng = random.Random(16)
    view = view_with_networks()
    ports = {n: port(n, rng.choice((ME,) + PEERS)) for n in range(8)}
    for p in ports.values():
        view.put(p)
    kinds = dict.fromkeys(("move", "address", "vif", "unplug", "router", "fip", "fip_gone", "vni"), 0)
    for step in range(300):
        kind = rng.choice(list(kinds))
        kinds[kind] += 1
        n = rng.randrange(8)
        if kind == "move":
            ports[n] = moved(ports[n], binding_chassis=rng.choice((ME,) + PEERS))
            view.put(ports[n])
        elif kind == "address":
            change = rng.choice(({"mac": f"fa:16:3e:00:02:{step % 256:02x}"},
                                 {"ips": [f"10.{n % 2 + 1}.0.{rng.randrange(10, 200)}"]},
                                 {"port_security": rng.random() < 0.5},
                                 {"allowed_address_pairs": [{"ip_address": f"10.{n % 2 + 1}.0.250",
                                                             "mac_address": ports[n].mac}]}))
            ports[n] = moved(ports[n], **change)
            view.put(ports[n])
        elif kind == "vif":
            view.set_vif(Vif(f"p{n}", f"tap{n}", n + 1))
        elif kind == "unplug":
            view.remove_vif(f"p{n}")
        elif kind == "router":
            linked = [s for s in SWITCHES[:2] if rng.random() < 0.5]
            view.put(LogicalRouter(id="r1", topic="t", version=step,
                                   ports=[RouterPort(subnet=f"s-{s}", mac=f"fa:16:3e:00:03:0{i}", ip=f"10.{i + 1}.0.1")
                                          for i, s in enumerate(linked)],
                                   external_gateway=ExternalGateway(lswitch="ext", ip="10.3.0.2",
                                                                    mac="fa:16:3e:00:03:09")
                                   if rng.random() < 0.7 else None))
        elif kind == "fip":
            view.put(FloatingIP(id=f"f{n}", topic="t", floating_ip=f"10.3.0.{n + 20}", lswitch="ext",
                                mac=f"fa:16:3e:00:04:{n:02x}", port=f"p{n}", fixed_ip=ports[n].ips[0],
                                router="r1", version=step))
        elif kind == "fip_gone":
            view.drop(FloatingIP.table, f"f{n}")
        else:
            view.put(LogicalSwitch(id=SWITCHES[n % 2], topic="t", segmentation_id=200 + step, version=step))
        for p in ports.values():
            assert view.port_facts(p) == view.facts_of(p), (step, kind, p.id)
    assert min(kinds.values()) > 0, kinds
