"""The destination of a migration is prepared at step 1: it holds the port's network from the plug
on, so the switch changes only the port's own flows there (pure engine, no OVS)."""
from controller.apps.l2 import L2App
from controller.migration import Event, transition
from controller.view import Vif
from dfflow.flows import Output, SetField
from test_engine import apply, event, l2_lookup_actions, make_engine, port

NET, PORT = L2App().cookie("net1"), L2App().cookie("b1")


def cookies(engine) -> set[int]:
    return {f.cookie for f in engine.desired().values()}


def test_the_destination_gets_the_network_at_step_1_and_only_the_ports_flows_at_the_switch():
    engine = make_engine("A")  # the destination; the port lives on B, its network has no port here
    b1 = port("b1", 2, 12, "B")
    apply(engine, engine.nb_event(event(b1)))
    apply(engine, engine.vif_online(Vif("b1", "tapb1", 7)))  # os-vif plugs the VIF here
    assert not cookies(engine) & {NET, PORT}  # still B's port, and no network here
    requested = transition(b1, Event.DEST_PLUGGED, "A", now=1.0).port.replace(version=2)
    apply(engine, engine.nb_event(event(requested, "update")))
    assert NET in cookies(engine)  # the network's flows at step 1 (the port is remote here still)
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(10))
    before = dict(engine.desired())
    switched = transition(requested, Event.SOURCE_UNPLUGGED, "B", now=2.0).port.replace(version=3)
    apply(engine, engine.nb_event(event(switched, "update")))
    after = engine.desired()
    assert l2_lookup_actions(engine, 2) == (Output(7),)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {(before.get(k) or after.get(k)).cookie for k in changed} <= {PORT, NET}  # the port's own flows...
    assert all(after.get(k) == f for k, f in before.items() if f.cookie == NET and k[0] != 60 and k[0] != 50)
    # ...and flooding, now that the network has a local port: the multicast entry of l2_lookup, the flood
    # from tunnels and from VIFs, each beside its IPv6 drop (no IPv6 to a port with security groups) and
    # its IPv4 through the port's ingress filter, whose admitted copies l2_lookup outputs to the port
    flooding = sorted((f.table, f.priority) for f in (after.get(k) for k in changed) if f and f.cookie == NET)
    assert flooding == [(50, 50), (50, 200), (60, 50), (60, 55), (60, 60), (60, 100), (60, 105), (60, 110)]
    assert not [k for k in changed if before.get(k) is not None and before[k].cookie == NET]


def test_an_aborted_migration_takes_the_network_away_again():
    engine = make_engine("A")
    b1 = port("b1", 2, 12, "B")
    apply(engine, engine.nb_event(event(b1)))
    apply(engine, engine.vif_online(Vif("b1", "tapb1", 7)))
    requested = transition(b1, Event.DEST_PLUGGED, "A", now=1.0).port.replace(version=2)
    apply(engine, engine.nb_event(event(requested, "update")))
    assert NET in cookies(engine)
    apply(engine, engine.vif_offline("b1"))  # the destination's VIF went away first
    assert not cookies(engine) & {NET, PORT}
