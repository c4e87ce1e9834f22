"""A port's live-migration record, as the NB stores it on the port (controller/migration.py owns
the transitions between its states)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dfflow.errors import ValidationError
from dfflow.models.base import Record
from dfflow.models.fields import check_bool, check_choice, check_id, check_number, check_optional_id, check_str

ACTIVATION_STRATEGIES = ("unplug", "announce")
# The life of a port-migration record (the blueprint's `port-migration` field);
# controller/migration.py owns the transitions between them.
MIGRATION_STATES = ("requested", "activated", "switched", "done", "aborted")


@dataclass(frozen=True)
class MigrationRecord(Record):
    """The blueprint's port-migration field: where the port is moving, and how far it got.

    `id` names this migration (its timeline lives under that id); `timestamps` maps each
    state to the wall-clock time it was entered."""

    chassis: str  # destination
    source: str | None = None
    state: str = "requested"
    strategy: str = "unplug"
    id: str = ""
    bound: str | None = None  # the port's binding when the migration started
    timestamps: dict[str, float] = field(default_factory=dict)
    # Nova prepared the destination (an inactive binding, or binding:profile.migrating_to, for it)
    # while the migration was requested: withdrawing that before the port is bound there is Nova's
    # rollback, which aborts the migration.
    prepared: bool = False

    def check(self, table: str) -> None:
        check_id("migration.chassis", self.chassis, table)
        check_optional_id("migration.source", self.source, table)
        check_optional_id("migration.bound", self.bound, table)
        check_choice("migration.state", self.state, MIGRATION_STATES, table)
        check_choice("migration.strategy", self.strategy, ACTIVATION_STRATEGIES, table)
        check_str("migration.id", self.id, table=table)
        check_bool("migration.prepared", self.prepared, table)
        if not isinstance(self.timestamps, dict):
            raise ValidationError("migration.timestamps", "must be an object", table)
        for key, value in self.timestamps.items():
            check_choice("migration.timestamps", key, MIGRATION_STATES, table)
            check_number(f"migration.timestamps.{key}", value, table)
