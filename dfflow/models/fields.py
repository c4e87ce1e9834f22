"""The NB model's field checkers: each returns the value (normalized where that applies) or raises
ValidationError naming the field and, when given, the table."""
from __future__ import annotations

import functools
import ipaddress
import json
import re
from typing import Any

from dfflow import core
from dfflow.errors import ValidationError

PROFILE_MAX_BYTES = 4096  # binding:profile, serialized

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")


_VALID_IDS: set[str] = set()  # ids found valid (every event names its topic, network and chassis again)
_VALID_IDS_KEPT = 1 << 16


def check_id(name: str, value: Any, table: str | None = None) -> str:
    if type(value) is str and value in _VALID_IDS:
        return value
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(name, f"not a valid id: {value!r} (letters, digits, '.', '_', '-'; "
                                    "1-255 characters)", table)
    if type(value) is str:
        if len(_VALID_IDS) >= _VALID_IDS_KEPT:
            _VALID_IDS.clear()
        _VALID_IDS.add(value)
    return value


def check_optional_id(name: str, value: Any, table: str | None = None) -> str | None:
    return None if value is None else check_id(name, value, table)


def check_mac(name: str, value: Any, table: str | None = None) -> str:
    if not isinstance(value, str):
        raise ValidationError(name, f"not a MAC address: {value!r}", table)
    try:
        packed = core.mac_to_int(value)
    except ValueError:
        raise ValidationError(name, f"not a MAC address: {value!r}", table) from None
    if packed >> 40 & 1:
        raise ValidationError(name, f"multicast MAC not allowed: {value!r}", table)
    return value.lower()


@functools.lru_cache(maxsize=1 << 16)
def _parsed_ip(value: str) -> tuple[int, str] | None:
    """(version, normal form) of an address, or None. Remembered: every chassis validates every port
    event it hears (a 100-port evacuation is 100 of them per chassis), mostly of addresses seen before."""
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    return addr.version, str(addr)


def check_ip(name: str, value: Any, table: str | None = None, version: int | None = None) -> str:
    parsed = _parsed_ip(value) if isinstance(value, str) else None
    if parsed is None or (version and parsed[0] != version):
        kind = {4: "IPv4", 6: "IPv6"}.get(version, "IP")
        raise ValidationError(name, f"not an {kind} address: {value!r}", table)
    return parsed[1]


def check_cidr(name: str, value: Any, table: str | None = None) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True) if isinstance(value, str) else None
    except ValueError as exc:
        raise ValidationError(name, f"not a CIDR: {value!r} ({exc})", table) from None
    if net is None or "/" not in value:
        raise ValidationError(name, f"not a CIDR: {value!r}", table)
    return str(net)


def check_int(name: str, value: Any, lo: int, hi: int, table: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(name, f"must be an integer in {lo}..{hi}, got {value!r}", table)
    return value


def check_bool(name: str, value: Any, table: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"must be true or false, got {value!r}", table)
    return value


def check_choice(name: str, value: Any, choices: tuple, table: str | None = None) -> Any:
    if value not in choices:
        raise ValidationError(name, f"must be one of {', '.join(map(str, choices))}; got {value!r}", table)
    return value


def check_str(name: str, value: Any, max_len: int = 255, table: str | None = None) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(name, f"must be a string of at most {max_len} characters", table)
    return value


def check_profile(name: str, value: Any, table: str | None = None) -> dict[str, Any]:
    """Neutron's binding:profile: a JSON object with string keys, at most PROFILE_MAX_BYTES serialized."""
    if not isinstance(value, dict):
        raise ValidationError(name, f"must be a JSON object, got {type(value).__name__}", table)
    if not value:
        return value  # most ports' (every NB event of one checks it)
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(name, f"is not JSON-serializable: {exc}", table) from None
    if size > PROFILE_MAX_BYTES:
        raise ValidationError(name, f"is {size} bytes serialized; at most {PROFILE_MAX_BYTES}", table)
    return value


def check_number(name: str, value: Any, table: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, f"must be a number, got {value!r}", table)
    return float(value)


def check_address_or_cidr(name: str, value: Any, table: str | None = None) -> str:
    """An IP address or a CIDR (host bits allowed, as Neutron allows them in address pairs)."""
    try:
        ipaddress.ip_interface(value) if isinstance(value, str) else None
    except ValueError:
        raise ValidationError(name, f"not an IP address or CIDR: {value!r}", table) from None
    if not isinstance(value, str):
        raise ValidationError(name, f"not an IP address or CIDR: {value!r}", table)
    return value
