"""What an applied plan records per NB event (controller.timing): the apply timings status and the benches read."""
from controller.flowstate import Plan
from controller.timing import apply_entries, event_timing


def test_an_applied_burst_records_each_event_with_its_own_delay_and_publish_time_and_its_plans_apply():
    received, computed = 100.0, 100.0021234
    events = [{"table": "lport", "id": f"p{i}", "ts": 100.0 - i / 1000} for i in range(3)]
    plan = Plan()
    plan.cause, plan.timing = event_timing(events[0], received, computed)
    plan.batched = [event_timing(e, received, computed) for e in events[1:]]
    plan.timing["emitted"] = 50.0
    entries = apply_entries(plan, 50.0015, 0.75, 100.01, 2)
    assert [e["cause"] for e in entries] == ["lport:p0", "lport:p1", "lport:p2"]
    assert [e["bus_ms"] for e in entries] == [0.0, 1.0, 2.0]  # rounded to the microsecond
    assert [e["event_ts"] for e in entries] == [100.0, events[1]["ts"], events[2]["ts"]]
    for e in entries:
        assert (e["compute_ms"], e["queued_ms"], e["bundle_ms"], e["applied_at"]) == (2.123, 1.5, 0.75, 100.01)
        assert (e["coalesced"], e["burst"]) == (2, 3) and "emitted" not in e
    assert [(e["flow_mods"], e["stamps"]) for e in entries[1:]] == [(0, []), (0, [])]
    assert entries[1]["stamps"] is not entries[2]["stamps"]  # nothing mutable shared between entries
