"""The Interface tracker's VIFs and tunnels, kept per row as updates come, answer as a pass over every
row it holds would (through random histories of VIF and tunnel rows added, changed, turned from one
kind into the other, given no ofport, and deleted)."""
from __future__ import annotations

import random

from controller.interfaces import InterfaceTracker
from controller.view import Vif
from dfflow.ovsdb.monitor import PEER_KEY, IfaceUpdate


def by_every_row(tracker: InterfaceTracker) -> tuple[dict[str, Vif], dict[str, int]]:
    vifs: dict[str, Vif] = {}
    for row in sorted(tracker.by_name.values(), key=lambda r: r.name):
        if row.iface_id and row.ofport is not None and row.peer is None:
            vifs[row.iface_id] = Vif(row.iface_id, row.name, row.ofport, row.external_ids.get("attached-mac"))
    tunnels = {row.peer: row.ofport for row in tracker.by_name.values()
               if row.peer is not None and row.ofport is not None}
    return vifs, tunnels


def random_update(rng: random.Random) -> IfaceUpdate:
    name = f"if{rng.randrange(12)}"
    kind = rng.choice(("vif", "tunnel", "other"))
    ids: dict[str, str] = {}
    if kind == "vif":
        ids = {"iface-id": f"p{rng.randrange(6)}", "attached-mac": f"fa:16:3e:00:00:{rng.randrange(4):02x}"}
    elif kind == "tunnel":
        ids = {PEER_KEY: f"chassis-{rng.randrange(5)}"}
    return IfaceUpdate(name, rng.choice((None, rng.randrange(1, 50))), ids, rng.random() < 0.2)


def test_vifs_and_tunnels_answer_as_a_pass_over_every_row_through_random_histories():
    for seed in range(40):
        rng = random.Random(seed)
        tracker = InterfaceTracker()
        for step in range(120):
            tracker.apply(random_update(rng))
            if rng.random() < 0.5:  # asked now and then: an answer kept too long would show
                assert (tracker.vifs(), tracker.tunnels()) == by_every_row(tracker), (seed, step)
        assert (tracker.vifs(), tracker.tunnels()) == by_every_row(tracker), seed


def test_the_tunnels_answered_are_the_callers_own_copy():
    tracker = InterfaceTracker()
    tracker.apply(IfaceUpdate("t1", 3, {PEER_KEY: "chassis-2"}, False))
    tracker.tunnels()["chassis-9"] = 9
    assert tracker.tunnels() == {"chassis-2": 3}
