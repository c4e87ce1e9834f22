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


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for_and_a_third_is_refused(capsys):
    from controller import eventloop

    assert parse_args(REQUIRED).event_loop == "uvloop"
    assert parse_args(REQUIRED + ["--event-loop", "asyncio"]).event_loop == "asyncio"
    with pytest.raises(SystemExit):
        parse_args(REQUIRED + ["--event-loop", "trio"])
    assert "--event-loop" in capsys.readouterr().err

    async def loop_module() -> str:
        import asyncio
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(loop_module(), "uvloop").startswith("uvloop")
    assert eventloop.run(loop_module(), "asyncio").startswith("asyncio")
