"""Each model refuses malformed fields by itself, naming the field."""
import pytest

from dfflow.errors import ValidationError
from dfflow.models import (AddressPair, Chassis, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch,
                           MigrationRecord, Subnet, model_for)


def raises_on(field, obj):
    with pytest.raises(ValidationError) as info:
        obj.check()
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)
    return info.value


@pytest.mark.parametrize("mac", ["fa:16:3e:00:00", "fa:16:3e:00:00:0g", "fa-16-3e-00-00-01",
                                 "fa:16:3e:00:00:011", "", "01:00:5e:00:00:01"])
def test_port_with_malformed_or_multicast_mac_is_refused(mac):
    raises_on("mac", LogicalPort(id="p1", topic="t", lswitch="net1", mac=mac))


@pytest.mark.parametrize("ip", ["10.0.0", "10.0.0.256", "fe80::zz", "host", ""])
def test_port_with_malformed_ip_names_the_list_index(ip):
    raises_on("ips[1]", LogicalPort(id="p1", topic="t", lswitch="n", mac="fa:16:3e:00:00:01",
                                     ips=["10.0.0.5", ip]))


def test_port_listing_an_ip_twice_is_refused():
    raises_on("ips", LogicalPort(id="p1", topic="t", lswitch="n", mac="fa:16:3e:00:00:01",
                                 ips=["10.0.0.5", "10.0.0.5"]))


@pytest.mark.parametrize("vni", [0, -1, 2**24, "5", True, 1.5])
def test_switch_vni_out_of_range_is_refused(vni):
    raises_on("segmentation_id", LogicalSwitch(id="n", topic="t", segmentation_id=vni))


@pytest.mark.parametrize("vni", [1, 2**24 - 1])
def test_switch_vni_bounds_are_accepted(vni):
    LogicalSwitch(id="n", topic="t", segmentation_id=vni).check()


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0.1/24", "10.0.0.0", "garbage", "2001:db8::/129"])
def test_subnet_malformed_cidr_is_refused(cidr):
    raises_on("cidr", Subnet(id="s", topic="t", lswitch="n", cidr=cidr))


def test_subnet_ipv6_is_accepted_in_the_model():
    Subnet(id="s", topic="t", lswitch="n", cidr="2001:db8::/64", gateway_ip="2001:db8::1").check()


@pytest.mark.parametrize("gw", ["10.1.0.1", "10.0.0.0", "10.0.0.255", "2001:db8::1", "nope"])
def test_subnet_gateway_outside_or_at_the_edges_of_its_cidr_is_refused(gw):
    raises_on("gateway_ip", Subnet(id="s", topic="t", lswitch="n", cidr="10.0.0.0/24", gateway_ip=gw))


def test_chassis_needs_an_ipv4_tunnel_ip_and_known_tunnel_type():
    raises_on("tunnel_ip", Chassis(id="c1", topic="chassis", tunnel_ip="172.31.0.300"))
    raises_on("tunnel_type", Chassis(id="c1", topic="chassis", tunnel_ip="172.31.0.1", tunnel_type="gre"))
    raises_on("topic", Chassis(id="c1", topic="tenant", tunnel_ip="172.31.0.1"))


@pytest.mark.parametrize("bad_id", ["", "has space", "a:b", "x" * 300, None, 7])
def test_ids_must_be_plain_tokens(bad_id):
    raises_on("id", LogicalSwitch(id=bad_id, topic="t", segmentation_id=5))


def test_migration_record_state_and_strategy_are_checked():
    port = LogicalPort(id="p", topic="t", lswitch="n", mac="fa:16:3e:00:00:01",
                       migration=MigrationRecord(chassis="c2", state="flying"))
    raises_on("migration.state", port)
    port.migration = MigrationRecord(chassis="c2", strategy="teleport")
    raises_on("migration.strategy", port)
    port.migration = MigrationRecord(chassis="c2", timestamps={"requested": "soon"})
    raises_on("migration.timestamps.requested", port)


def test_router_attaching_a_subnet_twice_is_refused():
    router = LogicalRouter.from_dict({"id": "r", "topic": "t", "ports": [
        {"subnet": "s1", "mac": "fa:16:3e:00:00:01", "ip": "10.0.0.1"},
        {"subnet": "s1", "mac": "fa:16:3e:00:00:02", "ip": "10.0.0.1"}]})
    raises_on("ports[1].subnet", router)


def test_floating_ip_with_a_port_needs_fixed_ip_and_router():
    raises_on("fixed_ip", FloatingIP(id="f", topic="t", floating_ip="172.24.4.10", lswitch="pub",
                                     mac="fa:16:3e:00:00:09", port="p1"))
    raises_on("router", FloatingIP(id="f", topic="t", floating_ip="172.24.4.10", lswitch="pub",
                                   mac="fa:16:3e:00:00:09", port="p1", fixed_ip="10.0.0.5"))


def test_from_dict_ignores_unknown_fields_with_a_warning(caplog):
    """A field written by a newer dfflow (a rolling upgrade) is ignored, not fatal; known fields are
    still checked."""
    with caplog.at_level("WARNING", logger="dfflow.models"):
        switch = model_for("lswitch").from_dict({"id": "n", "topic": "t", "segmentation_id": 5, "qos": "gold"})
        port = model_for("lport").from_dict({"id": "p", "topic": "t", "lswitch": "n", "mac": "fa:16:3e:00:00:01",
                                             "migration": {"chassis": "c2", "phase": 3}})
    assert switch.segmentation_id == 5 and port.migration.chassis == "c2"
    assert "lswitch objects carry a field this dfflow does not know, ignored: qos" in caplog.text
    assert "migration.phase" in caplog.text
    with pytest.raises(ValidationError) as info:
        model_for("lswitch").from_dict({"id": "n", "topic": "t", "segmentation_id": 0, "qos": "gold"}).check()
    assert info.value.field == "segmentation_id"


def test_from_dict_names_missing_fields():
    with pytest.raises(ValidationError) as info:
        model_for("lport").from_dict({"topic": "t"})
    assert info.value.field == "id"
    with pytest.raises(ValidationError) as info:
        model_for("lrouter").from_dict({"id": "r", "topic": "t", "ports": [{"subnet": "s"}]})
    assert info.value.field == "ports[0]"


def test_unknown_table_is_named():
    with pytest.raises(ValidationError) as info:
        model_for("networks")
    assert info.value.field == "table"


def test_round_trip_through_dict_keeps_nested_records():
    port = LogicalPort(id="p", topic="t", lswitch="n", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                       migration=MigrationRecord(chassis="c2", source="c1", timestamps={"requested": 1.0}))
    again = LogicalPort.from_dict(port.to_dict())
    assert again == port
    assert isinstance(again.migration, MigrationRecord)


def test_an_address_checked_again_gives_the_same_answer_and_the_same_error_naming_its_field():
    from dfflow.errors import ValidationError
    from dfflow.models.fields import check_ip

    for _ in range(2):  # the second time from what the first one remembered
        assert check_ip("ips[0]", "2001:db8:0::0001") == "2001:db8::1"
        assert check_ip("ips[0]", "10.0.0.1", version=4) == "10.0.0.1"
        for bad, version in (("10.0.0.256", None), ("10.0.0.1", 6), ("2001:db8::1", 4), (1234, None)):
            with pytest.raises(ValidationError) as err:
                check_ip("ips[3]", bad, "lport", version)
            assert "ips[3]" in str(err.value)


def test_an_object_read_with_every_field_is_the_one_its_constructor_builds_and_apart_from_its_dict():
    port = LogicalPort(id="p1", topic="t", lswitch="n", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                       binding_chassis="c1", security_groups=["g"], binding_profile={"k": "v"}, version=7,
                       allowed_address_pairs=[AddressPair("10.0.0.9", "fa:16:3e:00:00:02")])
    data = port.to_dict()
    read = LogicalPort.from_dict(data)
    assert read == port and type(read) is LogicalPort and repr(read) == repr(port)
    assert read.allowed_address_pairs == [AddressPair("10.0.0.9", "fa:16:3e:00:00:02")]
    data["ips"].append("10.0.0.6")
    data["binding_chassis"] = "c2"
    assert read.binding_chassis == "c1" and read.replace(version=8).version == 8
    # a field missing, or one this dfflow does not know, still goes through the checks that name it
    with pytest.raises(ValidationError, match="lport.id"):
        LogicalPort.from_dict({k: v for k, v in port.to_dict().items() if k != "id"})
    assert LogicalPort.from_dict(dict(port.to_dict(), newer_field=1)) == port
    with pytest.raises(ValidationError, match="inactive_bindings"):
        LogicalPort.from_dict(dict(port.to_dict(), inactive_bindings={}))


def test_an_nb_event_decodes_as_json_would_even_where_orjson_refuses():
    from dfflow.nb.bus import loads
    assert loads(b'{"a": [1, "x", null, true]}') == {"a": [1, "x", None, True]}
    nan = loads('{"up": {"c1": NaN}}')["up"]["c1"]
    assert nan != nan
    with pytest.raises(ValueError):
        loads(b"{not json")


def test_an_id_checked_again_gives_the_same_answer_and_the_same_error_naming_its_field():
    from dfflow.models.fields import check_id
    for _ in range(2):
        assert check_id("lswitch", "net-1.a_b", "lport") == "net-1.a_b"
        for bad in ("", "-net", "net 1", "x" * 256, ["net-1.a_b"], 5, None):
            with pytest.raises(ValidationError) as info:
                check_id("lswitch", bad, "lport")
            assert info.value.field == "lswitch" and "lport.lswitch" in str(info.value)


def _held_port():
    from dfflow.models import InactiveBinding
    held = LogicalPort(id="p1", topic="t", lswitch="n", mac="FA:16:3E:00:00:01", ips=["10.0.0.5", "fd00::01"],
                       binding_chassis="c1", security_groups=["g"], binding_profile={"k": "v", "n": 1},
                       inactive_bindings=[InactiveBinding(host="c2")], version=7,
                       allowed_address_pairs=[AddressPair("10.0.0.9", "fa:16:3e:00:00:02")])
    held.check()  # as the subscriber held it: checked, its MAC and addresses normalized
    return held


def _read_whole(data):
    obj = LogicalPort.from_dict(data)
    obj.check()
    return obj


@pytest.mark.parametrize("change", [
    {"binding_chassis": "c3"}, {"binding_chassis": None}, {"mac": "FA:16:3E:00:00:07"},
    {"ips": ["10.0.0.6"]}, {"ips": ["fd00::1", "10.0.0.5"]}, {"binding_profile": {"k": "v", "n": 2}},
    {"inactive_bindings": [{"host": "c3", "vnic_type": "normal", "profile": {}}]}, {"inactive_bindings": []},
    {"migration": {"chassis": "c2", "state": "requested"}}, {"allowed_address_pairs": []}, {"enabled": False},
    {"binding_chassis": "c2", "inactive_bindings": [{"host": "c1", "vnic_type": "normal", "profile": {}}]}, {}])
def test_a_port_updated_from_its_held_version_is_the_one_read_whole(change):
    held = _held_port()
    data = dict(held.to_dict(), version=8, **change)
    whole = _read_whole(data)
    obj, changed = LogicalPort.updated(held, data)
    obj.check_changed(changed)
    assert obj == whole and type(obj) is LogicalPort and vars(obj).keys() == vars(whole).keys()
    assert set(changed) == {"version", *change}
    assert held.version == 7 and held.binding_chassis == "c1"  # the held version is left as it was


def test_a_port_updated_from_an_update_is_the_one_read_whole_and_each_version_keeps_its_own_fields():
    held = _held_port()
    versions = [held]
    for version, where in ((8, "c3"), (9, "c4"), (10, "c1")):
        obj, changed = LogicalPort.updated(versions[-1], dict(held.to_dict(), version=version, binding_chassis=where))
        obj.check_changed(changed)
        assert obj == _read_whole(dict(held.to_dict(), version=version, binding_chassis=where))
        assert set(changed) == {"version", "binding_chassis"}
        versions.append(obj)
    versions[-1].name = "renamed"  # (a model is not changed in place; were it, only that version would be)
    assert [(v.version, v.binding_chassis, v.name) for v in versions] == [
        (7, "c1", held.name), (8, "c3", held.name), (9, "c4", held.name), (10, "c1", "renamed")]


@pytest.mark.parametrize("change, field", [
    ({"binding_chassis": "not an id"}, "binding_chassis"),
    ({"binding_chassis": "c2"}, "inactive_bindings[0].host"),  # the unchanged binding's host is now the active one
    ({"port_security": False}, "security_groups"),  # the unchanged groups need port security
    ({"enabled": 1}, "enabled"),  # 1 == True in Python, not in JSON: a change, checked
    ({"version": True}, "version"),
    ({"binding_profile": {"k": "v", "n": True}}, None),  # a change; a valid one
    ({"ips": ["10.0.0.5", "10.0.0.5"]}, "ips"),
    ({"mac": "01:00:5e:00:00:01"}, "mac"),
    ({"inactive_bindings": [{"host": "c3"}, {"host": "c3"}]}, "inactive_bindings[1].host"),
    ({"migration": {"chassis": "c2", "state": "flying"}}, "migration.state"),
    ({"migration": "c2"}, "migration"),
])
def test_a_bad_value_in_a_changed_field_of_an_update_is_refused_as_when_read_whole(change, field):
    held = _held_port()
    data = {**held.to_dict(), "version": 8, **change}
    if field is None:
        obj, changed = LogicalPort.updated(held, data)
        obj.check_changed(changed)
        assert obj == _read_whole(data) and set(changed) == {"version", *change}
        return
    with pytest.raises(ValidationError) as whole:
        _read_whole(data)
    with pytest.raises(ValidationError) as updated:
        obj, changed = LogicalPort.updated(held, data)
        obj.check_changed(changed)
    assert updated.value.field == whole.value.field == field and str(updated.value) == str(whole.value)


def test_an_update_that_is_not_a_complete_port_is_read_whole():
    held = _held_port()
    data = held.to_dict()
    assert LogicalPort.updated(held, {k: v for k, v in data.items() if k != "name"}) is None
    assert LogicalPort.updated(held, dict(data, newer_field=1)) is None
    assert LogicalPort.updated(LogicalSwitch(id="n", topic="t"), data) is None
    assert LogicalPort.updated(held, ["not", "an", "object"]) is None


def test_an_update_of_a_model_checked_only_whole_is_read_whole():
    from dfflow.models import Chassis
    held = Chassis(id="c1", topic="chassis", tunnel_ip="172.31.0.1", version=3)
    held.check()
    assert not Chassis.checks_by_field and LogicalPort.checks_by_field
    assert Chassis.updated(held, dict(held.to_dict(), version=4, last_seen=5.0)) is None


@pytest.mark.parametrize("name", sorted(LogicalPort.text_fields))
def test_a_port_text_field_refuses_every_value_but_text_so_an_equal_update_is_the_same_json(name):
    """`updated` takes a text field's raw value equal to the held one as the same JSON (a string equals only a
    string): that holds only if its checks let no number, bool or object in, which `1 == True == 1.0` would pass."""
    held = _held_port()
    for other in (1, True, 1.0, 0, False, [1], [True], [0.0], {"a": 1}, [{"a": 1}]):
        with pytest.raises(ValidationError) as refused:
            _read_whole({**held.to_dict(), name: other})
        assert refused.value.field.partition("[")[0] == name


def _containers(data):
    """Every list and dict inside `data` (JSON data), by identity."""
    found = []
    if isinstance(data, (list, dict)):
        found.append(id(data))
        for item in (data.values() if isinstance(data, dict) else data):
            found += _containers(item)
    return found


def test_an_object_as_json_data_is_what_asdict_makes_of_it_and_shares_nothing_mutable_with_it():
    import dataclasses
    from dfflow.models import ExternalGateway, InactiveBinding, MigrationRecord, PortStatus, RouterPort
    objects = [
        _held_port(),
        LogicalPort(id="p2", topic="t", migration=MigrationRecord(chassis="c2", source="c1", timestamps={"a": 1.5}),
                    binding_profile={"k": [1, {"deep": [True, None, 2.5]}]},
                    inactive_bindings=[InactiveBinding(host="c3", profile={"x": [1]})]),
        LogicalRouter(id="r", topic="t", ports=[RouterPort(subnet="s", mac="fa:16:3e:00:00:09", ip="10.0.0.1")],
                      external_gateway=ExternalGateway(lswitch="ext", ip="172.24.4.2", mac="fa:16:3e:00:00:0a")),
        PortStatus(id="p1", topic="t", up={"c1": 5.0}), Chassis(id="c1", topic="chassis", tunnel_ip="172.31.0.1"),
        FloatingIP(id="f", topic="t", floating_ip="172.24.4.3", port="p1", fixed_ip="10.0.0.5"),
    ]
    for obj in objects:
        data = obj.to_dict()
        assert data == dataclasses.asdict(obj) and list(data) == list(dataclasses.asdict(obj))
        assert not set(_containers(data)) & _all_containers_of(obj), obj.table
        assert type(obj).from_dict(data) == obj


def _all_containers_of(obj):
    """Every list and dict held by the object or its records, by identity."""
    import dataclasses
    found = set()
    todo = [obj]
    while todo:
        value = todo.pop()
        if dataclasses.is_dataclass(value):
            todo += [getattr(value, f.name) for f in dataclasses.fields(value)]
        elif isinstance(value, (list, dict)):
            found.add(id(value))
            todo += list(value.values() if isinstance(value, dict) else value)
    return found
