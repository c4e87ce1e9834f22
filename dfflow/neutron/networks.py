"""Neutron networks -> NB switches. The VNI is the segmentation id Neutron's geneve type driver allocated."""
from __future__ import annotations

from typing import Any, Iterable

from dfflow.models import LogicalSwitch
from dfflow.nb import convert
from dfflow.neutron import resource
from dfflow.neutron.errors import NbInvalid
from dfflow.neutron.nbclient import NbClient

NETWORK_TYPE = "geneve"


def segmentation_id(network_id: str, segments: Iterable[dict[str, Any]]) -> int:
    types = []
    for segment in segments:
        if segment.get("network_type") == NETWORK_TYPE:
            return segment["segmentation_id"]
        types.append(str(segment.get("network_type")))
    raise NbInvalid(error_message=f"provider:network_type: network {network_id} is "
                                  f"{', '.join(types) or 'unsegmented'}; dfflow carries networks over "
                                  f"{NETWORK_TYPE} only")


def fields(network: dict[str, Any], segments: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return convert.switch_fields(network, segmentation_id(network["id"], segments))


def check(network: dict[str, Any], segments: Iterable[dict[str, Any]]) -> None:
    resource.checked(LogicalSwitch, network, fields(network, segments))


def write(nb: NbClient, network: dict[str, Any], segments: Iterable[dict[str, Any]]) -> None:
    resource.write(nb, LogicalSwitch, network, fields(network, segments))


def delete(nb: NbClient, network_id: str) -> None:
    resource.delete(nb, LogicalSwitch.table, network_id)
