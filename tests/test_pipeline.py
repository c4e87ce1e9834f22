"""The pipeline is declared once: flows that leave it are refused, and its documentation is generated."""
import pathlib

import pytest

from controller.pipeline import PipelineError, check_flow, render_markdown, table
from dfflow.flows import Flow, Learn, Resubmit, match


def test_docs_pipeline_md_is_the_generated_one():
    doc = pathlib.Path(__file__).parent.parent / "docs" / "pipeline.md"
    assert doc.read_text() == render_markdown(), "run: python -m controller.pipeline > docs/pipeline.md"


def test_flows_in_undeclared_tables_or_jumping_where_they_may_not_are_refused():
    with pytest.raises(PipelineError):
        check_flow(Flow(table=99, priority=1))
    with pytest.raises(PipelineError):  # l2_lookup may not go back to classify
        check_flow(Flow(table("l2_lookup"), 1, goto=table("classify")))
    with pytest.raises(PipelineError):  # only classify may look the activation gate up
        check_flow(Flow(table("port_security"), 1, actions=(Resubmit(table("activation_gate")),)))
    with pytest.raises(PipelineError):
        check_flow(Flow(table("classify"), 1, actions=(Learn(99, 1, 1, 1, 0, (), ()),)))
    ok = Flow(table("classify"), 100, match(in_port=3), (Resubmit(table("activation_gate")),),
              goto=table("port_security"))
    assert check_flow(ok) is ok
