"""The app interface: the blueprint's port events, returning flows.

An app never sends anything. For each port the controller asks the app for the
flows of the port's role on this chassis: `add_local_port` when the port's VIF is
here, `add_remote_port` when it lives on another chassis; `remove_*` give the
flows to take away (by default, exactly those that were installed for it). A
migration is nothing more than remove_local + add_remote on the source, the
reverse on the destination, and remove_remote + add_remote elsewhere: the
controller diffs them and applies the difference as one bundle.

Cookies: `app_id << 56 | 56-bit hash of the object id`, so every flow names its
app and object.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from controller.templates import APP_COOKIE_SHIFT, PortProgram, object_hash
from dfflow.flows import Flow

if TYPE_CHECKING:
    from controller.view import View
    from dfflow.models import LogicalPort, LogicalRouter, LogicalSwitch



def app_of_cookie(cookie: int) -> int:
    return cookie >> APP_COOKIE_SHIFT


class App:
    name = "base"
    app_id = 0
    # The app's port flows as data (controller.templates), run by the compiled core in place of
    # the four port events below.
    port_program: PortProgram | None = None
    # An app whose port flows do not fit a port program (the security groups: their rules and
    # remote-group members are facts of variable length) makes them as rows of the flow record
    # itself (port_rows), in place of the four port events; the engine diffs and packs those rows
    # as it does the port programs'.
    makes_port_rows = False

    def cookie(self, obj_id: str) -> int:
        return (self.app_id << APP_COOKIE_SHIFT) | object_hash(obj_id)

    def port_rows(self, port: "LogicalPort", view: "View") -> np.ndarray:
        """The port's flows on this chassis as rows of the flow record (makes_port_rows apps)."""
        raise NotImplementedError(f"app {self.name} makes no port rows")

    def narrows(self, deleted: np.ndarray) -> bool:
        """Whether deleting these of a port's rows takes away something its flows allowed (makes_port_rows
        apps; the engine then has the port's established connections judged again)."""
        return False

    # -- the blueprint's four port events -------------------------------------------
    def add_local_port(self, port: "LogicalPort", view: "View") -> list[Flow]:
        return []

    def add_remote_port(self, port: "LogicalPort", view: "View") -> list[Flow]:
        return []

    def remove_local_port(self, port: "LogicalPort", installed: Iterable[Flow]) -> list[Flow]:
        return list(installed)

    def remove_remote_port(self, port: "LogicalPort", installed: Iterable[Flow]) -> list[Flow]:
        return list(installed)

    # -- flows that belong to a network or to the app itself --------------------
    def switch_flows(self, switch: "LogicalSwitch", view: "View") -> list[Flow]:
        return []

    def router_flows(self, router: "LogicalRouter", view: "View") -> list[Flow]:
        return []

    def static_flows(self) -> list[Flow]:
        return []
