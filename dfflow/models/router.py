"""Distributed routers (interfaces, external gateway) and floating IPs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dfflow.errors import ValidationError
from dfflow.models.base import Model, Record
from dfflow.models.fields import check_id, check_ip, check_mac, check_optional_id, check_str
from dfflow.models.network import LogicalSwitch, Subnet
from dfflow.models.port import LogicalPort

@dataclass(frozen=True)
class RouterPort(Record):
    """A router interface on one subnet; its IP is the subnet's gateway."""

    subnet: str
    mac: str
    ip: str


@dataclass(frozen=True)
class ExternalGateway(Record):
    lswitch: str
    ip: str
    mac: str


@dataclass
class LogicalRouter(Model):
    table: ClassVar[str] = "lrouter"
    records = {"ports": (RouterPort, True), "external_gateway": (ExternalGateway, False)}
    name: str = ""
    ports: list[RouterPort] = field(default_factory=list)
    external_gateway: ExternalGateway | None = None

    def check(self) -> None:
        super().check()
        check_str("name", self.name, table=self.table)
        if not isinstance(self.ports, list):
            raise ValidationError("ports", "must be a list", self.table)
        seen: set[str] = set()
        for i, port in enumerate(self.ports):
            check_id(f"ports[{i}].subnet", port.subnet, self.table)
            check_mac(f"ports[{i}].mac", port.mac, self.table)
            check_ip(f"ports[{i}].ip", port.ip, self.table)
            if port.subnet in seen:
                raise ValidationError(f"ports[{i}].subnet", f"subnet {port.subnet!r} is attached twice",
                                      self.table)
            seen.add(port.subnet)
        gw = self.external_gateway
        if gw is not None:
            check_id("external_gateway.lswitch", gw.lswitch, self.table)
            check_ip("external_gateway.ip", gw.ip, self.table, version=4)
            check_mac("external_gateway.mac", gw.mac, self.table)

    def references(self) -> list[tuple[str, str, str]]:
        refs = [(f"ports[{i}].subnet", Subnet.table, p.subnet) for i, p in enumerate(self.ports)]
        if self.external_gateway is not None:
            refs.append(("external_gateway.lswitch", LogicalSwitch.table, self.external_gateway.lswitch))
        return refs

    def unique_keys(self) -> list[tuple[str, str]]:
        # A subnet has one gateway: it attaches to one router, once.
        keys = [(f"ports[{i}].subnet", f"router-if:{p.subnet}") for i, p in enumerate(self.ports)]
        gw = self.external_gateway
        if gw is not None:
            keys += [("external_gateway.ip", f"ip:{gw.lswitch}:{gw.ip}"),
                     ("external_gateway.mac", f"mac:{gw.lswitch}:{gw.mac.lower()}")]
        return keys


@dataclass
class FloatingIP(Model):
    """A public IP on an external switch, mapped to a port's fixed IP by its router."""

    table: ClassVar[str] = "floatingip"
    floating_ip: str = ""
    lswitch: str = ""  # the external network
    mac: str = ""  # answers ARP for the floating IP wherever its port lives
    port: str | None = None
    fixed_ip: str | None = None
    router: str | None = None

    def check(self) -> None:
        super().check()
        self.floating_ip = check_ip("floating_ip", self.floating_ip, self.table, version=4)
        check_id("lswitch", self.lswitch, self.table)
        self.mac = check_mac("mac", self.mac, self.table)
        check_optional_id("port", self.port, self.table)
        check_optional_id("router", self.router, self.table)
        if self.port is None:
            if self.fixed_ip is not None:
                raise ValidationError("fixed_ip", "set without a port", self.table)
        else:
            if self.fixed_ip is None:
                raise ValidationError("fixed_ip", "required when a port is associated", self.table)
            self.fixed_ip = check_ip("fixed_ip", self.fixed_ip, self.table, version=4)
            if self.router is None:
                raise ValidationError("router", "required when a port is associated", self.table)

    def references(self) -> list[tuple[str, str, str]]:
        refs = [("lswitch", LogicalSwitch.table, self.lswitch)]
        if self.port is not None:
            refs.append(("port", LogicalPort.table, self.port))
        if self.router is not None:
            refs.append(("router", LogicalRouter.table, self.router))
        return refs

    def unique_keys(self) -> list[tuple[str, str]]:
        keys = [("floating_ip", f"ip:{self.lswitch}:{self.floating_ip}"),
                ("mac", f"mac:{self.lswitch}:{self.mac}")]
        if self.port is not None:
            keys.append(("fixed_ip", f"fip-fixed:{self.port}:{self.fixed_ip}"))
        return keys
