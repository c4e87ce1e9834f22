"""Neutron subnets -> NB subnets."""
from __future__ import annotations

from typing import Any

from dfflow.models import Subnet
from dfflow.nb import convert
from dfflow.neutron import resource
from dfflow.neutron.nbclient import NbClient


def check(subnet: dict[str, Any]) -> None:
    resource.checked(Subnet, subnet, convert.subnet_fields(subnet))


def write(nb: NbClient, subnet: dict[str, Any]) -> None:
    resource.write(nb, Subnet, subnet, convert.subnet_fields(subnet))


def delete(nb: NbClient, subnet_id: str) -> None:
    resource.delete(nb, Subnet.table, subnet_id)
