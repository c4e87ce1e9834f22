"""The numbers the compiled core and the Python side both know are checked for agreement at import."""
import pytest

from dfflow import core
from dfflow.flowbatch import FIELD_ORDER, FLOW_DTYPE, MAX_ACTIONS
from dfflow.flows import FIELDS


def test_a_disagreement_stops_with_every_differing_name():
    with pytest.raises(core.CoreMismatch) as exc:
        core.require_agreement("test numbers", {"SAME": 1, "DIFF": 2, "ONLY_PY": 3}, {"SAME": 1, "DIFF": 5, "ONLY_C": 4})
    text = str(exc.value)
    assert "test numbers" in text and "SAME" not in text
    assert "DIFF: Python 2, compiled 5" in text
    assert "ONLY_PY: Python 3, compiled missing" in text and "ONLY_C: Python missing, compiled 4" in text
    assert isinstance(exc.value, ImportError)  # raised at import, it stops the import
    core.require_agreement("test numbers", {"A": 1}, {"A": 1})


def test_a_layout_whose_fields_are_not_in_oxm_order_is_refused():
    fields = [(name, FIELDS[name].oxm_class, FIELDS[name].oxm_field, FIELDS[name].bits, FIELDS[name].maskable,
               False, (1 << FIELDS[name].bits) - 1) for name in FIELD_ORDER]
    core.FlowLayout(FLOW_DTYPE, fields, MAX_ACTIONS)
    swapped = [fields[1], fields[0]] + fields[2:]
    with pytest.raises(ValueError, match=f"field {FIELD_ORDER[0]!r} does not come after {FIELD_ORDER[1]!r} in OXM order"):
        core.FlowLayout(FLOW_DTYPE, swapped, MAX_ACTIONS)


def test_the_packers_openflow_numbers_are_os_kens():
    from os_ken.ofproto import nicira_ext, ofproto_common, ofproto_v1_3, ofproto_v1_4
    for name, value in core.OPENFLOW.items():
        module = next(m for m in (ofproto_v1_3, ofproto_common, nicira_ext, ofproto_v1_4) if hasattr(m, name))
        assert getattr(module, name) == value, name
