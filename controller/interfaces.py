"""Interface updates folded into what the controller acts on: this chassis' VIFs and tunnel ofports."""
from __future__ import annotations

from controller.view import Vif
from dfflow.ovsdb.monitor import IfaceUpdate


class InterfaceTracker:
    """Folds Interface updates into what the controller acts on: VIFs and tunnel ofports.

    A chassis of a 1,000-chassis cloud holds ~1,000 tunnel rows and a few VIF rows: the VIF rows are
    kept apart, and the tunnels are computed again only after a tunnel row changed, so a VIF update
    costs what the VIFs hold, not a pass over every row."""

    def __init__(self) -> None:
        self.by_name: dict[str, IfaceUpdate] = {}
        self._vif_rows: dict[str, IfaceUpdate] = {}  # name -> a row with an iface-id and no tunnel peer
        self._tunnels: dict[str, int] | None = None  # what tunnels() answers, None once a tunnel row changed

    def apply(self, update: IfaceUpdate) -> None:
        before = self.by_name.get(update.name)
        if update.deleted:
            self.by_name.pop(update.name, None)
            self._vif_rows.pop(update.name, None)
        else:
            self.by_name[update.name] = update
            if is_vif_row(update):
                self._vif_rows[update.name] = update
            else:
                self._vif_rows.pop(update.name, None)
        if (before is not None and before.peer is not None) or update.peer is not None:
            self._tunnels = None

    def vifs(self) -> dict[str, Vif]:
        found: dict[str, Vif] = {}
        for name in sorted(self._vif_rows):
            row = self._vif_rows[name]
            if row.ofport is not None:
                found[row.iface_id] = Vif(row.iface_id, row.name, row.ofport,
                                          row.external_ids.get("attached-mac"))
        return found

    def tunnels(self) -> dict[str, int]:
        if self._tunnels is None:
            self._tunnels = {row.peer: row.ofport for row in self.by_name.values()
                             if row.peer is not None and row.ofport is not None}
        return dict(self._tunnels)


def is_tunnel_row(row: IfaceUpdate | None) -> bool:
    return row is not None and row.peer is not None


def is_vif_row(row: IfaceUpdate | None) -> bool:
    return row is not None and bool(row.iface_id) and row.peer is None
