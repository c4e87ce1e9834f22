"""Neutron floating IPs -> NB floating IPs (the MAC is the one of the floating IP's own Neutron port)."""
from __future__ import annotations

from typing import Any

from dfflow.models import FloatingIP
from dfflow.nb import convert
from dfflow.neutron import resource
from dfflow.neutron.nbclient import NbClient


def write(nb: NbClient, fip: dict[str, Any], mac: str) -> None:
    resource.write(nb, FloatingIP, fip, convert.floatingip_fields(fip, mac))


def delete(nb: NbClient, fip_id: str) -> None:
    resource.delete(nb, FloatingIP.table, fip_id)
