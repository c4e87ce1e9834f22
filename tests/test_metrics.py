"""Operable: Prometheus metrics of the controllers and of `dfflow api` after a real live migration on
the sandbox, `--version`, and configuration errors that are one line naming the key."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import dfflow
from dfflow.sandbox.topology import Sandbox
from controller_fixtures import SyncCloud, controller_status, migrate, pings, wait_controllers_ready, wait_until
from sandbox_fixtures import _new_dir, _teardown, require_substrate

CONTROLLER = [sys.executable, "-m", "controller.daemon"]
REQUIRED = ["--chassis", "c1", "--tunnel-ip", "172.31.0.1", "--nb", "redis://127.0.0.1:1/0", "--ovsdb",
            "unix:/nonexistent", "--of-listen", "unix:/nonexistent"]


def samples(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, l), v in found.items() if n == name and set(labels.items()) <= set(l))


def run_controller(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CONTROLLER + list(args), capture_output=True, text=True, timeout=30)


def test_dfflow_controller_and_dfflow_say_their_version():
    for argv in (CONTROLLER, [sys.executable, "-m", "dfflow.cli"]):
        done = subprocess.run(argv + ["--version"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and dfflow.__version__ in done.stdout


@pytest.mark.parametrize("args, wanted", [
    (["--strategy", "annonce"], "--strategy: 'annonce' is not one of unplug, announce"),
    (["--log-level", "loud"], "--log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    (["--tunnel-type", "gre"], "--tunnel-type: 'gre' is not one of geneve, vxlan"),
    (["--metrics-port", "http"], "--metrics-port: 'http' is not a TCP port (0..65535)"),
    (["--nb", "redis+sentinel://10.0.0.1/svc"], "--nb: sentinel address '10.0.0.1' is not HOST:PORT"),
])
def test_a_bad_option_is_one_line_naming_it_and_what_it_may_be_with_exit_status_2(args, wanted):
    done = run_controller(*REQUIRED, *args)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"dfflow-controller: error: {wanted}"], done.stderr


@pytest.mark.parametrize("config, wanted", [
    ("strategy = annonce\n", "--strategy: 'annonce' is not one of unplug, announce"),
    ("log-level = verbose\n", "--log-level: 'verbose' is not one of DEBUG"),
    ("stratgy = announce\n", "unknown key 'stratgy' in [controller]; known keys: activation-settle-ms, bridge, chassis"),
])
def test_a_bad_config_file_key_or_value_is_one_line_naming_it(tmp_path, config, wanted):
    ini = tmp_path / "controller.ini"
    ini.write_text("[controller]\n" + config)
    done = run_controller("--config", str(ini), *REQUIRED)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and wanted in done.stderr, done.stderr


@pytest.mark.ovs
def test_a_migration_moves_the_controllers_and_the_apis_counters_and_histograms():
    require_substrate()
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=2, controller_args=["--metrics-port", "0"])
        wait_controllers_ready(sb)
        cloud = SyncCloud(sb)
        cloud.call("create_network", "net1", "10.0.0.0/24")
        cloud.call("create_vm", "A", "chassis-1", "net1", "10.0.0.11")
        cloud.call("create_vm", "B", "chassis-2", "net1", "10.0.0.21")
        wait_until(lambda: pings(sb, "A", "10.0.0.21"), 20, what="A -> B")
        urls = {ch.name: controller_status(sb, ch.name)["metrics_url"] for ch in sb.chassis_list()}
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values()), urls
        api_metrics = sb.status()["api_url"] + "/metrics"
        before = {name: samples(url) for name, url in urls.items()}
        assert value(samples(api_metrics), "dfflow_migrations_total") == 0

        migrate(cloud, "A", "chassis-2")
        wait_until(lambda: pings(sb, "B", "10.0.0.11"), 20, what="B -> A after the migration")

        for name, url in urls.items():
            after = samples(url)
            applies = "dfflow_controller_apply_seconds_count"
            assert value(after, applies, chassis=name) > value(before[name], applies, chassis=name)
            # the NB events of the migration reached every chassis; an announce migration's steps are the
            # destination's (the source follows the activation through its NB write, and Nova unplugs the
            # source after activating the destination's binding, when the migration has ended)
            events = "dfflow_controller_events_total"
            assert value(after, events, chassis=name, counter="nb_events") > value(
                before[name], events, chassis=name, counter="nb_events")
            steps = "dfflow_controller_migration_steps_total"
            if name == "chassis-2":
                assert value(after, steps, chassis=name, counter="activated") == 1 + value(
                    before[name], steps, chassis=name, counter="activated")
            assert value(after, "dfflow_controller_nb_connected", chassis=name) == 1
            assert value(after, "dfflow_controller_events_total", chassis=name, counter="handler_errors") == 0
            assert value(after, "process_start_time_seconds") > 0
        api = wait_until(lambda: (s := samples(api_metrics)) and value(s, "dfflow_migrations_total") and s, 15,
                         what="the API counting the migration")
        assert value(api, "dfflow_migrations_total", strategy="announce", outcome="done") == 1  # the default
        assert value(api, "dfflow_migration_step_seconds_count", strategy="announce") >= 2
        for name in urls:  # both ends applied flows for the migration, and said when
            assert value(api, "dfflow_migration_apply_seconds_count", chassis=name) >= 1
    finally:
        _teardown([sb])
