"""Chassis, networks (logical switches) and their subnets."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from dfflow.errors import ValidationError
from dfflow.models.base import Model
from dfflow.models.fields import (check_bool, check_choice, check_cidr, check_id, check_int, check_ip,
                                  check_number, check_str)

CHASSIS_TOPIC = "chassis"
VNI_MIN, VNI_MAX = 1, 2**24 - 1
TUNNEL_TYPES = ("geneve", "vxlan")
CHASSIS_STATES = ("up", "down")
DATAPATH_TYPES = ("system", "netdev")  # Open vSwitch's Bridge.datapath_type: kernel, or userspace


@dataclass
class Chassis(Model):
    table: ClassVar[str] = "chassis"
    tunnel_ip: str = ""
    tunnel_type: str = "geneve"
    status: str = "up"
    last_seen: float = 0.0  # when its controller registered it; its heartbeats: NbApi.chassis_last_seen
    # What a VIF plugged here needs (Neutron's binding:vif_details for os-vif): the integration
    # bridge's name and datapath type (os-vif creates the bridge with it if it is missing).
    datapath_type: str = "system"
    bridge_name: str = "br-int"

    def check(self) -> None:
        super().check()
        if self.topic != CHASSIS_TOPIC:
            raise ValidationError("topic", f"chassis live on topic {CHASSIS_TOPIC!r}", self.table)
        self.tunnel_ip = check_ip("tunnel_ip", self.tunnel_ip, self.table, version=4)
        check_choice("tunnel_type", self.tunnel_type, TUNNEL_TYPES, self.table)
        check_choice("status", self.status, CHASSIS_STATES, self.table)
        self.last_seen = check_number("last_seen", self.last_seen, self.table)
        check_choice("datapath_type", self.datapath_type, DATAPATH_TYPES, self.table)
        check_id("bridge_name", self.bridge_name, self.table)


@dataclass
class LogicalSwitch(Model):
    """A Neutron network; its segmentation id is the tunnel VNI."""

    table: ClassVar[str] = "lswitch"
    name: str = ""
    segmentation_id: int = 0
    mtu: int = 1400
    router_external: bool = False

    def check(self) -> None:
        super().check()
        check_str("name", self.name, table=self.table)
        check_int("segmentation_id", self.segmentation_id, VNI_MIN, VNI_MAX, self.table)
        check_int("mtu", self.mtu, 68, 9000, self.table)
        check_bool("router_external", self.router_external, self.table)

    def unique_keys(self) -> list[tuple[str, str]]:
        return [("segmentation_id", f"vni:{self.segmentation_id}")]


@dataclass
class Subnet(Model):
    table: ClassVar[str] = "subnet"
    lswitch: str = ""
    cidr: str = ""
    gateway_ip: str | None = None
    name: str = ""

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    def check(self) -> None:
        super().check()
        check_id("lswitch", self.lswitch, self.table)
        check_str("name", self.name, table=self.table)
        self.cidr = check_cidr("cidr", self.cidr, self.table)
        if self.gateway_ip is not None:
            net = self.network
            self.gateway_ip = check_ip("gateway_ip", self.gateway_ip, self.table, version=net.version)
            gw = ipaddress.ip_address(self.gateway_ip)
            if gw not in net:
                raise ValidationError("gateway_ip", f"{gw} is outside {self.cidr}", self.table)
            if net.num_addresses > 2 and gw in (net.network_address, net.broadcast_address):
                raise ValidationError("gateway_ip", f"{gw} is the network or broadcast address "
                                                    f"of {self.cidr}", self.table)

    def references(self) -> list[tuple[str, str, str]]:
        return [("lswitch", LogicalSwitch.table, self.lswitch)]
