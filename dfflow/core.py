"""The compiled core's typed interface.

dfflow never falls back to a slow pure-Python path: without the extension the
package does not import, and says how to build it.
"""
from typing import Mapping

try:
    from dfflow import _core, _framing, _packer, _secgroups
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "dfflow's compiled core (dfflow._core, _packer, _framing, _secgroups) is not built. Install the package "
        "with `pip install .` or build it in place with `python setup.py build_ext --inplace` "
        f"(needs cython and a C compiler): {exc}"
    ) from exc

mac_to_int = _core.mac_to_int
int_to_mac = _core.int_to_mac
ipv4_to_int = _core.ipv4_to_int
int_to_ipv4 = _core.int_to_ipv4

# The bulk OpenFlow packer (rows of a dfflow.flowbatch.FlowBatch -> OpenFlow 1.3 bytes).
FlowLayout = _packer.FlowLayout
validate_flows = _packer.validate_flows
pack_flow_mods = _packer.pack_flow_mods
pack_bundle = _packer.pack_bundle
pack_messages = _packer.pack_messages
MessageEncoding = _packer.MessageEncoding
PlanBundle = _packer.PlanBundle
rows_with_action = _packer.rows_with_action
Rows = _packer.Rows
XidAllocator = _packer.XidAllocator
XidBlock = _packer.XidBlock
XID_CHANNEL_MAX: int = _packer.XID_CHANNEL_MAX

# OpenFlow framing (the messages of a packed buffer; bundle adds around them).
frames = _framing.frames
wrap_bundle_adds = _framing.wrap_bundle_adds

# The port-flow compiler (programs of flow templates x port columns -> the rows that change).
CompiledProgram = _core.CompiledProgram
PortColumns = _core.PortColumns
compile_changes = _core.compile_changes
ChangeRows = _core.ChangeRows
rows_of_array = _core.rows_of_array
field_bytes = _core.field_bytes
field_spans = _core.field_spans
NotCompilable = _core.NotCompilable
PARAM_NAMES: tuple = _core.PARAM_NAMES
FACT_BITS: dict = _core.FACT_BITS
ROLE_KINDS: dict = _core.ROLE_KINDS
ROLE_FIELDS: tuple = _core.ROLE_FIELDS
PORT_FLAG_SECURITY: int = _core.PORT_FLAG_SECURITY
PORT_FLAG_ROUTED: int = _core.PORT_FLAG_ROUTED
PORT_FIELDS: tuple = _core.PORT_FIELDS
FIP_FIELDS: tuple = _core.FIP_FIELDS
PAIR_FIELDS: tuple = _core.PAIR_FIELDS

# A port's security-group flows from its rules as rows (controller.apps.secgroups).
SecGroupProgram = _secgroups.SecGroupProgram
compile_secgroups = _secgroups.compile_secgroups
SG_RULE_FIELDS: tuple = _secgroups.SG_RULE_FIELDS
SG_MEMBER_FIELDS: tuple = _secgroups.SG_MEMBER_FIELDS
SG_SHAPE_FIELDS: tuple = _secgroups.SG_SHAPE_FIELDS
SG_EGRESS: int = _secgroups.SG_EGRESS
SG_INGRESS: int = _secgroups.SG_INGRESS
SG_FLAG_LOW: int = _secgroups.SG_FLAG_LOW
SG_FLAG_HIGH: int = _secgroups.SG_FLAG_HIGH
SG_FLAG_GROUP: int = _secgroups.SG_FLAG_GROUP

# The OpenFlow numbers the packer writes (os-ken's names; dfflow.openflow.protocol checks them
# against os-ken), and the opcodes of a flow record's action slots.
OPENFLOW: dict = _packer.OPENFLOW
ACTION_OPCODES: dict = _packer.ACTION_OPCODES
EACH_KINDS: dict = _core.EACH_KINDS
OFP_VERSION: int = OPENFLOW["OFP_VERSION"]
OFPT_FLOW_MOD: int = OPENFLOW["OFPT_FLOW_MOD"]
OFPT_EXPERIMENTER: int = OPENFLOW["OFPT_EXPERIMENTER"]
ONF_EXPERIMENTER_ID: int = OPENFLOW["ONF_EXPERIMENTER_ID"]
ONF_ET_BUNDLE_CONTROL: int = OPENFLOW["ONF_ET_BUNDLE_CONTROL"]
ONF_ET_BUNDLE_ADD_MESSAGE: int = OPENFLOW["ONF_ET_BUNDLE_ADD_MESSAGE"]
ONF_BCT_OPEN_REQUEST: int = OPENFLOW["ONF_BCT_OPEN_REQUEST"]
ONF_BCT_CLOSE_REQUEST: int = OPENFLOW["ONF_BCT_CLOSE_REQUEST"]
ONF_BCT_COMMIT_REQUEST: int = OPENFLOW["ONF_BCT_COMMIT_REQUEST"]
ONF_BCT_DISCARD_REQUEST: int = OPENFLOW["ONF_BCT_DISCARD_REQUEST"]
ONF_BF_ATOMIC: int = OPENFLOW["ONF_BF_ATOMIC"]
ONF_BF_ORDERED: int = OPENFLOW["ONF_BF_ORDERED"]
FLOW_MOD_FIXED_LEN: int = _packer.FLOW_MOD_FIXED_LEN
BUNDLE_CTRL_LEN: int = _packer.BUNDLE_CTRL_LEN
BUNDLE_ADD_HEADER_LEN: int = _packer.BUNDLE_ADD_HEADER_LEN


class CoreMismatch(ImportError):
    """The compiled core and the Python side number the same things differently."""


def require_agreement(what: str, python: Mapping[str, int], compiled: Mapping[str, int]) -> None:
    """Raise CoreMismatch unless `python` and `compiled` hold the same names with the same values.

    Run at import by the modules that declare a table the compiled core also knows, so that a
    number changed on one side only stops the program at start instead of packing wrong bytes.
    """
    differ = sorted(name for name in python.keys() | compiled.keys() if python.get(name) != compiled.get(name))
    if differ:
        rows = "; ".join(f"{name}: Python {python.get(name, 'missing')}, compiled {compiled.get(name, 'missing')}"
                         for name in differ)
        raise CoreMismatch(f"dfflow's compiled core disagrees with the Python side on {what} ({rows}): "
                           "make both say the same and rebuild the core (pip install .)")


__all__ = ["mac_to_int", "int_to_mac", "ipv4_to_int", "int_to_ipv4",
           "FlowLayout", "validate_flows", "pack_flow_mods", "pack_bundle", "pack_messages", "MessageEncoding",
           "PlanBundle", "rows_with_action", "Rows", "XidAllocator", "XidBlock",
           "XID_CHANNEL_MAX", "frames", "wrap_bundle_adds",
           "CompiledProgram", "PortColumns", "compile_changes", "ChangeRows", "rows_of_array",
           "field_bytes", "field_spans", "NotCompilable",
           "PARAM_NAMES", "FACT_BITS",
           "ROLE_KINDS", "ROLE_FIELDS", "PORT_FLAG_SECURITY", "PORT_FLAG_ROUTED", "PORT_FIELDS", "FIP_FIELDS", "PAIR_FIELDS",
           "SecGroupProgram", "compile_secgroups", "SG_RULE_FIELDS",
           "SG_MEMBER_FIELDS", "SG_SHAPE_FIELDS", "SG_EGRESS", "SG_INGRESS", "SG_FLAG_LOW", "SG_FLAG_HIGH",
           "SG_FLAG_GROUP",
           "OFP_VERSION", "OFPT_FLOW_MOD", "OFPT_EXPERIMENTER", "ONF_EXPERIMENTER_ID",
           "ONF_ET_BUNDLE_CONTROL", "ONF_ET_BUNDLE_ADD_MESSAGE", "ONF_BCT_OPEN_REQUEST",
           "ONF_BCT_CLOSE_REQUEST", "ONF_BCT_COMMIT_REQUEST", "ONF_BCT_DISCARD_REQUEST",
           "ONF_BF_ATOMIC", "ONF_BF_ORDERED", "FLOW_MOD_FIXED_LEN", "BUNDLE_CTRL_LEN",
           "BUNDLE_ADD_HEADER_LEN", "OPENFLOW", "ACTION_OPCODES", "EACH_KINDS", "CoreMismatch",
           "require_agreement"]
