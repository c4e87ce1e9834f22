"""The switchover trace's reading of a userspace vswitchd's datapath debug log (benchmarks.switchover_trace)."""
from benchmarks.switchover_trace import after_activation, datapath_events, milestones, prober_timing

RARP = 1764386000.000
LOG = [
    "1764385999.900|dpif_netdev|flow_add: ufid:a mega_ufid:b recirc_id(0),in_port(4),eth(dst=fa:16:3e:00:00:01),"
    "eth_type(0x0800), actions:tnl_push(tnl_port(4))",
    "1764386000.001|dpif_netdev|ovs-netdev: miss upcall:",
    "1764386000.001|dpif_netdev|flow_add: ufid:c mega_ufid:d recirc_id(0),in_port(5),eth(src=fa:16:3e:00:00:01),"
    "eth_type(0x8035), actions:userspace(pid=0,controller(reason=1))",
    "1764386000.002|dpif_netdev|flow_mod: ufid:a mega_ufid:b tunnel(tun_id=0x65),recirc_id(0),in_port(4),"
    "eth(dst=fa:16:3e:00:00:01), old_actions:tnl_push(tnl_port(4)), actions:ct(zone=4),recirc(0xc)",
    "1764386000.004|dpif_netdev|flow_add: ufid:e mega_ufid:f tunnel(tun_id=0x65),ct_state(+new-est-rel-inv+trk),"
    "recirc_id(0xc),in_port(4), actions:5",
    "1764386000.006|dpif_netdev|flow_add: ufid:g mega_ufid:h recirc_id(0),in_port(5),eth(src=fa:16:3e:00:00:01),"
    "eth_type(0x0800),ipv4(src=10.1.0.10), actions:ct(zone=4),recirc(0xd)",
    "1764386000.015|dpif_netdev|flow_mod: ufid:g mega_ufid:h recirc_id(0),in_port(5), old_actions:ct(zone=4),"
    "recirc(0xd), actions:ct(zone=4),recirc(0xf)",
    "1764386000.090|dpif_netdev|flow_add: ufid:i mega_ufid:j recirc_id(0),in_port(5), actions:5",
    "2026-11-29T03:00:00.000Z|00001|vlog|INFO|opened log file",
]


def test_events_are_placed_in_ms_from_the_rarp_inside_the_window():
    events = datapath_events(LOG, RARP)
    assert [at for at, _ in events] == [1.0, 2.0, 4.0, 6.0, 15.0]  # -100 and +90 ms are outside
    assert all("ufid:" not in text for _, text in events)


def test_milestones_follow_the_rarp_the_hairpin_rewrite_and_the_first_upcalls():
    got = milestones(datapath_events(LOG, RARP))
    assert got == {"rarp_upcall": 1.0, "hairpin_modified": 2.0, "first_delivery_upcall": 4.0,
                   "first_vif_egress_upcall": 6.0, "activation_revalidation": 15.0, "upcalls_first_30ms": 3}


def test_what_the_datapath_did_after_the_activation_is_counted_in_the_20_ms_after_it_was_applied():
    events = datapath_events(LOG, RARP)
    assert after_activation(events, 3.0) == {"upcalls_after_activation": 2, "rewrites_after_activation": 1}
    assert after_activation(events, 16.0) == {"upcalls_after_activation": 0, "rewrites_after_activation": 0}
    assert after_activation(events, None)["upcalls_after_activation"] is None


def test_milestones_are_none_when_the_rarp_never_reached_the_datapath():
    got = milestones(datapath_events(LOG[:1] + LOG[3:], RARP))
    assert got["rarp_upcall"] is None and got["hairpin_modified"] is None
    assert got["first_delivery_upcall"] is None and got["activation_revalidation"] is None


def test_a_stalled_prober_is_late_by_its_stall_and_answered_after_it():
    # a probe a ms from RARP - 4 ms; seqs 4-6 (due at 0, 1, 2 ms) sent together at 3 ms, seq 5 lost
    def on_time(seq):
        sent = RARP - 0.004 + seq * 0.001
        return (seq, sent, sent + 0.0003)
    replies = [on_time(s) for s in range(4)] + [(4, RARP + 0.003, RARP + 0.0055), (6, RARP + 0.003, RARP + 0.0056)]
    replies += [on_time(s) for s in range(7, 10)]
    got = prober_timing({"interval": 0.001, "replies": replies}, RARP)
    assert got["max_late_ms"] == 3.0
    assert got["first_replies"][0] == (3.0, 5.5)


def test_every_chassis_datapath_events_are_kept_beside_the_destinations(tmp_path, monkeypatch):
    from benchmarks.switchover_trace import CHASSIS, Tracer
    for i, ch in enumerate(CHASSIS):
        (tmp_path / ch / "ovs").mkdir(parents=True)
        (tmp_path / ch / "ovs" / "ovs-vswitchd.log").write_text(LOG[i * 3] + "\n" if ch != "chassis-2" else "\n".join(LOG))
    tracer = Tracer(str(tmp_path), [])
    monkeypatch.setattr(tracer, "_ovs", lambda *args: "")
    tracer.on = True
    tracer({"to": "chassis-2", "applied_ms": {}, "probes": {},
            "timeline": {"origin": RARP - 1.0, "steps": {"vm_announced": 1.0, "vm_routed": 1.001}}})
    run = tracer.runs[0]
    assert [at for at, _ in run["destination_events"]] == [1.0, 2.0, 4.0, 6.0, 15.0]
    assert sorted(run["other_events"]) == ["chassis-1", "chassis-3"]
    assert run["other_events"]["chassis-1"] == []  # its line is 100 ms before the RARP: outside the window
    assert [at for at, _ in run["other_events"]["chassis-3"]] == [15.0]
