"""The stand-in fan-out mode: the real controller per chassis against a stand-in Open vSwitch.
After a port's binding moves, and after 5 ports move at once, every stand-in switch holds exactly
the flows its controller wants (read back over OpenFlow and compared by the controller's reconcile),
and every chassis applied a change caused by each move."""
from __future__ import annotations

import shutil
import time

import pytest

from benchmarks.standin_fleet import Fleet
from controller.apps.secgroups import ARRIVAL_WINDOW

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
CHASSIS = 20


@pytest.fixture(scope="module")
def fleet():
    f = Fleet(CHASSIS, ports=CHASSIS * 2, movers=6)
    try:
        f.started = time.monotonic()
        f.up(timeout=180)
        yield f
    finally:
        f.down()


def _assert_converged(fleet: Fleet) -> None:
    state = fleet.converged()
    assert sorted(state) == sorted(f"chassis-{i + 1}" for i in range(CHASSIS))
    for name, st in state.items():
        assert st["connected"], name
        assert (st["missing"], st["stale"], st["handler_errors"]) == (0, 0, 0), (name, st)
        assert st["held"] == st["wanted"] > 0, (name, st)
    counters = fleet.ask_all({"op": "counters"})
    assert all(c["switch"].get("unsupported", 0) == 0 and c["switch"].get("errors_sent", 0) == 0
               for c in counters.values()), counters


def test_one_move_converges_on_every_standin_chassis(fleet):
    result = fleet.move([fleet.mover_ids[0]], "chassis-2")
    applied = {name for name, entries in result["timings"].items() if entries}
    assert applied == {f"chassis-{i + 1}" for i in range(CHASSIS)}
    _assert_converged(fleet)


def test_five_port_evacuation_converges_on_every_standin_chassis(fleet):
    movers = fleet.mover_ids[1:6]
    result = fleet.move(movers, "chassis-3")
    for name, entries in result["timings"].items():
        assert {e["cause"] for e in entries} == {f"lport:{m}" for m in movers}, name
    _assert_converged(fleet)


def test_the_arrival_windows_of_start_up_close_with_each_local_ports_connections_recorded_and_no_failure(fleet):
    # a controller's start-up admits its ports' connections for ARRIVAL_WINDOW, then records them (an
    # empty dump here: the stand-in's vswitchd has no datapath)
    deadline = fleet.started + ARRIVAL_WINDOW + 60.0
    while True:
        counters = fleet.ask_all({"op": "counters"})
        sweeps = [c["conntrack_sweep"] for c in counters.values()]
        recorded = sum(s.get("conntrack_sweep.arrivals_recorded", 0) for s in sweeps)
        failed = sum(s.get("conntrack_sweep.failures", 0) for s in sweeps)
        if recorded + failed >= CHASSIS * 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (recorded, failed) == (CHASSIS * 2, 0), sweeps
