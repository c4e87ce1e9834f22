"""A benchmark's emulated cloud runs below the guests and the datapaths (dfflow.sandbox.priorities): the
API server, the sandbox's Nova API, the os-vif agents and the process making Nova's calls at
EMULATED_CLOUD_NICENESS; Open vSwitch where ovs-ctl puts it; a guest's process at a guest's niceness
whatever the niceness of the process that starts it."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

from dfflow.sandbox import priorities
from dfflow.sandbox.ovsproc import OVS_NICENESS
from dfflow.sandbox.priorities import (EMULATED_CLOUD_NICENESS, GUEST_NICENESS, ROOT_GROUP, autogroup_enabled, autogroup_of,
                                       emulated_nova, lower_emulated_cloud, niceness_of, session_at)
from sandbox_fixtures import sandbox_factory  # noqa: F401

pytestmark = pytest.mark.ovs


def test_the_emulated_clouds_services_run_below_the_guests_and_open_vswitch_stays_where_ovs_ctl_puts_it(
        sandbox_factory):  # noqa: F811
    sb = sandbox_factory(chassis=1)
    sb.osvif_socket("chassis-1")  # nova-compute's os-vif, as the benchmarks start it
    sb.plug_vm("g", "chassis-1", "port-g-0001", "fa:16:3e:00:00:0c", "10.0.0.3/24")
    lowered = lower_emulated_cloud(sb)
    assert {"nova api", "os-vif chassis-1"} <= set(lowered), lowered
    for name, pid in lowered.items():
        assert niceness_of(pid) == {EMULATED_CLOUD_NICENESS}, name
    ch = sb.chassis("chassis-1")
    for daemon in ("ovsdb-server", "ovs-vswitchd"):
        assert niceness_of(ch.ovs().pid(daemon)) == {OVS_NICENESS}, daemon

    show = [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"]
    seen: dict[str, int] = {}
    main_before = os.getpriority(os.PRIO_PROCESS, 0)
    with emulated_nova():
        # Nova's calls (this thread, and the worker threads it starts) run at the cloud's niceness ...
        worker = threading.Thread(target=lambda: seen.setdefault("worker", os.getpriority(os.PRIO_PROCESS, 0)))
        worker.start()
        worker.join()
        seen["main"] = os.getpriority(os.PRIO_PROCESS, 0)
        # ... an `ip` or helper the emulation forks inherits it, but a guest's process does not
        seen["forked"] = int(subprocess.run(show, capture_output=True, text=True, check=True).stdout)
        guest = sb.vm_popen("g", show, stdout=subprocess.PIPE, text=True)
        seen["guest"] = int(guest.communicate(timeout=30)[0])
    assert seen == {"worker": EMULATED_CLOUD_NICENESS, "main": EMULATED_CLOUD_NICENESS,
                    "forked": EMULATED_CLOUD_NICENESS, "guest": GUEST_NICENESS}
    assert os.getpriority(os.PRIO_PROCESS, 0) == main_before  # restored once the migrations are over


def require_autogroup() -> None:
    if not autogroup_enabled() or autogroup_of(os.getpid()) is None:
        pytest.skip("the kernel does not schedule by session here (autogroup off): a niceness acts by itself")


def test_open_vswitchs_sessions_run_above_the_guests_and_the_emulated_clouds_below_them(sandbox_factory):  # noqa: F811
    require_autogroup()
    guests_session = autogroup_of(os.getpid())  # the guests run in the benchmark's session: this one
    sb = sandbox_factory(chassis=1)
    sb.osvif_socket("chassis-1")
    lowered = lower_emulated_cloud(sb)
    ovs = sb.chassis("chassis-1").ovs()
    for daemon in ("ovsdb-server", "ovs-vswitchd"):
        group, niceness = autogroup_of(ovs.pid(daemon))
        assert (niceness, group != guests_session[0]) == (OVS_NICENESS, True), daemon
    for name, pid in lowered.items():
        group, niceness = autogroup_of(pid)
        assert (niceness, group != guests_session[0]) == (EMULATED_CLOUD_NICENESS, True), name
    ovs.restart_vswitchd()  # a restarted ovs-vswitchd is a new session, weighed again
    assert autogroup_of(ovs.pid("ovs-vswitchd"))[1] == OVS_NICENESS
    assert autogroup_of(os.getpid()) == guests_session


def test_a_session_is_weighed_only_if_it_is_not_the_guests_and_a_failure_is_logged_with_its_reason(caplog):
    require_autogroup()
    guests_session = autogroup_of(os.getpid())
    in_ours = subprocess.Popen(["sleep", "30"])
    own = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with caplog.at_level(logging.WARNING, logger="dfflow.sandbox.priorities"):
            assert not session_at(in_ours.pid, EMULATED_CLOUD_NICENESS, "a helper in the guests' session")
            assert session_at(own.pid, EMULATED_CLOUD_NICENESS, "a service")
            assert autogroup_of(own.pid)[1] == EMULATED_CLOUD_NICENESS
            assert not session_at(own.pid, 99, "a service at an impossible niceness")
    finally:
        for proc in (in_ours, own):
            proc.kill()
            proc.wait()
    assert autogroup_of(os.getpid()) == guests_session
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "a helper in the guests' session" in warnings[0] and "this process' session" in warnings[0]
    assert "impossible niceness" in warnings[1] and "Invalid argument" in warnings[1]


def test_a_benchmark_in_inits_session_still_weighs_a_services_session_and_not_its_own(monkeypatch, caplog):
    """A CI runner starts no session: its processes share init's, the root group, which the kernel prints as
    nothing. The services the sandbox starts in sessions of their own are weighed all the same."""
    require_autogroup()
    real_autogroup_of = priorities.autogroup_of
    in_ours = subprocess.Popen(["sleep", "30"])
    own = subprocess.Popen(["sleep", "30"], start_new_session=True)
    monkeypatch.setattr(priorities, "autogroup_of",
                        lambda pid: ROOT_GROUP if pid in (os.getpid(), in_ours.pid) else real_autogroup_of(pid))
    try:
        with caplog.at_level(logging.WARNING, logger="dfflow.sandbox.priorities"):
            assert not session_at(in_ours.pid, EMULATED_CLOUD_NICENESS, "a helper in init's session")
            assert session_at(own.pid, EMULATED_CLOUD_NICENESS, "a service")
        assert real_autogroup_of(own.pid)[1] == EMULATED_CLOUD_NICENESS
    finally:
        for proc in (in_ours, own):
            proc.kill()
            proc.wait()
    assert [r.getMessage() for r in caplog.records] == [
        f"a helper in init's session (pid {in_ours.pid}) runs in this process' session (/): its session's niceness "
        f"is left as is, {EMULATED_CLOUD_NICENESS} would weigh the guests' session too"]
