"""What every NB object is (`Model`: id, topic, version, its checks, references, unique claims and
owner) and the small values nested in one (`Record`), with their JSON round trip."""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from dfflow.errors import ValidationError
from dfflow.models.fields import check_id, check_int

LOG = logging.getLogger(__name__)


_unknown_seen: set[tuple[str, str]] = set()


def known_fields(cls: type, data: dict[str, Any], where: str, table: str) -> dict[str, Any]:
    """`data` without the fields `cls` does not have: a newer dfflow may have written them (a rolling
    upgrade), so they are ignored, with a warning the first time each is met."""
    names = _field_names(cls)
    unknown = [name for name in data if name not in names]
    if not unknown:
        return data
    for name in unknown:
        if (table, where + name) not in _unknown_seen:
            _unknown_seen.add((table, where + name))
            LOG.warning("%s objects carry a field this dfflow does not know, ignored: %s%s", table, where, name)
    return {k: v for k, v in data.items() if k in names}


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


@functools.cache
def _required_fields(cls: type) -> tuple[str, ...]:
    """The fields without a default: an object without one of them is incomplete."""
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


@dataclass
class Model:
    table: ClassVar[str] = ""
    # Nested record fields: name -> (record class, is_list)
    records: ClassVar[dict[str, tuple[type, bool]]] = {}

    id: str
    topic: str
    version: int = 0

    def check(self) -> None:
        check_id("id", self.id, self.table)
        check_id("topic", self.topic, self.table)
        check_int("version", self.version, 0, 2**63 - 1, self.table)

    def references(self) -> list[tuple[str, str, str]]:
        """(field, table, id) of every object this one needs to exist."""
        return []

    def unique_keys(self) -> list[tuple[str, str]]:
        """(field, key) claims that no other object may hold at the same time."""
        return []

    def deleted_with(self) -> list[tuple[str, str]]:
        """(table, id) of the objects whose deletion deletes this one with it (rather than being refused
        while this one refers to them)."""
        return []

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Model":
        if not isinstance(data, dict):
            raise ValidationError("object", f"expected a JSON object, got {type(data).__name__}", cls.table)
        complete = data.keys() == _field_names(cls)  # what this dfflow writes: every field, none other
        if not complete:
            data = known_fields(cls, data, "", cls.table)
            missing = [name for name in _required_fields(cls) if name not in data]
            if missing:
                raise ValidationError(missing[0], "required field missing", cls.table)
        records = {}
        for name, (record_cls, is_list) in cls.records.items():
            raw = data.get(name)
            if raw is None:
                continue
            if is_list:
                if not isinstance(raw, list):
                    raise ValidationError(name, "must be a list", cls.table)
                if raw:
                    records[name] = [record_cls.from_dict(item, f"{name}[{i}]", cls.table)
                                     for i, item in enumerate(raw)]
            else:
                records[name] = record_cls.from_dict(raw, name, cls.table)
        return cls(**{**data, **records}) if records else cls(**data)

    def replace(self, **changes: Any) -> "Model":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Record:
    """A small value nested in a model (router port, gateway, migration record)."""

    @classmethod
    def from_dict(cls, data: Any, where: str, table: str) -> "Record":
        if not isinstance(data, dict):
            raise ValidationError(where, "must be a JSON object", table)
        data = known_fields(cls, data, f"{where}.", table)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValidationError(where, f"incomplete: {exc}", table) from None
