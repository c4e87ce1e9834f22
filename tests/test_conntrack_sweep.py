"""The conntrack sweep (controller.conntrack_sweep): which plans narrow a port's rules, how a zone's entries
are read and judged against the port's current rules, and what is deleted (`ovs-appctl` stood in for: the
real one is run by tests/test_secgroups_sandbox.py and tests/test_secgroups_migration.py)."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter

import pytest

from controller.conntrack_sweep import (MAX_DELETIONS, BadEntry, ConntrackSweeper, Entry, flush_tuple, parse_entry,
                                        policy_of)
from controller.view import Vif
from dfflow.models import MigrationRecord, SecurityGroupRule
from test_engine import apply, event
from test_secgroups_app import engine_with_groups

A1, B1, OUTSIDE, WEB_CLIENT = "10.0.0.11", "10.0.0.12", "192.0.2.7", "10.9.1.1"


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def line(proto: str, src: str, dst: str, sport: int, dport: int, zone: int = 5) -> str:
    return (f"{proto},orig=(src={src},dst={dst},sport={sport},dport={dport}),"
            f"reply=(src={dst},dst={src},sport={dport},dport={sport}),zone={zone},protoinfo=(state=ESTABLISHED)")


def test_a_dump_line_is_read_as_its_original_tuple_and_ipv6_is_left_alone():
    assert parse_entry(line("tcp", WEB_CLIENT, A1, 40000, 80)) == Entry(6, ip(WEB_CLIENT), ip(A1), 40000, 80)
    assert parse_entry(line("udp", A1, OUTSIDE, 5353, 53)) == Entry(17, ip(A1), ip(OUTSIDE), 5353, 53)
    icmp = parse_entry(f"icmp,orig=(src={A1},dst={B1},id=77,type=8,code=0),reply=(src={B1},dst={A1},id=77,"
                       "type=0,code=0),zone=5")
    assert icmp == Entry(1, ip(A1), ip(B1), icmp=(8, 0, 77))
    assert parse_entry(f"47,orig=(src={A1},dst={B1}),reply=(src={B1},dst={A1}),zone=5") == Entry(47, ip(A1), ip(B1))
    assert parse_entry("tcp,orig=(src=fd00::1,dst=fd00::2,sport=1,dport=2),reply=(src=fd00::2,dst=fd00::1,"
                       "sport=2,dport=1),zone=5") is None
    assert flush_tuple(icmp) == f"ct_nw_src={A1},ct_nw_dst={B1},ct_nw_proto=1,icmp_type=8,icmp_code=0,icmp_id=77"
    assert flush_tuple(parse_entry(line("tcp", WEB_CLIENT, A1, 40000, 80))) == \
        f"ct_nw_src={WEB_CLIENT},ct_nw_dst={A1},ct_nw_proto=6,ct_tp_src=40000,ct_tp_dst=80"


@pytest.mark.parametrize("bad", ["garbage", "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1),reply=(),zone=5",
                                 "tcp,orig=(src=10.0.0.300,dst=10.0.0.2,sport=1,dport=2),reply=(),zone=5",
                                 "frob,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(),zone=5"])
def test_an_unreadable_dump_line_is_refused_saying_what_it_is(bad):
    with pytest.raises(BadEntry, match="orig|not a conntrack entry|frob"):
        parse_entry(bad)


def test_an_entry_is_kept_only_while_a_rule_allows_its_opener_to_open_it():
    """a1 (10.0.0.11, zone 5): web lets tcp 80 in from 10.9.0.0/16 and anything in from db's members
    (b1, 10.0.0.12), and anything out."""
    engine = engine_with_groups()
    policy = policy_of(engine.view, "a1")
    assert policy.zone == 5
    assert policy.keeps(Entry(6, ip(WEB_CLIENT), ip(A1), 40000, 80))  # in, to port 80, from the prefix
    assert not policy.keeps(Entry(6, ip(WEB_CLIENT), ip(A1), 40000, 81))  # another port
    assert not policy.keeps(Entry(6, ip(OUTSIDE), ip(A1), 40000, 80))  # from outside the prefix
    assert policy.keeps(Entry(17, ip(B1), ip(A1), 999, 53))  # a db member, any protocol
    assert policy.keeps(Entry(6, ip(A1), ip(OUTSIDE), 40000, 443))  # a1 opened it: egress allows anything
    assert not policy.keeps(Entry(6, ip(OUTSIDE), ip(B1), 40000, 80))  # neither end is a1's
    # read the other way round (a migration's arrival commits whichever end spoke first): a1 opened it
    migrated = Entry(6, ip(OUTSIDE), ip(A1), 443, 40000)
    assert not policy.keeps(migrated) and policy.keeps(migrated, either_way=True)


def test_a_removed_rule_or_a_member_leaving_narrows_what_the_entries_are_judged_by():
    engine = engine_with_groups()
    from_member, from_web = Entry(6, ip(B1), ip(A1), 999, 22), Entry(6, ip(WEB_CLIENT), ip(A1), 40000, 80)
    plan = engine.nb_event(event(engine.view.objects[SecurityGroupRule.table]["r1"], "delete"))
    assert plan.narrowed == {"a1"}
    apply(engine, plan)
    assert not policy_of(engine.view, "a1").keeps(from_web)
    b1 = engine.view.port("b1")
    plan = engine.nb_event(event(b1.replace(security_groups=[]), "update"))
    assert plan.narrowed == {"a1"}  # a1's rules lost b1's address
    apply(engine, plan)
    assert not policy_of(engine.view, "a1").keeps(from_member)
    rule = SecurityGroupRule(id="r9", topic="t", secgroup="web", protocol="udp", remote_ip_prefix="10.8.0.0/16")
    assert not engine.nb_event(event(rule)).narrowed  # a rule added narrows nothing
    a1 = engine.view.port("a1")
    assert not engine.nb_event(event(a1.replace(port_security=False, security_groups=[]), "update")).narrowed


def test_an_arriving_ports_narrowing_is_swept_when_its_window_closes_after_its_entries_are_recorded():
    engine = engine_with_groups(here="B", vif=Vif("b1", "tapb1", 7))
    a1 = engine.view.port("a1")
    apply(engine, engine.nb_event(event(a1.replace(migration=MigrationRecord(chassis="B", source="A", state="switched",
                                                                              id="m1", bound="A")), "update")))
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 9)))
    apply(engine, engine.nb_event(event(engine.view.port("a1").replace(migration=None, binding_chassis="B"),
                                        "update")))
    plan = engine.nb_event(event(engine.view.objects[SecurityGroupRule.table]["r1"], "delete"))
    assert not plan.narrowed  # its window is open: what it admits would be committed again
    apply(engine, plan)
    assert engine.take_windows_ending() == ["a1"]
    plan = engine.arrival_window_closed("a1")
    assert plan.arrived == {"a1"} and plan.narrowed == {"a1"}


def flush_tuple_of(dumped: str) -> str | None:
    try:
        return flush_tuple(parse_entry(dumped))
    except BadEntry:
        return None


class Switch:
    """ovs-appctl stood in for: a zone's dump, and the flushes asked for."""

    def __init__(self, dump: str, fail: bool = False, deletes: bool = True):
        self.dump, self.fail, self.deletes, self.flushed = dump, fail, deletes, []
        self.gone_already: set[str] = set()  # tuples the switch answers it has not

    async def __call__(self, *args: str) -> str:
        if args[0] == "dpctl/dump-conntrack":
            if self.fail:
                raise RuntimeError("ovs-appctl dpctl/dump-conntrack zone=5 exited 2: no datapath")
            return self.dump
        self.flushed.append(args[1:])
        if self.gone_already and args[2] in self.gone_already:
            raise RuntimeError("ovs-appctl dpctl/flush-conntrack exited 2: No such file or directory")
        if self.deletes:
            self.dump = "\n".join(x for x in self.dump.splitlines() if flush_tuple_of(x) != args[2])
        return ""


def sweeper_for(engine, switch: Switch) -> tuple[ConntrackSweeper, list[str]]:
    errors: list[str] = []

    def record_error(what: str) -> None:
        import traceback
        errors.append(f"{what}: {traceback.format_exc()}")
    sweeper = ConntrackSweeper(lambda port_id: policy_of(engine.view, port_id), Counter(), record_error,
                               (["ovs-appctl"], None))
    sweeper._run_appctl = switch
    return sweeper, errors


def run_sweeps(sweeper: ConntrackSweeper, **requests) -> None:
    async def go():
        task = asyncio.create_task(sweeper.run())
        sweeper.request(**requests)
        while sweeper._to_sweep or sweeper._to_record or sweeper._wake.is_set():
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
    asyncio.run(go())


def test_a_sweep_deletes_exactly_what_the_rules_no_longer_allow_and_skips_unreadable_lines(caplog):
    engine = engine_with_groups()
    apply(engine, engine.nb_event(event(engine.view.objects[SecurityGroupRule.table]["r1"], "delete")))
    dump = "\n".join([line("tcp", WEB_CLIENT, A1, 40000, 80), line("tcp", B1, A1, 999, 22),
                      "tcp,orig=(src=10.0.0.1,dst=", line("udp", A1, OUTSIDE, 5353, 53), ""])
    switch = Switch(dump)
    sweeper, errors = sweeper_for(engine, switch)
    with caplog.at_level(logging.WARNING):
        run_sweeps(sweeper, narrowed=["a1"])
    assert switch.flushed == [("zone=5", f"ct_nw_src={WEB_CLIENT},ct_nw_dst={A1},ct_nw_proto=6,ct_tp_src=40000,"
                                         "ct_tp_dst=80")]
    assert sweeper.stats["conntrack_sweep.entries_cut"] == 1 and sweeper.stats["conntrack_sweep.entries_judged"] == 3
    assert sweeper.stats["conntrack_sweep.unreadable_entries"] == 1 and "skips an entry" in caplog.text
    assert not errors
    switch.dump = "\n".join([line("tcp", WEB_CLIENT, A1, 40001, 80), line("tcp", WEB_CLIENT, A1, 40002, 80)])
    switch.gone_already = {flush_tuple(parse_entry(switch.dump.splitlines()[0]))}  # ended since the dump
    run_sweeps(sweeper, narrowed=["a1"])
    assert sweeper.stats["conntrack_sweep.flush_failures"] == 1 and sweeper.stats["conntrack_sweep.entries_cut"] == 2
    assert "could not delete" in caplog.text and "No such file" in caplog.text


def test_a_recorded_arrival_is_judged_either_way_and_a_big_zone_is_cut_in_bounded_rounds():
    engine = engine_with_groups()
    migrated = line("tcp", OUTSIDE, A1, 443, 40000)  # a1 opened it; the peer spoke first here
    switch = Switch(migrated)
    sweeper, errors = sweeper_for(engine, switch)
    run_sweeps(sweeper, arrived=["a1"], narrowed=["a1"])
    assert not switch.flushed and sweeper.status()["arrivals_recorded"] == {"a1": 1}
    many = [line("tcp", OUTSIDE, A1, 1000 + n, 22) for n in range(MAX_DELETIONS + 3)]
    switch.dump = "\n".join(many)
    sweeper.arrived.clear()
    run_sweeps(sweeper, narrowed=["a1"])
    assert sweeper.stats["conntrack_sweep.rounds_left_over"] == 1 and len(switch.flushed) == len(many)
    assert not switch.dump
    stuck = Switch("\n".join(many), deletes=False)  # a switch that does not delete: no endless rounds
    sweeper._run_appctl = stuck
    run_sweeps(sweeper, narrowed=["a1"])
    assert len(stuck.flushed) == 2 * MAX_DELETIONS and sweeper.stats["conntrack_sweep.rounds_left_over"] == 2
    assert not errors


def test_a_failing_sweep_is_logged_counted_and_kept_with_its_traceback():
    engine = engine_with_groups()
    sweeper, errors = sweeper_for(engine, Switch("", fail=True))
    run_sweeps(sweeper, narrowed=["a1", "b1"])  # b1 does not run here: nothing asked of the switch for it
    assert sweeper.stats["conntrack_sweep.failures"] == 1
    assert len(errors) == 1 and "conntrack_sweep" in errors[0] and "no datapath" in errors[0] and "Traceback" in errors[0]
