"""The migration-event channel's receiving side: only an event for the migration this chassis' view
holds is applied; anything else is left to the NB event (no Redis or OVS needed)."""
import json
from types import SimpleNamespace

from controller.flowstate import Plan
from controller.migration import Event, transition
from controller.migrator import Migrator
from dfflow.models import LogicalPort

S, D, C = "chassis-s", "chassis-d", "chassis-c"


class FakeEngine:
    def __init__(self, port):
        self.view = SimpleNamespace(port=lambda port_id: port if port_id == port.id else None)
        self.events = []

    def object_written(self, obj):
        self.events.append({"table": obj.table, "action": "update", "id": obj.id, "object": obj.to_dict()})
        plan = Plan()
        plan.moved.add(obj.id)
        return plan


def requested_port():
    p = LogicalPort(id="p1", topic="t", lswitch="n", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                    binding_chassis=S)
    return transition(p, Event.DEST_PLUGGED, D, now=100.0).port


def announce_requested_port():
    p = LogicalPort(id="p1", topic="t", lswitch="n", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                    binding_chassis=S, activation_strategy="announce")
    return transition(p, Event.DEST_PLUGGED, D, now=100.0).port


def migrator_on(chassis, port):
    nb = SimpleNamespace(redis=None, keys=SimpleNamespace(prefix="t"))
    emitted = []
    m = Migrator(chassis, FakeEngine(port), nb, emitted.append)
    return m, emitted


def message(port, **changes):
    msg = {"port": port.id, "event": Event.SOURCE_UNPLUGGED.value, "chassis": S, "now": 101.0,
           "migration": port.migration.id, "ts": 101.0}
    return json.dumps({**msg, **changes}).encode()


def test_a_chassis_applies_the_sources_unplug_to_its_own_view_at_once():
    port = requested_port()
    m, emitted = migrator_on(C, port)
    m._on_migration_event(message(port), received=101.002)
    assert m.stats == {"events_applied": 1}
    [event] = m.engine.events
    expected = transition(port, Event.SOURCE_UNPLUGGED, S, now=101.0).port
    assert event["object"] == expected.to_dict()  # the same port the source writes to the NB db
    assert emitted[0].cause == f"source_unplugged:{port.id}" and emitted[0].timing["bus_ms"] > 0


def test_events_for_another_migration_or_from_itself_or_not_allowed_are_left_to_the_nb_event():
    port = requested_port()
    for chassis, msg in ((C, message(port, migration="p1@1")),  # the view holds another migration
                         (S, message(port)),  # the source applied it already
                         (C, message(port, chassis=D)),  # only the source unplugs
                         (C, message(port, event=Event.BINDING_UPDATED.value))):  # not a fast event
        m, emitted = migrator_on(chassis, port)
        m._on_migration_event(msg, received=101.0)
        assert not emitted and not m.engine.events, msg
        assert "events_applied" not in m.stats


def test_a_bad_event_is_logged_and_counted_not_raised(caplog):
    m, emitted = migrator_on(C, requested_port())
    m._on_migration_event(b"{not json", received=101.0)
    assert m.stats == {"event_errors": 1} and not emitted
    assert "not applied" in caplog.text and "Traceback" in caplog.text


def test_an_announce_activation_is_left_to_the_nb_event_on_every_other_chassis():
    """No chassis but the destination changes how the port's packets are forwarded at an announce's
    activation (they go to the destination already): the others follow the NB write."""
    port = announce_requested_port()
    for chassis in (S, C):
        m, emitted = migrator_on(chassis, port)
        m._on_migration_event(message(port, event=Event.ANNOUNCED.value, chassis=D), received=101.0)
        assert not emitted and not m.engine.events
        assert m.stats == {"events_not_applicable": 1}


def test_the_destination_publishes_no_migration_event_for_its_vms_announcement_and_the_source_does_for_its_unplug():
    import asyncio

    class RecordingEvents:
        def __init__(self):
            self.published = []

        async def publish(self, event):
            self.published.append(event.event)

    class Nb:
        def __init__(self, port):
            self.port, self.redis, self.keys = port, None, SimpleNamespace(prefix="t")

        async def modify(self, table, port_id, change):
            self.port = change(self.port)
            return self.port

    class Timelines:
        async def record(self, *args):
            pass

    async def run(chassis, port, event):
        m = Migrator(chassis, FakeEngine(port), Nb(port), [].append, strategy="announce")
        m.events, m.timelines = RecordingEvents(), Timelines()
        await m._run(port.id, event)
        await asyncio.sleep(0)
        return m.events.published, m.engine.events

    port = announce_requested_port()
    published, applied = asyncio.run(run(D, port, Event.ANNOUNCED))
    assert published == [] and applied  # activated here, told to nobody but through the NB write
    published, applied = asyncio.run(run(S, port, Event.SOURCE_UNPLUGGED))
    assert published == [Event.SOURCE_UNPLUGGED.value] and applied
