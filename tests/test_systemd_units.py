"""The systemd units shipped in the package: valid for systemd, restarting always, starting commands
that accept the options they are given."""
from __future__ import annotations

import configparser
import importlib.resources
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from controller.options import parse_args

UNITS = importlib.resources.files("dfflow") / "data" / "systemd"
BIN = os.path.dirname(sys.executable)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize("name", ["dfflow-controller.service", "dfflow-api.service"])
def test_units_restart_always_and_systemd_accepts_them(name, tmp_path):
    parsed = unit(name)
    assert parsed["Service"]["Restart"] == "always"
    assert parsed["Unit"]["StartLimitIntervalSec"] == "0"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    local = tmp_path / name  # the same unit, its program where this test's venv has it
    local.write_text((UNITS / name).read_text().replace("/usr/local/bin/", BIN + "/"))
    result = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_the_controller_unit_starts_the_controller_with_its_config_file(tmp_path):
    argv = shlex.split(unit("dfflow-controller.service")["Service"]["ExecStart"])
    assert argv[0] == "/usr/local/bin/dfflow-controller"
    config = tmp_path / "controller.ini"
    config.write_text("[controller]\nchassis = compute-1\ntunnel-ip = 192.0.2.11\nnb = redis://192.0.2.2:6379/0\n"
                      "ovsdb = unix:/var/run/openvswitch/db.sock\nof-listen = 127.0.0.1:6653\n")
    args = parse_args([str(config) if a == "/etc/dfflow/controller.ini" else a for a in argv[1:]])
    assert (args.chassis, args.nb, args.strategy) == ("compute-1", "redis://192.0.2.2:6379/0", "announce")


def test_the_api_unit_runs_dfflow_api_with_options_it_has():
    from dfflow.cli import api
    argv = shlex.split(unit("dfflow-api.service")["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/local/bin/dfflow", "api"]
    options = {o for p in api.params for o in p.opts}
    assert {a for a in argv[2:] if a.startswith("--")} <= options
    assert {"DFFLOW_NB", "DFFLOW_API_TOKEN"} <= {p.envvar for p in api.params if p.envvar}
