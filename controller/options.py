"""`dfflow-controller`'s command line and its `--config` file: every option checked, a bad one named."""
from __future__ import annotations

import argparse
import configparser

from dfflow import __version__
from dfflow.errors import ValidationError
from dfflow.models import ACTIVATION_STRATEGIES, DATAPATH_TYPES, TUNNEL_TYPES
from dfflow.nb.nburl import parse_nb_url

DESCRIPTION = "`dfflow-controller`: one per chassis, the shell around the engine."
STRATEGIES = ACTIVATION_STRATEGIES
# Measured on the 3-chassis sandbox (benchmarks/RESULTS.md, branch switch-path): the destination's
# activation bundle, landing 5-12 ms after the RARP, held the VM's first replies behind it.
ACTIVATION_SETTLE_MS = 30
MAX_ACTIVATION_SETTLE_MS = 1000  # well below Nova's unplug after the switchover (hundreds of ms to seconds)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """Bad configuration is one line naming the option and what it may be, and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _choice(parser: _Parser, option: str, value: str, allowed: tuple[str, ...], fold: bool = False) -> str:
    if (value.upper() if fold else value) not in allowed:
        parser.error(f"{option}: {value!r} is not one of {', '.join(allowed)}")
    return value.upper() if fold else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="dfflow-controller", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="INI file with a [controller] section holding the options below "
                                         "(names without the leading --; unknown names are an error)")
    parser.add_argument("--chassis", help="this chassis' name (its host name, as Nova knows it)")
    parser.add_argument("--tunnel-ip", help="this chassis' underlay IP for Geneve tunnels")
    parser.add_argument("--tunnel-type", default=None, help=f"one of {', '.join(TUNNEL_TYPES)} (default geneve)")
    parser.add_argument("--nb", help="NB database URL: redis://, rediss://, unix:// or "
                                     "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
    parser.add_argument("--ovsdb", help="OVSDB of this chassis, e.g. unix:/var/run/openvswitch/db.sock")
    parser.add_argument("--bridge", default=None, help="integration bridge (default br-int)")
    parser.add_argument("--datapath-type", default=None, choices=DATAPATH_TYPES,
                        help="the integration bridge's datapath: system (the kernel module; default) or "
                             "netdev (userspace, where there is no kernel module)")
    parser.add_argument("--of-listen", help="OpenFlow listen address: HOST:PORT or unix:PATH")
    parser.add_argument("--status-socket", help="unix socket path serving this controller's status as JSON")
    parser.add_argument("--strategy", default=None,
                        help="live-migration activation: at the source's unplug (the blueprint), unplug, or at the "
                             "VM's announcement on a pre-programmed destination, announce, falling back to the "
                             "source's unplug when the VM never announces (default announce)")
    parser.add_argument("--activation-settle-ms", default=None,
                        help="announce strategy: how long the destination waits after its VM's RARP/GARP before it "
                             "activates the port (the activation's flow changes on every chassis). The datapath "
                             "delivers from the announcement on without it (the gates' learn actions); the wait keeps "
                             "the activation's bundle and revalidation off the switchover's first packets, which "
                             f"the destination's vswitchd would otherwise hold behind it (default {ACTIVATION_SETTLE_MS})")
    parser.add_argument("--log-level", default=None, help=f"one of {', '.join(LOG_LEVELS)} (default INFO)")
    parser.add_argument("--metrics-port", default=None,
                        help="serve Prometheus metrics on this TCP port (0: any free port, shown in status as "
                             "metrics_url); off by default")
    parser.add_argument("--metrics-listen", default=None, help="address for --metrics-port (default 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.config:
        cfg = configparser.ConfigParser()
        try:
            found = cfg.read(args.config)
        except configparser.Error as exc:
            parser.error(f"--config {args.config}: {str(exc).splitlines()[0]}")
        if not found:
            parser.error(f"--config: cannot read {args.config}")
        section = cfg["controller"] if cfg.has_section("controller") else {}
        known = sorted(a.dest.replace("_", "-") for a in parser._actions if a.dest not in ("help", "version", "config"))
        for key, value in section.items():
            attr = key.replace("-", "_")
            if key.replace("_", "-") not in known:
                parser.error(f"--config {args.config}: unknown key {key!r} in [controller]; "
                             f"known keys: {', '.join(known)}")
            if getattr(args, attr, None) is None:
                setattr(args, attr, value)
    args.bridge = args.bridge or "br-int"
    args.datapath_type = _choice(parser, "--datapath-type", args.datapath_type or "system", DATAPATH_TYPES)
    args.tunnel_type = _choice(parser, "--tunnel-type", args.tunnel_type or "geneve", TUNNEL_TYPES)
    args.log_level = _choice(parser, "--log-level", args.log_level or "INFO", LOG_LEVELS, fold=True)
    args.strategy = _choice(parser, "--strategy", args.strategy or "announce", STRATEGIES)
    settle = str(args.activation_settle_ms if args.activation_settle_ms is not None else ACTIVATION_SETTLE_MS)
    try:
        args.activation_settle_ms = float(settle)
    except ValueError:
        args.activation_settle_ms = -1.0
    if not 0 <= args.activation_settle_ms <= MAX_ACTIVATION_SETTLE_MS:
        parser.error(f"--activation-settle-ms: {settle!r} is not a number of ms in 0..{MAX_ACTIVATION_SETTLE_MS}")
    if args.metrics_port is not None:
        port = str(args.metrics_port)
        if not port.isdigit() or int(port) > 65535:
            parser.error(f"--metrics-port: {port!r} is not a TCP port (0..65535)")
        args.metrics_port = int(port)
    elif args.metrics_listen is not None:
        parser.error("--metrics-listen needs --metrics-port")
    args.metrics_listen = args.metrics_listen or "127.0.0.1"
    for required in ("chassis", "tunnel_ip", "nb", "ovsdb", "of_listen"):
        if not getattr(args, required):
            parser.error(f"--{required.replace('_', '-')} is required (or set it in --config)")
    try:
        parse_nb_url(args.nb)
    except ValidationError as exc:
        parser.error(f"--{exc}")
    return args
