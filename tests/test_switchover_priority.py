"""The emulated resume's helper (dfflow/sandbox/switchover.py --many) runs at real-time priority only
where the switchover needs it: waiting for the next line (so `go` is taken at once) and the resume;
the VMs' routes and gratuitous ARPs after it run at normal priority, beside the resumed VMs' first replies.
Preparing each VM -- pyroute2, its ARP cache, its sockets -- runs at normal priority: at real-time
it took the CPU from every chassis' userspace datapath while an evacuation's plugs ran. A VM's gateway, when
it has one, is the last word of its `prepare` line."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from dfflow.sandbox import switchover


class FakeVm:
    def __init__(self, events: list[str], name: str):
        self.events, self.name = events, name
        events.append(f"prepare {name}")

    def resume(self, go: float) -> dict[str, float]:
        self.events.append(f"resume {self.name}")
        return {"go": go}

    def confirm_and_garp(self, stamps: dict[str, float]) -> None:
        self.events.append(f"route {self.name}")


def test_many_prepares_each_vm_at_normal_priority_and_waits_for_go_and_resumes_at_real_time(monkeypatch):
    events: list[str] = []
    names = iter(["V1", "V2", "V3"])
    made = []
    monkeypatch.setattr(switchover, "Switchover", lambda *args: made.append(args) or FakeVm(events, next(names)))
    monkeypatch.setattr(switchover, "inside", lambda netns: contextlib.nullcontext())
    monkeypatch.setattr(switchover, "realtime", lambda: events.append("real-time"))
    monkeypatch.setattr(switchover, "normal", lambda: events.append("normal"))
    monkeypatch.setattr(switchover, "leave", lambda: (_ for _ in ()).throw(SystemExit(0)))
    lines = "".join(f"prepare {vm} ns-{vm} eth0 eth1 fa:16:3e:00:00:0{i} 10.1.0.1{i}/24{gateway}\n"
                    for i, (vm, gateway) in enumerate([("V1", " 10.1.0.1"), ("V2", ""), ("V3", " 10.1.0.1")]))
    lines += "go V1 V2 V3\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    with pytest.raises(SystemExit):
        switchover.many()
    assert events == ["normal", "prepare V1", "real-time", "normal", "prepare V2", "real-time",
                      "normal", "prepare V3", "real-time",
                      "resume V1", "resume V2", "resume V3", "normal", "route V1", "route V2", "route V3"]
    assert [args[-1] for args in made] == ["10.1.0.1", None, "10.1.0.1"]  # the gateway, when there is one
    printed = out.getvalue().splitlines()
    assert printed[:4] == ["started", "ready V1", "ready V2", "ready V3"]
    assert sorted(json.loads(printed[4])) == ["V1", "V2", "V3"]
