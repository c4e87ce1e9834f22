# cython: language_level=3
"""dfflow's compiled core.

Address packing used by NB validation and by the flow compiler: MACs as uint64,
IPv4 addresses as uint32. Parsers are strict: anything but the canonical textual
forms raises ValueError, and the caller names the field.
"""
from libc.stdint cimport uint32_t, uint64_t


cdef inline int _hexval(Py_UCS4 c):
    if c >= u'0' and c <= u'9':
        return <int>c - 48
    if c >= u'a' and c <= u'f':
        return <int>c - 87
    if c >= u'A' and c <= u'F':
        return <int>c - 55
    return -1


cpdef uint64_t mac_to_int(str mac) except? 0xFFFFFFFFFFFFFFFF:
    """'fa:16:3e:00:00:01' -> 0xfa163e000001 (six colon-separated hex pairs)."""
    cdef uint64_t value = 0
    cdef Py_ssize_t i
    cdef int hi, lo
    if len(mac) != 17:
        raise ValueError(f"not a MAC address: {mac!r}")
    for i in range(6):
        if i < 5 and mac[i * 3 + 2] != u':':
            raise ValueError(f"not a MAC address: {mac!r}")
        hi = _hexval(mac[i * 3])
        lo = _hexval(mac[i * 3 + 1])
        if hi < 0 or lo < 0:
            raise ValueError(f"not a MAC address: {mac!r}")
        value = (value << 8) | <uint64_t>(hi * 16 + lo)
    return value


cpdef str int_to_mac(uint64_t value):
    if value >> 48:
        raise ValueError(f"MAC value out of range: {value:#x}")
    return ":".join([f"{(value >> (40 - 8 * i)) & 0xff:02x}" for i in range(6)])


cpdef uint32_t ipv4_to_int(str ip) except? 0xFFFFFFFF:
    """'10.0.0.1' -> 0x0a000001 (dotted quad, no leading zeros, each 0..255)."""
    cdef uint32_t value = 0
    cdef uint32_t octet
    cdef int digits = 0, octets = 0
    cdef Py_UCS4 c
    for c in ip:
        if c == u'.':
            if digits == 0 or octets == 3:
                raise ValueError(f"not an IPv4 address: {ip!r}")
            value = (value << 8) | octet
            octets += 1
            digits = 0
        elif c >= u'0' and c <= u'9':
            if digits == 0:
                octet = 0
            elif octet == 0:
                raise ValueError(f"not an IPv4 address (leading zero): {ip!r}")
            octet = octet * 10 + (<uint32_t>c - 48)
            digits += 1
            if octet > 255:
                raise ValueError(f"not an IPv4 address: {ip!r}")
        else:
            raise ValueError(f"not an IPv4 address: {ip!r}")
    if digits == 0 or octets != 3:
        raise ValueError(f"not an IPv4 address: {ip!r}")
    return (value << 8) | octet


cpdef str int_to_ipv4(uint32_t value):
    return f"{value >> 24}.{(value >> 16) & 0xff}.{(value >> 8) & 0xff}.{value & 0xff}"
