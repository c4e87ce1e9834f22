"""Neutron's security groups and rules -> the NB, from Neutron's security-group callbacks.

Neutron's own database code does the work (its checks, the project's default group); after each commit it
announces the group or rule (AFTER_CREATE / AFTER_UPDATE / AFTER_DELETE) and this writes what it then
holds to the NB. A rule the NB would refuse (one naming an address group) and a stateless group are refused
before Neutron makes them (BEFORE_CREATE, BEFORE_UPDATE). A group's rules are written after the group (a
default group's ingress rules name the group itself). Neutron deletes with a group the rules of other groups
that name it as their remote group (a foreign-key cascade it announces for none of them): the NB deletes them
with the group too. A failure is logged with its traceback and counted: the request has already succeeded in
Neutron (the driver's `errors`)."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

from neutron_lib.callbacks import events, registry, resources

from dfflow.models import SecurityGroup, SecurityGroupRule
from dfflow.nb import convert
from dfflow.neutron import resource
from dfflow.neutron.errors import NbInvalid, refusals
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)


def write_group(nb: NbClient, group: dict[str, Any], is_default: bool) -> None:
    resource.write(nb, SecurityGroup, group, convert.secgroup_fields(group, is_default))
    for rule in group.get("security_group_rules") or []:
        write_rule(nb, rule)


def write_rule(nb: NbClient, rule: dict[str, Any]) -> None:
    resource.write(nb, SecurityGroupRule, rule, convert.secgroup_rule_fields(rule))


def delete_group(nb: NbClient, group_id: str) -> None:
    resource.delete(nb, SecurityGroup.table, group_id)  # its rules and the rules naming it go with it


def delete_rule(nb: NbClient, rule_id: str) -> None:
    resource.delete(nb, SecurityGroupRule.table, rule_id)


class SecurityGroupWriter:
    """Subscribes to Neutron's security-group callbacks and writes each change to the NB."""

    def __init__(self, nb: NbClient, errors: Counter[str]):
        self.nb = nb
        self.errors = errors  # the driver's count of failures no request reports

    def subscribe(self) -> None:
        registry.subscribe(self._rule_to_create, resources.SECURITY_GROUP_RULE, events.BEFORE_CREATE)
        for event in (events.BEFORE_CREATE, events.BEFORE_UPDATE):
            registry.subscribe(self._group_to_write, resources.SECURITY_GROUP, event)
        for event in (events.AFTER_CREATE, events.AFTER_UPDATE):
            registry.subscribe(self._group_written, resources.SECURITY_GROUP, event)
            registry.subscribe(self._rule_written, resources.SECURITY_GROUP_RULE, event)
        registry.subscribe(self._group_deleted, resources.SECURITY_GROUP, events.AFTER_DELETE)
        registry.subscribe(self._rule_deleted, resources.SECURITY_GROUP_RULE, events.AFTER_DELETE)

    def _guarded(self, what: str, write: Callable[[], None]) -> None:
        try:
            write()
        except Exception:
            self.errors[what] += 1
            LOG.exception("the NB db missed a security-group change (%s)", what)

    def _group_written(self, resource_: str, event: str, trigger: Any, payload: Any = None) -> None:
        group = payload.latest_state
        is_default = bool((payload.metadata or {}).get("is_default")) or self._was_default(group["id"])
        self._guarded("security_group", lambda: write_group(self.nb, group, is_default))

    def _was_default(self, group_id: str) -> bool:
        """An update does not say whether the group is its project's default: the NB remembers."""
        current = self.nb.get(SecurityGroup.table, group_id)
        return current is not None and current.is_default

    @staticmethod
    def _group_to_write(resource_: str, event: str, trigger: Any, payload: Any = None) -> None:
        """A stateless group is refused before Neutron makes it or turns one stateless: every chassis filters
        with connection tracking, so it would let in the replies the group's rules do not allow."""
        if (payload.latest_state or {}).get("stateful") is False:
            raise NbInvalid(error_message="stateful: stateless security groups are not supported (dfflow "
                                          "filters with connection tracking)")

    def _rule_to_create(self, resource_: str, event: str, trigger: Any, payload: Any = None) -> None:
        """A rule the NB would refuse (one naming an address group) is refused before Neutron makes it:
        a 400 naming the field, rather than a rule Neutron holds and no chassis enforces."""
        rule = payload.latest_state
        with refusals():
            resource.checked(SecurityGroupRule, rule, convert.secgroup_rule_fields(rule))

    def _rule_written(self, resource_: str, event: str, trigger: Any, payload: Any = None) -> None:
        rule = payload.latest_state
        self._guarded("security_group_rule", lambda: write_rule(self.nb, rule))

    def _group_deleted(self, resource_: str, event: str, trigger: Any, payload: Any = None) -> None:
        self._guarded("security_group_delete", lambda: delete_group(self.nb, payload.resource_id))

    def _rule_deleted(self, resource_: str, event: str, trigger: Any, payload: Any = None) -> None:
        self._guarded("security_group_rule_delete", lambda: delete_rule(self.nb, payload.resource_id))
