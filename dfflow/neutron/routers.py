"""Neutron routers, their interfaces and external gateway -> one NB router each.

After every router operation the NB router is written whole from what Neutron's database then holds
(the router, its interface ports, its gateway port): an operation needs no previous NB state, and a
repeated write changes nothing."""
from __future__ import annotations

from typing import Any, Iterable

from dfflow.models import LogicalRouter
from dfflow.nb import convert
from dfflow.neutron import resource
from dfflow.neutron.nbclient import NbClient


def write(nb: NbClient, router: dict[str, Any], interfaces: Iterable[dict[str, Any]],
          gw_port: dict[str, Any] | None) -> None:
    resource.write(nb, LogicalRouter, router, convert.router_fields(router, interfaces, gw_port))


def delete(nb: NbClient, router_id: str) -> None:
    resource.delete(nb, LogicalRouter.table, router_id)
