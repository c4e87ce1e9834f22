"""The migration protocol as a pure state machine: every transition and edge case, replayed."""
from controller.migration import COMPLETE_TIMEOUT, REQUEST_TIMEOUT, Event, current_location, transition
from dfflow.models import LogicalPort

S, D, D2 = "chassis-s", "chassis-d", "chassis-d2"


def port(binding=S, **kw):
    return LogicalPort(id="p1", topic="t", lswitch="n", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                       binding_chassis=binding, **kw)


def run(p, *events, strategy="unplug"):
    """Apply (event, chassis) pairs in order; return the final port and the outcomes."""
    outcomes = []
    for i, (event, chassis) in enumerate(events):
        step = transition(p, event, chassis, now=100.0 + i, strategy=strategy)
        outcomes.append(step.outcome)
        if step.port is not None:
            p = step.port
    return p, outcomes


def test_blueprint_path_moves_the_port_at_the_source_unplug_and_ends_at_update_port():
    p, out = run(port(), (Event.DEST_PLUGGED, D))
    assert out == ["requested"] and p.migration.source == S and current_location(p) == S
    p, out = run(p, (Event.SOURCE_UNPLUGGED, S))
    assert out == ["switched"] and current_location(p) == D
    p, out = run(p.replace(binding_chassis=D), (Event.BINDING_UPDATED, D))
    assert out == ["done"] and p.migration is None and current_location(p) == D


def test_announce_path_moves_the_port_at_the_vms_announcement_before_the_unplug():
    p, out = run(port(), (Event.DEST_PLUGGED, D), (Event.ANNOUNCED, D), strategy="announce")
    assert out == ["requested", "activated"] and current_location(p) == D
    p, out = run(p, (Event.SOURCE_UNPLUGGED, S))
    assert out == ["switched"] and current_location(p) == D
    assert set(p.migration.timestamps) == {"requested", "activated", "switched"}


def test_an_announcement_under_the_unplug_strategy_or_from_elsewhere_changes_nothing():
    p, _ = run(port(), (Event.DEST_PLUGGED, D))
    _, out = run(p, (Event.ANNOUNCED, D), (Event.ANNOUNCED, D2))
    assert out == ["", ""]


def test_per_port_strategy_overrides_the_deployment_default():
    p, _ = run(port(activation_strategy="announce"), (Event.DEST_PLUGGED, D), strategy="unplug")
    assert p.migration.strategy == "announce"


def test_destination_unplugged_first_aborts_and_leaves_the_source_untouched():
    p, out = run(port(), (Event.DEST_PLUGGED, D), (Event.DEST_UNPLUGGED, D))
    assert out == ["requested", "aborted"] and p.migration is None and current_location(p) == S


def test_a_lost_publish_is_made_good_by_update_port():
    p, _ = run(port(), (Event.DEST_PLUGGED, D))  # SOURCE_UNPLUGGED never published
    p = p.replace(binding_chassis=D)
    assert current_location(p) == D  # every chassis moves on the binding event itself
    p, out = run(p, (Event.BINDING_UPDATED, D))
    assert out == ["done"] and p.migration is None


def test_duplicated_and_reordered_events_change_nothing():
    p, _ = run(port(), (Event.DEST_PLUGGED, D), (Event.SOURCE_UNPLUGGED, S))
    again, out = run(p, (Event.DEST_PLUGGED, D), (Event.SOURCE_UNPLUGGED, S), (Event.DEST_UNPLUGGED, D),
                     (Event.ANNOUNCED, D), (Event.DEST_PLUGGED, D))
    assert out == ["", "", "", "", ""] and again == p
    # an unplug seen before any plug is an ordinary removal
    _, out = run(port(), (Event.SOURCE_UNPLUGGED, S), (Event.BINDING_UPDATED, S))
    assert out == ["", ""]


def test_the_source_vif_still_there_is_not_a_new_migration():
    p, _ = run(port(), (Event.DEST_PLUGGED, D), (Event.ANNOUNCED, D), strategy="announce")
    again, out = run(p, (Event.DEST_PLUGGED, S))
    assert out == [""] and again == p


def test_migrating_back_and_forth_without_update_port_ends_clean():
    p, out = run(port(), (Event.DEST_PLUGGED, D), (Event.SOURCE_UNPLUGGED, S))
    assert current_location(p) == D and p.binding_chassis == S
    p, out = run(p, (Event.DEST_PLUGGED, S))  # back to S, before update_port ever came
    assert out == ["requested"] and p.migration.source == D and current_location(p) == D
    p, out = run(p, (Event.SOURCE_UNPLUGGED, D), (Event.BINDING_UPDATED, S))
    assert out == ["switched", "done"] and p.migration is None and current_location(p) == S


def test_a_second_destination_before_the_first_finished_wins():
    p, _ = run(port(), (Event.DEST_PLUGGED, D))
    p, out = run(p, (Event.DEST_PLUGGED, D2))
    assert out == ["requested"] and p.migration.chassis == D2 and p.migration.source == S
    p, out = run(p, (Event.DEST_UNPLUGGED, D), (Event.SOURCE_UNPLUGGED, S))
    assert out == ["", "switched"] and current_location(p) == D2


def test_stale_records_expire_into_an_end_state():
    p, _ = run(port(), (Event.DEST_PLUGGED, D))
    assert transition(p, Event.EXPIRED, D, now=100.0 + REQUEST_TIMEOUT / 2).outcome == ""
    step = transition(p, Event.EXPIRED, D, now=101.0 + REQUEST_TIMEOUT)
    assert step.outcome == "aborted" and step.port.migration is None
    p, _ = run(p, (Event.SOURCE_UNPLUGGED, S))
    step = transition(p, Event.EXPIRED, D, now=102.0 + COMPLETE_TIMEOUT)
    assert step.outcome == "done" and step.port.binding_chassis == D and step.port.migration is None
