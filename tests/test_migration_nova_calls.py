"""The migration protocol under Nova's real calls, as a pure state machine: binding-extended
(inactive binding, activation, deletion) and legacy (migrating_to, update_port), in every order."""
from controller.migration import COMPLETE_TIMEOUT, Event, current_location, nova_prepared, transition
from dfflow.models import InactiveBinding
from test_migration_protocol import D, S, port

X = "chassis-x"


def run(p, *events, strategy="unplug"):
    """Like test_migration_protocol.run, but a write without an outcome (a mark) shows as 'written'."""
    outcomes = []
    for i, (event, chassis) in enumerate(events):
        step = transition(p, event, chassis, now=100.0 + i, strategy=strategy)
        if step.port is None:
            outcomes.append("")
            continue
        outcomes.append(step.outcome or "written")
        p = step.port
    return p, outcomes


def bound_inactive_to(p, host):
    """Nova's conductor: POST /v2.0/ports/{id}/bindings {host} (an INACTIVE binding)."""
    return p.replace(inactive_bindings=p.inactive_bindings + [InactiveBinding(host=host)])


def activated(p, host):
    """PUT .../bindings/{host}/activate: one write, the old active host's binding becomes inactive."""
    others = [b for b in p.inactive_bindings if b.host != host] + [InactiveBinding(host=p.binding_chassis)]
    return p.replace(binding_chassis=host, inactive_bindings=others, binding_profile={})


def binding_deleted(p, host):
    return p.replace(inactive_bindings=[b for b in p.inactive_bindings if b.host != host])


def profile(p, **kw):
    return p.replace(binding_profile=kw)


def test_a_migration_started_after_nova_bound_the_destination_is_marked_prepared():
    p, out = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D))
    assert out == ["requested"] and p.migration.prepared
    p, out = run(port(), (Event.DEST_PLUGGED, D))
    assert out == ["requested"] and not p.migration.prepared  # a plug nobody announced


def test_extended_path_activation_before_the_source_unplug_ends_the_migration_on_the_destination():
    p, _ = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D))
    p = activated(p, D)
    assert current_location(p) == D  # every chassis moves on the activation's NB event itself
    p, out = run(p, (Event.BINDING_UPDATED, D), (Event.NOVA_CHANGED, D), (Event.NOVA_CHANGED, S))
    assert out == ["done", "", ""] and p.migration is None and current_location(p) == D
    # the source's unplug and Nova's clean-up of the source's (now inactive) binding come after
    p, out = run(binding_deleted(p, S), (Event.SOURCE_UNPLUGGED, S), (Event.NOVA_CHANGED, S))
    assert out == ["", ""] and current_location(p) == D and p.inactive_bindings == []


def test_the_source_unplug_seen_after_activation_but_before_the_record_ends_changes_nothing():
    """The source's view can hold the activation (binding = dest) while the destination's clearing of
    the record is still on its way: the unplug then neither switches nor publishes anything."""
    p, _ = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D))
    p = activated(p, D)
    q, out = run(p, (Event.SOURCE_UNPLUGGED, S))
    assert out == [""] and q == p and current_location(q) == D


def test_extended_path_unplug_before_activation_switches_then_activation_ends_it():
    p, out = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D), (Event.SOURCE_UNPLUGGED, S))
    assert out == ["requested", "switched"] and current_location(p) == D
    p, out = run(activated(p, D), (Event.BINDING_UPDATED, D))
    assert out == ["done"] and current_location(p) == D


def test_announce_activation_keeps_the_mark_and_nova_activation_ends_it():
    p, out = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D), (Event.ANNOUNCED, D),
                 strategy="announce")
    assert out == ["requested", "activated"] and p.migration.prepared
    p, out = run(activated(p, D), (Event.BINDING_UPDATED, D))
    assert out == ["done"] and current_location(p) == D


def test_nova_deleting_the_inactive_binding_aborts_and_leaves_the_port_on_the_source():
    p, _ = run(bound_inactive_to(profile(port(), migrating_to=D), D), (Event.DEST_PLUGGED, D))
    # Nova's rollback at the destination: the profile is cleared first, then the binding deleted
    p, out = run(profile(p), (Event.NOVA_CHANGED, D))
    assert out == [""] and p.migration is not None  # the inactive binding still says D
    p, out = run(binding_deleted(p, D), (Event.NOVA_CHANGED, D))
    assert out == ["aborted"] and p.migration is None and current_location(p) == S
    # the destination's unplug after it, and duplicates, change nothing
    _, out = run(p, (Event.DEST_UNPLUGGED, D), (Event.NOVA_CHANGED, D), (Event.NOVA_CHANGED, S))
    assert out == ["", "", ""]


def test_the_source_aborts_when_the_destination_is_gone_and_a_third_chassis_never_does():
    p, _ = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D))
    gone = binding_deleted(p, D)
    _, out = run(gone, (Event.NOVA_CHANGED, X))
    assert out == [""]
    q, out = run(gone, (Event.NOVA_CHANGED, S))
    assert out == ["aborted"] and current_location(q) == S


def test_a_withdrawal_after_the_vm_announced_itself_on_the_destination_changes_nothing():
    p, _ = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D), (Event.ANNOUNCED, D),
               strategy="announce")
    q, out = run(binding_deleted(p, D), (Event.NOVA_CHANGED, D))
    assert out == [""] and q.migration.state == "activated" and current_location(q) == D


def test_legacy_path_migrating_to_after_the_plug_marks_and_update_port_ends_it():
    p, _ = run(port(), (Event.DEST_PLUGGED, D))
    p, out = run(profile(p, migrating_to=D), (Event.NOVA_CHANGED, D), (Event.NOVA_CHANGED, S))
    assert out == ["written", ""] and p.migration.prepared
    # migrate_instance_finish: update_port(binding:host_id=D, binding:profile without migrating_to)
    p = p.replace(binding_chassis=D, binding_profile={})
    p, out = run(p, (Event.NOVA_CHANGED, S), (Event.BINDING_UPDATED, D))
    assert out == ["", "done"] and current_location(p) == D


def test_legacy_rollback_clearing_migrating_to_aborts():
    p, _ = run(profile(port(), migrating_to=D), (Event.DEST_PLUGGED, D))
    assert p.migration.prepared
    p, out = run(profile(p), (Event.NOVA_CHANGED, D))
    assert out == ["aborted"] and current_location(p) == S


def test_a_migration_nova_never_prepared_is_not_aborted_by_binding_changes():
    p, _ = run(port(), (Event.DEST_PLUGGED, D))
    q, out = run(bound_inactive_to(p, X), (Event.NOVA_CHANGED, D))  # another host's binding
    assert out == [""] and q.migration == p.migration
    assert not nova_prepared(q, D) and nova_prepared(q, X)


def test_a_new_destination_takes_its_own_mark():
    p, _ = run(bound_inactive_to(port(), D), (Event.DEST_PLUGGED, D))
    p, out = run(binding_deleted(p, D), (Event.DEST_PLUGGED, X))
    assert out == ["requested"] and p.migration.chassis == X and not p.migration.prepared


def test_a_switched_migration_nova_never_activates_binds_dest_as_an_activation_would():
    p, _ = run(bound_inactive_to(port(device_owner="compute:nova"), D), (Event.DEST_PLUGGED, D),
               (Event.SOURCE_UNPLUGGED, S))
    step = transition(p, Event.EXPIRED, D, now=200.0 + COMPLETE_TIMEOUT)
    assert step.outcome == "done" and step.port.migration is None
    assert step.port.binding_chassis == D and [b.host for b in step.port.inactive_bindings] == [S]
    step.port.check()  # a valid port: no inactive binding for its active host
    q, out = run(p.replace(inactive_bindings=[]), (Event.EXPIRED, D))  # legacy: no binding to activate
    assert out == [""]  # not expired yet
    step = transition(q, Event.EXPIRED, D, now=200.0 + COMPLETE_TIMEOUT)
    assert step.port.binding_chassis == D and step.port.inactive_bindings == []
