"""From the flows a plan changes to the bytes sent: the compiled packer, in one buffer.

Every flow the packer has an opcode for (output, set-field, dec-ttl, reg-move) is
encoded into a `FlowBatch` row and packed by `dfflow._core` without a Python object
per message; the rare flows it has none for (the announce gate's learn and
resubmit) are serialized by os-ken in their place, so the order of the plan
(deletes, then adds) is kept. The channel wraps the buffer in one atomic bundle.
"""
from __future__ import annotations

from typing import Any, Sequence

from dfflow import core
from dfflow.flowbatch import FlowBatch
from dfflow.flows import DecTtl, Flow, Move, Output, SetField

PACKABLE_ACTIONS = (Output, SetField, DecTtl, Move)


def packable(flow: Flow) -> bool:
    return all(isinstance(action, PACKABLE_ACTIONS) for action in flow.actions)


def flow_mods(dp: Any, flows: Sequence[Flow]) -> bytes:
    """FLOW_MOD messages for `flows`, in order, numbered from a block of the channel's xids."""
    if not flows:
        return b""
    xid = dp.xids.alloc(len(flows))
    out = bytearray()
    run: list[Flow] = []

    def flush() -> None:
        nonlocal xid
        if run:
            out.extend(core.pack_flow_mods(FlowBatch.from_flows(run), xid))
            xid += len(run)
            run.clear()

    for flow in flows:
        if packable(flow):
            run.append(flow)
            continue
        flush()
        message = flow.to_osken(dp, xid)
        message.serialize()
        out.extend(message.buf)
        xid += 1
    flush()
    return bytes(out)
