"""Where packets go, asked of a simulated OpenFlow table holding the flows a chassis wants.

Chassis A has a1 (VIF on ofport 5); b1 lives on chassis B (tunnel ofport 10); chassis C's
tunnel is ofport 11 (and A's, seen from the others, 12). Tunnelled packets are checked for the VNI they carry.
"""
from controller.apps.dnat import DnatApp
from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.engine import Engine
from controller.view import Vif
from dfflow.flows import BROADCAST_MAC, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_RARP
from dfflow.models import (ExternalGateway, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, MigrationRecord,
                           RouterPort, Subnet)
from fakeoftable import FakeOFTable

VNI, TUNNEL_A, TUNNEL_B, TUNNEL_C, A1_OFPORT, B1_OFPORT_HERE = 101, 12, 10, 11, 5, 6


def mac(last):
    return 0xfa163e000000 | last


def ip(last):
    return 0x0a000000 | last


def event(obj, action="create"):
    return {"table": obj.table, "action": action, "id": obj.id, "topic": obj.topic,
            "version": obj.version, "object": None if action == "delete" else obj.to_dict()}


def port(pid, last, chassis, **kw):
    return LogicalPort(id=pid, topic="t", lswitch="net1", mac=f"fa:16:3e:00:00:{last:02x}",
                       ips=[f"10.0.0.{last}"], binding_chassis=chassis, **kw)


def chassis(name, *ports_here):
    engine = Engine(name, [L2App(), L3App(), DnatApp()])
    tunnels = {"A": TUNNEL_A, "B": TUNNEL_B, "C": TUNNEL_C}
    engine.commit(engine.tunnels_changed({peer: ofport for peer, ofport in tunnels.items() if peer != name}))
    for obj in (LogicalSwitch(id="net1", topic="t", segmentation_id=VNI),
                Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24")):
        engine.commit(engine.nb_event(event(obj)))
    for p, ofport in ports_here:
        engine.commit(engine.nb_event(event(p)))
        engine.commit(engine.vif_online(Vif(p.id, f"tap{p.id}", ofport)))
    return engine


def write(engine, obj):
    engine.commit(engine.nb_event(event(obj)))


def table_of(engine):
    return FakeOFTable.of(engine.desired().values())


def ipv4(src, dst):
    """An IPv4 packet from port `src` to port `dst` (last octets)."""
    return dict(eth_src=mac(src), eth_dst=mac(dst), eth_type=ETH_TYPE_IP, ipv4_src=ip(src), ipv4_dst=ip(dst),
                ip_ttl=64)


A1, B1, A2 = port("a1", 1, "A"), port("b1", 2, "B"), port("a2", 3, "A")


def test_a_local_vm_reaches_a_remote_port_through_the_tunnel_of_its_chassis_with_the_vni():
    a = chassis("A", (A1, A1_OFPORT))
    write(a, B1)
    out = table_of(a).forward(A1_OFPORT, **ipv4(1, 2))
    assert [(d.port, d.packet["tunnel_id"]) for d in out] == [(TUNNEL_B, VNI)]


def test_a_tunnel_packet_for_a_local_port_is_delivered_to_its_vif_and_nowhere_else():
    a = chassis("A", (A1, A1_OFPORT), (A2, 7))
    write(a, B1)
    assert table_of(a).ports(TUNNEL_B, tunnel_id=VNI, **ipv4(2, 1)) == [A1_OFPORT]


def test_a_spoofed_source_address_is_dropped_at_port_security():
    a = chassis("A", (A1, A1_OFPORT))
    write(a, B1)
    spoofed = ipv4(1, 2) | dict(ipv4_src=ip(99))
    assert table_of(a).forward(A1_OFPORT, **spoofed) == []
    assert table_of(a).forward(A1_OFPORT, **(ipv4(1, 2) | dict(eth_src=mac(99)))) == []


def arp_request(src, target_ip):
    return dict(eth_src=mac(src), eth_dst=BROADCAST_MAC, eth_type=ETH_TYPE_ARP, arp_op=1, arp_spa=ip(src),
                arp_sha=mac(src), arp_tpa=target_ip, arp_tha=0)


def test_a_known_address_is_answered_in_place_and_never_leaves_the_chassis():
    a = chassis("A", (A1, A1_OFPORT))
    write(a, B1)
    [reply] = table_of(a).forward(A1_OFPORT, **arp_request(1, ip(2)))
    assert reply.port == A1_OFPORT and reply.packet["arp_op"] == 2
    assert (reply.packet["arp_spa"], reply.packet["arp_sha"]) == (ip(2), mac(2))


def test_a_broadcast_from_a_vif_floods_to_local_ports_and_peers_but_a_tunnel_broadcast_stays_local():
    a = chassis("A", (A1, A1_OFPORT), (A2, 7))
    write(a, B1)
    unknown = ip(77)
    assert sorted(table_of(a).ports(A1_OFPORT, **arp_request(1, unknown))) == sorted([7, TUNNEL_B])
    from_b = arp_request(2, unknown)
    assert sorted(table_of(a).ports(TUNNEL_B, tunnel_id=VNI, **from_b)) == [A1_OFPORT, 7]


def test_a_switched_migration_sends_the_ports_traffic_to_its_new_chassis():
    a = chassis("A", (A1, A1_OFPORT))
    write(a, B1)
    write(a, B1.replace(migration=MigrationRecord(chassis="C", source="B", state="switched"), version=5))
    assert table_of(a).ports(A1_OFPORT, **ipv4(1, 2)) == [TUNNEL_C]


def test_an_announce_migration_sends_the_ports_traffic_to_the_destination_alone_no_copy_to_the_source():
    a = chassis("A", (A1, A1_OFPORT))
    write(a, B1)
    write(a, B1.replace(migration=MigrationRecord(chassis="C", source="B", strategy="announce")))
    assert table_of(a).ports(A1_OFPORT, **ipv4(1, 2)) == [TUNNEL_C]


def test_a_pending_destination_sends_the_ports_traffic_to_the_source_until_the_vms_announcement():
    a = chassis("A", (A1, A1_OFPORT))
    moving = B1.replace(migration=MigrationRecord(chassis="A", source="B", strategy="announce"))
    write(a, moving)
    a.commit(a.vif_online(Vif("b1", "tapb1", B1_OFPORT_HERE)))
    fake = table_of(a)
    # not running here yet: whatever way it came, to the source (from the source: back out of its tunnel)
    assert fake.ports(TUNNEL_B, tunnel_id=VNI, **ipv4(1, 2)) == [TUNNEL_B]
    assert fake.ports(TUNNEL_C, tunnel_id=VNI, **ipv4(1, 2)) == [TUNNEL_B]
    assert fake.ports(A1_OFPORT, **ipv4(1, 2)) == [TUNNEL_B]
    # and what the paused VM's tap would send before its announcement goes nowhere
    assert fake.ports(B1_OFPORT_HERE, **ipv4(2, 1)) == []
    rarp = dict(eth_src=mac(2), eth_dst=BROADCAST_MAC, eth_type=ETH_TYPE_RARP)
    fake.forward(B1_OFPORT_HERE, **rarp)
    # the datapath itself opened both ways, before the controller heard of it
    assert fake.ports(TUNNEL_B, tunnel_id=VNI, **ipv4(1, 2)) == [B1_OFPORT_HERE]
    assert fake.ports(TUNNEL_C, tunnel_id=VNI, **ipv4(1, 2)) == [B1_OFPORT_HERE]
    assert fake.ports(A1_OFPORT, **ipv4(1, 2)) == [B1_OFPORT_HERE]
    assert fake.ports(B1_OFPORT_HERE, **ipv4(2, 1)) == [A1_OFPORT]


def test_an_activated_source_drops_what_tunnels_still_bring_but_forwards_its_own_vms_packets():
    b = chassis("B", (B1, 4), (port("b2", 3, "B"), 7))
    for state in ("requested", "activated"):
        write(b, B1.replace(migration=MigrationRecord(chassis="C", source="B", strategy="announce", state=state)))
    fake = table_of(b)
    assert fake.ports(TUNNEL_C, tunnel_id=VNI, **ipv4(1, 2)) == []  # C sent it back before the announcement
    assert fake.ports(7, **ipv4(3, 2)) == [TUNNEL_C]


# -- routing and floating IPs: net1 10.0.0.0/24 (VNI 101) and net2 10.1.0.0/24 (VNI 102) behind
# router R, whose gateway is on `public` 172.24.4.0/24 (VNI 200); a1 has floating IP 172.24.4.50.
NET2_VNI, PUBLIC_VNI = 102, 200
R_NET1_MAC, R_NET2_MAC, FIP_MAC = 0xfa163eff0001, 0xfa163eff0002, 0xfa163eee0050
FIP, E1_IP = 0xac180432, 0xac180464  # 172.24.4.50, 172.24.4.100


ROUTER_R = LogicalRouter(
    id="R", topic="t",
    ports=[RouterPort(subnet="s1", mac="fa:16:3e:ff:00:01", ip="10.0.0.254"),
           RouterPort(subnet="s2", mac="fa:16:3e:ff:00:02", ip="10.1.0.254")],
    external_gateway=ExternalGateway(lswitch="public", ip="172.24.4.1", mac="fa:16:3e:ff:00:ff"))


def routed_chassis(name, *ports_here):
    engine = chassis(name)
    objects = [LogicalSwitch(id="net2", topic="t", segmentation_id=NET2_VNI),
               Subnet(id="s2", topic="t", lswitch="net2", cidr="10.1.0.0/24"),
               LogicalSwitch(id="public", topic="t", segmentation_id=PUBLIC_VNI, router_external=True),
               Subnet(id="sp", topic="t", lswitch="public", cidr="172.24.4.0/24"),
               ROUTER_R,
               A1, C2, E1,
               FloatingIP(id="fip1", topic="t", floating_ip="172.24.4.50", lswitch="public",
                          mac="fa:16:3e:ee:00:50", port="a1", fixed_ip="10.0.0.1", router="R")]
    for obj in objects:
        write(engine, obj)
    for p, ofport in ports_here:
        engine.commit(engine.vif_online(Vif(p.id, f"tap{p.id}", ofport)))
    return engine


C2 = LogicalPort(id="c2", topic="t", lswitch="net2", mac="fa:16:3e:00:01:02", ips=["10.1.0.2"],
                 binding_chassis="C")
E1 = LogicalPort(id="e1", topic="t", lswitch="public", mac="fa:16:3e:00:04:64", ips=["172.24.4.100"],
                 binding_chassis="C")


def test_a_packet_to_another_subnet_is_routed_where_it_enters_and_tunnelled_on_the_destination_network():
    a = routed_chassis("A", (A1, A1_OFPORT))
    routed = ipv4(1, 2) | dict(eth_dst=R_NET1_MAC, ipv4_dst=0x0a010002)
    [out] = table_of(a).forward(A1_OFPORT, **routed)
    assert out.port == TUNNEL_C and out.packet["tunnel_id"] == NET2_VNI
    assert (out.packet["eth_src"], out.packet["eth_dst"], out.packet["ip_ttl"]) == (R_NET2_MAC, 0xfa163e000102, 63)


def test_a_routed_packet_whose_ttl_expires_is_dropped():
    a = routed_chassis("A", (A1, A1_OFPORT))
    routed = ipv4(1, 2) | dict(eth_dst=R_NET1_MAC, ipv4_dst=0x0a010002, ip_ttl=1)
    assert table_of(a).forward(A1_OFPORT, **routed) == []


def from_external_host_to_fip():
    return dict(eth_src=0xfa163e000464, eth_dst=FIP_MAC, eth_type=ETH_TYPE_IP, ipv4_src=E1_IP, ipv4_dst=FIP,
                ip_ttl=64)


def test_the_floating_ip_is_translated_on_the_chassis_of_its_port_and_follows_the_port_when_it_moves():
    a = routed_chassis("A", (A1, A1_OFPORT))
    [inbound] = table_of(a).forward(TUNNEL_C, tunnel_id=PUBLIC_VNI, **from_external_host_to_fip())
    assert inbound.port == A1_OFPORT
    assert (inbound.packet["ipv4_dst"], inbound.packet["eth_dst"]) == (ip(1), mac(1))
    c = routed_chassis("C", (E1, 8))
    assert table_of(c).ports(8, **from_external_host_to_fip()) == [TUNNEL_A]
    write(c, A1.replace(migration=MigrationRecord(chassis="B", source="A", state="switched"), version=7))
    assert table_of(c).ports(8, **from_external_host_to_fip()) == [TUNNEL_B]


def python_port_flows(engine):
    """The oracle: every app's port program run in Python over each port's facts and role here."""
    flows = []
    for p in engine.view.ports():
        role = engine.view.port_role(p)
        for app in engine.apps:
            if app.port_program is not None and role is not None:
                flows += app.port_program.flows(engine.view.port_facts(p), role)
    return sorted(map(repr, flows))


def test_the_compiled_core_makes_every_apps_port_flows_as_their_programs_say_through_moves_and_changes():
    a = routed_chassis("A", (A1, A1_OFPORT))
    b1 = B1.replace(lswitch="net1")
    steps = [
        b1,  # a remote port
        b1.replace(migration=MigrationRecord(chassis="A", source="B", strategy="announce"), version=3),
        None,  # its VIF plugged here: a pre-programmed destination (learn and resubmit flows)
        b1.replace(migration=MigrationRecord(chassis="A", source="B", strategy="announce", state="activated"),
                   version=4),
        A1.replace(ips=["10.0.0.1", "10.0.0.9"], version=5),  # facts change under a kept role
        b1.replace(binding_chassis="A", ips=["10.0.0.22"], version=6),  # role and facts at once
    ]
    for step in steps:
        if step is None:
            a.commit(a.vif_online(Vif("b1", "tapb1", B1_OFPORT_HERE)))
        else:
            write(a, step)
        assert sorted(map(repr, a.port_flows())) == python_port_flows(a), step
    assert a.stats["port_facts_changed"] >= 2 and not a.stats["compiler_errors"]
