"""Where a one-VM migration's longest reply gap lies on its timeline, and the quiet baseline measured
over a window as long as the migration's (dfflow.sandbox.gap_phases, dfflow.sandbox.scenario._figures)."""
from __future__ import annotations

from dfflow.sandbox import gap_phases, scenario

# dfflow's steps (s since the plug), as dfflow.sandbox.nova.migrate stamps them
DFFLOW_STEPS = {"plug": 0.0, "inactive_binding": 0.012, "plugged": 0.031, "migrating_to": 0.040,
                "vif_plugged": 0.046, "recorded": 0.047, "preprogrammed": 0.052, "memory_copied": 0.552,
                "vm_go": 0.552, "vm_source_down": 0.553, "vm_announced": 0.553, "vm_routed": 0.554,
                "activate": 0.753, "activated": 0.757, "unplug": 0.757, "unplugged": 0.790,
                "profile_cleared": 1.062, "source_binding_deleted": 1.070, "done": 1.080}
# OVN's (dfflow.sandbox.ovn_cloud.migrate): no pre-programming step of dfflow's, its claim is vif_plugged
OVN_STEPS = {"plug": 0.0, "plugged": 0.044, "migrating_to": 0.047, "vif_plugged": 0.053,
             "memory_copied": 0.555, "vm_source_down": 0.555, "vm_routed": 0.557, "activate": 0.757,
             "activated": 0.760, "unplug": 0.760, "unplugged": 0.799, "updated_port": 1.065, "done": 1.065}


def test_each_step_of_the_migration_falls_in_its_phase():
    cases = {-0.02: "plug", 0.01: "plug", 0.035: "pre-programming", 0.051: "pre-programming",
             0.3: "memory copy", 0.553: "switchover", 0.7: "switchover", 0.754: "binding activation",
             0.758: "unplug", 1.0: "unplug", 1.058: "clean-up", 1.3: "clean-up"}
    got = {at: gap_phases.phase_at(at, DFFLOW_STEPS, 0.3) for at in cases}
    assert got == cases


def test_ovns_timeline_has_the_same_phases_its_claim_ending_the_pre_programming():
    assert [p for p, _ in gap_phases.boundaries(OVN_STEPS, 0.3)] == list(gap_phases.PHASES)
    assert gap_phases.phase_at(0.050, OVN_STEPS, 0.3) == "pre-programming"
    assert gap_phases.phase_at(0.054, OVN_STEPS, 0.3) == "memory copy"


def test_a_gap_is_placed_by_when_it_began_and_timed_from_the_switchover():
    timeline = {"origin": 1000.0, "steps": DFFLOW_STEPS}
    where = gap_phases.locate(1000.0 + 0.020, 1000.0 + 0.028, timeline, 0.3)
    assert where == {"gap_phase": "plug", "gap_from_switchover_ms": -533.0}
    assert gap_phases.locate(None, None, timeline, 0.3) == {"gap_phase": None, "gap_from_switchover_ms": None}


def test_a_gap_across_the_switchover_is_the_switchovers_though_its_last_reply_came_before_it():
    # the last reply from the source 2 ms before the VM stopped there, the next one from the destination
    timeline = {"origin": 1000.0, "steps": DFFLOW_STEPS}
    where = gap_phases.locate(1000.0 + 0.551, 1000.0 + 0.560, timeline, 0.3)
    assert where == {"gap_phase": "switchover", "gap_from_switchover_ms": -2.0}
    # a gap across the unplug's start and the binding's activation: the last of them to begin
    assert gap_phases.locate(1000.0 + 0.750, 1000.0 + 0.765, timeline, 0.3)["gap_phase"] == "unplug"


def _raw(start: float, until: float, held: list[tuple[float, float]]) -> dict:
    """A probe run sending every ms from `start` to `until`, each reply 0.2 ms later, except that the
    replies to probes sent in each (from, to) of `held` all arrive at `to`."""
    replies = []
    for seq in range(round((until - start) * 1000)):
        sent = start + seq * 0.001
        received = next((to for f, to in held if f <= sent < to), sent + 0.0002)
        replies.append((seq, sent, received))
    return {"interval": 0.001, "sent": len(replies), "replies": replies}


def test_the_quiet_baseline_is_measured_over_as_long_a_window_as_the_migration():
    quiet_from, started = 100.0, 102.0
    timeline = {"origin": 102.1, "steps": DFFLOW_STEPS, "source": "chassis-1", "destination": "chassis-2",
                "applied": {}}
    window = 0.05 + max(DFFLOW_STEPS.values()) + 0.3  # the migration's: 1.43 s
    # a 30 ms stall early in the quiet probing (outside the last 1.43 s before the migration), a 12 ms one
    # inside it, and a 20 ms gap in the memory copy
    raw = _raw(quiet_from, 103.6, [(100.200, 100.230), (101.000, 101.012), (102.1 + 0.300, 102.1 + 0.320)])
    run = scenario._figures("announce", 0, started, timeline, {"P": raw}, False, quiet_from, 0.3)
    p = run["probes"]["P"]
    assert p["window_s"] == round(window, 3) and p["baseline_window_s"] == round(window, 3)
    assert 12.0 < p["baseline_gap_ms"] < 13.0  # not the 30 ms stall 1.8 s before the migration
    assert 20.0 < p["downtime_ms"] < 21.0 and p["gap_phase"] == "memory copy"
    assert scenario.summarise([run])["announce"]["gap_phases"] == {"memory copy": 1}
    assert "P 20.8 ms (memory copy -254) quiet 12.8" in gap_phases.format_runs([run])


def test_the_quiet_probing_is_long_enough_for_the_benchmarks_default_migration():
    quiet = gap_phases.quiet_seconds(scenario.WINDOW_BEFORE, 0.5, 0.2, 0.3, scenario.WINDOW_AFTER)
    assert quiet >= scenario.WINDOW_BEFORE + max(DFFLOW_STEPS.values()) + scenario.WINDOW_AFTER
    # a shorter quiet probing than the window: the baseline is what there is, and says so
    assert gap_phases.quiet_window(10.0, 11.0, 1.5) == (10.0, 11.0)
