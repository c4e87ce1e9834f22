"""The controller variants `dfflow-bench flow-update` compares, built here (the daemon has no switches).

    python -m benchmarks.flow_paths [--flow-path compiled|osken] [--no-bundle] <dfflow-controller options>

* `--flow-path compiled` (default): the daemon's own engine (the compiled core makes the port flows) and
  packer;
* `--flow-path osken`: every app's port flows made by the Python interpretation of its port program
  (controller.templates, the compiled core's test oracle) -- the security groups' rows decoded -- and
  diffed in FlowState, sent as os-ken objects;
* `--no-bundle`: plain flow mods followed by a barrier instead of one atomic bundle per batch of plans
  (not atomic: a baseline only).

The sandbox starts it as its controller command (`Sandbox(controller_cmd=COMMAND)`); its status adds
`flow_path` and `bundle`, so a run can check which variant answers.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from controller import compiler, daemon
from controller.apps.base import App
from controller.engine import Engine
from controller.sender import PlanSender
from dfflow.flowbatch import FlowBatch
from dfflow.openflow import Datapath

COMMAND = [sys.executable, "-m", "benchmarks.flow_paths"]
FLOW_PATHS = ("compiled", "osken")


class PythonPorts(App):
    """An app whose port program is run by the Python interpreter, as its four port events."""

    def __init__(self, app: App):
        self.app, self.name, self.app_id = app, app.name, app.app_id

    def add_local_port(self, port: Any, view: Any) -> list:
        if self.app.makes_port_rows:
            return FlowBatch.of_rows(self.app.port_rows(port, view)).flows()
        if self.app.port_program is None:
            return []
        return self.app.port_program.flows(view.port_facts(port), view.port_role(port))

    def add_remote_port(self, port: Any, view: Any) -> list:
        return self.add_local_port(port, view)  # the role (view.port_role) says which

    def switch_flows(self, switch: Any, view: Any) -> list:
        return self.app.switch_flows(switch, view)

    def router_flows(self, router: Any, view: Any) -> list:
        return self.app.router_flows(router, view)

    def static_flows(self) -> list:
        return self.app.static_flows()


class VariantSender(PlanSender):
    flow_path = "compiled"
    bundle = True

    @property
    def sent_as(self) -> str:  # type: ignore[override]
        return "bundles" if self.bundle else "flow_mod_batches"

    async def send(self, dp: Datapath, flows: list[Any], pipelined: bool = True) -> None:
        msgs: Any = (compiler.flow_mods(dp, flows) if self.flow_path == "compiled"
                     else [f.to_osken(dp) for f in flows])
        if self.bundle:
            await dp.send_bundle(msgs, pipelined=pipelined)
        else:
            await dp.send_flow_mods(msgs)


class VariantDaemon(daemon.ControllerDaemon):
    sender_class: type[VariantSender] = VariantSender

    def _new_engine(self) -> Engine:
        engine = super()._new_engine()
        if self.sender_class.flow_path == "compiled":
            return engine
        return Engine(self.chassis, [PythonPorts(app) for app in engine.apps])

    def status(self) -> dict[str, Any]:
        return super().status() | {"flow_path": self.sender_class.flow_path, "bundle": self.sender_class.bundle}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.flow_paths", add_help=False)
    parser.add_argument("--flow-path", choices=FLOW_PATHS, default="compiled")
    parser.add_argument("--no-bundle", action="store_true")
    variant, rest = parser.parse_known_args(argv)
    sender = type("FlowPathSender", (VariantSender,), {"flow_path": variant.flow_path, "bundle": not variant.no_bundle})
    daemon.main(rest, type("FlowPathDaemon", (VariantDaemon,), {"sender_class": sender}))


if __name__ == "__main__":
    main()
