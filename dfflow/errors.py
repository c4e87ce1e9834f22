"""dfflow's exceptions. Every NB refusal names the field (or object) at fault."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


class DfflowError(Exception):
    """Base of every error dfflow raises on purpose."""


class ValidationError(DfflowError):
    """An object or request is malformed; `field` names the offending field."""

    def __init__(self, field: str, message: str, table: str | None = None):
        self.field = field
        self.table = table
        where = f"{table}.{field}" if table else field
        super().__init__(f"{where}: {message}")
        self.message = message


class BadObject(DfflowError):
    """An object stored in the NB db that does not parse or validate (written by hand, by a buggy or
    a much newer writer): named, so that it can be found and fixed."""

    def __init__(self, table: str, obj_id: str, reason: str):
        self.table, self.id, self.reason = table, obj_id, reason
        super().__init__(f"{table} {obj_id!r} in the NB db is malformed: {reason}")


class NotFound(DfflowError):
    def __init__(self, table: str, obj_id: str, field: str | None = None):
        self.table, self.id, self.field = table, obj_id, field
        prefix = f"{field}: " if field else ""
        super().__init__(f"{prefix}{table} {obj_id!r} does not exist")


class Conflict(DfflowError):
    """A write lost a race or collides with existing state; nothing was written."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class VersionConflict(Conflict):
    def __init__(self, table: str, obj_id: str, expected: int, actual: int | None):
        self.table, self.id, self.expected, self.actual = table, obj_id, expected, actual
        super().__init__(
            f"{table} {obj_id!r} is at version {actual}, not {expected}: re-read and retry",
            field="version")


class InUse(Conflict):
    """Deleting an object that others still reference."""

    def __init__(self, table: str, obj_id: str, referrers: list[str]):
        self.table, self.id, self.referrers = table, obj_id, referrers
        shown = ", ".join(sorted(referrers)[:5]) + (" ..." if len(referrers) > 5 else "")
        super().__init__(f"{table} {obj_id!r} is still referenced by {shown}")


@contextlib.contextmanager
def refused_as(convert: Callable[[DfflowError], Exception], keep_cause: bool = False) -> Iterator[None]:
    """A DfflowError raised inside becomes `convert(error)` (the error its caller answers with: Neutron's
    API error, an HTTP reply); `keep_cause` chains it to the original. Anything else passes unchanged."""
    try:
        yield
    except DfflowError as exc:
        raise convert(exc) from (exc if keep_cause else None)
