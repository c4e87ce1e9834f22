"""The NB revision a chassis' flows were programmed from, kept in the chassis' own OVSDB.

A controller restarted while the NB db is empty or older (flushed, restored from an older copy)
must not take that NB for the truth and delete every flow its chassis still forwards with. It
reads back the revision it last recorded here (`Open_vSwitch` external_ids `dfflow-nb-revision`)
and trusts the NB only once it has reached it. The mark lives with the data plane it describes:
a chassis whose OVSDB is new has no flows to keep, and no mark.
"""
from __future__ import annotations

from dfflow.ovsdb.jsonrpc import JsonRpc, datum

DB = "Open_vSwitch"
KEY = "dfflow-nb-revision"


async def read_mark(remote: str) -> int:
    """The recorded revision, 0 when there is none."""
    rpc = await JsonRpc.open(remote)
    try:
        reply = await rpc.transact(DB, {"op": "select", "table": "Open_vSwitch", "where": [],
                                        "columns": ["external_ids"]})
        rows = reply[0].get("rows") or []
        external_ids = datum(rows[0]["external_ids"]) if rows else {}
        try:
            return int(external_ids.get(KEY, 0))
        except (TypeError, ValueError):
            return 0
    finally:
        await rpc.close()


async def write_mark(remote: str, revision: int) -> None:
    rpc = await JsonRpc.open(remote)
    try:
        await rpc.transact(DB, {"op": "mutate", "table": "Open_vSwitch", "where": [],
                                "mutations": [["external_ids", "delete", ["set", [KEY]]],
                                              ["external_ids", "insert", ["map", [[KEY, str(revision)]]]]]})
    finally:
        await rpc.close()
