"""`dfflow-bench migration --peer ovn`'s report: both systems' runs in one summary and the ratio
dfflow/OVN (benchmarks/ovn_peer.py), and the options it refuses before anything starts."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchmarks import cli, evacuation, ovn_peer
from dfflow.sandbox import ovn, scenario


def _run(strategy: str, gap: float, lost: float, fip_gap: float | None = None) -> dict:
    def probe(gap: float) -> dict:
        return {"downtime_ms": gap, "lost_window_ms": lost, "recovered": True, "duplicates": 0, "baseline_gap_ms": 5.0}
    probes = {ovn_peer.L2_PROBE: probe(gap)}
    if fip_gap is not None:
        probes[ovn_peer.FIP_PROBE] = probe(fip_gap)
    return {"strategy": strategy, "probes": probes, "convergence_ms": None}


def _report(runs: list[dict]) -> dict:
    return {"runs": runs, "interval_ms": 1.0, "memory_copy_ms": 500.0, "unplug_delay_ms": 200.0,
            "update_port_delay_ms": 300.0, "load_before": (1.0, 1.0, 1.0), "load_after": (2.0, 2.0, 2.0)}


def test_one_vm_report_puts_both_systems_and_both_probes_in_one_table_with_the_ratio_of_each_probes_gaps():
    ours = _report([_run("announce", g, 0.0, fip_gap=f) for g, f in ((10.0, 30.0), (20.0, 60.0), (30.0, 90.0))])
    theirs = _report([_run("ovn-rarp", g, 5.0, fip_gap=f) for g, f in ((40.0, 20.0), (40.0, 20.0), (80.0, 40.0))])
    report = ovn_peer.combine(ours, theirs, scenario.summarise)
    assert set(report["summary"]) == {"dfflow announce", ovn_peer.OVN_LABEL}
    assert report["per_probe"]["dfflow announce"][ovn_peer.L2_PROBE]["gap_median_ms"] == 20.0
    assert report["per_probe"][ovn_peer.OVN_LABEL][ovn_peer.FIP_PROBE]["gap_median_ms"] == 20.0
    # each probe against the same probe of OVN: ahead on the L2 peer, behind through the floating IP
    assert report["probe_ratios"] == {"dfflow announce": {ovn_peer.L2_PROBE: "0.50", ovn_peer.FIP_PROBE: "3.00"}}
    table = ovn_peer.format_single(report).splitlines()
    row = {(line[:16].strip(), line[17:45].strip()): line for line in table if line.startswith(("dfflow ", "OVN "))}
    assert set(row) == {(label, probe) for label in ("dfflow announce", ovn_peer.OVN_LABEL)
                        for probe in (ovn_peer.L2_PROBE, ovn_peer.FIP_PROBE)}
    assert row[("dfflow announce", ovn_peer.L2_PROBE)].rstrip().endswith("0.50, 0.38")  # median ratio, then p95's
    assert row[("dfflow announce", ovn_peer.FIP_PROBE)].rstrip().endswith("3.00, 2.25")
    assert "announce, floating IP 60.0 / 20.0 ms = 3.00" in report["title"]


def test_evacuation_report_ratio_is_of_the_last_vm_back():
    def run(strategy: str, back: float) -> dict:
        vm = {"back_ms": back, "downtime_ms": back, "switchover_gap_ms": back, "lost_window_ms": 0.0,
              "recovered": True, "duplicates": 0, "baseline_gap_ms": 1.0}
        return {"strategy": strategy, "per_vm": {"V1": vm}, "last_back_ms": back, "converge_ms": None,
                "switchover_ms": 1.0}
    ours = _report([run("announce", 10.0)]) | {"vms": 1}
    theirs = _report([run("ovn-rarp", 40.0)]) | {"vms": 1}
    report = ovn_peer.combine(ours, theirs, evacuation.summarise)
    assert report["ratios"] == {"figure": "last_back_median_ms", "dfflow announce": "0.25"}
    assert "0.25, 0.25" in ovn_peer.format_evacuation(report)
    # OVN's runs cut short by a failed migration: the table says so, with why
    stopped = ovn_peer.combine(ours, theirs | {"stopped": "run 2 of 10 failed: V1 not bound"}, evacuation.summarise)
    assert "ovn STOPPED EARLY, run 2 of 10 failed: V1 not bound" in ovn_peer.format_evacuation(stopped)


def test_the_ovn_peer_refuses_the_legacy_nova_path_before_starting_anything():
    if ovn.missing():
        pytest.skip("; ".join(ovn.missing()))
    result = CliRunner().invoke(cli.main, ["migration", "--peer", "ovn", "--nova-path", "legacy"])
    assert result.exit_code == 2 and "--nova-path" in result.output and "binding-extended" in result.output


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_dfflows_measured_runs_are_reported_when_the_ovn_peer_fails_and_the_command_fails_naming_why(
        monkeypatch, as_json):
    monkeypatch.setattr(ovn, "missing", lambda: [])
    vm = {"back_ms": 12.5, "downtime_ms": 12.5, "switchover_gap_ms": 12.5, "lost_window_ms": 0.0,
          "recovered": True, "duplicates": 0, "baseline_gap_ms": 1.0}
    runs = [{"strategy": "announce", "per_vm": {"V1": vm, "V2": vm}, "last_back_ms": 12.5, "converge_ms": None,
             "switchover_ms": 1.0}]
    ours = _report(runs) | {"vms": 2, "nova_path": "extended", "summary": evacuation.summarise(runs)}
    monkeypatch.setattr(evacuation, "run", lambda *args, **kwargs: ours)

    def ovn_fails(*args, **kwargs):
        raise ovn_peer.OvnRunFailed("migrations failed: ['V3']")
    monkeypatch.setattr(ovn_peer, "run_evacuation", ovn_fails)
    result = CliRunner().invoke(cli.main, ["migration", "--peer", "ovn", "--vms", "2", "--runs", "1"]
                                + (["--json"] if as_json else []))
    assert result.exit_code == 1
    assert "the OVN peer failed" in result.output and "migrations failed: ['V3']" in result.output
    if as_json:
        report = json.loads(result.output[:result.output.rindex("}") + 1])
        assert report["runs"] == ours["runs"] and "OvnRunFailed" in report["peer_failed"]
    else:
        assert "12.5" in result.output  # dfflow's own summary
