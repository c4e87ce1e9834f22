"""Soak: one VM per chassis, live migrations back and forth with a fault in the middle of every 10th
(controller kill -9 at the source, Redis restart, ovs-vswitchd killed at the destination,
ovsdb-server restarted at the source, in turn), probes from up to five chassis throughout. Every
migration completes, every fault is recovered from (all controllers healthy, no stale or missing
flow, no migration record or OVS port left, the VM answering), no acknowledged NB write is lost,
and the controllers' open descriptors and RSS stay flat (no growth over the second half of the run beyond
a small slack: pools and bounded buffers fill in the first).

The short run is in the default test run; the long one (20 chassis, 200 migrations) is behind the
`soak` marker, sized by DFFLOW_SOAK_CHASSIS / DFFLOW_SOAK_MIGRATIONS (DFFLOW_SOAK_MINUTES: start no
migration after that long), its figures written as JSON to DFFLOW_SOAK_REPORT when set:

    flock /tmp/dfflow-heavy.lock .venv/bin/pytest -m soak -s tests/test_soak.py
"""
from __future__ import annotations

import json
import os

import pytest

from controller_fixtures import running_cloud
from soak import FAULTS, Soak

pytestmark = pytest.mark.ovs
FD_SLACK = 4  # descriptors a controller may hold more at the end than in the first half (a connection being replaced)
RSS_SLACK = 0.10  # of its RSS a controller may gain in the second half (bounded status buffers still filling)


def run_soak(chassis: int, migrations: int, fault_every: int = 10, budget: float | None = None) -> dict:
    with running_cloud(chassis) as cloud:
        soak = Soak(cloud, fault_every=fault_every)
        soak.boot()
        figures = soak.run(migrations, budget).as_dict()
    report = os.environ.get("DFFLOW_SOAK_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump(figures, f, indent=1)
    print(json.dumps({k: v for k, v in figures.items() if k != "memory"} |
                     {"memory": {k: v for k, v in figures["memory"].items() if k != "samples"}}, indent=1))
    return figures


def assert_soak_invariants(figures: dict, migrations: int, faults: int) -> None:
    assert figures["migrations"] == migrations and figures["migration_errors"] == []
    assert sum(figures["faults"].values()) == faults and figures["recoveries"] == faults, figures["unrecovered"]
    assert figures["unrecovered"] == []
    assert figures["stale_flows"] == 0 and figures["leftovers"] == 0
    assert figures["acked_writes"] > 0 and figures["lost_writes"] == 0
    assert figures["probes"]["not_recovered"] == []
    memory = {k: v for k, v in figures["memory"].items() if k != "samples"}
    assert memory["controllers_sampled"] > 0
    assert memory["fds_late_growth_max"] <= FD_SLACK, memory
    assert memory["rss_late_growth_max"] <= RSS_SLACK * memory["rss_kb_now_median"], memory


def test_a_short_soak_with_one_fault_keeps_every_invariant():
    figures = run_soak(chassis=4, migrations=10)
    assert figures["faults"] == {FAULTS[0]: 1}
    assert_soak_invariants(figures, 10, 1)


@pytest.mark.soak
def test_a_long_soak_with_a_fault_every_tenth_migration_keeps_every_invariant():
    chassis = int(os.environ.get("DFFLOW_SOAK_CHASSIS", "20"))
    migrations = int(os.environ.get("DFFLOW_SOAK_MIGRATIONS", "200"))
    minutes = os.environ.get("DFFLOW_SOAK_MINUTES")  # stop starting migrations after that long
    figures = run_soak(chassis, migrations, budget=float(minutes) * 60 if minutes else None)
    ran = figures["migrations"]
    assert ran == migrations or minutes, figures
    assert_soak_invariants(figures, ran, ran // 10)
