"""The compiled core's typed interface.

dfflow never falls back to a slow pure-Python path: without the extension the
package does not import, and says how to build it.
"""
try:
    from dfflow import _core, _packer, _secgroups
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "dfflow's compiled core (dfflow._core, dfflow._packer, dfflow._secgroups) is not built. Install the "
        "package with `pip install .` or build it in place with `python setup.py build_ext --inplace` "
        f"(needs cython and a C compiler): {exc}"
    ) from exc

mac_to_int = _core.mac_to_int
int_to_mac = _core.int_to_mac
ipv4_to_int = _core.ipv4_to_int
int_to_ipv4 = _core.int_to_ipv4

# The bulk OpenFlow packer (rows of a dfflow.flowbatch.FlowBatch -> OpenFlow 1.3 bytes).
FlowLayout = _packer.FlowLayout
validate_flows = _packer.validate_flows
packed_size = _packer.packed_size
pack_flow_mods = _packer.pack_flow_mods
pack_flow_mods_into = _packer.pack_flow_mods_into
pack_bundle = _packer.pack_bundle
pack_bundle_ctrl = _packer.pack_bundle_ctrl
pack_many = _packer.pack_many

# The port-flow compiler (programs of flow templates x port columns -> rows; rows -> one bundle per chassis).
CompiledProgram = _core.CompiledProgram
compile_transitions = _core.compile_transitions
migration_transitions = _core.migration_transitions
pack_groups = _core.pack_groups
NotCompilable = _core.NotCompilable
PARAM_NAMES: tuple = _core.PARAM_NAMES
FACT_BITS: dict = _core.FACT_BITS
ROLE_KINDS: dict = _core.ROLE_KINDS
PORT_FLAG_SECURITY: int = _core.PORT_FLAG_SECURITY
PORT_FLAG_ROUTED: int = _core.PORT_FLAG_ROUTED
PORT_FIELDS: tuple = _core.PORT_FIELDS
FIP_FIELDS: tuple = _core.FIP_FIELDS
PAIR_FIELDS: tuple = _core.PAIR_FIELDS
ROLE_FIELDS: tuple = _core.ROLE_FIELDS
TRANSITION_FIELDS: tuple = _core.TRANSITION_FIELDS
ACTION_OPCODES: tuple = _packer.ACTION_OPCODES

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

OFP_VERSION: int = _packer.OFP_VERSION
OFPT_FLOW_MOD: int = _packer.OFPT_FLOW_MOD
OFPT_EXPERIMENTER: int = _packer.OFPT_EXPERIMENTER
ONF_EXPERIMENTER_ID: int = _packer.ONF_EXPERIMENTER_ID
ONF_ET_BUNDLE_CONTROL: int = _packer.ONF_ET_BUNDLE_CONTROL
ONF_ET_BUNDLE_ADD_MESSAGE: int = _packer.ONF_ET_BUNDLE_ADD_MESSAGE
ONF_BCT_OPEN_REQUEST: int = _packer.ONF_BCT_OPEN_REQUEST
ONF_BCT_CLOSE_REQUEST: int = _packer.ONF_BCT_CLOSE_REQUEST
ONF_BCT_COMMIT_REQUEST: int = _packer.ONF_BCT_COMMIT_REQUEST
ONF_BCT_DISCARD_REQUEST: int = _packer.ONF_BCT_DISCARD_REQUEST
ONF_BF_ATOMIC: int = _packer.ONF_BF_ATOMIC
ONF_BF_ORDERED: int = _packer.ONF_BF_ORDERED
FLOW_MOD_FIXED_LEN: int = _packer.FLOW_MOD_FIXED_LEN
BUNDLE_CTRL_LEN: int = _packer.BUNDLE_CTRL_LEN
BUNDLE_ADD_HEADER_LEN: int = _packer.BUNDLE_ADD_HEADER_LEN

__all__ = ["mac_to_int", "int_to_mac", "ipv4_to_int", "int_to_ipv4",
           "FlowLayout", "validate_flows", "packed_size", "pack_flow_mods", "pack_flow_mods_into",
           "pack_bundle", "pack_bundle_ctrl", "pack_many",
           "CompiledProgram", "compile_transitions", "migration_transitions", "pack_groups", "NotCompilable", "PARAM_NAMES", "FACT_BITS",
           "ROLE_KINDS", "PORT_FLAG_SECURITY", "PORT_FLAG_ROUTED", "PORT_FIELDS", "FIP_FIELDS", "PAIR_FIELDS", "ROLE_FIELDS",
           "TRANSITION_FIELDS", "ACTION_OPCODES", "SecGroupProgram", "compile_secgroups", "SG_RULE_FIELDS",
           "SG_MEMBER_FIELDS", "SG_SHAPE_FIELDS", "SG_EGRESS", "SG_INGRESS", "SG_FLAG_LOW", "SG_FLAG_HIGH",
           "SG_FLAG_GROUP",
           "OFP_VERSION", "OFPT_FLOW_MOD", "OFPT_EXPERIMENTER", "ONF_EXPERIMENTER_ID",
           "ONF_ET_BUNDLE_CONTROL", "ONF_ET_BUNDLE_ADD_MESSAGE", "ONF_BCT_OPEN_REQUEST",
           "ONF_BCT_CLOSE_REQUEST", "ONF_BCT_COMMIT_REQUEST", "ONF_BCT_DISCARD_REQUEST",
           "ONF_BF_ATOMIC", "ONF_BF_ORDERED", "FLOW_MOD_FIXED_LEN", "BUNDLE_CTRL_LEN",
           "BUNDLE_ADD_HEADER_LEN"]
