"""Interface updates folded into what the controller acts on: this chassis' VIFs and tunnel ofports."""
from __future__ import annotations

from controller.view import Vif
from dfflow.ovsdb.monitor import IfaceUpdate


class InterfaceTracker:
    """Folds Interface updates into what the controller acts on: VIFs and tunnel ofports."""

    def __init__(self) -> None:
        self.by_name: dict[str, IfaceUpdate] = {}

    def apply(self, update: IfaceUpdate) -> None:
        if update.deleted:
            self.by_name.pop(update.name, None)
        else:
            self.by_name[update.name] = update

    def vifs(self) -> dict[str, Vif]:
        found: dict[str, Vif] = {}
        for row in sorted(self.by_name.values(), key=lambda r: r.name):
            if row.iface_id and row.ofport is not None and row.peer is None:
                found[row.iface_id] = Vif(row.iface_id, row.name, row.ofport,
                                          row.external_ids.get("attached-mac"))
        return found

    def tunnels(self) -> dict[str, int]:
        return {row.peer: row.ofport for row in self.by_name.values()
                if row.peer is not None and row.ofport is not None}


def is_tunnel_row(row: IfaceUpdate | None) -> bool:
    return row is not None and row.peer is not None


def is_vif_row(row: IfaceUpdate | None) -> bool:
    return row is not None and bool(row.iface_id) and row.peer is None
