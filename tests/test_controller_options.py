"""dfflow-controller's command line: the integration bridge's datapath type."""
import pytest

from controller.options import parse_args

REQUIRED = ["--chassis", "c1", "--tunnel-ip", "172.31.0.1", "--nb", "redis://127.0.0.1:1/0",
            "--ovsdb", "unix:/tmp/x.sock", "--of-listen", "unix:/tmp/of.sock"]


def test_the_datapath_type_defaults_to_the_kernel_datapath():
    assert parse_args(REQUIRED).datapath_type == "system"


def test_the_datapath_type_comes_from_the_command_line_or_the_config_file(tmp_path):
    assert parse_args(REQUIRED + ["--datapath-type", "netdev"]).datapath_type == "netdev"
    cfg = tmp_path / "c.ini"
    cfg.write_text("[controller]\ndatapath-type = netdev\n")
    assert parse_args(REQUIRED + ["--config", str(cfg)]).datapath_type == "netdev"


def test_an_unknown_datapath_type_is_refused_naming_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(REQUIRED + ["--datapath-type", "dpdk"])
    assert "--datapath-type" in capsys.readouterr().err
    cfg = tmp_path / "c.ini"
    cfg.write_text("[controller]\ndatapath-type = dpdk\n")
    with pytest.raises(SystemExit):
        parse_args(REQUIRED + ["--config", str(cfg)])
    assert "--datapath-type" in capsys.readouterr().err


def test_the_activation_waits_30_ms_after_the_announcement_unless_told_otherwise(tmp_path):
    assert parse_args(REQUIRED).activation_settle_ms == 30.0
    assert parse_args(REQUIRED + ["--activation-settle-ms", "0"]).activation_settle_ms == 0.0
    cfg = tmp_path / "c.ini"
    cfg.write_text("[controller]\nactivation-settle-ms = 12.5\n")
    assert parse_args(REQUIRED + ["--config", str(cfg)]).activation_settle_ms == 12.5


@pytest.mark.parametrize("value", ["-1", "soon", "1001", "nan"])
def test_a_bad_activation_settle_is_refused_naming_the_option(value, capsys):
    with pytest.raises(SystemExit):
        parse_args(REQUIRED + ["--activation-settle-ms", value])
    assert "--activation-settle-ms" in capsys.readouterr().err
