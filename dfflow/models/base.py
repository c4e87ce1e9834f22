"""What every NB object is (`Model`: id, topic, version, its checks, references, unique claims and
owner) and the small values nested in one (`Record`), with their JSON round trip."""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Collection

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
def _field_order(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _json_copy(value: Any) -> Any:
    """`value` (a model, a record or a field's value) as JSON data of its own: models and records as
    objects, lists, tuples and objects copied; strings, numbers, booleans and None are immutable."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is list:
        return [_json_copy(item) for item in value]
    if kind is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, (Model, Record)):
        return {name: _json_copy(getattr(value, name)) for name in _field_order(kind)}
    if kind is tuple:
        return tuple(_json_copy(item) for item in value)
    return value


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


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
    # `check_changed` checks only the fields it is given (else an update is read and checked whole)
    checks_by_field: ClassVar[bool] = False
    # Fields whose checked values hold text only (a string, None, a list of strings): a string equals
    # only a string, so a raw value equal to one is the same JSON, type for type (`updated`).
    text_fields: ClassVar[frozenset[str]] = frozenset()

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
        """The object as JSON data, its nested records as objects, sharing nothing mutable with it
        (what `dataclasses.asdict` makes, in a tenth of its time: every NB write makes it twice)."""
        return _json_copy(self)

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
        for name in cls.records:
            raw = data.get(name)
            if raw is not None:
                records[name] = cls._record_value(name, raw)
        return cls(**{**data, **records}) if records else cls(**data)

    @classmethod
    def _record_value(cls, name: str, raw: Any) -> Any:
        """The value of the nested record field `name` (a record or a list of them) read from `raw`."""
        record_cls, is_list = cls.records[name]
        if not is_list:
            return record_cls.from_dict(raw, name, cls.table)
        if not isinstance(raw, list):
            raise ValidationError(name, "must be a list", cls.table)
        return [record_cls.from_dict(item, f"{name}[{i}]", cls.table) for i, item in enumerate(raw)] if raw else raw

    @classmethod
    def updated(cls, held: "Model", data: Any) -> tuple["Model", list[str]] | None:
        """A new version read from `data`, a complete object of this model, given `held`, the version
        before it, already checked: (the object, the fields whose values differ from `held`'s). A field
        whose raw value is `held`'s, type for type, takes `held`'s value (checked, normalized) and need
        not be checked again (`check_changed`). None when `data` is not a complete object of this model,
        or `held` not one, or the model is checked only whole: read it whole (`from_dict`)."""
        if not (cls.checks_by_field and type(held) is cls and type(data) is dict
                and data.keys() == _field_names(cls)):
            return None
        values = held.__dict__
        if len(values) != len(data):  # something besides its fields on `held`
            return None
        changes: dict[str, Any] = {}
        text = cls.text_fields
        for name, raw in data.items():
            value = values[name]
            if raw is value or raw == value and (name in text or not value and type(raw) is type(value)
                                                 or same_json(raw, value)):
                continue  # (an empty list, object or string, a zero, false: the same only of the same type)
            if name in cls.records and raw is not None:
                if value is not None and same_json(raw, value):
                    continue
                raw = cls._record_value(name, raw)
            changes[name] = raw
        # what the dataclass' __init__ makes of every field given, without its call: this dict becomes the
        # object's own (an __init__'s object makes one when `held.__dict__` is first read, above)
        new = object.__new__(cls)
        new.__dict__ = {**values, **changes}
        return new, list(changes)

    def check_changed(self, changed: Collection[str]) -> None:
        """Check an object whose fields other than `changed` hold values already checked (those of the
        version before it): a model without checks per field (`checks_by_field`) checks everything."""
        self.check()

    def replace(self, **changes: Any) -> "Model":
        return dataclasses.replace(self, **changes)


def same_json(raw: Any, held: Any) -> bool:
    """Is `raw` (decoded JSON) the value `held` (a model's field) holds, type for type? (`1 == True`
    and `1 == 1.0` in Python; here they differ.)"""
    if raw is held:  # None, true, false, small integers
        return True
    kind = type(held)
    if kind is str:
        return raw == held  # among JSON values only a string equals a string
    if kind is list:
        return type(raw) is list and len(raw) == len(held) and all(map(same_json, raw, held))
    if kind is dict:
        return (type(raw) is dict and raw.keys() == held.keys()
                and all(same_json(raw[key], value) for key, value in held.items()))
    if isinstance(held, Record):
        return (type(raw) is dict and raw.keys() == _field_names(kind)
                and all(same_json(value, getattr(held, name)) for name, value in raw.items()))
    return type(raw) is kind and raw == held


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
