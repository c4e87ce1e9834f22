"""OpenFlow versions as os-ken knows them, the names of message types and errors, and the
channel's exceptions (an OFPT_ERROR described with its names and the request it answers)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from os_ken.ofproto import (nicira_ext, ofproto_common, ofproto_v1_3, ofproto_v1_3_parser, ofproto_v1_4,
                           ofproto_v1_4_parser)

from dfflow import core

OFP13 = ofproto_v1_3.OFP_VERSION  # 0x04
OFP14 = ofproto_v1_4.OFP_VERSION  # 0x05



def _osken_number(name: str) -> int | None:
    for module in (ofproto_v1_3, ofproto_common, nicira_ext, ofproto_v1_4):
        if hasattr(module, name):
            return getattr(module, name)
    return None


# The compiled packer and framing write OpenFlow numbers of their own: they must be os-ken's.
core.require_agreement("OpenFlow numbers (the Python side: os-ken's)",
                       {name: _osken_number(name) for name in core.OPENFLOW}, core.OPENFLOW)


OFP_HEADER = struct.Struct("!BBHI")
OFP_HEADER_LEN = OFP_HEADER.size  # 8
OFP_MAX_MSG_LEN = 0xFFFF

# Message types common to every OpenFlow version.
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPT_BARRIER_REPLY = ofproto_v1_3.OFPT_BARRIER_REPLY  # the same number in OpenFlow 1.4
OFPT_BUNDLE_CONTROL = ofproto_v1_4.OFPT_BUNDLE_CONTROL  # OpenFlow 1.4 (1.3: ONF's experimenter message)
OFPET_HELLO_FAILED = 0
OFPHFC_INCOMPATIBLE = 0
OFPHET_VERSIONBITMAP = 1

# Bundle framing (header + what follows it, before the inner message).
ONF_BUNDLE_ADD = struct.Struct("!BBHIIIIxxH")  # header, experimenter, exp_type, bundle_id, pad, flags
OF14_BUNDLE_ADD = struct.Struct("!BBHIIxxH")  # header, bundle_id, pad, flags

class OFProto:
    """The minimal "datapath-like" object os-ken wants: ``ofproto`` and ``ofproto_parser``.

    Use ``OF13`` (or a connected :class:`Datapath`) as the ``datapath`` argument when
    building os-ken messages, e.g. ``OF13.ofproto_parser.OFPFlowMod(OF13, ...)``.
    """

    id: int | None = None

    def __init__(self, ofproto: ModuleType, parser: ModuleType) -> None:
        self.ofproto: Any = ofproto
        self.ofproto_parser: Any = parser

    def __repr__(self) -> str:
        return f"OFProto(0x{self.ofproto.OFP_VERSION:02x})"


OF13 = OFProto(ofproto_v1_3, ofproto_v1_3_parser)
OF14 = OFProto(ofproto_v1_4, ofproto_v1_4_parser)
PROTOCOLS: dict[int, OFProto] = {OFP13: OF13, OFP14: OF14}

_ERROR_CODE_PREFIX = {
    "OFPET_HELLO_FAILED": "OFPHFC_", "OFPET_BAD_REQUEST": "OFPBRC_", "OFPET_BAD_ACTION": "OFPBAC_",
    "OFPET_BAD_INSTRUCTION": "OFPBIC_", "OFPET_BAD_MATCH": "OFPBMC_",
    "OFPET_FLOW_MOD_FAILED": "OFPFMFC_", "OFPET_GROUP_MOD_FAILED": "OFPGMFC_",
    "OFPET_PORT_MOD_FAILED": "OFPPMFC_", "OFPET_TABLE_MOD_FAILED": "OFPTMFC_",
    "OFPET_QUEUE_OP_FAILED": "OFPQOFC_", "OFPET_SWITCH_CONFIG_FAILED": "OFPSCFC_",
    "OFPET_ROLE_REQUEST_FAILED": "OFPRRFC_", "OFPET_METER_MOD_FAILED": "OFPMMFC_",
    "OFPET_TABLE_FEATURES_FAILED": "OFPTFFC_", "OFPET_BAD_PROPERTY": "OFPBPC_",
    "OFPET_ASYNC_CONFIG_FAILED": "OFPACFC_", "OFPET_FLOW_MONITOR_FAILED": "OFPMOFC_",
    "OFPET_BUNDLE_FAILED": "OFPBFC_",
}


def _names(module: ModuleType, prefix: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for name in sorted(vars(module)):
        value = getattr(module, name)
        if name.startswith(prefix) and isinstance(value, int) and not name.endswith("_PACK_STR"):
            out.setdefault(value, name)
    return out


@dataclass(frozen=True)
class _Names:
    msg_types: dict[int, str]
    err_types: dict[int, str]
    err_codes: dict[int, dict[int, str]]
    onf_err: dict[int, str]


def _build_names(module: ModuleType) -> _Names:
    err_types = _names(module, "OFPET_")
    codes = {value: _names(module, _ERROR_CODE_PREFIX[name])
             for value, name in err_types.items() if name in _ERROR_CODE_PREFIX}
    return _Names(_names(module, "OFPT_"), err_types, codes, _names(module, "ONFERR_ET_"))


_NAMES = {OFP13: _build_names(ofproto_v1_3), OFP14: _build_names(ofproto_v1_4)}


def msg_type_name(version: int, msg_type: int) -> str:
    names = _NAMES.get(version, _NAMES[OFP13])
    return names.msg_types.get(msg_type, f"OFPT_{msg_type}")


class OFChannelError(Exception):
    """Base class of everything this module raises."""


class ConnectionLost(OFChannelError):
    """The OpenFlow connection dropped (or was closed) while the request was in flight."""


class RequestTimeout(OFChannelError, TimeoutError):
    """No reply within the request's timeout."""


class ProtocolError(OFChannelError):
    """The peer violated the OpenFlow framing; the connection is closed."""


class OpenFlowError(OFChannelError):
    """An OFPT_ERROR the switch sent about one of our requests.

    ``type``/``code`` are the OpenFlow error type and code (for experimenter errors,
    ``type == 0xffff``, ``code`` is the exp_type and ``experimenter`` is set); ``xid`` is
    the failing request's transaction id and ``request_type`` its message type (from
    the copy of the request the switch returns in the error's data, when present).
    """

    def __init__(self, version: int, type_: int, code: int, xid: int, data: bytes = b"",
                 experimenter: int | None = None, request_type: int | None = None,
                 message: str | None = None) -> None:
        self.version = version
        self.type = type_
        self.code = code
        self.xid = xid
        self.data = bytes(data)
        self.experimenter = experimenter
        if request_type is None and len(self.data) >= OFP_HEADER_LEN:
            request_type = OFP_HEADER.unpack_from(self.data)[1]
        self.request_type = request_type
        super().__init__(message or self.describe())

    @classmethod
    def from_msg(cls, msg: Any) -> "OpenFlowError":
        experimenter = getattr(msg, "experimenter", None) if msg.type == 0xFFFF else None
        code = msg.exp_type if experimenter is not None else msg.code
        return cls(msg.version, msg.type, code, msg.xid, msg.data or b"", experimenter)

    @property
    def type_name(self) -> str:
        return _NAMES.get(self.version, _NAMES[OFP13]).err_types.get(self.type, str(self.type))

    @property
    def code_name(self) -> str:
        names = _NAMES.get(self.version, _NAMES[OFP13])
        if self.experimenter == ofproto_common.ONF_EXPERIMENTER_ID:
            return names.onf_err.get(self.code, str(self.code))
        return names.err_codes.get(self.type, {}).get(self.code, str(self.code))

    @property
    def inner_request_type(self) -> int | None:
        """For an error about a bundle-add, the type of the bundled message (if returned)."""
        d = self.data
        if self.request_type == OFPT_EXPERIMENTER and len(d) >= ONF_BUNDLE_ADD.size:
            if struct.unpack_from("!II", d, 8) == (ofproto_common.ONF_EXPERIMENTER_ID,
                                                     ofproto_v1_3.ONF_ET_BUNDLE_ADD_MESSAGE):
                return d[ONF_BUNDLE_ADD.size + 1]
        if (self.version >= OFP14 and self.request_type == ofproto_v1_4.OFPT_BUNDLE_ADD_MESSAGE
                and len(d) >= OF14_BUNDLE_ADD.size + 2):
            return d[OF14_BUNDLE_ADD.size + 1]
        return None

    @property
    def request_type_name(self) -> str | None:
        if self.request_type is None:
            return None
        name = msg_type_name(self.version, self.request_type)
        inner = self.inner_request_type
        if inner is not None:
            name += f"[bundled {msg_type_name(self.version, inner)}]"
        return name

    def describe(self) -> str:
        exp = f" experimenter=0x{self.experimenter:08x}" if self.experimenter is not None else ""
        req = f" {self.request_type_name}" if self.request_type is not None else ""
        return (f"{self.type_name}/{self.code_name} (type={self.type} code={self.code}{exp})"
                f" for request{req} xid={self.xid}")


class FlowModError(OpenFlowError):
    """:meth:`Datapath.send_flow_mods` saw errors; ``errors`` lists them all (first one is
    mirrored in type/code/xid).  Without a bundle, the other messages WERE applied."""

    def __init__(self, errors: list[OpenFlowError]) -> None:
        first = errors[0]
        self.errors = errors
        super().__init__(first.version, first.type, first.code, first.xid, first.data,
                         first.experimenter, first.request_type,
                         f"{len(errors)} of the messages failed; first: {first.describe()}")


class BundleError(OpenFlowError):
    """:meth:`Datapath.send_bundle` was rejected; nothing of the bundle was applied (except at
    stage "pipelined": then the adds the switch accepted were committed).

    type/code/xid are those of the root cause (the failing message if the switch named
    one, else the failing bundle-control request); ``errors`` lists every error received
    for the bundle, ``bundle_id`` identifies it and ``stage`` is "add", "commit" or "pipelined".
    """

    def __init__(self, bundle_id: int, stage: str, errors: list[OpenFlowError]) -> None:
        root = errors[0]
        self.bundle_id = bundle_id
        self.stage = stage
        self.errors = errors
        super().__init__(root.version, root.type, root.code, root.xid, root.data,
                         root.experimenter, root.request_type,
                         f"bundle {bundle_id} rejected at {stage}: {root.describe()}"
                         + (f" (+{len(errors) - 1} more errors)" if len(errors) > 1 else ""))
