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

class Rows:
    """Flow records the packer reads as they are (the compiled core's output); numpy when read."""

    @property
    def layout(self) -> FlowLayout: ...
    @property
    def n(self) -> int: ...
    @property
    def array(self) -> np.ndarray[Any, np.dtype[Any]]: ...
    @property
    def rows(self) -> np.ndarray[Any, np.dtype[Any]]: ...
    def __len__(self) -> int: ...
    def flows(self) -> list[Any]: ...

XID_CHANNEL_MAX: int

class XidAllocator:
    def __init__(self, start: int = 1) -> None: ...
    def alloc(self, n: int = 1) -> int: ...

class _Batch(Protocol):
    """What the packer reads: a dfflow.flowbatch.FlowBatch."""

    layout: FlowLayout
    array: np.ndarray[Any, np.dtype[Any]]
    n: int

def validate_flows(batch: _Batch | Rows, start: int = 0, stop: int | None = None) -> None: ...
def pack_flow_mods(batch: _Batch | Rows, xid_start: int) -> bytes: ...
def pack_bundle(batch: _Batch | Rows, bundle_id: int, xid_start: int, flags: int = 3, commit: bool = True) -> bytes: ...
def pack_messages(
    channel: Any,
    messages: Sequence[Any],
    batch_type: type,
    encode: Callable[[Any, list[Any], int], bytes],
    carried_op: int = -1,
    encode_row: Callable[[Any, Any, int, int], bytes] | None = None,
) -> bytearray: ...
def rows_with_action(batch: _Batch | Rows, op: int) -> list[int]: ...

class MessageEncoding:
    def __init__(
        self,
        batch_type: type,
        encode: Callable[[Any, list[Any], int], bytes],
        carried_op: int = -1,
        encode_row: Callable[[Any, Any, int, int], bytes] | None = None,
    ) -> None: ...
    def bundle(self, messages: Sequence[Any]) -> PlanBundle: ...

class PlanBundle:
    """A plan's messages, packed and framed as one bundle in one call (Datapath.send_bundle's BundleFramer)."""

    @property
    def messages(self) -> Sequence[Any]: ...
    def __init__(self, encoding: MessageEncoding, messages: Sequence[Any]) -> None: ...
    def frame_bundle(self, channel: Any, bundle_id: int, flags: int, commit: bool) -> tuple[bytearray, range, int]: ...
