"""What every per-resource module does with its NB object: check it, write it, delete it."""
from __future__ import annotations

from typing import Any

from dfflow.models import Model
from dfflow.nb import convert
from dfflow.neutron.errors import refusals
from dfflow.neutron.nbclient import NbClient


def checked(model: type[Model], resource: dict[str, Any], fields: dict[str, Any]) -> Model:
    """The NB object for Neutron `resource`, checked as the NB checks it (a Neutron 400 naming the field)."""
    obj = model(id=resource["id"], topic=convert.topic(resource), **fields)
    with refusals():
        obj.check()
    return obj


def write(nb: NbClient, model: type[Model], resource: dict[str, Any], fields: dict[str, Any]) -> None:
    """Make the NB object match `fields` (created if missing; NB-only fields are kept)."""
    obj = checked(model, resource, fields)
    with refusals():
        nb.put(model, obj.id, obj.topic, fields)


def delete(nb: NbClient, table: str, obj_id: str) -> None:
    with refusals():
        nb.discard(table, obj_id)
