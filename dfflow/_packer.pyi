from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

OFP_VERSION: int
OFPT_FLOW_MOD: int
OFPT_EXPERIMENTER: int
ONF_EXPERIMENTER_ID: int
ONF_ET_BUNDLE_CONTROL: int
ONF_ET_BUNDLE_ADD_MESSAGE: int
ONF_BCT_OPEN_REQUEST: int
ONF_BCT_CLOSE_REQUEST: int
ONF_BCT_COMMIT_REQUEST: int
ONF_BCT_DISCARD_REQUEST: int
ONF_BF_ATOMIC: int
ONF_BF_ORDERED: int
FLOW_MOD_FIXED_LEN: int
BUNDLE_CTRL_LEN: int
BUNDLE_ADD_HEADER_LEN: int
OPENFLOW: dict[str, int]
ACTION_OPCODES: dict[str, int]

class FlowLayout:
    """Column offsets of the flow record and the match-field table (built once by dfflow.flowbatch)."""

    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    def __init__(
        self,
        dtype: np.dtype[Any],
        fields: Sequence[tuple[str, int, int, int, bool, bool, int]],
        max_actions: int,
        commands: Sequence[int] = ...,
    ) -> None: ...

class _Batch(Protocol):
    """What the packer reads: a dfflow.flowbatch.FlowBatch."""

    layout: FlowLayout
    array: np.ndarray[Any, np.dtype[Any]]
    n: int

def validate_flows(batch: _Batch, start: int = 0, stop: int | None = None) -> None: ...
def pack_flow_mods(batch: _Batch, xid_start: int) -> bytes: ...
def pack_bundle(batch: _Batch, bundle_id: int, xid_start: int, flags: int = 3, commit: bool = True) -> bytes: ...
def pack_messages(
    channel: Any,
    messages: Sequence[Any],
    batch_type: type,
    encode: Callable[[Any, list[Any], int], bytes],
    carried_op: int = -1,
    encode_row: Callable[[Any, Any, int, int], bytes] | None = None,
) -> bytearray: ...
def pack_bundle_messages(
    channel: Any,
    messages: Sequence[Any],
    bundle_id: int,
    flags: int,
    commit: bool,
    batch_type: type,
    encode: Callable[[Any, list[Any], int], bytes],
    carried_op: int = -1,
    encode_row: Callable[[Any, Any, int, int], bytes] | None = None,
) -> tuple[bytearray, range, int]: ...
def rows_with_action(batch: _Batch, op: int) -> list[int]: ...
