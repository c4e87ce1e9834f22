"""NB refusals as Neutron API errors, so neutron-server answers 400/409 with the NB's message."""
from __future__ import annotations

import contextlib

from neutron_lib import exceptions as n_exc

from dfflow.errors import DfflowError, ValidationError, refused_as


class NbInvalid(n_exc.InvalidInput):
    """400: an object the NB db would not store (its field checks name the field)."""

    message = "dfflow refuses it: %(error_message)s"


class NbConflict(n_exc.Conflict):
    """409: the NB db holds something that conflicts (a claim, a reference, a version)."""

    message = "dfflow refuses it: %(reason)s"


def as_neutron_error(exc: DfflowError) -> n_exc.NeutronException:
    if isinstance(exc, ValidationError):
        return NbInvalid(error_message=str(exc))
    return NbConflict(reason=str(exc))


def refusals() -> contextlib.AbstractContextManager[None]:
    """NB refusals raised inside become Neutron's API errors; any other failure passes unchanged."""
    return refused_as(as_neutron_error, keep_cause=True)
